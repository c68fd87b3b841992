"""The "whichever comes first" waits of reactor.util.aio."""

from __future__ import annotations

import asyncio

from reactor.util.aio import completed, first_of, sleep_or_stop, wait_any


async def test_wait_any_names_the_event_that_is_set() -> None:
    stop, lost = asyncio.Event(), asyncio.Event()
    assert await wait_any(stop, lost, seconds=0.01) is None
    lost.set()
    assert await wait_any(stop, lost, seconds=5) is lost
    # When both are set the first one given wins: a stop is never mistaken for a loss.
    stop.set()
    assert await wait_any(stop, lost, seconds=5) is stop


async def test_wait_any_without_a_limit_returns_when_set() -> None:
    wake = asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, wake.set)
    assert await asyncio.wait_for(wait_any(asyncio.Event(), wake), 5) is wake


async def test_sleep_or_stop() -> None:
    stop = asyncio.Event()
    assert await sleep_or_stop(stop, 0.01) is False
    stop.set()
    assert await asyncio.wait_for(sleep_or_stop(stop, 60), 5) is True


async def test_first_of_returns_the_result_or_none_on_stop_or_timeout() -> None:
    stop = asyncio.Event()
    assert await first_of(asyncio.sleep(0, result=7), stop) == 7
    assert await first_of(asyncio.sleep(60, result=0), stop, seconds=0.01) is None
    stop.set()
    assert await asyncio.wait_for(first_of(asyncio.sleep(60, result=0), stop), 5) is None
    assert await completed(asyncio.sleep(60), stop) is False


async def test_first_of_cancels_what_it_awaited() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    stop = asyncio.Event()
    assert await first_of(queue.get(), stop, seconds=0.01) is None
    # Cancelled from outside too: no getter is left behind to take the next item.
    waiting = asyncio.create_task(first_of(queue.get(), stop))
    await asyncio.sleep(0.01)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    queue.put_nowait(1)
    await asyncio.sleep(0.01)
    assert queue.qsize() == 1
