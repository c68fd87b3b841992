"""The database side of the watcher's file events (reactor.watch.file_events decides
which of these a change on the share becomes): registrations, moves of results,
failures and registrations, deletions, and the reads that go with them.

Each function runs its statements (sql/file_events.sql) inside ``translated()``: the
caller sees the store's exceptions, never asyncpg's. A move or a deletion is one
transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from reactor.store import orphans
from reactor.store.dbtypes import Conn, rows_affected
from reactor.store.errors import translated
from reactor.store.sql import Queries
from reactor.util.identity import FileIdentity

Q = Queries("file_events.sql")

# Rows per statement when registering a whole share at start. Above 1000 new rows
# in one statement the ai_metadata trigger sends one "bulk" hint (a sweep) instead
# of a notification per row, which would overflow the queue on a large share.
CHUNK = 5000


def _chunks(items: Sequence[str]) -> list[list[str]]:
    return [list(items[i : i + CHUNK]) for i in range(0, len(items), CHUNK)]


async def register(conn: Conn, paths: Sequence[str]) -> int:
    """Standalone mode: these files are processed registrations now; rows written."""
    written = 0
    with translated():
        for chunk in _chunks(paths):
            written += rows_affected(await conn.execute(Q.register_files, chunk))
    return written


async def record_invalid_names(conn: Conn, paths: Sequence[str]) -> None:
    """Names PostgreSQL cannot store as they are (escaped): one permanent invalid_path failure each."""
    with translated():
        await conn.execute(Q.record_invalid_names, list(paths))


async def with_results(conn: Conn, paths: Sequence[str]) -> set[str]:
    with translated():
        return {r["image_path"] for r in await conn.fetch(Q.has_results, list(paths))}


async def registered_forms(conn: Conn, spellings: Sequence[str]) -> set[str]:
    """Which of these spellings (NFC/NFD variants) ai_metadata holds."""
    with translated():
        return {r["image_path"] for r in await conn.fetch(Q.row_forms, list(spellings))}


async def unreachable_under(conn: Conn, prefix: str, error_types: Sequence[str]) -> list[str]:
    """Failed photos below ``prefix`` whose last error is one of ``error_types``."""
    with translated():
        return [r["image_path"] for r in await conn.fetch(Q.unreachable_under, prefix, list(error_types))]


async def move_folder(conn: Conn, src_prefix: str, dst_prefix: str) -> int:
    """Standalone mode: results, failures and registrations under ``src_prefix`` move to
    ``dst_prefix``; stale rows under the destination go first. Results moved."""
    with translated():
        async with conn.transaction():
            # Stale rows under the destination belong to files that no longer exist.
            await conn.execute(Q.delete_results_prefix, dst_prefix)
            await conn.execute(Q.delete_failures_prefix, dst_prefix)
            moved = rows_affected(await conn.execute(Q.move_results_prefix, src_prefix, dst_prefix))
            await conn.execute(Q.move_failures_prefix, src_prefix, dst_prefix)
            await conn.execute(Q.delete_registrations_prefix, dst_prefix)
            await conn.execute(Q.move_registrations_prefix, src_prefix, dst_prefix)
    return moved


async def move_file(conn: Conn, src: str, dst: str) -> int:
    """Standalone mode: the result, failure and registration of ``src`` move to ``dst``,
    whose old content was replaced (its rows go). Results moved (0 or 1)."""
    with translated():
        async with conn.transaction():
            await conn.execute(Q.delete_results, dst)
            await conn.execute(Q.delete_failure, dst)
            moved = rows_affected(await conn.execute(Q.move_results, src, dst))
            await conn.execute(Q.move_failure, src, dst)
            await conn.execute(Q.clear_registration_target, src, dst)
            await conn.execute(Q.move_registration, src, dst)
            await conn.execute(Q.register_files, [dst])
    return moved


async def delete_file(conn: Conn, path: str) -> int:
    """Standalone mode: the file's rows are marked orphaned and its registration goes; rows marked."""
    with translated():
        async with conn.transaction():
            marked = await orphans.mark_gone(conn, [path], [])
            await conn.execute(Q.delete_registration, path)
    return marked


async def delete_folder(conn: Conn, prefix: str) -> int:
    """Standalone mode: the same for every file below ``prefix``."""
    with translated():
        async with conn.transaction():
            marked = await orphans.mark_gone(conn, [], [prefix])
            await conn.execute(Q.delete_registrations_prefix, prefix)
    return marked


async def identities(conn: Conn, paths: Sequence[str]) -> dict[str, FileIdentity]:
    """What the files of these paths' results were when detected."""
    out: dict[str, FileIdentity] = {}
    with translated():
        for chunk in _chunks(paths):
            rows = await conn.fetch(Q.file_identities, chunk)
            out.update({r["image_path"]: FileIdentity(r["size_bytes"], r["mtime_ns"], r["fingerprint"]) for r in rows})
    return out


async def requeue_changed_failures(
    conn: Conn,
    paths: Sequence[str],
    sizes: Sequence[int | None],
    mtimes_ns: Sequence[int | None],
    changed: Sequence[bool],
) -> list[str]:
    """Permanent failures (corrupt, unsupported, too_large) whose file is no longer the one
    that failed: their rows go, so they are detected as new. The paths of those rows."""
    requeued: list[str] = []
    with translated():
        for i in range(0, len(paths), CHUNK):
            end = i + CHUNK
            rows = await conn.fetch(
                Q.requeue_changed_failures,
                list(paths[i:end]),
                list(sizes[i:end]),
                list(mtimes_ns[i:end]),
                list(changed[i:end]),
            )
            requeued.extend(r["image_path"] for r in rows)
    return requeued


async def registered_page(conn: Conn, after: str, limit: int) -> list[str]:
    """Registered paths after ``after``, in order: one keyset page."""
    with translated():
        return [r["image_path"] for r in await conn.fetch(Q.registered_page, after, limit)]
