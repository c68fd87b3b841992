"""Running instances: their heartbeat rows in reactor_instances, and the session lock that
keeps one process per instance id (reactor.core.instance_lock)."""

from __future__ import annotations

from datetime import datetime

from reactor.store.dbtypes import Conn
from reactor.store.errors import translated
from reactor.store.sql import Queries

Q = Queries("instances.sql")


async def heartbeat(conn: Conn, instance_id: str, hostname: str, pid: int, started_at: datetime, state: str) -> None:
    """This process's row, with its state as JSON text; never over a later owner's of the id."""
    with translated():
        await conn.execute(Q.heartbeat, instance_id, hostname, pid, started_at, state)


async def remove(conn: Conn, instance_id: str, started_at: datetime, pid: int) -> None:
    """This process's row only (its session epoch and pid)."""
    with translated():
        await conn.execute(Q.remove_instance, instance_id, started_at, pid)


async def live(conn: Conn, gone_after_seconds: float) -> list[str]:
    """The ids whose heartbeat is younger than ``gone_after_seconds``, in order."""
    with translated():
        rows = await conn.fetch(Q.live_instances, gone_after_seconds)
    return [r["instance_id"] for r in rows]


async def try_lock(conn: Conn, instance_id: str) -> bool:
    """Take the session lock on this id; False when another session holds it."""
    with translated():
        return bool(await conn.fetchval(Q.instance_try_lock, instance_id))
