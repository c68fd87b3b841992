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

import asyncpg

from reactor import logs
from reactor.failure_types import FILE_ACCESS
from reactor.paths import recordable, unicode_variants
from reactor.store import held, orphans
from reactor.store.dbtypes import Conn, rows_affected
from reactor.store.sql import Queries
from reactor.util.identity import FileIdentity
from reactor.util.ratelimit import RateLimiter
from reactor.util.storable import storable

Q = Queries("watcher.sql")
log = logs.get("reactor.file_events")

# Rows per statement when registering a whole share at start. Above 1000 new rows
# in one statement the ai_metadata trigger sends one "bulk" hint (a sweep) instead
# of a notification per row, which would overflow the queue on a large share.
REGISTER_CHUNK = 5000


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
        pool: asyncpg.Pool,
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
        async with self.pool.acquire() as conn:
            return await self._register(conn, paths)

    async def _register(self, conn: Conn, paths: Sequence[str]) -> int:
        if not self.register_files or not paths:
            return 0
        paths = await self._without_invalid_names(conn, paths)
        written = 0
        for i in range(0, len(paths), REGISTER_CHUNK):
            status = await conn.execute(Q.register_files, list(paths[i : i + REGISTER_CHUNK]))
            written += rows_affected(status)
        if written:
            log.info("files_registered", files=written)
        return written

    async def _without_invalid_names(self, conn: Conn, paths: Sequence[str]) -> list[str]:
        """The paths PostgreSQL can store; the others (not UTF-8) are recorded as invalid_path."""
        valid = [p for p in paths if storable(p)]
        if len(valid) < len(paths):
            invalid = [recordable(p) for p in paths if not storable(p)]
            await conn.execute(Q.record_invalid_names, invalid)
            log.warning("file_names_invalid", files=len(invalid), sample=invalid[:3], effect="recorded as invalid_path")
        return valid

    async def ready(self, files: Sequence[ReadyFile]) -> None:
        if not files:
            return
        # One pooled connection for the whole batch: under a storm of events each
        # acquire is a wait for the pool that the detection lanes share.
        async with self.pool.acquire() as conn:
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
                with_results = {r["image_path"] for r in await conn.fetch(Q.has_results, changed)}
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
        rows = {
            r["image_path"] for r in await conn.fetch(Q.row_forms, [v for f in odd for v in unicode_variants(f.path)])
        }
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
            async with self.pool.acquire() as conn:
                rows = await conn.fetch(Q.unreachable_under, dst.rstrip("/") + "/", sorted(FILE_ACCESS))
            for row in rows:
                self.enqueue(row["image_path"], False)
            return
        async with self.pool.acquire() as conn, conn.transaction():
            if directory:
                src_p, dst_p = src.rstrip("/") + "/", dst.rstrip("/") + "/"
                # Stale rows under the destination belong to files that no longer exist.
                await conn.execute(Q.delete_results_prefix, dst_p)
                await conn.execute(Q.delete_failures_prefix, dst_p)
                moved = rows_affected(await conn.execute(Q.move_results_prefix, src_p, dst_p))
                await conn.execute(Q.move_failures_prefix, src_p, dst_p)
                await conn.execute(Q.delete_registrations_prefix, dst_p)
                await conn.execute(Q.move_registrations_prefix, src_p, dst_p)
                log.info("folder_moved", src=src, dst=dst, results=moved)
            else:
                # The destination's old content was replaced: its results go.
                await conn.execute(Q.delete_results, dst)
                await conn.execute(Q.delete_failure, dst)
                moved = rows_affected(await conn.execute(Q.move_results, src, dst))
                await conn.execute(Q.move_failure, src, dst)
                await conn.execute(Q.clear_registration_target, src, dst)
                await conn.execute(Q.move_registration, src, dst)
                await conn.execute(Q.register_files, [dst])
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
        async with self.pool.acquire() as conn, conn.transaction():
            if directory:
                marked = await orphans.mark_gone(conn, [], [prefix])
                await conn.execute(Q.delete_registrations_prefix, prefix)
                log.info("folder_deleted", path=path, orphaned=marked)
            else:
                marked = await orphans.mark_gone(conn, [path], [])
                await conn.execute(Q.delete_registration, path)
                log.info("image_deleted", path=path, orphaned=marked)

    async def identities(self, paths: Sequence[str]) -> dict[str, FileIdentity]:
        # In vision-database mode the upstream's ai_metadata decides what a path is.
        if not self.register_files:
            return {}
        return await self.result_identities(paths)

    async def result_identities(self, paths: Sequence[str]) -> dict[str, FileIdentity]:
        out: dict[str, FileIdentity] = {}
        async with self.pool.acquire() as conn:
            paths = _storable_only(paths, "identities")
            for i in range(0, len(paths), REGISTER_CHUNK):
                rows = await conn.fetch(Q.file_identities, list(paths[i : i + REGISTER_CHUNK]))
                out.update(
                    {r["image_path"]: FileIdentity(r["size_bytes"], r["mtime_ns"], r["fingerprint"]) for r in rows}
                )
        return out

    async def hold(self, paths: Sequence[str], reason: str) -> int:
        async with self.pool.acquire() as conn:
            return await held.hold(conn, _storable_only(paths, "hold"), reason)

    async def held_count(self) -> int:
        async with self.pool.acquire() as conn:
            return await held.count(conn)

    async def refresh_failures(self, files: Sequence[ReadyFile]) -> list[str]:
        async with self.pool.acquire() as conn:
            requeued = await self._requeue_changed(conn, files)
        for path in requeued:
            self.enqueue(path, False)
        return requeued

    async def _requeue_changed(self, conn: Conn, files: Sequence[ReadyFile]) -> list[str]:
        requeued: list[str] = []
        kept = set(_storable_only([f.path for f in files], "refresh_failures"))
        files = [f for f in files if f.path in kept]
        for i in range(0, len(files), REGISTER_CHUNK):
            chunk = files[i : i + REGISTER_CHUNK]
            rows = await conn.fetch(
                Q.requeue_changed_failures,
                [f.path for f in chunk],
                [f.size for f in chunk],
                [f.mtime_ns for f in chunk],
                [f.changed for f in chunk],
            )
            requeued.extend(r["image_path"] for r in rows)
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
        async with self.pool.acquire() as conn:
            while limit is None or len(out) < limit:
                size = REGISTER_CHUNK if limit is None else min(REGISTER_CHUNK, limit - len(out))
                rows = await conn.fetch(Q.registered_page, out[-1] if out else after, size)
                if not rows:
                    break
                out.extend(r["image_path"] for r in rows)
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
