"""The in-memory queue: keyed by path, highest priority wins, bounded with counted drops."""

from __future__ import annotations

import asyncio
import random

from reactor.config import RetryConfig
from reactor.core.queue import MANUAL_BURST, Entry, ImageQueue, Priority
from reactor.failure_types import ErrorType
from reactor.util.backoff import Backoff
from reactor.util.ratelimit import RateLimiter
from tests.peek import priority_of


async def drain(queue: ImageQueue) -> list[Entry]:
    out = []
    while len(queue):
        out.append(await queue.get_entry())
    return out


async def test_priority_order_and_fifo_within_a_level() -> None:
    q = ImageQueue(10)
    q.put("b1", Priority.BACKLOG)
    q.put("n1", Priority.NOTIFY)
    q.put("r1", Priority.RETRY)
    q.put("n2", Priority.NOTIFY)
    q.put("m1", Priority.MANUAL)
    q.put("f1", Priority.FILE_EVENT)
    assert [e.path for e in await drain(q)] == ["m1", "n1", "n2", "f1", "r1", "b1"]


async def test_a_path_is_queued_once_and_keeps_its_highest_priority() -> None:
    q = ImageQueue(10)
    assert q.put("a.jpg", Priority.BACKLOG)
    assert q.put("a.jpg", Priority.NOTIFY)
    assert q.put("a.jpg", Priority.RETRY)  # lower priority: ignored, still one entry
    assert len(q) == 1
    assert priority_of(q, "a.jpg") is Priority.NOTIFY
    assert q.depth_by_priority() == {"manual": 0, "notify": 1, "file_event": 0, "retry": 0, "backlog": 0}
    path, priority = await q.get()
    assert (path, priority) == ("a.jpg", Priority.NOTIFY)
    assert len(q) == 0


async def test_redetect_flag_survives_a_merge() -> None:
    q = ImageQueue(10)
    q.put("a.jpg", Priority.FILE_EVENT, redetect=True)
    q.put("a.jpg", Priority.NOTIFY)
    entry = await q.get_entry()
    assert entry == Entry("a.jpg", Priority.NOTIFY, redetect=True)


async def test_full_queue_drops_lowest_priority_and_counts() -> None:
    q = ImageQueue(3)
    for name in ("b1", "b2", "r1"):
        q.put(name, Priority.BACKLOG if name.startswith("b") else Priority.RETRY)
    # Better work evicts the newest of the worst level.
    assert q.put("n1", Priority.NOTIFY)
    assert q.dropped == 1 and "b2" not in q and "b1" in q
    # Work no better than the worst queued entry is itself dropped.
    assert q.put("r1", Priority.RETRY)  # already queued: not a drop
    q.put("n2", Priority.NOTIFY)
    assert q.dropped == 2 and "b1" not in q
    assert not q.put("b3", Priority.BACKLOG)
    assert q.dropped == 3
    assert len(q) == 3
    assert [e.path for e in await drain(q)] == ["n1", "n2", "r1"]


async def test_get_waits_for_put_and_discard_removes() -> None:
    q = ImageQueue(5)
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    assert not getter.done()
    q.put("x.jpg", Priority.FILE_EVENT)
    assert await asyncio.wait_for(getter, 2) == ("x.jpg", Priority.FILE_EVENT)
    q.put("gone.jpg", Priority.NOTIFY)
    assert q.discard("gone.jpg")
    assert not q.discard("gone.jpg")
    assert q.get_nowait() is None


async def test_wait_free_returns_once_entries_are_taken() -> None:
    q = ImageQueue(2)
    q.put("a", Priority.BACKLOG)
    q.put("b", Priority.BACKLOG)
    waiter = asyncio.create_task(q.wait_free(1))
    await asyncio.sleep(0)
    assert not waiter.done()
    await q.get()
    await asyncio.wait_for(waiter, 2)


