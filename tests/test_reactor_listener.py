"""The listener against a connection that silently stops carrying traffic (no FIN, no RST):
only the `SELECT 1` probe with its timeout can notice. A TCP proxy in front of the real
PostgreSQL freezes its open connections while new ones still get through."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from reactor.config import Config
from reactor.core.listener import Listener
from reactor.store.notifications import enable_keepalive
from tests.pg import PgServer
from tests.reactor_support import wait_until


class FreezingProxy:
    """127.0.0.1:port -> PostgreSQL's unix socket. ``freeze()`` stops forwarding on every
    connection open now, without closing it, as a dead NAT entry or a pulled cable would."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.port = 0
        self._frozen: list[asyncio.Event] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def freeze(self) -> None:
        for gate in self._frozen:
            gate.clear()
        self._frozen.clear()

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_unix_connection(self.socket_path)
        gate = asyncio.Event()
        gate.set()
        self._frozen.append(gate)
        pipes = [
            asyncio.create_task(self._pipe(client_r, server_w, gate)),
            asyncio.create_task(self._pipe(server_r, client_w, gate)),
        ]
        self._tasks.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pipes:
                task.cancel()
                self._tasks.discard(task)
            for writer in (client_w, server_w):
                writer.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gate: asyncio.Event) -> None:
        while data := await reader.read(65536):
            await gate.wait()  # frozen: bytes are swallowed by a connection that never ends
            writer.write(data)
            await writer.drain()


@pytest.fixture
async def proxy(pg: PgServer) -> AsyncIterator[FreezingProxy]:
    p = FreezingProxy(str(Path(pg.socket_dir) / ".s.PGSQL.5432"))
    await p.start()
    yield p
    await p.close()


async def test_probe_notices_a_silent_connection_and_the_listener_reconnects(
    make_config: Callable[..., Config], database: str, proxy: FreezingProxy
) -> None:
    tcp_dsn = f"postgresql://postgres@127.0.0.1:{proxy.port}/{database}"
    config = make_config(
        database={
            "dsn": tcp_dsn,
            "probe_interval_seconds": 0.5,
            "probe_timeout_seconds": 0.5,
            "reconnect_max_seconds": 1.0,
        }
    )
    received: list[dict[str, Any]] = []
    connected: list[bool] = []

    def on_connected() -> None:
        # Whether this connection is a reconnect: the listener has counted it already.
        connected.append(listener.reconnects > 0)

    listener = Listener(config, tcp_dsn, "test", lambda _ch, data, _pid: received.append(data), on_connected)
    stop = asyncio.Event()
    task = asyncio.create_task(listener.run(stop))
    try:

        async def up(times: int) -> bool:
            return len(connected) >= times and listener.state == "connected"

        await wait_until(lambda: up(1), 30, "the listener to connect")
        proxy.freeze()

        async def lost() -> bool:
            return listener.state == "polling" or len(connected) >= 2

        await wait_until(lost, 30, "the probe to notice the frozen connection")
        await wait_until(lambda: up(2), 30, "the listener to reconnect")
        assert connected == [False, True] and listener.reconnects == 1
        # The new connection LISTENs: a notification arrives.
        sender = await asyncpg.connect(tcp_dsn)
        try:
            await sender.execute("""SELECT pg_notify('face_reactor', '{"type": "processed", "path": "a.jpg"}')""")
        finally:
            with contextlib.suppress(Exception):
                await sender.close()

        async def notified() -> bool:
            return received == [{"type": "processed", "path": "a.jpg"}]

        await wait_until(notified, 30, "the notification after the reconnect")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_keepalive_is_set_on_tcp_and_skipped_on_a_unix_socket(
    database: str, dsn: str, proxy: FreezingProxy
) -> None:
    tcp = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{proxy.port}/{database}")
    unix = await asyncpg.connect(dsn)
    try:
        assert enable_keepalive(tcp) is True
        assert enable_keepalive(unix) is False
    finally:
        await tcp.close()
        await unix.close()
