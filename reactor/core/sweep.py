"""The sweep: the safety net that makes the database, not the events, the truth.

Two passes share one advisory lock, so two instances never sweep at once:

- The regular sweep (``sweep_changes``, every ``sweep.interval_seconds``, on a
  ``bulk`` hint, on reconnect, on ``reactor sweep``) costs what changed, not the
  table: retries that are due (the failures table's index), re-detection requests,
  images whose claim expired (a crashed instance's), and the paths of the change log
  (reactor.store.changes), which the ai_metadata trigger fills: those pending are
  queued at BACKLOG, those whose row is gone are marked orphans, and the rows read
  are deleted. Marks whose row came back are cleared, and due orphans purged (only
  when some row is marked: the bound counts the table).
- The full walk (``sweep``: retries, every processed row without an outcome, then
  the orphan pass over every result and failure) is the reconciliation: it finds
  what no change recorded (a trigger that was missing, a result deleted by hand).
  It runs in the background (SweepScheduler.run_walk) every
  ``sweep.walk_interval_hours``, or when the log saw a TRUNCATE, in chunks of
  ``walk_chunk_pages`` keyset pages with ``walk_pause_seconds`` between them.

Pages use keyset pagination on image_path, so memory stays flat on a million
rows. Neither pass overfills the queue: when a page no longer fits it stops
with ``deferred`` set, and the service sweeps again once the queue has drained.
The walk's position (phase and last path) is kept in reactor_sweep_state, so the
next chunk, a restart, or another instance that takes the lock continues the same
walk, and the orphan pass, which reads every result, runs once per walk, at its end.
Change-log rows stay in the log until a regular sweep has queued their page.

Orphans are purged only while the share is online (an upstream pipeline may be
deleting rows because it believes an unmounted share lost its files) and never
when ai_metadata is empty; a table refilled in batches is covered by the grace.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field

from reactor import logs
from reactor.core import metrics
from reactor.core.queue import ImageQueue, Priority
from reactor.core.work_share import WorkShare
from reactor.store import changes, claims, orphans, sweeps
from reactor.store.connections import borrowed
from reactor.store.dbtypes import Conn, Pool

log = logs.get("reactor.sweep")

# The walk reads ai_metadata in windows of this many pages (sweep.page_size rows each).
WINDOW_PAGES = 10
# Expired claims older than this many leases are deleted by the sweep.
STALE_CLAIM_LEASES = 10

# The counts a sweep adds up and `reactor sweep` prints, in that order.
COUNTS = ("retries", "pending", "orphans", "restored", "purged", "queued", "dropped", "stale_claims", "changes")
# A page source for the regular sweep: (conn, after, limit) -> candidate paths.
Candidates = Callable[[Conn, str, int], Awaitable[list[str]]]


@dataclass
class SweepCounts:
    retries: int = 0
    pending: int = 0
    # Orphans newly marked, un-marked because their row came back, and purged.
    orphans: int = 0
    restored: int = 0
    purged: int = 0
    queued: int = 0
    dropped: int = 0
    stale_claims: int = 0
    # Change-log rows read (regular sweep).
    changes: int = 0
    orphans_skipped: str | None = None
    # Due orphans past the purge bound: kept, see `reactor status`.
    orphans_held: str | None = None
    # Stopped early because the queue was full: sweep again once it drains.
    deferred: bool = False
    # Continued a deferred sweep's cycle from its position instead of starting a new one.
    resumed: bool = False
    # The walk stopped after its chunk of pages: the next chunk continues it.
    paused: bool = False
    # The change log held a TRUNCATE of ai_metadata: the full walk is asked for.
    walk_requested: bool = False
    skipped: str | None = None
    seconds: float = 0.0
    paths: dict[str, list[str]] = field(default_factory=dict)

    def add(self, other: SweepCounts) -> None:
        """Sum the counts of a follow-up sweep (``reactor sweep --once`` after a deferral)."""
        for name in COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.seconds = round(self.seconds + other.seconds, 3)
        self.orphans_skipped = other.orphans_skipped
        self.orphans_held = other.orphans_held

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data.pop("paths")
        return {k: v for k, v in data.items() if v is not None}


class Sweeper:
    def __init__(
        self,
        pool: Pool,
        queue: ImageQueue,
        *,
        page_size: int,
        lease_seconds: float,
        instance_id: str,
        share_online: Callable[[], bool],
        orphan_policy: orphans.OrphanPolicy | None = None,
        walk_interval_seconds: float = 24 * 3600.0,
        work_share: WorkShare | None = None,
    ) -> None:
        self.pool = pool
        self.queue = queue
        self.page_size = max(1, page_size)
        self.lease_seconds = lease_seconds
        self.instance_id = instance_id
        self.share_online = share_online
        self.orphan_policy = orphan_policy or orphans.OrphanPolicy()
        self.walk_interval_seconds = walk_interval_seconds
        # Which changes of the log this instance reads first (reactor.core.work_share).
        self.work_share = work_share or WorkShare(instance_id)
        # The regular sweep and the walk's chunks take turns in this process (the advisory
        # lock would make one of them skip); between instances the lock decides.
        self._turn = asyncio.Lock()
        # Tables whose due orphans are held (past the bound): logged once, on the change.
        self._held: set[str] = set()
        # Regular sweeps, and walks (or chunks of one), that ran (not skipped, not dry runs).
        self.completed = 0
        self.walked = 0
        # Where the walk stopped, as last read from reactor_sweep_state: (phase, last path
        # read); None: the next walk starts a new cycle.
        self.resume_at: tuple[str, str] | None = None

    @property
    def room_needed(self) -> int:
        """Free queue slots a page needs; below it the sweep defers."""
        return min(self.page_size, self.queue.maxsize)

    async def sweep(
        self, stop: asyncio.Event | None = None, *, dry_run: bool = False, pages: int | None = None
    ) -> SweepCounts:
        """The full walk, from where the last one stopped; with `pages`, at most that many
        pages (a chunk). With dry_run nothing is queued or deleted; ``paths`` lists what would be."""
        return await self._locked("walk", lambda conn: self._walk(conn, stop, dry_run, pages), dry_run=dry_run)

    async def sweep_changes(self, stop: asyncio.Event | None = None, *, share_log: bool = False) -> SweepCounts:
        """The regular sweep: due retries, re-detection requests, expired claims and the change log.

        With `share_log`, an instance that finds the lock taken still reads its own share
        of the change log (several instances work a storm together); the caller must then
        work what it queued (the service's scheduler does; `reactor sweep --once` does not
        ask for it, since it returns when skipped)."""

        async def share_only(conn: Conn) -> SweepCounts:
            counts = SweepCounts(skipped="another instance is sweeping")
            dropped_before = self.queue.dropped
            await self._read_log(conn, counts, stop)
            counts.dropped = self.queue.dropped - dropped_before
            return counts

        return await self._locked(
            "changes", lambda conn: self._changes(conn, stop), dry_run=False, unlocked=share_only if share_log else None
        )

    async def request_walk(self) -> None:
        """Walk as soon as possible (after the walk under way, if any)."""
        async with borrowed(self.pool) as conn:
            await changes.request_walk(conn)

    async def walk_due(self) -> bool:
        async with borrowed(self.pool) as conn:
            return (await changes.state(conn, self.walk_interval_seconds)).walk_due

    async def _locked(
        self,
        kind: str,
        run: Callable[[Conn], Awaitable[SweepCounts]],
        *,
        dry_run: bool,
        unlocked: Callable[[Conn], Awaitable[SweepCounts]] | None = None,
    ) -> SweepCounts:
        started = time.monotonic()
        async with self._turn, borrowed(self.pool) as conn:
            if dry_run:
                counts = await run(conn)
            elif not await sweeps.try_lock(conn):
                # Another instance sweeps; what may run without the lock (this share of the log) does.
                if unlocked is not None:
                    await changes.custom_plans(conn)
                    counts = await unlocked(conn)
                else:
                    counts = SweepCounts(skipped="another instance is sweeping")
            else:
                try:
                    await changes.custom_plans(conn)
                    counts = await run(conn)
                    if kind == "walk":
                        self.walked += 1
                    else:
                        self.completed += 1
                finally:
                    if not conn.is_closed():
                        await sweeps.unlock(conn)
        counts.seconds = round(time.monotonic() - started, 3)
        metrics.SWEEPS.labels("skipped" if counts.skipped else "done").inc()
        log.info("sweep_done", kind=kind, dry_run=dry_run, **counts.as_dict())
        return counts

    async def _walk(self, conn: Conn, stop: asyncio.Event | None, dry_run: bool, pages: int | None) -> SweepCounts:
        counts = SweepCounts()
        dropped_before = self.queue.dropped
        # A dry run reads a whole cycle of its own and leaves the position alone.
        phase, after = "retry", ""
        if not dry_run:
            state = await changes.state(conn, self.walk_interval_seconds)
            if state.walk_phase is None:
                await changes.start_walk(conn)
            else:
                phase, after = state.walk_phase, state.walk_after
                counts.resumed = True
        budget = [pages if pages is not None and not dry_run else -1]
        tables = await orphans.tables_with_marks(conn)
        # Phases in order: queue retries, queue pending rows, then mark the orphans of
        # each table ("orphans:<table>"), all in windows; the purge ends the walk.
        names = ["retry", "pending", *(f"orphans:{t}" for t in tables)]
        stopped_at: str | None = None
        for name in names[names.index(phase) if phase in names else len(names) :]:
            if name.startswith("orphans:"):
                listed = counts.paths.setdefault("orphan", []) if dry_run else None
                marked, stopped_at = await self._mark_windows(conn, name[8:], counts, stop, after, budget, listed)
                counts.orphans += marked
            else:
                priority = Priority.RETRY if name == "retry" else Priority.BACKLOG
                found, stopped_at = await self._queue_pages(conn, priority, name, counts, stop, dry_run, after, budget)
                setattr(counts, "retries" if name == "retry" else "pending", found)
            after = ""
            if stopped_at is not None:
                phase = name
                break
        counts.dropped = self.queue.dropped - dropped_before
        rows = counts.retries + counts.pending
        if stopped_at is not None or (stop is not None and stop.is_set()):
            # The purge needs every orphan marked: once per walk, when it completes.
            counts.orphans_skipped = (
                "the walk continues after its pause" if counts.paused else "the cycle continues after the deferral"
            )
            if not dry_run:
                position = (phase, stopped_at) if stopped_at is not None else ("purge", "")
                await changes.save_walk(conn, *position, rows)
                self.resume_at = position
        else:
            await self._orphans(conn, counts, dry_run)
            if not dry_run:
                await changes.finish_walk(conn, rows)
                self.resume_at = None
        if not dry_run:
            counts.stale_claims = await claims.purge_stale(conn, self.lease_seconds * STALE_CLAIM_LEASES)
        return counts

    async def _mark_windows(
        self,
        conn: Conn,
        table: str,
        counts: SweepCounts,
        stop: asyncio.Event | None,
        after: str,
        budget: list[int],
        listed: list[str] | None,
    ) -> tuple[int, str | None]:
        """Mark the orphans of `table`, a window of its rows at a time; (marked, where it stopped)."""
        marked = 0
        while True:
            if stop is not None and stop.is_set():
                return marked, after
            if budget[0] == 0:
                counts.paused = True
                return marked, after
            budget[0] -= 1
            upper, last = await changes.table_window(conn, table, after, self.page_size * WINDOW_PAGES)
            if upper is None:
                return marked, None
            marked += await orphans.mark_window(conn, table, after, upper, self.page_size, listed)
            if last:
                return marked, None
            after = upper

    async def _changes(self, conn: Conn, stop: asyncio.Event | None) -> SweepCounts:
        counts = SweepCounts()
        await changes.ensure_state(conn)
        dropped_before = self.queue.dropped
        counts.retries, stopped = await self._queue_pages(conn, Priority.RETRY, "retry", counts, stop, False)
        # The log (new photos) before re-detection requests: a long list of requests,
        # read again by each sweep until it is done, must not hold new photos back.
        if stopped is None:
            await self._read_log(conn, counts, stop)
        for source in (changes.redetect_page, changes.expired_claim_page):
            if stopped is None and not counts.deferred and not (stop is not None and stop.is_set()):
                found, stopped = await self._queue_candidates(conn, source, counts, stop)
                counts.pending += found
        counts.dropped = self.queue.dropped - dropped_before
        if counts.walk_requested:
            await changes.request_walk(conn)
        if counts.deferred or (stop is not None and stop.is_set()):
            counts.orphans_skipped = "the sweep continues after the deferral"
        else:
            await self._orphans(conn, counts, False)
        counts.stale_claims = await claims.purge_stale(conn, self.lease_seconds * STALE_CLAIM_LEASES)
        return counts

    def _page_limit(self, counts: SweepCounts, stop: asyncio.Event | None) -> int:
        """Rows the next page may hold; 0 when stopping (stopped, or the queue is too full: deferred)."""
        if stop is not None and stop.is_set():
            return 0
        limit = min(self.page_size, self.queue.free())
        if limit < self.room_needed:
            counts.deferred = True
            return 0
        return limit

    def _queue_pending(self, paths: list[str], counts: SweepCounts) -> int:
        for path in paths:
            if self.queue.put(path, Priority.BACKLOG):
                counts.queued += 1
        return len(paths)

    async def _queue_candidates(
        self, conn: Conn, source: Candidates, counts: SweepCounts, stop: asyncio.Event | None
    ) -> tuple[int, str | None]:
        """Queue the pending among a keyset source's paths; (found, position where it stopped early)."""
        found, after = 0, ""
        while limit := self._page_limit(counts, stop):
            paths = await source(conn, after, limit)
            if paths:
                found += self._queue_pending(await changes.pending_among(conn, paths, self.instance_id), counts)
            if len(paths) < limit:
                return found, None
            after = paths[-1]
        return found, after

    async def _read_log(self, conn: Conn, counts: SweepCounts, stop: asyncio.Event | None) -> None:
        """Read the change log oldest first: queue the pending, mark the gone, delete what was read."""
        share = self.work_share
        while limit := self._page_limit(counts, stop):
            # This instance's share first, then overdue changes of any share (a lease unread).
            read = await changes.share_page(conn, limit, share.count, share.rank, self.lease_seconds)
            paths = sorted({c.path for c in read if c.path is not None})
            if len(paths) < len(read) and any(c.path is None for c in read):
                counts.walk_requested = True
            if paths:
                pending = await changes.pending_among(conn, paths, self.instance_id)
                counts.pending += self._queue_pending(pending, counts)
                counts.orphans += await orphans.mark_listed(conn, paths)
            if read:
                # After the queueing: a crash in between reads the page again, never skips it.
                await changes.consume(conn, read)
            counts.changes += len(read)
            if len(read) < limit:
                return

    async def _queue_pages(
        self,
        conn: Conn,
        priority: Priority,
        kind: str,
        counts: SweepCounts,
        stop: asyncio.Event | None,
        dry_run: bool,
        after: str = "",
        budget: list[int] | None = None,
    ) -> tuple[int, str | None]:
        """Rows found (`kind` "retry": due retries, "pending": pending rows), and the keyset
        position where it stopped early (None: read to the end).
        `budget` holds the pages left to read (negative: no limit), spent across calls."""
        found = 0
        while True:
            if budget is not None and budget[0] == 0:
                counts.paused = True
                return found, after
            if dry_run:
                if stop is not None and stop.is_set():
                    return found, after
                limit = self.page_size
            elif not (limit := self._page_limit(counts, stop)):
                return found, after
            if budget is not None:
                budget[0] -= 1
            if kind == "pending":
                # A window of the table, not a page of results: a page of pending rows
                # could take a scan of the whole table to fill. A window holds a few
                # pages of rows (fewer statements per row read); what it returns still
                # fits the queue, and a full page resumes inside the window.
                upper, last = await changes.walk_window(conn, after, self.page_size * WINDOW_PAGES)
                if upper is None:
                    return found, None
                paths = await sweeps.pending_images(conn, after, limit, self.instance_id, upper)
                if len(paths) == limit:
                    upper, last = None, False
            else:
                upper, last = None, False
                paths = await sweeps.due_retries(conn, after, limit, self.instance_id)
            for path in paths:
                found += 1
                if dry_run:
                    counts.paths.setdefault(kind, []).append(path)
                elif self.queue.put(path, priority):
                    counts.queued += 1
            if upper is not None:
                if last:
                    return found, None
                after = upper
                continue
            if len(paths) < limit:
                return found, None
            after = paths[-1]

    async def _orphans(self, conn: Conn, counts: SweepCounts, dry_run: bool) -> None:
        """Un-mark returned rows and purge those past their grace within the bound (only
        when one may be due: the bound counts the table)."""
        policy = self.orphan_policy
        tables = await orphans.tables_with_marks(conn)
        if orphans.RESULTS in tables and not dry_run and (unmarked := await orphans.unmark_legacy(conn)):
            log.info("legacy_orphans_unmarked", rows=unmarked)
        for table in tables:
            if not dry_run:
                counts.restored += await orphans.restore(conn, table)
        if orphans.FAILURES not in tables:
            counts.orphans_skipped = f"{orphans.FAILURES} has no orphaned_at column: its orphans are kept"
        if not self.share_online():
            counts.orphans_skipped = "share offline"
            return
        if await sweeps.ai_metadata_is_empty(conn):
            counts.orphans_skipped = "ai_metadata is empty"
            return
        if not self._held and not await changes.any_due(conn, tables, policy.grace_seconds):
            # Nothing past its grace (the partial index answers), nothing to purge: the
            # stats below count the whole table (14 s at 10M rows), for the bound.
            return
        held = []
        for stat in await orphans.stats(conn, policy):
            purged = 0
            if stat.due and not stat.held:
                if dry_run:
                    counts.paths.setdefault("purge", []).extend(
                        await orphans.due_paths(conn, stat.table, policy, self.page_size)
                    )
                else:
                    purged = await orphans.purge_within_bound(conn, stat.table, policy, stat.bound)
                    counts.purged += purged
                    if purged:
                        log.info("orphans_purged", table=stat.table, rows=purged, bound=stat.bound, spent=stat.spent)
            # Held: past the bound by the count above, or by the purge statement's own
            # (rows that became due since that count pushed it past).
            if stat.held or (stat.due and not dry_run and not purged):
                held.append(f"{stat.table}: {stat.held_text()}")
                if stat.table not in self._held and not dry_run:
                    self._held.add(stat.table)
                    log.warning(
                        "orphans_held",
                        table=stat.table,
                        due=stat.due,
                        bound=stat.bound,
                        purged_in_window=stat.spent,
                        release=orphans.RELEASE_HINT,
                    )
            elif stat.table in self._held and not dry_run:
                self._held.discard(stat.table)
                log.info("orphans_released", table=stat.table, due=stat.due, bound=stat.bound)
        counts.orphans_held = "; ".join(held) or None

    async def mark_orphan(self, path: str) -> int:
        """A `deleted` hint for one path: the row is marked (if really orphaned), never deleted."""
        async with borrowed(self.pool) as conn:
            marked = await orphans.mark_hint(conn, path)
        if marked:
            log.info("orphan_marked", path=path)
        return marked
