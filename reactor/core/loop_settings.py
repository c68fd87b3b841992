"""What a detection lane's loop and its outcome writer are built from, and how they reach
the database (reactor.core.detection_loop, reactor.core.outcome_writer).

``LoopSettings`` is made once by the service and shared by every lane: the configuration,
the pool, the queue, the share, the path mapper, this instance's id, the shape of the
tables (the failures table's columns, the legacy face_metadata's) and the shared
``WriteBlock``. ``StoreCalls`` runs a lane's store calls on a pooled connection, retrying
while the database is away; a stop while it waits raises ``LoopStopped``, which the loop
catches at its top, so "stopped" is never confused with "nothing recorded".
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from reactor import logs
from reactor.config import Config
from reactor.core.queue import ImageQueue
from reactor.paths import PathMapper
from reactor.store.connections import borrowed
from reactor.store.dbtypes import Conn, Pool
from reactor.store.errors import StoreUnavailable
from reactor.store.legacy import NO_LEGACY, ResultShape
from reactor.util.aio import sleep_or_stop
from reactor.util.backoff import Backoff
from reactor.util.shareio import ShareIO

log = logs.get("reactor.detection_loop")
T = TypeVar("T")


class ShareLike(Protocol):
    online: bool
    # File-system calls on the share (reactor.util.shareio).
    io: ShareIO

    async def acheck(self) -> bool: ...
    async def wait_online(self) -> None: ...


@dataclass
class WriteBlock:
    """Set when a write failed in a way no retry can mend (a missing column or privilege),
    shared by every detection lane: detection stops until the schema is fixed and the
    reactor restarted, so no image is detected for a write that cannot succeed."""

    reason: str | None = None


@dataclass(frozen=True)
class LoopSettings:
    config: Config
    pool: Pool
    queue: ImageQueue
    share: ShareLike
    mapper: PathMapper
    instance_id: str
    # The failures table's columns (reactor.store.schema.failure_columns): a legacy table may lack some.
    failure_columns: frozenset[str]
    # A file still being written is tried again after the share's stability window
    # (reactor.watch.mounts.stability_window): by then a network client's cache is fresh.
    incomplete_delay: float
    # The legacy JSON columns of an adopted face_metadata (reactor.store.legacy).
    result_shape: ResultShape = NO_LEGACY
    blocked: WriteBlock = field(default_factory=WriteBlock)


class LoopStopped(Exception):
    """The loop's stop was set while a store call waited for the database."""


class StoreCalls:
    """A lane's store calls on a pooled connection; ``ok`` is whether the last one reached
    the database (the service's health)."""

    def __init__(self, pool: Pool, reconnect_max_seconds: float) -> None:
        self.pool = pool
        self.reconnect_max_seconds = reconnect_max_seconds
        self.ok = True

    async def once(self, op: Callable[[Conn], Awaitable[T]], path: str | None = None) -> T:
        """``op`` on a pooled connection, once; StoreUnavailable if the database is away."""
        async with borrowed(self.pool, path) as conn:
            return await op(conn)

    async def run(self, stop: asyncio.Event | None, op: Callable[[Conn], Awaitable[T]]) -> T:
        """``op``, retried while the database is away; LoopStopped if ``stop`` is set first
        (without ``stop``: until it ran). The store's other exceptions propagate."""
        backoff = Backoff(cap=self.reconnect_max_seconds)
        while stop is None or not stop.is_set():
            try:
                result = await self.once(op)
            except StoreUnavailable as exc:
                self._state(False, exc)
                if stop is None:
                    await asyncio.sleep(backoff.next_delay())
                elif await sleep_or_stop(stop, backoff.next_delay()):
                    break
            else:
                self._state(True)
                return result
        raise LoopStopped

    def _state(self, ok: bool, exc: BaseException | None = None) -> None:
        if ok != self.ok:
            if ok:
                log.info("database_available")
            else:
                log.warning("database_unavailable", error=str(exc) or type(exc).__name__)
        self.ok = ok
