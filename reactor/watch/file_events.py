"""Where the watcher's changes go: the sink protocol and its database implementation.

The watcher decides *what* happened on the share (a photo is ready, moved, deleted);
the sink decides what that means for the database and the queue. A file event is a
hint: in vision-database mode the core's claim skips an image whose ai_metadata row
is not processed yet. In standalone mode the sink registers the file into
ai_metadata as processed, so detection follows the same NOTIFY path as upstream rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from reactor import logs
from reactor.failure_types import FILE_ACCESS
from reactor.paths import recordable, unicode_variants
from reactor.store import file_events, held
from reactor.store.connections import borrowed
from reactor.store.dbtypes import Conn, Pool
from reactor.util.identity import FileIdentity
from reactor.util.ratelimit import RateLimiter
from reactor.util.storable import storable

log = logs.get("reactor.file_events")


@dataclass(frozen=True)
class ReadyFile:
    path: str
    # The file was known before with another size or mtime: its content changed.
    changed: bool = False
    # Its size and mtime now (None: not known), compared with those of a permanent failure.
    size: int | None = None
    mtime_ns: int | None = None


class FileEventSink(Protocol):
    async def register(self, paths: Sequence[str]) -> int:
        """Standalone mode: make these files known as processed. Returns rows written."""
        ...

    async def ready(self, files: Sequence[ReadyFile]) -> None:
        """Photos whose size and mtime have been stable for the stability window."""
        ...

    async def moved(self, src: str, dst: str, *, directory: bool) -> None: ...

    async def deleted(self, path: str, *, directory: bool) -> None: ...

    async def rescanned(self, prefix: str) -> None:
        """A (re)scan finished or events were lost: reconcile with the database."""
        ...

    async def identities(self, paths: Sequence[str]) -> dict[str, FileIdentity]:
        """Standalone mode: the file identity of these paths' results (reactor.watch.moves); else empty."""
        ...

    async def result_identities(self, paths: Sequence[str]) -> dict[str, FileIdentity]:
        """In either mode: what the files of these paths' results were when detected (reactor.watch.returns)."""
        ...

    async def hold(self, paths: Sequence[str], reason: str) -> int:
        """A confirmed mass vanish: hold these deletions for the operator (reactor.store.held)."""
        ...

    async def held_count(self) -> int: ...

    async def refresh_failures(self, files: Sequence[ReadyFile]) -> list[str]:
        """Queue again the permanently failed photos among ``files`` that changed since they failed."""
        ...

    async def registered(self, after: str = "", limit: int | None = None) -> list[str]:
        """Paths this sink registered (standalone mode), past ``after`` in the database's
        order: at most ``limit``, or all; empty when it registers nothing."""
        ...


# enqueue(path, redetect) -> queued; the wiring binds it to ImageQueue.put(FILE_EVENT).
Enqueue = Callable[[str, bool], bool]


