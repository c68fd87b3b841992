"""Owned, named, supervised tasks (a silent dead task is the worst bug a daemon can have).

Each task runs a coroutine factory until its own ``until`` event is set. A task
that raises is logged with its name and traceback and restarted after a capped
backoff; one that returns while its event is not set is restarted too. Shutdown
is bounded: ``drain`` waits for chosen tasks, ``cancel_all`` cancels the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from reactor import logs
from reactor.backoff import Backoff

log = logs.get("reactor.supervisor")

Factory = Callable[[], Awaitable[None]]
T = TypeVar("T")


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to ``seconds``; True if ``stop`` was set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(0.0, seconds))
    return stop.is_set()


@dataclass
class _Supervised:
    name: str
    task: asyncio.Task[None]
    restarts: int = 0


class Supervisor:
    def __init__(self, restart_cap_seconds: float = 30.0) -> None:
        self.restart_cap = restart_cap_seconds
        self._tasks: dict[str, _Supervised] = {}

    def start(self, name: str, factory: Factory, until: asyncio.Event) -> None:
        if name in self._tasks:
            raise ValueError(f"task {name!r} already started")
        entry = _Supervised(name, asyncio.create_task(self._guard(name, factory, until), name=name))
        self._tasks[name] = entry

    def restarts(self) -> dict[str, int]:
        return {name: t.restarts for name, t in self._tasks.items()}

    async def _guard(self, name: str, factory: Factory, until: asyncio.Event) -> None:
        backoff = Backoff(cap=self.restart_cap)
        while not until.is_set():
            try:
                await factory()
                if until.is_set():
                    return
                log.error("task_exited", task=name)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("task_died", task=name)
            self._tasks[name].restarts += 1
            if await sleep_or_stop(until, backoff.next_delay()):
                return
            log.info("task_restarted", task=name, restarts=self._tasks[name].restarts)

    async def drain(self, names: tuple[str, ...], seconds: float) -> bool:
        """Wait for the named tasks to finish on their own; False if ``seconds`` passed first."""
        tasks = [self._tasks[n].task for n in names if n in self._tasks]
        if not tasks:
            return True
        _, pending = await asyncio.wait(tasks, timeout=seconds)
        return not pending

    async def cancel_all(self, seconds: float = 5.0) -> None:
        tasks = [t.task for t in self._tasks.values() if not t.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=seconds)
        for entry in self._tasks.values():
            if entry.task.done() and not entry.task.cancelled() and entry.task.exception() is not None:
                log.error("task_failed_at_shutdown", task=entry.name, error=repr(entry.task.exception()))


async def wait_any(*events: asyncio.Event, seconds: float | None = None) -> None:
    """Return when any of ``events`` is set, or after ``seconds``."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def first_of(aw: Awaitable[T], stop: asyncio.Event) -> T | None:
    """Await ``aw`` unless ``stop`` is set first (then cancel it and return None)."""
    task = asyncio.ensure_future(aw)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


async def completed(aw: Awaitable[None], stop: asyncio.Event) -> bool:
    """Await ``aw`` unless ``stop`` is set first; True if it completed."""

    async def done() -> bool:
        await aw
        return True

    return await first_of(done(), stop) is not None
