"""File-system calls on the share: a bounded pool of their own, each with a deadline.

A folder of a network share can stop answering (a hung FUSE or SMB server, a dead DFS
link) while the rest answers. A thread that calls into it is stuck until it answers, and
``asyncio.wait_for`` around ``asyncio.to_thread`` gives up waiting but not the thread:
enough of those and the default executor has no thread left, for the share probe among
others, and the whole share looks hung. So every call that touches the share runs here:

- in a pool of ``workers`` daemon threads of its own (never joined at exit: a thread
  stuck in a hung mount must not hold the process), apart from the default executor
  where the share probe runs;
- with a deadline: a call that started and did not finish in time raises ``IoStall``
  and marks its folder *stalled* (logged once). Further calls under a stalled folder
  fail at once, without a thread, so a hung folder holds one thread, not one per file;
- the folder recovers when its stuck call finally returns: logged once, and the
  ``on_recovered`` callbacks run (a rescan of the folder, for instance);
- a call that waited for a free thread past its deadline (every thread held by hangs
  elsewhere) raises ``IoStall`` too, but marks nothing: that folder is not at fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from reactor import logs

log = logs.get("reactor.shareio")

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_WORKERS = 8
DEFAULT_DEADLINE_SECONDS = 60.0


class IoStall(Exception):
    """A call on the share did not finish within its deadline (or its folder is stalled)."""

    def __init__(self, folder: str, message: str) -> None:
        super().__init__(message)
        self.folder = folder


@dataclass
class _Call:
    fn: Callable[[], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    started: threading.Event


def _deliver(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def retrieved(future: asyncio.Future[Any]) -> None:
    """A done callback: a late error nobody waits for is not logged as "never retrieved"."""
    if not future.cancelled():
        future.exception()


def _work(calls: queue.SimpleQueue[_Call]) -> None:
    while True:
        call = calls.get()
        if call.future.cancelled():
            continue
        call.started.set()
        result: Any = None
        error: BaseException | None = None
        try:
            result = call.fn()
        except BaseException as exc:  # handed to the caller, whatever it is
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            call.loop.call_soon_threadsafe(_deliver, call.future, result, error)


def contains(folder: str, path: str) -> bool:
    """Whether ``path`` is ``folder`` or below it (local paths)."""
    if path == folder:
        return True
    prefix = folder if folder.endswith(("/", "\\")) else folder + os.sep
    return path.startswith(prefix) or (os.altsep is not None and path.startswith(folder + os.altsep))


class ShareIO:
    def __init__(
        self,
        deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
        workers: int = DEFAULT_WORKERS,
    ) -> None:
        self.deadline = deadline_seconds
        self.workers = workers
        self._calls: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        # Stalled folder -> monotonic time it stalled.
        self._stalled: dict[str, float] = {}
        self._on_recovered: list[Callable[[str], None]] = []
        self.stalls = 0

    def add_recovery_listener(self, callback: Callable[[str], None]) -> None:
        self._on_recovered.append(callback)

    def stalled(self) -> list[str]:
        """The folders stalled now, sorted."""
        return sorted(self._stalled)

    def stalled_over(self, path: str) -> str | None:
        """The stalled folder that holds ``path`` (or is it), if any."""
        return next((folder for folder in self._stalled if contains(folder, path)), None)

    async def call(self, folder: str, fn: Callable[..., T], *args: Any, deadline: float | None = None) -> T:
        """``fn(*args)`` on a share thread; ``folder`` is the local folder it touches."""
        seconds = self.deadline if deadline is None else deadline
        stalled = self.stalled_over(folder)
        if stalled is not None:
            raise IoStall(stalled, f"the folder {stalled} is not answering (stalled; retried when it answers)")
        self._start_workers()
        loop = asyncio.get_running_loop()
        call = _Call(lambda: fn(*args), loop.create_future(), loop, threading.Event())
        call.future.add_done_callback(retrieved)  # a late error nobody waits for is not "never retrieved"
        self._calls.put(call)
        try:
            return await asyncio.wait_for(asyncio.shield(call.future), seconds)
        except TimeoutError:
            if not call.started.is_set():
                call.future.cancel()  # never started: a worker skips it
                raise IoStall(folder, f"no share thread was free within {seconds:g} s (others are stalled)") from None
            self._mark(folder, call.future)
            raise IoStall(folder, f"the share did not answer within {seconds:g} s") from None

    async def by_folder(self, paths: Sequence[str], fn: Callable[[list[str]], Sequence[R]]) -> dict[str, R]:
        """``fn`` over ``paths``, one call per folder: path -> its result. The paths of a
        folder that did not answer are left out: unknown, neither present nor gone."""
        groups: dict[str, list[str]] = {}
        for path in paths:
            groups.setdefault(os.path.dirname(path), []).append(path)
        out: dict[str, R] = {}
        for folder, members in groups.items():
            try:
                results = await self.call(folder, fn, members)
            except IoStall:
                continue
            out.update(zip(members, results, strict=True))
        return out

    def _start_workers(self) -> None:
        while len(self._threads) < self.workers:
            thread = threading.Thread(
                target=_work, args=(self._calls,), name=f"share-io-{len(self._threads)}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _mark(self, folder: str, stuck: asyncio.Future[Any]) -> None:
        if stuck.done() or folder in self._stalled:
            return
        self._stalled[folder] = time.monotonic()
        self.stalls += 1
        log.warning("folder_stalled", folder=folder, seconds=self.deadline, effect="skipped until it answers")
        stuck.add_done_callback(lambda _f: self._recover(folder))

    def _recover(self, folder: str) -> None:
        since = self._stalled.pop(folder, None)
        if since is None:
            return
        log.info("folder_recovered", folder=folder, stalled_seconds=round(time.monotonic() - since, 1))
        for callback in list(self._on_recovered):
            try:
                callback(folder)
            except Exception:
                log.exception("folder_recovery_listener_failed")
