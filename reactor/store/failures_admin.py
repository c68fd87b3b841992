"""Failures managed by hand (sql/failures_admin.sql): list, retry, forget, blacklist,
and the notification that wakes a running reactor for the retried images.

Each function runs its statements inside ``translated()``; retry and blacklist are one
transaction each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reactor.store.dbtypes import Conn
from reactor.store.errors import translated
from reactor.store.sql import Queries

Q = Queries("failures_admin.sql")


async def listed(conn: Conn, error_type: str | None, permanent_only: bool) -> list[dict[str, Any]]:
    """The failure rows (image_path, error_type, retry_count, permanent, next_retry_after,
    last_failure_at, last_error), by path; ``error_type`` None: every type."""
    with translated():
        return [dict(r) for r in await conn.fetch(Q.failures_list, error_type, permanent_only)]


async def _notify(conn: Conn, channel: str, paths: Sequence[str], limit: int) -> int:
    # Beyond ``limit`` paths, one NOTIFY each would flood the reactor's bounded queue: one
    # "bulk" hint (the trigger's format) makes it sweep instead, and the sweep finds them.
    if not paths:
        return 0
    if len(paths) > limit:
        await conn.execute(Q.notify_bulk, channel, len(paths))
        return 1
    await conn.execute(Q.notify_retry, channel, list(paths))
    return len(paths)


async def retry(
    conn: Conn,
    channel: str,
    *,
    paths: Sequence[str] = (),
    error_type: str | None = None,
    everything: bool = False,
    notify_limit: int,
) -> tuple[list[str], int]:
    """Make failures due now and not permanent (every one but the blacklist, those of one
    type, or the paths named) and notify a running reactor. The retried paths (named
    ones in the order asked, else sorted) and the notifications sent."""
    with translated():
        # The NOTIFY is sent in the same transaction, so it arrives only after the rows are due.
        async with conn.transaction():
            if everything:
                rows = await conn.fetch(Q.failures_retry_all)
            elif error_type is not None:
                rows = await conn.fetch(Q.failures_retry_type, error_type)
            else:
                rows = await conn.fetch(Q.failures_retry_paths, list(paths))
            changed = {r["image_path"] for r in rows}
            named = not everything and error_type is None
            done = [p for p in dict.fromkeys(paths) if p in changed] if named else sorted(changed)
            return done, await _notify(conn, channel, done, notify_limit)


async def forget(conn: Conn, paths: Sequence[str]) -> list[str]:
    """Delete failure rows; the paths that had one."""
    with translated():
        return [r["image_path"] for r in await conn.fetch(Q.failures_forget, list(paths))]


async def blacklist(conn: Conn, paths: Sequence[str], reason: str) -> list[str]:
    """Mark paths permanently failed (type `blacklisted`), dropping any results they had;
    the paths written."""
    with translated():
        async with conn.transaction():
            await conn.execute(Q.blacklist_fence_claims, list(paths))
            await conn.execute(Q.blacklist_drop_results, list(paths))
            rows = await conn.fetch(Q.blacklist_upsert, list(paths), reason)
    return [r["image_path"] for r in rows]
