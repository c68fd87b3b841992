"""`/healthz` and `/metrics` over HTTP, on loopback by default.

A minimal HTTP/1.1 server on asyncio streams (no web framework for two GET routes).
`/healthz` answers 200 only when the listener is connected or polling, the detector
is alive, the share is online, the database answers and the event loop is responsive;
otherwise 503 with the reasons in JSON. `/metrics` serves the Prometheus registry in text format.

The snapshot callable is the Reactor's `health_snapshot()`; this module only judges
it, so a test can hand it any dict. Loop responsiveness is measured by ``LoopLag``: a
ticker that sleeps a fixed interval and records how late it woke up. The server runs
one, and so does the Reactor (its lag goes into the heartbeat); /healthz takes the worse.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from reactor import logs
from reactor.config import ConfigError, HealthConfig
from reactor.core.listener import ListenerState
from reactor.util.aio import sleep_or_stop

log = logs.get("reactor.health")

Snapshot = Callable[[], Mapping[str, Any]]

LISTENER_OK = frozenset({ListenerState.CONNECTED, ListenerState.POLLING})
DETECTOR_OK = frozenset({"ready", "busy"})
# The loop counts as unresponsive when a 0.5 s sleep wakes up this much late.
MAX_LOOP_LAG_SECONDS = 2.0
TICK_SECONDS = 0.5
READ_TIMEOUT_SECONDS = 5.0
MAX_REQUEST_BYTES = 16 * 1024


def evaluate(snapshot: Mapping[str, Any], loop_lag_seconds: float) -> list[str]:
    """Reasons the reactor is unhealthy; empty when it is healthy."""
    reasons: list[str] = []
    listener = snapshot.get("listener")
    if listener not in LISTENER_OK:
        reasons.append(f"listener is {listener or 'unknown'} (expected connected or polling)")
    detector = snapshot.get("detector")
    if detector not in DETECTOR_OK:
        reasons.append(f"detector is {detector or 'unknown'} (expected ready or busy)")
    if snapshot.get("share_online") is not True:
        why = snapshot.get("share_reason")
        reasons.append(f"share is offline ({why})" if why else "share is offline")
    # Polling keeps the reactor working without its listener, but not without a database.
    if snapshot.get("database") == "unavailable":
        reasons.append("database is unavailable")
    if snapshot.get("write_blocked"):
        reasons.append(f"detection stopped: {snapshot['write_blocked']}")
    for task, why in (snapshot.get("tasks_failing") or {}).items():
        reasons.append(f"task {task} keeps dying ({why}); it is restarted, see the task_died log lines")
    if loop_lag_seconds > MAX_LOOP_LAG_SECONDS:
        reasons.append(f"event loop lagging {loop_lag_seconds:.1f} s")
    return reasons


def degraded(snapshot: Mapping[str, Any]) -> list[str]:
    """What needs a person although the reactor works: /healthz answers 200, "degraded"."""
    notes: list[str] = []
    held = snapshot.get("held_deletions") or 0
    if held:
        notes.append(
            f"{held} deletions held after a mass vanish; run `reactor deletions` to review, "
            "`reactor deletions --apply` to apply"
        )
    stalled = snapshot.get("stalled_folders") or []
    if stalled:
        # The share is online and the rest of it detected: the hung folders wait, io_stall.
        notes.append(f"folders not answering (io_stall, retried when they answer): {', '.join(map(str, stalled))}")
    return notes


class LoopLag:
    """How late a ``TICK_SECONDS`` sleep wakes up: the event loop's responsiveness."""

    def __init__(self) -> None:
        self.seconds = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        while True:
            before = time.monotonic()
            if await sleep_or_stop(stop, TICK_SECONDS):
                return
            self.seconds = max(0.0, time.monotonic() - before - TICK_SECONDS)


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


class HealthServer:
    """Serves /healthz and /metrics; `start()` binds (so a busy port fails early), `run()` serves."""

    def __init__(self, config: HealthConfig, snapshot: Snapshot, registry: CollectorRegistry) -> None:
        self.config = config
        self.snapshot = snapshot
        self.registry = registry
        self.loop_lag = LoopLag()
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0 in tests)."""
        assert self._server is not None, "HealthServer.start() was not called"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._handle, self.config.host, self.config.port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"health port {self.config.host}:{self.config.port} is already in use; "
                    "set health.port ([health] port or REACTOR_HEALTH__PORT) to a free port"
                ) from None
            raise ConfigError(
                f"cannot serve health on {self.config.host}:{self.config.port}: {exc.strerror}; "
                "check health.host and health.port"
            ) from None
        log.info("health_listening", host=self.config.host, port=self.port)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop`; binds first if `start()` was not called (or after a restart)."""
        if self._server is None:
            await self.start()
        ticker = asyncio.create_task(self.loop_lag.run(stop), name="health-loop-lag")
        try:
            await stop.wait()
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            await self.close()

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
            log.info("health_stopped")

    def healthz(self) -> tuple[int, dict[str, Any]]:
        try:
            snap = dict(self.snapshot())
        except Exception as exc:  # a broken snapshot is itself a health failure, not a crash
            return 503, {"status": "unhealthy", "reasons": [f"health snapshot failed: {exc!r}"]}
        # The reactor measures its own lag too; the worse of the two counts.
        lag = max(self.loop_lag.seconds, float(snap.get("loop_lag_seconds") or 0.0))
        reasons = evaluate(snap, lag)
        notes = degraded(snap)
        body = {
            "status": "unhealthy" if reasons else "degraded" if notes else "ok",
            "reasons": reasons or notes,
            "loop_lag_seconds": round(lag, 3),
            "snapshot": _json_safe(snap),
        }
        return (503 if reasons else 200), body

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_SECONDS)
            if len(head) > MAX_REQUEST_BYTES:
                await self._respond(writer, 431, "text/plain", b"request header too large\n")
                return
            method, target = _request_line(head)
            await self._route(writer, method, target)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            with contextlib.suppress(ConnectionError):
                await self._respond(writer, 400, "text/plain", b"bad request\n")
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _route(self, writer: asyncio.StreamWriter, method: str, target: str) -> None:
        path = target.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            await self._respond(writer, 405, "text/plain", b"only GET and HEAD\n", head=False)
        elif path == "/healthz":
            status, body = self.healthz()
            payload = json.dumps(body).encode() + b"\n"
            await self._respond(writer, status, "application/json", payload, head=method == "HEAD")
        elif path == "/metrics":
            await self._respond(writer, 200, CONTENT_TYPE_LATEST, generate_latest(self.registry), head=method == "HEAD")
        else:
            await self._respond(writer, 404, "text/plain", b"not found: try /healthz or /metrics\n")

    async def _respond(
        self, writer: asyncio.StreamWriter, status: int, content_type: str, body: bytes, *, head: bool = False
    ) -> None:
        reason = _REASONS.get(status, "")
        header = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n"
        ).encode("ascii")
        writer.write(header if head else header + body)
        await writer.drain()


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


def _request_line(head: bytes) -> tuple[str, str]:
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ValueError(f"bad request line {line!r}")
    return parts[0], parts[1]
