"""Waiting on the detector child without blocking the event loop.

The pipe and the process sentinel are file descriptors: ``loop.add_reader`` wakes the loop
when a message arrives or the process ends, so no thread sits blocked in ``recv`` or ``join``.
"""

from __future__ import annotations

import asyncio
import signal
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from reactor.detector import child, wire

# How long a dying (or killed) child may take to exit before it is killed (again).
EXIT_GRACE_SECONDS = 5.0


async def receive(conn: Connection, seconds: float) -> tuple[str, Any]:
    """One message from the child, without blocking the event loop; EOFError if it died."""
    loop = asyncio.get_running_loop()
    readable = loop.create_future()
    fd = conn.fileno()

    def on_readable() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(fd, on_readable)
    try:
        await asyncio.wait_for(readable, seconds)
    finally:
        loop.remove_reader(fd)
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
    """Wait on the process sentinel, which becomes readable when the process ends."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    fd = process.sentinel

    def on_exit() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, on_exit)
    try:
        await asyncio.wait_for(done, seconds)
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)
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
    return f"exited with code {code}"
