"""Waiting on the detector child without blocking the event loop, on every platform.

One code path for Linux and Windows: ``multiprocessing.connection.wait`` on the pipe or the
process sentinel (select on POSIX, WaitForMultipleObjects on Windows), run in a short-lived
helper thread that hands the answer to the loop with ``call_soon_threadsafe``. The event
loop cannot watch these itself on Windows: the Proactor loop has no ``add_reader`` and the
selector loop accepts sockets only.

The helper waits in slices of ``WAIT_SLICE_SECONDS`` and gives up at the deadline or as soon
as its caller is gone (timed out, cancelled), so no thread stays parked on a child.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_objects
from multiprocessing.process import BaseProcess
from typing import Any

from reactor.detector import child, wire

# How long a dying (or killed) child may take to exit before it is killed (again).
EXIT_GRACE_SECONDS = 5.0
# How long an abandoned helper thread may outlive its caller.
WAIT_SLICE_SECONDS = 0.25
HELPER_THREAD_NAME = "reactor-detector-wait"

# The parent's end of the pipe: ctx.Pipe() gives a PipeConnection on Windows.
if sys.platform == "win32":
    from multiprocessing.connection import PipeConnection

    ChildPipe = PipeConnection
else:
    ChildPipe = Connection

# A pipe end, or a process sentinel (a file descriptor on POSIX, a process handle on Windows).
Waitable = ChildPipe | int

_NTSTATUS = {
    0xC0000005: "access violation",
    0xC000001D: "illegal instruction",
    0xC0000017: "out of memory",
    0xC00000FD: "stack overflow",
    0xC0000409: "stack buffer overrun, a failed check or abort",
    0xC000013A: "Ctrl+C",
}


async def wait_ready(objects: Sequence[Waitable], seconds: float) -> list[object]:
    """The objects that are ready (readable, EOF or ended); TimeoutError after ``seconds``."""
    ready: list[object] = list(wait_objects(objects, 0))
    if ready:
        return ready  # a message already waiting, the common case for a fast image: no thread
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[list[object]] = loop.create_future()
    abandoned = threading.Event()
    deadline = time.monotonic() + seconds

    def settle(result: list[object] | BaseException) -> None:
        if answer.done():
            return
        if isinstance(result, BaseException):
            answer.set_exception(result)
        else:
            answer.set_result(result)

    def watch() -> None:
        result: list[object] | BaseException = []
        try:
            while not abandoned.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                result = list(wait_objects(objects, min(left, WAIT_SLICE_SECONDS)))
                if result:
                    break
        except (OSError, ValueError) as exc:  # an object closed under an abandoned wait
            result = exc
        if abandoned.is_set():
            return
        try:
            loop.call_soon_threadsafe(settle, result)
        except RuntimeError:
            return  # the loop is closed: nobody is waiting any more

    threading.Thread(target=watch, name=HELPER_THREAD_NAME, daemon=True).start()
    try:
        ready = await answer
    finally:
        abandoned.set()
    if not ready:
        raise TimeoutError(f"the detector process did not answer within {seconds} s")
    return ready


async def receive(conn: ChildPipe, seconds: float) -> tuple[str, Any]:
    """One message from the child, without blocking the event loop; EOFError if it died."""
    await wait_ready([conn], seconds)
    # The child sends each message in one write, so once bytes are there the rest follows at once.
    # JSON checked field by field, never unpickled (reactor.detector.wire).
    try:
        return wire.decode(conn.recv_bytes(wire.MAX_MESSAGE_BYTES))
    except wire.BadMessage as exc:
        return "invalid", str(exc)


async def reap(process: BaseProcess, kill: bool) -> int | None:
    """Wait for the child to exit (killing it first if asked) and return its exit code."""
    if kill and process.is_alive():
        process.kill()
    if process.exitcode is None and not await _exited(process, EXIT_GRACE_SECONDS):
        process.kill()
        await _exited(process, EXIT_GRACE_SECONDS)
    # The sentinel reads EOF as the child closes its files, a moment before it can be reaped.
    process.join(1.0)
    return process.exitcode


async def _exited(process: BaseProcess, seconds: float) -> bool:
    """Wait on the process sentinel, which is ready when the process ends."""
    try:
        await wait_ready([process.sentinel], seconds)
    except TimeoutError:
        return False
    return True


def describe_exit(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    if code == child.EXIT_ENGINE_FAILED:
        return "could not load the detection engine"
    if code >= 0xC0000000:  # a Windows NTSTATUS: how a crash shows there, where there are no signals
        name = _NTSTATUS.get(code)
        return f"crashed with status 0x{code:08X}" + (f" ({name})" if name else "")
    return f"exited with code {code}"