def test_max_attempts_per_type() -> None:
    retry = RetryConfig(max_attempts=5, max_attempts_permanent=2)
    assert ErrorType.TIMEOUT.tries_allowed(retry) == 5
    assert ErrorType.MISSING.tries_allowed(retry) == 5
    assert ErrorType.CORRUPT.tries_allowed(retry) == 2
    assert ErrorType.INVALID_PATH.tries_allowed(retry) == 1


def test_reconnect_backoff_is_capped_and_jittered() -> None:
    random.seed(1)
    backoff = Backoff(cap=4.0, first=0.5, jitter=0.25)
    delays = [backoff.next_delay() for _ in range(8)]
    assert all(0 < d <= 4.0 for d in delays)
    assert delays[-1] >= 3.0  # reached the cap (less at most 25 % jitter)
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_rate_limiter_logs_first_then_counts() -> None:
    now = [0.0]
    limiter = RateLimiter(60.0, clock=lambda: now[0])
    assert limiter.check(("corrupt", "truncated")) == (True, 0)
    assert limiter.check(("corrupt", "truncated")) == (False, 0)
    assert limiter.check(("corrupt", "truncated")) == (False, 0)
    assert limiter.check(("oom", "x")) == (True, 0)
    now[0] = 61.0
    assert limiter.check(("corrupt", "truncated")) == (True, 2)


def test_rate_limiter_forgets_keys_whose_window_passed() -> None:
    now = [0.0]
    limiter = RateLimiter(60.0, clock=lambda: now[0])
    # One key per image, as "file not found: <path>" messages give: each is logged once.
    for i in range(1000):
        assert limiter.check(("missing", f"file not found: img/{i}.jpg")) == (True, 0)
    assert limiter.check(("corrupt", "truncated")) == (True, 0)
    assert limiter.check(("corrupt", "truncated")) == (False, 0)  # a suppressed count is now owed
    assert len(limiter) == 1001
    now[0] = 61.0
    assert limiter.check(("oom", "x")) == (True, 0)
    # The per-image keys are gone; the key with a suppressed count stays until it is reported.
    assert len(limiter) == 2
    assert limiter.check(("missing", "file not found: img/0.jpg")) == (True, 0)
    assert limiter.check(("corrupt", "truncated")) == (True, 1)
    now[0] = 200.0
    assert limiter.check(("oom", "y")) == (True, 0)
    assert len(limiter) == 1


async def test_peek_shows_the_next_entry_without_taking_it() -> None:
    q = ImageQueue(5)
    assert q.peek() is None
    q.put("b", Priority.BACKLOG)
    q.put("n", Priority.NOTIFY)
    assert q.peek() == "n" and len(q) == 2
    assert (await q.get())[0] == "n"


def test_a_flood_of_manual_requests_does_not_starve_other_work() -> None:
    q = ImageQueue(1000)
    for i in range(100):
        q.put(f"manual/{i:03}.jpg", Priority.MANUAL)
    q.put("new-photo.jpg", Priority.NOTIFY)
    order = []
    for _ in range(MANUAL_BURST + 2):
        assert q.peek() is not None
        peeked = q.peek()
        entry = q.get_nowait()
        assert entry is not None and entry.path == peeked
        order.append(entry.path)
    assert order.index("new-photo.jpg") == MANUAL_BURST
    assert order[MANUAL_BURST + 1] == f"manual/{MANUAL_BURST:03}.jpg"


def test_drops_are_counted_by_the_queue_dropped_counter() -> None:
    from reactor.core import metrics

    q = ImageQueue(1)
    metrics.bind_queue(q)
    before = metrics.REGISTRY.get_sample_value("reactor_queue_dropped_total") or 0.0
    q.put("a", Priority.BACKLOG)
    assert not q.put("b", Priority.BACKLOG)  # full of work as good: b is dropped
    assert q.put("c", Priority.NOTIFY)  # better work: a is evicted
    assert q.dropped == 2
    assert metrics.REGISTRY.get_sample_value("reactor_queue_dropped_total") == before + 2
