"""The replies to `reactor sweep` requests, as rows of reactor_control_replies: only the
reactor's role may write them, so the command believes them and not the NOTIFY
(reactor.core.control)."""

from __future__ import annotations

from dataclasses import dataclass

from reactor.store.dbtypes import Conn
from reactor.store.errors import translated
from reactor.store.sql import Queries

Q = Queries("control.sql")


@dataclass(frozen=True)
class Reply:
    instance_id: str
    swept: bool
    # The reply's JSON text.
    reply: str


async def write(conn: Conn, request_id: str, instance_id: str, swept: bool, reply: str) -> None:
    """This instance's reply to one request (replies older than an hour go at the same time)."""
    with translated():
        await conn.execute(Q.control_reply_write, request_id, instance_id, swept, reply)


async def read(conn: Conn, request_id: str) -> list[Reply]:
    """The replies to one request, oldest first."""
    with translated():
        rows = await conn.fetch(Q.control_replies, request_id)
    return [Reply(r["instance_id"], r["swept"], r["reply"]) for r in rows]
