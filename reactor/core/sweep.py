"""The sweep: the safety net that makes the database, not the events, the truth.

It queues retries that are due (RETRY priority) and processed rows that have no
outcome (BACKLOG: missed notifications, dropped queue entries, a crashed
instance's images once its lease expired), and handles orphans, results and
failure rows whose ai_metadata row is gone: they are marked, un-marked when the row
comes back, and purged only after a grace period and within a bound (reactor.store.orphans).

Pages use keyset pagination on image_path, so memory stays flat on a million
rows. The sweep never overfills the queue: when a page no longer fits it stops
with ``deferred`` set, and the service sweeps again once the queue has drained.
That next sweep resumes the same cycle where the deferred one stopped (its phase
and keyset position), so a full cycle (retries, pending, orphans) reads each row
about once however often it defers, and the orphan pass, which reads every
result, runs once per full cycle, at its end. Rows that became pending behind the
position are found by the next cycle. It holds a session advisory lock on one
pooled connection while it runs, so two instances never sweep at once.

Orphans are purged only while the share is online (an upstream pipeline may be
deleting rows because it believes an unmounted share lost its files) and never
when ai_metadata is empty; a table refilled in batches is covered by the grace.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import asyncpg

from reactor import logs
from reactor.core import metrics
from reactor.core.queue import ImageQueue, Priority
from reactor.store import claims, orphans
from reactor.store.dbtypes import Conn
from reactor.store.sql import Queries

Q = Queries("queries.sql")
log = logs.get("reactor.sweep")

# pg_try_advisory_lock key: "FACE" 2 (1 is `db init`).
SWEEP_LOCK_KEY = 0x46414345_0002
# Expired claims older than this many leases are deleted by the sweep.
STALE_CLAIM_LEASES = 10

# The counts a sweep adds up and `reactor sweep` prints, in that order.
COUNTS = ("retries", "pending", "orphans", "restored", "purged", "queued", "dropped", "stale_claims")


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
    orphans_skipped: str | None = None
    # Due orphans past the purge bound: kept, see `reactor status`.
    orphans_held: str | None = None
    # Stopped early because the queue was full: sweep again once it drains.
    deferred: bool = False
    # Continued a deferred sweep's cycle from its position instead of starting a new one.
    resumed: bool = False
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
        pool: asyncpg.Pool,
        queue: ImageQueue,
        *,
        page_size: int,
        lease_seconds: float,
        instance_id: str,
        share_online: Callable[[], bool],
        orphan_policy: orphans.OrphanPolicy | None = None,
    ) -> None:
        self.pool = pool
        self.queue = queue
        self.page_size = max(1, page_size)
        self.lease_seconds = lease_seconds
        self.instance_id = instance_id
        self.share_online = share_online
        self.orphan_policy = orphan_policy or orphans.OrphanPolicy()
        # Tables whose due orphans are held (past the bound): logged once, on the change.
        self._held: set[str] = set()
        # Sweeps that ran (not skipped, not dry runs).
        self.completed = 0
        # Where a deferred sweep stopped: (phase, last path read); None starts a new cycle.
        self.resume_at: tuple[str, str] | None = None

    @property
    def room_needed(self) -> int:
        """Free queue slots a page needs; below it the sweep defers."""
        return min(self.page_size, self.queue.maxsize)

    async def sweep(self, stop: asyncio.Event | None = None, *, dry_run: bool = False) -> SweepCounts:
        """One sweep. With dry_run nothing is queued or deleted; ``paths`` lists what would be."""
        started = time.monotonic()
        async with self.pool.acquire() as conn:
            if dry_run:
                counts = await self._run(conn, stop, dry_run=True)
            elif not await conn.fetchval(Q.sweep_try_lock, SWEEP_LOCK_KEY):
                counts = SweepCounts(skipped="another instance is sweeping")
            else:
                try:
                    counts = await self._run(conn, stop, dry_run=False)
                    self.completed += 1
                finally:
                    if not conn.is_closed():
                        await conn.fetchval(Q.sweep_unlock, SWEEP_LOCK_KEY)
        counts.seconds = round(time.monotonic() - started, 3)
        metrics.SWEEPS.labels("skipped" if counts.skipped else "done").inc()
        log.info("sweep_done", dry_run=dry_run, **counts.as_dict())
        return counts

    async def _run(self, conn: Conn, stop: asyncio.Event | None, *, dry_run: bool) -> SweepCounts:
        counts = SweepCounts()
        dropped_before = self.queue.dropped
        # A dry run reads a whole cycle of its own and leaves the position alone.
        phase, after = (None if dry_run else self.resume_at) or ("retry", "")
        counts.resumed = not dry_run and self.resume_at is not None
        phases = (("retry", Q.due_retries, Priority.RETRY), ("pending", Q.pending_images, Priority.BACKLOG))
        start = [name for name, _, _ in phases].index(phase)
        for name, query, priority in phases[start:]:
            found, stopped_at = await self._queue_pages(conn, query, priority, name, counts, stop, dry_run, after)
            setattr(counts, "retries" if name == "retry" else "pending", found)
            after = ""
            if stopped_at is not None:
                if not dry_run:
                    self.resume_at = (name, stopped_at)
                break
        else:
            if not dry_run:
                self.resume_at = None
        counts.dropped = self.queue.dropped - dropped_before
        if counts.deferred or (stop is not None and stop.is_set()):
            # The orphan pass reads every result: once per full cycle, when it completes.
            counts.orphans_skipped = "the cycle continues after the deferral"
        else:
            await self._orphans(conn, counts, dry_run)
        if not dry_run:
            counts.stale_claims = await claims.purge_stale(conn, self.lease_seconds * STALE_CLAIM_LEASES)
        return counts

    async def _queue_pages(
        self,
        conn: Conn,
        query: str,
        priority: Priority,
        kind: str,
        counts: SweepCounts,
        stop: asyncio.Event | None,
        dry_run: bool,
        after: str = "",
    ) -> tuple[int, str | None]:
        """Rows found, and the keyset position where it stopped early (None: read to the end)."""
        found = 0
        while True:
            if stop is not None and stop.is_set():
                return found, after
            limit = self.page_size if dry_run else min(self.page_size, self.queue.free())
            if limit < self.room_needed:
                counts.deferred = True
                return found, after
            rows = await conn.fetch(query, after, limit, self.instance_id)
            for row in rows:
                path = row["image_path"]
                found += 1
                if dry_run:
                    counts.paths.setdefault(kind, []).append(path)
                elif self.queue.put(path, priority):
                    counts.queued += 1
            if len(rows) < limit:
                return found, None
            after = rows[-1]["image_path"]

    async def _orphans(self, conn: Conn, counts: SweepCounts, dry_run: bool) -> None:
        """Mark new orphans, un-mark returned rows, purge those past their grace within the bound."""
        policy = self.orphan_policy
        tables = await orphans.tables_with_marks(conn)
        if orphans.RESULTS in tables and not dry_run and (unmarked := await orphans.unmark_legacy(conn)):
            log.info("legacy_orphans_unmarked", rows=unmarked)
        for table in tables:
            if not dry_run:
                counts.restored += await orphans.restore(conn, table)
            listed = counts.paths.setdefault("orphan", []) if dry_run else None
            counts.orphans += await orphans.mark_pages(conn, table, self.page_size, listed)
        if orphans.FAILURES not in tables:
            counts.orphans_skipped = f"{orphans.FAILURES} has no orphaned_at column: its orphans are kept"
        if not self.share_online():
            counts.orphans_skipped = "share offline"
            return
        if await conn.fetchval(Q.ai_metadata_is_empty):
            counts.orphans_skipped = "ai_metadata is empty"
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
        async with self.pool.acquire() as conn:
            marked = await orphans.mark_hint(conn, path)
        if marked:
            log.info("orphan_marked", path=path)
        return marked
