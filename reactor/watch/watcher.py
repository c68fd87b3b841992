"""Watching the share: turning file-system changes into queued work and path updates.

One watch session runs while the share is online: the observer (native inotify, or
the polling scanner on network shares, see reactor.watch.mounts), a start-up or
reconciliation scan, the stability tracker, and the delayed deletions. The session
ends when the share goes offline or the observer dies; the next one starts the
observer afresh and rescans, which reconciles whatever happened in between.

Events are hints; the sweep is the truth (watchdog 654, 1019). A deletion is
applied only after a short delay, if the file is certainly still gone (a re-check
that fails with anything but "not found", under a folder that is still there, is
unknown and the deletion waits) and the share is still online: an unmounted share
must never look like a deleted library. A mass vanish is held for one more look
(reactor.watch.share.VanishGuard), a deleted or moved-out folder counting as all its
known files; confirmed, it is held for the operator (reactor.store.held), as the
scanner's is. Applied deletions only mark rows orphaned. A path and its file name in
the other Unicode normalization (NFC/NFD) are one file in every "is it gone" check.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from enum import StrEnum

from reactor import logs
from reactor.config import Config
from reactor.paths import PathMapper, gone_by_folder, unicode_variants
from reactor.util.aio import first_of, sleep_or_stop, wait_any
from reactor.util.progress import Mode as ProgressMode
from reactor.util.progress import Progress
from reactor.watch.candidates import Candidates
from reactor.watch.file_events import FileEventSink, ReadyFile
from reactor.watch.folders import Signature
from reactor.watch.mounts import ObserverChoice, choose_observer, stability_window
from reactor.watch.moves import MoveMatcher
from reactor.watch.observer import NativeObserver, RawEvent
from reactor.watch.returns import changed_since_result
from reactor.watch.scanner import Scanner
from reactor.watch.share import ShareMonitor, VanishGuard, is_mass_vanish
from reactor.watch.stability import StabilityTracker

log = logs.get("reactor.watcher")

SUPERVISE_SECONDS = 1.0
# Paths per step of the start-up reconciliation (registered pages, snapshot chunks).
BASELINE_CHUNK = 5000
# Settled photos a walk hands over per batch (one look at their results, one sink call).
READY_PAGE = 1000
RESTART_MAX_SECONDS = 60.0


class WatcherState(StrEnum):
    STOPPED = "stopped"
    # The share is offline: no session until it is back.
    SHARE_OFFLINE = "share_offline"
    WATCHING = "watching"
    # The session failed or its observer died: a new one starts after a backoff.
    RESTARTING = "restarting"


class ObserverDied(RuntimeError):
    pass


class Watcher:
    def __init__(self, config: Config, mapper: PathMapper, share: ShareMonitor, sink: FileEventSink) -> None:
        self.config = config
        self.share = share
        self.sink = sink
        self.candidates = Candidates(config.images, config.watcher, mapper)
        self.scanner = Scanner(self.candidates, share)
        self.choice: ObserverChoice | None = None
        self.state = WatcherState.STOPPED
        self.sessions = 0
        self.rescans = 0
        # Deletions held for the operator (reactor.store.held), as of the last full scan.
        self.held_deletions = 0
        self.native: NativeObserver | None = None
        self.tracker = StabilityTracker(config.watcher.stability_seconds, self._on_stable, share.io)
        self._offline = asyncio.Event()
        self._rescan_wanted = asyncio.Event()
        self._listening = False
        # path -> (directory, due time): deletions wait a moment and are re-checked.
        self._pending_deletes: dict[str, tuple[bool, float]] = {}
        self._vanish = VanishGuard(config.watcher, "events")

    @property
    def window(self) -> float:
        if self.choice is None:
            return self.config.watcher.stability_seconds
        return stability_window(self.config, self.choice)

    async def run(self, stop: asyncio.Event) -> None:
        # Only started with watcher.enabled (reactor.core.service).
        self.choice = choose_observer(self.config)
        self.tracker.window = self.window
        self.scanner.use_inode = self.tracker.use_inode = self.choice.stable_inodes
        if not self.choice.stable_inodes:
            self.scanner.match_moves = MoveMatcher(self.sink.identities, self.candidates.local, self.share.io)
        log.info(
            "watcher_observer",
            observer=self.choice.kind,
            reason=self.choice.reason,
            fstype=self.choice.fstype,
            mount_point=self.choice.mount_point,
            stability_seconds=self.window,
            file_identity="inode" if self.scanner.use_inode else "path_size_mtime",
        )
        if not self._listening:  # the supervisor may run us again
            self.share.add_listener(self._on_share_change)
            self.share.io.add_recovery_listener(self._on_folder_recovered)
            self._listening = True
        backoff = 1.0
        while not stop.is_set():
            if not await self._wait_online(stop):
                break
            started = time.monotonic()
            try:
                await self._session(stop)
            except Exception as exc:
                died = _find(exc, ObserverDied)
                log.warning(
                    "observer_died" if died else "watch_session_failed",
                    error=str(died or exc),
                    restart_in=backoff,
                    exc_info=not died,
                )
                self.state = WatcherState.RESTARTING
                await sleep_or_stop(stop, backoff)
                backoff = 1.0 if time.monotonic() - started > 60 else min(RESTART_MAX_SECONDS, backoff * 2)
        self.state = WatcherState.STOPPED

    async def _wait_online(self, stop: asyncio.Event) -> bool:
        """Wait for the share (the ShareMonitor's run loop, or our own slow re-check)."""
        while not stop.is_set():
            if self.share.online or await self.share.acheck():
                return True
            self.state = WatcherState.SHARE_OFFLINE
            await first_of(self.share.wait_online(), stop, seconds=5.0)
        return False

    def _on_share_change(self, online: bool) -> None:
        if not online:
            self._offline.set()

    def _on_folder_recovered(self, _folder: str) -> None:
        # A stalled folder answers again: the scans skipped it, so walk the share now
        # (the polling observer would at its next interval; the native one never would).
        self._rescan_wanted.set()

    async def _session(self, stop: asyncio.Event) -> None:
        assert self.choice is not None
        self.sessions += 1
        self._offline.clear()
        self._pending_deletes.clear()
        session_stop = asyncio.Event()
        events: asyncio.Queue[RawEvent] = asyncio.Queue()
        if self.choice.kind == "native":
            self.native = NativeObserver(self.candidates.root, self.candidates.skip_dir)
            # Start watching before the scan, so nothing changed during the scan is missed.
            await asyncio.to_thread(self.native.start, asyncio.get_running_loop(), events.put_nowait)
        try:
            # The first session needs no extra sweep: the reactor sweeps at start-up.
            # A later one follows an outage or a dead observer, so events were missed.
            await self.rescan("", reconcile=self.sessions > 1)
            self.state = WatcherState.WATCHING
            log.info(
                "watch_started",
                observer=self.choice.kind,
                files=len(self.scanner.snapshot),
                session=self.sessions,
                filtered=self.native.filtered if self.native else None,
            )
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.tracker.run(session_stop), name="watch-stability")
                tg.create_task(self._consume(events, session_stop), name="watch-events")
                tg.create_task(self._flush_deletes(session_stop), name="watch-deletes")
                tg.create_task(self._supervise(session_stop), name="watch-supervise")
                tg.create_task(self._until_end(stop, session_stop), name="watch-end")
        finally:
            if self.native is not None:
                native, self.native = self.native, None
                await asyncio.to_thread(native.stop)
            if not stop.is_set():
                log.info("watch_paused", reason=self.share.reason if not self.share.online else "restart")

    async def _until_end(self, stop: asyncio.Event, session_stop: asyncio.Event) -> None:
        await wait_any(stop, self._offline)
        session_stop.set()

    async def _supervise(self, session_stop: asyncio.Event) -> None:
        """Native: check that watchdog's threads live. Polling: scan every interval."""
        assert self.choice is not None
        interval = SUPERVISE_SECONDS if self.native else self.config.watcher.scan_interval_seconds
        while not session_stop.is_set():
            woke = await wait_any(session_stop, self._rescan_wanted, seconds=interval)
            if woke is session_stop:
                return
            if self.native is not None and not self.native.alive():
                raise ObserverDied("a watchdog observer or emitter thread has stopped")
            if self.native is None or woke is self._rescan_wanted:
                self._rescan_wanted.clear()
                await self.rescan("")

    async def rescan(self, prefix: str, *, reconcile: bool = False) -> None:
        """Walk the share (or one folder) and apply what changed since the last walk."""
        baseline = not self.scanner.baseline_done and not prefix
        changes = await self.scanner.scan(prefix)
        if changes is None:
            return
        self.rescans += 1
        if baseline:
            # The files count as known only once all of the baseline's work committed: if
            # any of it fails (the database, at any step), the next session walks and
            # registers from scratch (every step is idempotent).
            try:
                await self._baseline()
            except BaseException:
                self.scanner.forget_baseline()
                raise
        else:
            now_ns = time.time_ns()
            settled: list[tuple[str, Signature]] = []
            for path in changes.created + changes.modified:
                sig = self.scanner.snapshot.get(path)
                if sig is not None and path in changes.created and now_ns - sig[1] > self.window * 1e9:
                    # Unchanged for longer than the window already: no need to watch it settle.
                    settled.append((path, sig))
                else:
                    self.tracker.watch(path, self.candidates.local(path))
            await self._ready_in_pages(settled, changed=False)
            for src, dst in changes.moved:
                await self._move(src, dst, directory=False)
            for path in changes.deleted:
                self._queue_delete(path, directory=False)
        if changes.held:
            await self._hold(changes.held, "mass_vanish_confirmed")
        if not prefix:
            self.held_deletions = await self.sink.held_count()
        if reconcile:
            await self.sink.rescanned(prefix)

    async def _baseline(self) -> None:
        """Start-up: register what is there (standalone) and let the sweep find work.

        The registered paths are read in keyset pages and the snapshot folder by folder,
        ``BASELINE_CHUNK`` files at a time: start-up memory does not grow with the library."""
        registered, missing = await self._missing_registered()
        missing = await self._moved_while_away(missing)
        for chunk in self._snapshot_chunks("start_register"):
            await self.sink.register([p for p, _ in chunk])
        await self._reconcile_registered(missing, registered)
        changed: list[str] = []
        for chunk in self._snapshot_chunks("start_checks"):
            # Permanent failures whose file changed while nobody was watching.
            await self.sink.refresh_failures([ReadyFile(p, size=s[0], mtime_ns=s[1]) for p, s in chunk])
            # Results whose file was overwritten while nobody was watching.
            changed.extend(await self._changed_while_away({p: (s[0], s[1]) for p, s in chunk}))
        if changed:
            log.info("files_changed_while_away", files=len(changed), sample=changed[:3])

    def _snapshot_chunks(self, label: str) -> Iterator[list[tuple[str, Signature]]]:
        """The snapshot in lists of ``BASELINE_CHUNK``, with progress events on a large share."""
        total = len(self.scanner.snapshot)
        mode: ProgressMode = "events" if total > BASELINE_CHUNK else "off"
        with Progress(total, label, mode=mode, interval=self.scanner.progress_interval) as p:
            chunk: list[tuple[str, Signature]] = []
            for item in self.scanner.snapshot.entries():
                chunk.append(item)
                if len(chunk) >= BASELINE_CHUNK:
                    yield chunk
                    p.advance(len(chunk))
                    chunk = []
            if chunk:
                yield chunk
                p.advance(len(chunk))

    async def _registered_pages(self) -> AsyncIterator[list[str]]:
        """The registered candidate paths (standalone mode), a keyset page at a time."""
        after = ""
        while page := await self.sink.registered(after, BASELINE_CHUNK):
            after = page[-1]
            yield [p for p in page if self.candidates.accepts(p)]

    async def _missing_registered(self) -> tuple[int, list[str]]:
        """(how many registered candidates there are, those the baseline did not see)."""
        count, missing = 0, list[str]()
        async for page in self._registered_pages():
            count += len(page)
            missing.extend(p for p in page if not self._on_share(p))
        return count, missing

    async def _moved_while_away(self, missing: list[str]) -> list[str]:
        """Standalone, network share: files renamed on the server while the reactor was
        away keep their results (reactor.watch.moves). Returns ``missing`` less the moved."""
        if self.scanner.match_moves is None or not missing or not self.scanner.last_complete:
            return missing
        appeared = await self._unregistered_like(missing)
        moved = set()
        for src, dst in await self.scanner.match_moves(missing, appeared):
            await self._move(src, dst, directory=False)
            moved.add(src)
        return [p for p in missing if p not in moved]

    async def _unregistered_like(self, missing: list[str]) -> dict[str, tuple[int, int]]:
        """The files on the share, not registered in any Unicode form, whose size is that
        of a missing path's result (a rename keeps the size): the only ones that can be
        one of them moved, so this is bounded by those, not by the library."""
        sizes = {identity.size for identity in (await self.sink.identities(missing)).values()}
        appeared = {p: (s[0], s[1]) for p, s in self.scanner.snapshot.entries() if s[0] in sizes}
        if appeared:
            async for page in self._registered_pages():
                for path in page:
                    for variant in unicode_variants(path):
                        appeared.pop(variant, None)
        return appeared

    async def _reconcile_registered(self, missing: list[str], registered: int) -> None:
        """Standalone: registered files that are gone from the share are deletions."""
        if not missing or not self.scanner.last_complete or not await self.share.acheck():
            return
        if is_mass_vanish(self.config.watcher, len(missing), registered):
            # Too many at once to take as deleted while nobody watched: the operator decides.
            await self._hold(missing, "mass_vanish_at_start")
            return
        # Each one is re-checked and mass-vanish guarded like an observed deletion.
        for path in missing:
            self._queue_delete(path, directory=False)

    def _on_share(self, path: str) -> bool:
        """Whether the last walk saw this registered path, in any Unicode normalization
        (a row stored NFC whose file name is NFD is that file, not a deletion)."""
        return any(v in self.scanner.snapshot for v in unicode_variants(path))

    def _known_files(self, path: str, directory: bool) -> list[str]:
        """The known files a deleted path stands for: a folder is every file below it."""
        if not directory:
            return [path]
        return [p for p, _ in self.scanner.snapshot.entries(path)]

    async def _changed_while_away(self, files: dict[str, tuple[int, int]]) -> list[str]:
        changed = await changed_since_result(files, self.sink.result_identities, self.candidates.local)
        if changed:
            await self.sink.ready([ReadyFile(p, changed=True, size=files[p][0], mtime_ns=files[p][1]) for p in changed])
        return changed

    async def _hold(self, paths: list[str], reason: str) -> None:
        """Hold these deletions once (reactor.store.held): logged, shown, never retried here."""
        new = await self.sink.hold(paths, reason)
        for path in paths:
            self.scanner.forget(path)
        self.held_deletions = await self.sink.held_count()
        if new:
            log.warning(
                "deletions_held",
                files=new,
                held=self.held_deletions,
                reason=reason,
                advice="check the share; `reactor deletions` lists them, `reactor deletions --apply` "
                "deletes their results (with a backup); files that come back are released",
            )

    async def _consume(self, events: asyncio.Queue[RawEvent], session_stop: asyncio.Event) -> None:
        while not session_stop.is_set():
            event = await first_of(events.get(), session_stop)
            if event is None:
                return
            await self._handle(event)

    async def _handle(self, ev: RawEvent) -> None:
        c = self.candidates
        if ev.kind == "overflow":
            log.warning("event_queue_overflow", root=ev.src)
            await self.rescan("", reconcile=True)
        elif ev.kind in ("created", "modified") and not ev.directory:
            path = c.image_path(ev.src)
            if path is not None:
                self.tracker.touch(path, ev.src)
        elif ev.kind == "moved" and not ev.synthetic:
            # A folder move also produces synthetic moves of its contents: handled as a whole.
            src = c.dir_path(ev.src) if ev.directory else c.image_path(ev.src)
            dst = c.dir_path(ev.dst) if ev.directory else c.image_path(ev.dst)
            if src is not None and dst is not None:
                await self._move(src, dst, directory=ev.directory)
            elif src is not None:
                self._queue_delete(src, directory=ev.directory)
            elif dst is not None and ev.directory:
                await self.rescan(dst)
            elif dst is not None:
                self.tracker.touch(dst, ev.dst)
        elif ev.kind == "deleted":
            path = c.dir_path(ev.src) if ev.directory else c.image_path(ev.src)
            if path is not None:
                self._queue_delete(path, directory=ev.directory)

    async def _on_stable(self, settled: list[tuple[str, Signature]]) -> None:
        # Thousands of photos settling at once (a copy, a restore) are looked at and handed
        # over a page at a time, not one round trip each. Each page is sorted just before it
        # goes, as one file was before: events and walks go on during the earlier pages.
        for start in range(0, len(settled), READY_PAGE):
            new: list[tuple[str, Signature]] = []
            changed: list[tuple[str, Signature]] = []
            for path, sig in settled[start : start + READY_PAGE]:
                if path in self.tracker:
                    continue  # touched again meanwhile: it settles anew
                prior = self.scanner.snapshot.get(path)
                if prior == sig:
                    continue  # no content change (touch, open for write), or a walk handed it over
                (new if prior is None else changed).append((path, sig))
            await self._ready(new, changed=False)
            await self._ready(changed, changed=True)

    async def _ready_in_pages(self, files: list[tuple[str, Signature]], *, changed: bool) -> None:
        for start in range(0, len(files), READY_PAGE):
            await self._ready(files[start : start + READY_PAGE], changed=changed)

    async def _ready(self, files: list[tuple[str, Signature]], *, changed: bool) -> None:
        """Photos whose content has settled, handed to the sink in one batch. ``changed``:
        each replaces content seen before; else each is new or back (a held deletion, an
        orphan), and its result, if any, must be of this content."""
        if not files:
            return
        try:
            if changed:
                replaced = {path for path, _ in files}
            else:
                found = {path: (sig[0], sig[1]) for path, sig in files}
                replaced = set(await changed_since_result(found, self.sink.result_identities, self.candidates.local))
            await self.sink.ready(
                [ReadyFile(path, changed=path in replaced, size=sig[0], mtime_ns=sig[1]) for path, sig in files]
            )
        except Exception as exc:
            # Nothing in these statements refuses one path alone (names the database cannot
            # store were filtered): a failure is the database's, and every file waits again.
            log.warning("file_event_failed", path=files[0][0], files=len(files), error=str(exc))
            for path, _ in files:
                self.tracker.touch(path, self.candidates.local(path))
            return
        for path, sig in files:
            self.scanner.record(path, sig)

    async def _move(self, src: str, dst: str, *, directory: bool) -> None:
        try:
            await self.sink.moved(src, dst, directory=directory)
        except Exception as exc:
            # The snapshot keeps the old path, so the next rescan reports the move again.
            log.warning("file_event_failed", src=src, dst=dst, error=str(exc))
            return
        if directory:
            self.scanner.move_prefix(src, dst)
            self.tracker.discard_prefix(src)
        else:
            self.scanner.move(src, dst)
            self.tracker.rename(src, dst, self.candidates.local(dst))

    def _queue_delete(self, path: str, *, directory: bool) -> None:
        self.tracker.discard(path)
        if directory:
            self.tracker.discard_prefix(path)
        if path not in self._pending_deletes:  # a repeated scan must not push the deadline back
            self._pending_deletes[path] = (directory, time.monotonic() + min(self.window, 2.0))

    async def _flush_deletes(self, session_stop: asyncio.Event) -> None:
        tick = max(0.05, min(0.5, self.window / 4))
        while not session_stop.is_set():
            await sleep_or_stop(session_stop, tick)
            now = time.monotonic()
            due = {p: d for p, (d, t) in self._pending_deletes.items() if t <= now}
            if not due:
                continue
            for path in due:
                del self._pending_deletes[path]
            if not await self.share.acheck():
                log.info("deletes_withheld", files=len(due), reason=self.share.reason)
                continue
            # Per folder on the share's threads: a stalled folder's paths are unknown; a name
            # and its other Unicode form are one file (reactor.paths.gone_states).
            states = await gone_by_folder(self.share.io, list(due), self.candidates.local)
            unknown = [p for p in due if states[p] is None]
            if unknown:
                # EIO, EACCES, a vanished parent folder: not "deleted". Looked at again later.
                log.info("deletes_withheld", files=len(unknown), reason="recheck_failed")
                for path in unknown:
                    self._pending_deletes[path] = (due[path], now + self.hold_seconds)
            gone = [p for p in due if states[p]]
            # A deleted or moved-out folder counts as all its known files, not one path.
            files = {p: self._known_files(p, due[p]) for p in gone}
            sizes = {p: len(f) for p, f in files.items()}
            believed, confirmed = self._vanish.sort(gone, max(len(self.scanner.snapshot), 1), sizes)
            decided = set(believed) | set(confirmed)
            for path in gone:
                if path not in decided:  # a fresh mass vanish is looked at once more
                    self._pending_deletes[path] = (due[path], now + self.hold_seconds)
            if confirmed:
                # Still gone at the second look: a decision for the operator, as the scanner's.
                await self._hold(sorted({f for p in confirmed for f in files[p]}), "mass_vanish_confirmed")
            for path in sorted(believed):
                await self._apply_delete(path, due[path])

    @property
    def hold_seconds(self) -> float:
        """How long a doubtful deletion waits before it is looked at again."""
        return max(2.0, 2 * self.window, 2 * self.config.watcher.scan_interval_seconds)

    async def _apply_delete(self, path: str, directory: bool) -> None:
        try:
            await self.sink.deleted(path, directory=directory)
        except Exception as exc:
            log.warning("file_event_failed", path=path, error=str(exc))
            return
        if directory:
            self.scanner.forget_prefix(path)
        else:
            self.scanner.forget(path)


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find(inner, kind)
            if found is not None:
                return found
    return None
