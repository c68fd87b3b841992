"""The LISTEN connection: one dedicated connection (reactor.store.notifications), supervised.

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
import json
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from reactor import logs
from reactor.config import Config
from reactor.core import gate, metrics
from reactor.store import notifications
from reactor.store.connections import Session
from reactor.store.db import DatabaseUnavailable
from reactor.store.errors import StoreUnavailable
from reactor.util.aio import sleep_or_stop, wait_any
from reactor.util.backoff import Backoff

log = logs.get("reactor.listener")

APPLICATION_NAME = "face-reactor-listener"

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
                    session = await notifications.open_listener(self.dsn, self.config, self.application_name)
                except (DatabaseUnavailable, StoreUnavailable) as exc:
                    self._set_polling("connect_failed", exc)
                    await sleep_or_stop(stop, backoff.next_delay())
                    continue
                backoff.reset()
                reason = await self._serve(session, stop)
                if not stop.is_set():
                    self._set_polling(reason, None)
        finally:
            self.state = ListenerState.STOPPED

    async def _serve(self, session: Session, stop: asyncio.Event) -> str:
        """LISTEN, announce, then watch the connection; returns why it ended."""
        lost = asyncio.Event()
        session.on_lost(lost.set)
        try:
            await notifications.listen(session, self.channels, self._dispatch)
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
            return await self._watch(session, lost, stop)
        except StoreUnavailable as exc:
            return f"error: {type(exc.__cause__ or exc).__name__}"
        finally:
            await session.close(self.config.database.probe_timeout_seconds)

    async def _watch(self, session: Session, lost: asyncio.Event, stop: asyncio.Event) -> str:
        interval = self.config.database.probe_interval_seconds
        timeout = self.config.database.probe_timeout_seconds
        while True:
            done = await wait_any(stop, lost, seconds=interval)
            if done is stop:
                return "stopped"
            if done is lost or session.closed:
                return "terminated"
            try:
                await session.probe(timeout)
            except StoreUnavailable as exc:
                return f"probe_failed: {type(exc.__cause__ or exc).__name__}"

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

    def _dispatch(self, pid: int, channel: str, payload: object) -> None:
        data = parse_payload(str(payload))
        if data is None:
            gate.ignore(channel, "not_json", str(payload)[:200])
            return
        try:
            self.on_notify(channel, data, pid)
        except Exception:
            log.exception("notification_handler_failed", channel=channel)
