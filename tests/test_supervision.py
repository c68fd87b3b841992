"""Supervision never gives up silently (issue 13): capped backoff without overflow, a
task restarted for as long as the service runs, a crash loop visible in /healthz,
`reactor status` and a metric."""

from __future__ import annotations

import asyncio

import pytest

from reactor.core import health, metrics, supervisor
from reactor.ops import status
from reactor.util.backoff import Backoff


def test_backoff_is_capped_without_overflow() -> None:
    backoff = Backoff(cap=30.0, first=0.5, jitter=0.0)
    delays = [backoff.next_delay() for _ in range(5000)]
    assert delays[0] == 0.5 and delays[1] == 1.0
    assert max(delays) == 30.0 and delays[-1] == 30.0


async def test_an_always_failing_task_is_still_restarted_after_2000_tries(monkeypatch: pytest.MonkeyPatch) -> None:
    waited: list[float] = []

    async def no_sleep(stop: asyncio.Event, seconds: float) -> bool:
        # Time patched: the backoff's delay is recorded, not slept.
        waited.append(seconds)
        await asyncio.sleep(0)
        return stop.is_set()

    monkeypatch.setattr(supervisor, "sleep_or_stop", no_sleep)
    until = asyncio.Event()
    calls = 0
    enough = asyncio.Event()

    async def always_fails() -> None:
        nonlocal calls
        calls += 1
        if calls > 2000:
            enough.set()
            await until.wait()
            return
        raise RuntimeError("poisoned")

    sup = supervisor.Supervisor(restart_cap_seconds=30.0)
    failing_before = metrics.REGISTRY.get_sample_value("reactor_task_restarts_total", {"task": "poison"}) or 0.0
    sup.start("poison", always_fails, until)
    await asyncio.wait_for(enough.wait(), 60)
    assert sup.restarts()["poison"] == 2000
    assert max(waited) <= 30.0 and len(waited) == 2000
    restarted = metrics.REGISTRY.get_sample_value("reactor_task_restarts_total", {"task": "poison"})
    assert restarted == failing_before + 2000
    assert metrics.REGISTRY.get_sample_value("reactor_tasks_failing") == 1.0
    failing = sup.failing()
    assert "poison" in failing and "RuntimeError: poisoned" in failing["poison"]
    # What /healthz and `reactor status` make of the heartbeat snapshot.
    snapshot = {
        "listener": "connected",
        "detector": "ready",
        "share_online": True,
        "database": "ok",
        "tasks_failing": failing,
    }
    reasons = health.evaluate(snapshot, 0.0)
    assert len(reasons) == 1 and reasons[0].startswith("task poison keeps dying")
    lines = dict(status._state_lines(snapshot))
    assert "poison=died 2000 times in a row" in lines["tasks failing"]
    until.set()
    await sup.cancel_all()