class DatabaseSink:
    """Applies file events to the reactor's tables and queues photos for detection."""

    def __init__(
        self,
        pool: Pool,
        enqueue: Enqueue,
        *,
        register_files: bool,
        request_sweep: Callable[[], None] | None = None,
    ) -> None:
        self.pool = pool
        self.enqueue = enqueue
        self.register_files = register_files
        self.request_sweep = request_sweep

    async def register(self, paths: Sequence[str]) -> int:
        if not self.register_files or not paths:
            return 0
        async with borrowed(self.pool) as conn:
            return await self._register(conn, paths)

    async def _register(self, conn: Conn, paths: Sequence[str]) -> int:
        if not self.register_files or not paths:
            return 0
        written = await file_events.register(conn, await self._without_invalid_names(conn, paths))
        if written:
            log.info("files_registered", files=written)
        return written

    async def _without_invalid_names(self, conn: Conn, paths: Sequence[str]) -> list[str]:
        """The paths PostgreSQL can store; the others (not UTF-8) are recorded as invalid_path."""
        valid = [p for p in paths if storable(p)]
        if len(valid) < len(paths):
            invalid = [recordable(p) for p in paths if not storable(p)]
            await file_events.record_invalid_names(conn, invalid)
            log.warning("file_names_invalid", files=len(invalid), sample=invalid[:3], effect="recorded as invalid_path")
        return valid

    async def ready(self, files: Sequence[ReadyFile]) -> None:
        if not files:
            return
        # One pooled connection for the whole batch: under a storm of events each
        # acquire is a wait for the pool that the detection lanes share.
        async with borrowed(self.pool) as conn:
            await self._register(conn, [f.path for f in files])  # standalone: invalid names recorded here
            if self.register_files:
                files = [f for f in files if storable(f.path)]
            else:
                files = await self._row_forms(conn, files)
            await self._requeue_changed(conn, files)
            for path in await held.release(conn, [f.path for f in files]):
                log.info("held_deletion_released", path=path, reason="the file is on the share again")
            changed = [f.path for f in files if f.changed]
            with_results: set[str] = set()
            if changed:
                with_results = await file_events.with_results(conn, changed)
        for f in files:
            redetect = f.path in with_results
            self.enqueue(f.path, redetect)
            if redetect:
                log.info("image_changed", path=f.path)

    async def _row_forms(self, conn: Conn, files: Sequence[ReadyFile]) -> list[ReadyFile]:
        """Vision mode: each file under the name its ai_metadata row spells (NFC or NFD)."""
        files = [f for f in files if storable(f.path)]
        odd = [f for f in files if not f.path.isascii()]
        if not odd:
            return files
        rows = await file_events.registered_forms(conn, [v for f in odd for v in unicode_variants(f.path)])
        out = []
        for f in files:
            form = next((v for v in unicode_variants(f.path) if v in rows), f.path) if not f.path.isascii() else f.path
            out.append(ReadyFile(form, f.changed))
        return out

    async def moved(self, src: str, dst: str, *, directory: bool) -> None:
        if not (storable(src) and storable(dst)):
            # One side has a name no row can carry: for the database it is a deletion
            # of the old name, or the arrival of the new one.
            _storable_only([src, dst], "moved")
            if storable(src):
                await self.deleted(src, directory=directory)
            elif storable(dst) and not directory:
                await self.ready([ReadyFile(dst)])
            elif storable(dst) and self.request_sweep is not None:
                self.request_sweep()
            return
        if not self.register_files:
            # Vision mode: ai_metadata and so the paths of results are the upstream's.
            # Its change of ai_metadata follows the move (a `deleted` hint marks the old
            # path's rows orphaned, a notification brings the new path); results are
            # never renamed or deleted on the watcher's word. The photos arriving with it
            # are queued; where the upstream's rows came first, they failed as missing
            # and are tried again now (reactor.core.moved then moves their results).
            log.info("folder_moved" if directory else "image_moved", src=src, dst=dst, results=0, followed="upstream")
            if not directory:
                self.enqueue(dst, False)
                return
            async with borrowed(self.pool) as conn:
                unreachable = await file_events.unreachable_under(conn, dst.rstrip("/") + "/", sorted(FILE_ACCESS))
            for path in unreachable:
                self.enqueue(path, False)
            return
        async with borrowed(self.pool) as conn:
            if directory:
                moved = await file_events.move_folder(conn, src.rstrip("/") + "/", dst.rstrip("/") + "/")
                log.info("folder_moved", src=src, dst=dst, results=moved)
            else:
                # The destination's old content was replaced: its results go.
                moved = await file_events.move_file(conn, src, dst)
                log.info("image_moved", src=src, dst=dst, results=moved)
        if not directory and not moved:
            # Nothing was detected for the source yet: the new path needs detection.
            self.enqueue(dst, False)

    async def deleted(self, path: str, *, directory: bool) -> None:
        """A deletion marks the rows orphaned (reactor.store.orphans); only the grace period purges them.

        Vision mode leaves results alone: the upstream's deletion of the ai_metadata row
        is what marks them. Standalone mode owns the registration, which goes now; a file
        that comes back is registered again and its rows are un-marked by the sweep.
        """
        if not _storable_only([path], "deleted"):
            return
        if not self.register_files:
            log.info("folder_deleted" if directory else "image_deleted", path=path, results=0, followed="upstream")
            return
        prefix = path.rstrip("/") + "/"
        async with borrowed(self.pool) as conn:
            if directory:
                marked = await file_events.delete_folder(conn, prefix)
                log.info("folder_deleted", path=path, orphaned=marked)
            else:
                marked = await file_events.delete_file(conn, path)
                log.info("image_deleted", path=path, orphaned=marked)

    async def identities(self, paths: Sequence[str]) -> dict[str, FileIdentity]:
        # In vision-database mode the upstream's ai_metadata decides what a path is.
        if not self.register_files:
            return {}
        return await self.result_identities(paths)

    async def result_identities(self, paths: Sequence[str]) -> dict[str, FileIdentity]:
        async with borrowed(self.pool) as conn:
            return await file_events.identities(conn, _storable_only(paths, "identities"))

    async def hold(self, paths: Sequence[str], reason: str) -> int:
        async with borrowed(self.pool) as conn:
            return await held.hold(conn, _storable_only(paths, "hold"), reason)

    async def held_count(self) -> int:
        async with borrowed(self.pool) as conn:
            return await held.count(conn)

    async def refresh_failures(self, files: Sequence[ReadyFile]) -> list[str]:
        async with borrowed(self.pool) as conn:
            requeued = await self._requeue_changed(conn, files)
        for path in requeued:
            self.enqueue(path, False)
        return requeued

    async def _requeue_changed(self, conn: Conn, files: Sequence[ReadyFile]) -> list[str]:
        kept = set(_storable_only([f.path for f in files], "refresh_failures"))
        files = [f for f in files if f.path in kept]
        requeued = await file_events.requeue_changed_failures(
            conn,
            [f.path for f in files],
            [f.size for f in files],
            [f.mtime_ns for f in files],
            [f.changed for f in files],
        )
        for path in requeued:
            log.info("failed_file_changed", path=path, effect="queued again")
        return requeued

    async def rescanned(self, prefix: str) -> None:
        if self.request_sweep is not None:
            self.request_sweep()

    async def registered(self, after: str = "", limit: int | None = None) -> list[str]:
        """The paths in ai_metadata (standalone reconciliation), read in keyset pages."""
        out: list[str] = []
        if not self.register_files:
            return out
        async with borrowed(self.pool) as conn:
            while limit is None or len(out) < limit:
                size = file_events.CHUNK if limit is None else min(file_events.CHUNK, limit - len(out))
                page = await file_events.registered_page(conn, out[-1] if out else after, size)
                if not page:
                    break
                out.extend(page)
        return out


_unstorable = RateLimiter(300.0, max_keys=100)


def _storable_only(paths: Sequence[str], where: str) -> list[str]:
    """The paths PostgreSQL can store. A file name that is not UTF-8 (or holds a NUL) is no
    ai_metadata path and matches no row: it is dropped here, logged once per caller and
    five minutes, instead of failing the whole statement it would have reached."""
    kept = [p for p in paths if storable(p)]
    if len(kept) < len(paths):
        allowed, suppressed = _unstorable.check(where)
        if allowed:
            sample = [recordable(p)[:200] for p in paths if not storable(p)][:3]
            log.warning(
                "file_names_unstorable", where=where, files=len(paths) - len(kept), sample=sample, suppressed=suppressed
            )
    return kept
