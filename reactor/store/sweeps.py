"""The sweep's own statements (reactor.core.sweep): the advisory lock that lets one
instance sweep at a time, and the keyset pages of due retries and pending rows. The
change log is reactor.store.changes; the orphans, reactor.store.orphans."""

from __future__ import annotations

from reactor.store.dbtypes import Conn
from reactor.store.errors import translated
from reactor.store.sql import Queries

Q = Queries("sweep.sql")

# pg_try_advisory_lock key: "FACE" 2 (1 is `db init`).
LOCK_KEY = 0x46414345_0002


async def try_lock(conn: Conn) -> bool:
    """Take the sweep's session lock; False when another session sweeps."""
    with translated():
        return bool(await conn.fetchval(Q.sweep_try_lock, LOCK_KEY))


async def unlock(conn: Conn) -> None:
    with translated():
        await conn.fetchval(Q.sweep_unlock, LOCK_KEY)


async def due_retries(conn: Conn, after: str, limit: int, instance_id: str) -> list[str]:
    """Failed images due again, after ``after`` (keyset), not under another instance's live claim."""
    with translated():
        rows = await conn.fetch(Q.due_retries, after, limit, instance_id)
    return [r["image_path"] for r in rows]


async def pending_images(conn: Conn, after: str, limit: int, instance_id: str, upper: str) -> list[str]:
    """Processed rows without an outcome (or whose re-detection was asked), after ``after``
    up to ``upper`` (a window of the table), not under another instance's live claim."""
    with translated():
        rows = await conn.fetch(Q.pending_images, after, limit, instance_id, upper)
    return [r["image_path"] for r in rows]


async def ai_metadata_is_empty(conn: Conn) -> bool:
    with translated():
        return bool(await conn.fetchval(Q.ai_metadata_is_empty))
