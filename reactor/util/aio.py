"""Waiting for whichever comes first: an event, a stop, work, or a timeout.

Every loop of the reactor waits on "work, timeout or stop"; these are the ways it
does so. A waiter started here never outlives the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to ``seconds``; True if ``stop`` was set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(0.0, seconds))
    return stop.is_set()


async def wait_any(*events: asyncio.Event, seconds: float | None = None) -> asyncio.Event | None:
    """Wait until one of ``events`` is set, or ``seconds`` pass (None: no limit).

    Returns the first of ``events``, in the order given, that is set; None after the
    timeout. Put ``stop`` first where a stop must win over the others."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
    return next((e for e in events if e.is_set()), None)


async def first_of(aw: Awaitable[T], stop: asyncio.Event, *, seconds: float | None = None) -> T | None:
    """Await ``aw`` unless ``stop`` is set first or ``seconds`` pass (then cancel it and
    return None)."""
    task = asyncio.ensure_future(aw)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        # Cancelled ourselves: a getter left running would take an entry nobody reads.
        task.cancel()
        raise
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
