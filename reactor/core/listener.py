"""The LISTEN connection: one dedicated asyncpg connection, supervised.

Never taken from the pool (a pooled connection runs ``UNLISTEN *`` on release,
asyncpg 421). Liveness comes from three sides: asyncpg's termination callback, TCP
keepalive on its socket (moot on a unix socket), and a ``SELECT 1`` probe with a
timeout, which also catches a connection that silently stopped carrying traffic.

On loss it reconnects with capped, jittered backoff, LISTENs again and only then
calls ``on_connected()``, which asks for a catch-up sweep: a row
processed while the connection was down is found by that sweep, and one processed
after the LISTEN is notified. While disconnected the state is "polling": the
service sweeps every ``sweep.poll_seconds`` instead.

A notification is only parsed and handed to ``on_notify``, which only enqueues.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Callable
from enum import StrEnum
from typing import Any

import asyncpg

from reactor import logs
from reactor.config import Config
from reactor.core import gate, metrics
from reactor.store.db import ANY_DB_ERRORS, TRANSIENT_DB_ERRORS, UNAVAILABLE_ERRORS, connect
from reactor.util.aio import sleep_or_stop, wait_any
from reactor.util.backoff import Backoff

log = logs.get("reactor.listener")

APPLICATION_NAME = "face-reactor-listener"
KEEPALIVE_IDLE_SECONDS = 30
KEEPALIVE_INTERVAL_SECONDS = 10
KEEPALIVE_COUNT = 3

# (channel, payload, pid of the notifying backend: see reactor.core.gate)
# PostgreSQL caps a payload at 8000 bytes; nothing longer is parsed.
MAX_PAYLOAD_CHARS = 8000
NotifyHandler = Callable[[str, dict[str, Any], int], None]
ConnectedHandler = Callable[[], None]


class ListenerState(StrEnum):
    """What the LISTEN connection is doing; shown in the heartbeat and /healthz."""

    STOPPED = "stopped"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    # Disconnected: the service sweeps every sweep.poll_seconds until it is back.
    POLLING = "polling"


def parse_payload(payload: str) -> dict[str, Any] | None:
    if len(payload) > MAX_PAYLOAD_CHARS:
        return None
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):  # RecursionError: "[[[[...]]]]" nested deeper than the parser goes
        return None
    return data if isinstance(data, dict) and isinstance(data.get("type"), str) else None


def enable_keepalive(conn: asyncpg.Connection) -> bool:
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


class Listener:
    def __init__(
        self, config: Config, dsn: str, instance_id: str, on_notify: NotifyHandler, on_connected: ConnectedHandler
    ) -> None:
        self.config = config
        self.dsn = dsn
        self.instance_id = instance_id
        self.on_notify = on_notify
        self.on_connected = on_connected
        self.channels = (config.database.channel, config.database.control_channel)
        self.state = ListenerState.STOPPED
        self.reconnects = 0
        self._ever_connected = False

    @property
    def connected(self) -> bool:
        return self.state == ListenerState.CONNECTED

    @property
    def application_name(self) -> str:
        return f"{APPLICATION_NAME}:{self.instance_id}"[:63]

    async def run(self, stop: asyncio.Event) -> None:
        backoff = Backoff(cap=self.config.database.reconnect_max_seconds)
        self.state = ListenerState.CONNECTING
        try:
            while not stop.is_set():
                try:
                    conn = await self._connect()
                except UNAVAILABLE_ERRORS as exc:
                    self._set_polling("connect_failed", exc)
                    await sleep_or_stop(stop, backoff.next_delay())
                    continue
                backoff.reset()
                reason = await self._serve(conn, stop)
                if not stop.is_set():
                    self._set_polling(reason, None)
        finally:
            self.state = ListenerState.STOPPED

    async def _connect(self) -> asyncpg.Connection:
        settings = {
            "application_name": self.application_name,
            # Server-side keepalive; PostgreSQL ignores these on a unix socket.
            "tcp_keepalives_idle": str(KEEPALIVE_IDLE_SECONDS),
            "tcp_keepalives_interval": str(KEEPALIVE_INTERVAL_SECONDS),
            "tcp_keepalives_count": str(KEEPALIVE_COUNT),
        }
        conn = await connect(self.dsn, self.config, server_settings=settings)
        enable_keepalive(conn)
        return conn

    async def _serve(self, conn: asyncpg.Connection, stop: asyncio.Event) -> str:
        """LISTEN, announce, then watch the connection; returns why it ended."""
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _c: lost.set())
        try:
            for channel in self.channels:
                await conn.add_listener(channel, self._dispatch)
            reconnected = self._ever_connected
            self._ever_connected = True
            self.state = ListenerState.CONNECTED
            if reconnected:
                self.reconnects += 1
                metrics.LISTENER_RECONNECTS.inc()
                log.info("listener_reconnected", channels=list(self.channels), reconnects=self.reconnects)
            else:
                log.info("listener_connected", channels=list(self.channels))
            # Only now, after LISTEN: a catch-up sweep sees everything committed before it.
            self.on_connected()
            return await self._watch(conn, lost, stop)
        except TRANSIENT_DB_ERRORS as exc:
            return f"error: {type(exc).__name__}"
        finally:
            await self._close(conn)

    async def _watch(self, conn: asyncpg.Connection, lost: asyncio.Event, stop: asyncio.Event) -> str:
        interval = self.config.database.probe_interval_seconds
        timeout = self.config.database.probe_timeout_seconds
        while True:
            done = await wait_any(stop, lost, seconds=interval)
            if done is stop:
                return "stopped"
            if done is lost or conn.is_closed():
                return "terminated"
            try:
                await asyncio.wait_for(conn.fetchval("SELECT 1"), timeout)
            except TRANSIENT_DB_ERRORS as exc:
                return f"probe_failed: {type(exc).__name__}"

    async def _close(self, conn: asyncpg.Connection) -> None:
        if conn.is_closed():
            return
        try:
            await asyncio.wait_for(conn.close(), self.config.database.probe_timeout_seconds)
        except ANY_DB_ERRORS:
            conn.terminate()

    def _set_polling(self, reason: str, exc: BaseException | None) -> None:
        if self.state != ListenerState.POLLING:
            # Before the first connection nothing was lost yet; after it, every loss is.
            log.warning(
                "listener_lost" if self._ever_connected else "listener_unavailable",
                reason=reason,
                error=str(exc) if exc else None,
                poll_seconds=self.config.sweep.poll_seconds,
            )
        self.state = ListenerState.POLLING

    def _dispatch(self, _conn: Any, pid: int, channel: str, payload: object) -> None:
        data = parse_payload(str(payload))
        if data is None:
            gate.ignore(channel, "not_json", str(payload)[:200])
            return
        try:
            self.on_notify(channel, data, pid)
        except Exception:
            log.exception("notification_handler_failed", channel=channel)
