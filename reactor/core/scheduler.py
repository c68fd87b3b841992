"""When the sweep runs, and what it answers: the sweep loop, control requests, deleted hints.

A sweep runs when asked (start-up and reconnect via the listener, a ``bulk`` hint, a
``reactor sweep`` request on the control channel, a watcher rescan), every
``sweep.interval_seconds`` while the listener is connected, and every
``sweep.poll_seconds`` while it is not. A deferred sweep (the queue was full) runs
again as soon as a page fits. ``deleted`` notifications mark that one path's
rows orphaned without waiting for a sweep (reactor.store.orphans: held, never deleted at once).

These are regular sweeps (the change log, reactor.core.sweep). The full walk runs
beside them (``run_walk``): when reactor_sweep_state says it is due, one chunk of
``sweep.walk_chunk_pages`` pages at a time with ``sweep.walk_pause_seconds`` between
chunks; each chunk takes the sweep's lock, so whichever instance holds it continues.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg

from reactor import logs
from reactor.config import Config
from reactor.core import control
from reactor.core.sweep import Sweeper
from reactor.paths import recordable
from reactor.store.db import ANY_DB_ERRORS, TRANSIENT_DB_ERRORS
from reactor.store.errors import StoreError
from reactor.util.aio import first_of, wait_any
from reactor.util.ratelimit import RateLimiter

log = logs.get("reactor.scheduler")

# Bounds on what notifications can pile up: request ids answered by one sweep, and
# `deleted` hints (past it the hints go, and one sweep marks every orphan instead).
MAX_REQUESTS = 32
MAX_ORPHAN_HINTS = 10_000
# A sweep ends with the claims' purge, which raises the store's exceptions (reactor.store.claims).
SWEEP_ERRORS: tuple[type[BaseException], ...] = (*ANY_DB_ERRORS, StoreError)


class SweepScheduler:
    def __init__(self, config: Config, instance_id: str) -> None:
        self.config = config
        self.instance_id = instance_id
        self._wanted = asyncio.Event()
        # Repeated requests are coalesced: one sweep answers every id waiting.
        self._requests: dict[str, None] = {}
        self._orphan_hints: set[str] = set()
        self._orphan_wake = asyncio.Event()
        self._walk_wanted = asyncio.Event()

    def request(self, request_id: str | None = None) -> None:
        """Sweep soon; with a control request id, reply with the counts when done."""
        if request_id and (request_id in self._requests or len(self._requests) < MAX_REQUESTS):
            self._requests[request_id] = None
        self._wanted.set()

    def deleted(self, path: str) -> None:
        if len(self._orphan_hints) >= MAX_ORPHAN_HINTS:
            self.request(None)  # the sweep's orphan pass covers whatever is dropped here
            return
        self._orphan_hints.add(path)
        self._orphan_wake.set()

    async def run(
        self, sweeper: Sweeper, pool: asyncpg.Pool, listening: Callable[[], bool], halt: asyncio.Event
    ) -> None:
        sweep = self.config.sweep
        while not halt.is_set():
            await wait_any(self._wanted, halt, seconds=sweep.interval_seconds if listening() else sweep.poll_seconds)
            if halt.is_set():
                return
            self._wanted.clear()
            requests, self._requests = list(self._requests), {}
            deferred = False
            try:
                counts = await sweeper.sweep_changes(halt)
                reply, deferred = counts.as_dict(), counts.deferred
                if counts.walk_requested:
                    self._walk_wanted.set()
            except SWEEP_ERRORS as exc:
                log.warning("sweep_failed", error=str(exc) or type(exc).__name__)
                reply = {"skipped": f"sweep failed: {exc}"}
            await self._reply(pool, requests, reply)
            if deferred:
                # The queue was full: sweep again as soon as a page fits.
                await first_of(sweeper.queue.wait_free(sweeper.room_needed), halt)
                self._wanted.set()

    async def run_walk(self, sweeper: Sweeper, halt: asyncio.Event) -> None:
        """The full walk in the background: chunk by chunk while it is due, else wait.

        A start asks for one: what the last run had queued and not finished is in no
        queue and, its changes read, in no log any more."""
        sweep = self.config.sweep
        requested = False
        while not halt.is_set():
            pause: float | None = min(sweep.interval_seconds, sweep.walk_interval_hours * 3600.0)
            try:
                if not requested:
                    await sweeper.request_walk()
                    requested = True
                if await sweeper.walk_due():
                    counts = await sweeper.sweep(halt, pages=sweep.walk_chunk_pages)
                    if counts.deferred:
                        await first_of(sweeper.queue.wait_free(sweeper.room_needed), halt)
                        continue
                    if counts.paused or counts.skipped:
                        pause = sweep.walk_pause_seconds
            except SWEEP_ERRORS as exc:
                log.warning("walk_failed", error=str(exc) or type(exc).__name__)
                pause = sweep.poll_seconds
            await wait_any(halt, self._walk_wanted, seconds=pause)
            self._walk_wanted.clear()

    async def _reply(self, pool: asyncpg.Pool, requests: list[str], counts: dict[str, Any]) -> None:
        if not requests:
            return
        try:
            channel = self.config.database.control_channel
            async with pool.acquire() as conn:
                for request_id in requests:
                    await control.reply(conn, channel, request_id, self.instance_id, counts)
        except ANY_DB_ERRORS as exc:  # reactor_control_replies missing (owner SQL not run yet): no answer
            log.warning("sweep_reply_failed", error=str(exc) or type(exc).__name__)

    async def run_orphan_hints(self, sweeper: Sweeper, halt: asyncio.Event) -> None:
        while not halt.is_set():
            await wait_any(self._orphan_wake, halt)
            self._orphan_wake.clear()
            while self._orphan_hints and not halt.is_set():
                path = self._orphan_hints.pop()
                try:
                    await sweeper.mark_orphan(path)
                except TRANSIENT_DB_ERRORS:
                    # The sweep removes it later; hints are only hints.
                    break
                except ANY_DB_ERRORS as exc:
                    # The server refused this one hint (a value it cannot take): it costs that
                    # hint, never the task, and the sweep's orphan pass covers its path anyway.
                    _hint_dropped(path, exc)


_dropped = RateLimiter(300.0, max_keys=100)


def _hint_dropped(path: str, exc: BaseException) -> None:
    allowed, suppressed = _dropped.check(type(exc).__name__)
    if allowed:
        log.warning("orphan_hint_dropped", path=recordable(path)[:200], error=type(exc).__name__, suppressed=suppressed)
