"""Notifications: sending one, listening on a connection of its own, and who sent one.

The driver's side of the LISTEN connection lives here (its keepalive, ``add_listener``);
what the reactor does when it is lost, and how it reconnects, is reactor.core.listener's.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from reactor.config import Config
from reactor.store.connections import Session
from reactor.store.dbtypes import Conn
from reactor.store.errors import translated
from reactor.store.sql import Queries

Q = Queries("notifications.sql")

KEEPALIVE_IDLE_SECONDS = 30
KEEPALIVE_INTERVAL_SECONDS = 10
KEEPALIVE_COUNT = 3

# (pid of the notifying backend, channel, payload)
Handler = Callable[[int, str, object], None]


async def notify(conn: Conn, channel: str, payload: str) -> None:
    with translated():
        await conn.execute(Q.notify, channel, payload)


async def backend_role(conn: Conn, pid: int) -> str | None:
    """The role of the backend with this pid (a notification's sender); None once it is gone."""
    with translated():
        role: str | None = await conn.fetchval(Q.backend_role, pid)
    return role


async def current_role(conn: Conn) -> str:
    with translated():
        return str(await conn.fetchval(Q.current_role))


def enable_keepalive(conn: Conn) -> bool:
    """TCP keepalive on the client side of the socket; False on a unix socket."""
    transport = getattr(conn, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE_SECONDS),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_SECONDS),
        ("TCP_KEEPCNT", KEEPALIVE_COUNT),
    ):
        option = getattr(socket, name, None)
        if option is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
    return True


async def open_listener(dsn: str, config: Config, application_name: str) -> Session:
    """A session for LISTEN, with keepalive on both sides of a TCP socket (PostgreSQL
    ignores its settings on a unix socket); DatabaseUnavailable when it cannot be opened."""
    session = await Session.open(
        dsn,
        config,
        application_name,
        tcp_keepalives_idle=str(KEEPALIVE_IDLE_SECONDS),
        tcp_keepalives_interval=str(KEEPALIVE_INTERVAL_SECONDS),
        tcp_keepalives_count=str(KEEPALIVE_COUNT),
    )
    try:
        with translated():  # a socket that refuses the option is a broken one
            enable_keepalive(session.conn)
    except BaseException:
        session.terminate()
        raise
    return session


def _callback(handler: Handler) -> Callable[[Any, int, str, object], None]:
    return lambda _conn, pid, channel, payload: handler(pid, channel, payload)


async def listen(session: Session, channels: Iterable[str], handler: Handler) -> None:
    """LISTEN on every channel of the session; ``handler`` gets each notification."""
    callback = _callback(handler)
    with translated():
        for channel in channels:
            await session.conn.add_listener(channel, callback)


@contextlib.asynccontextmanager
async def listening(conn: Conn, channel: str, wake: Callable[[], None]) -> AsyncIterator[None]:
    """LISTEN on ``channel`` for the block; ``wake()`` on each notification."""
    callback = _callback(lambda _pid, _channel, _payload: wake())
    with translated():
        await conn.add_listener(channel, callback)
    try:
        yield
    finally:
        with translated():
            await conn.remove_listener(channel, callback)
