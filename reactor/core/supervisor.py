"""Owned, named, supervised tasks (a silent dead task is the worst bug a daemon can have).

Each task runs a coroutine factory until its own ``until`` event is set. A task
that raises is logged with its name and traceback and restarted after a capped
backoff; one that returns while its event is not set is restarted too, for as long
as the service runs: the supervisor never gives up on a task. One that keeps dying
(``FAILING_AFTER`` deaths in a row, each run shorter than ``HEALTHY_RUN_SECONDS``)
is reported: ``failing()`` feeds /healthz and `reactor status`, and the
``reactor_task_restarts`` / ``reactor_tasks_failing`` metrics count it. Shutdown
is bounded: ``drain`` waits for chosen tasks, ``cancel_all`` cancels the rest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from reactor import logs
from reactor.core import metrics
from reactor.util.aio import sleep_or_stop
from reactor.util.backoff import Backoff

log = logs.get("reactor.supervisor")

Factory = Callable[[], Awaitable[None]]

# A task that died this many times in a row, each run shorter than the healthy run,
# is failing; a run that lasts HEALTHY_RUN_SECONDS starts the count again.
FAILING_AFTER = 3
HEALTHY_RUN_SECONDS = 60.0


@dataclass
class _Supervised:
    name: str
    task: asyncio.Task[None] | None = None
    restarts: int = 0
    # Deaths since the last run that lasted HEALTHY_RUN_SECONDS, and the last error.
    consecutive: int = 0
    last_error: str | None = None
    # monotonic start of the run in progress; None while waiting to restart.
    running_since: float | None = None

    @property
    def failing(self) -> bool:
        if self.consecutive < FAILING_AFTER:
            return False
        # A restart that has now run long enough is healthy again.
        return self.running_since is None or time.monotonic() - self.running_since < HEALTHY_RUN_SECONDS


class Supervisor:
    def __init__(self, restart_cap_seconds: float = 30.0) -> None:
        self.restart_cap = restart_cap_seconds
        self._tasks: dict[str, _Supervised] = {}

    def start(self, name: str, factory: Factory, until: asyncio.Event) -> None:
        if name in self._tasks:
            raise ValueError(f"task {name!r} already started")
        entry = _Supervised(name)
        self._tasks[name] = entry
        entry.task = asyncio.create_task(self._guard(entry, factory, until), name=name)
        metrics.TASKS_FAILING.set_function(lambda: float(len(self.failing())))

    def restarts(self) -> dict[str, int]:
        return {name: t.restarts for name, t in self._tasks.items()}

    def failing(self) -> dict[str, str]:
        """Tasks that keep dying: name -> what the last death was."""
        return {
            name: f"died {t.consecutive} times in a row: {t.last_error}" for name, t in self._tasks.items() if t.failing
        }

    async def _guard(self, entry: _Supervised, factory: Factory, until: asyncio.Event) -> None:
        name = entry.name
        backoff = Backoff(cap=self.restart_cap)
        while not until.is_set():
            started = entry.running_since = time.monotonic()
            try:
                await factory()
                if until.is_set():
                    return
                log.error("task_exited", task=name)
                error = "returned"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The log line once per crash loop, then its count: not the same traceback forever.
                if entry.consecutive < FAILING_AFTER:
                    log.exception("task_died", task=name)
                error = f"{type(exc).__name__}: {exc}"[:200]
            entry.running_since = None
            if time.monotonic() - started >= HEALTHY_RUN_SECONDS:
                entry.consecutive = 0
                backoff.reset()
            entry.restarts += 1
            entry.consecutive += 1
            entry.last_error = error
            metrics.TASK_RESTARTS.labels(name).inc()
            if entry.consecutive == FAILING_AFTER:
                log.error("task_failing", task=name, deaths=entry.consecutive, error=error)
            if await sleep_or_stop(until, backoff.next_delay()):
                return
            if entry.consecutive <= FAILING_AFTER:
                log.info("task_restarted", task=name, restarts=entry.restarts)

    async def drain(self, names: tuple[str, ...], seconds: float) -> bool:
        """Wait for the named tasks to finish on their own; False if ``seconds`` passed first."""
        tasks = [t for n in names if n in self._tasks and (t := self._tasks[n].task) is not None]
        if not tasks:
            return True
        _, pending = await asyncio.wait(tasks, timeout=seconds)
        return not pending

    async def cancel_all(self, seconds: float = 5.0) -> None:
        tasks = [t.task for t in self._tasks.values() if t.task is not None and not t.task.done()]
        for running in tasks:
            running.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=seconds)
        for entry in self._tasks.values():
            done = entry.task
            if done is not None and done.done() and not done.cancelled() and done.exception() is not None:
                log.error("task_failed_at_shutdown", task=entry.name, error=repr(done.exception()))
