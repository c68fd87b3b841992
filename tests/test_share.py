from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from reactor.config import ImagesConfig, WatcherConfig
from reactor.watch import share as share_mod
from reactor.watch.share import ShareMonitor, VanishGuard, probe
from tests.peek import holding


def images_for(root: Path, **kw: object) -> ImagesConfig:
    return dataclasses.replace(ImagesConfig(), root=str(root), **kw)  # type: ignore[arg-type]


def test_probe_reasons(share: Path, tmp_path: Path) -> None:
    assert probe(images_for(share)) is None
    assert probe(images_for(tmp_path / "nowhere")) == "root_missing"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert probe(images_for(a_file)) == "root_not_directory"
    (share / ".reactor-share").unlink()
    assert probe(images_for(share)) == "marker_missing"
    # tmp dirs are not mount points; "/" is.
    assert probe(images_for(tmp_path, marker="file", require_mount=True)) == "not_mounted"
    monitor = ShareMonitor(images_for(tmp_path, marker="file", require_mount=True))
    assert monitor.check() is False
    assert "neither a mount point nor on a network mount (it is on " in monitor._advice("not_mounted")


def test_an_error_other_than_not_found_is_offline(share: Path) -> None:
    # ENOTDIR stands in for EIO/ESTALE/EACCES: any such error means "offline", never a crash.
    (share / "plainfile").write_text("x")
    reason = probe(images_for(share, marker="plainfile/.reactor-share"))
    assert reason == "marker_error:ENOTDIR"


def test_check_logs_one_event_per_transition(share: Path) -> None:
    monitor = ShareMonitor(images_for(share))
    seen: list[bool] = []
    monitor.add_listener(seen.append)
    moved = share.with_name("share-away")
    with capture_logs() as logs:
        assert monitor.check() is True
        assert monitor.check() is True
        share.rename(moved)
        assert monitor.check() is False
        assert monitor.check() is False
        assert monitor.reason == "root_missing"
        moved.rename(share)
        assert monitor.check() is True
    events = [e["event"] for e in logs if e["event"].startswith("share_")]
    assert events == ["share_online", "share_offline", "share_online"]
    assert seen == [True, False, True]


def test_a_failing_listener_does_not_break_the_monitor(share: Path) -> None:
    monitor = ShareMonitor(images_for(share))

    def broken(online: bool) -> None:
        raise RuntimeError("listener bug")

    seen: list[bool] = []
    monitor.add_listener(broken)
    monitor.add_listener(seen.append)
    with capture_logs() as logs:
        assert monitor.check() is True
    assert seen == [True]
    assert any(e["event"] == "share_listener_failed" for e in logs)


def test_a_mass_vanish_is_held_once_then_believed_and_the_share_stays_online(share: Path) -> None:
    watcher = dataclasses.replace(WatcherConfig(), vanish_fraction=0.2, vanish_min_files=5)
    monitor = ShareMonitor(images_for(share), watcher, online_interval=30)
    assert monitor.check() is True
    guard = VanishGuard(watcher, "test")
    assert guard.believe(["a", "b", "c", "d"], 10) == ["a", "b", "c", "d"]  # under vanish_min_files
    ten = [f"f{i}" for i in range(10)]
    assert guard.believe(ten, 100) == ten  # 10 % is under the fraction
    thirty = [f"g{i:02}" for i in range(30)]
    with capture_logs() as logs:
        assert guard.believe(thirty, 100) == []
        assert holding(guard) == 30
        # Still gone at the next look, with more deletions on top: the held ones are
        # believed, the fresh ones (a mass vanish of their own) are held in turn.
        more = [f"h{i:02}" for i in range(25)]
        assert guard.believe(thirty + more, 100) == thirty
        assert guard.believe(more, 70) == more
    # No flapping: the share never went offline for it.
    assert monitor.online is True and monitor.transitions == 1
    assert [e["event"] for e in logs] == [
        "share_mass_vanish",
        "share_mass_vanish_confirmed",
        "share_mass_vanish",
        "share_mass_vanish_confirmed",
    ]


async def test_a_hung_probe_is_offline_and_never_blocks_the_loop(share: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    calls = 0

    def hung(images: object) -> str | None:
        nonlocal calls
        calls += 1
        release.wait(30)
        return None

    monitor = ShareMonitor(images_for(share), probe_timeout=0.2)
    monkeypatch.setattr(share_mod, "probe", hung)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    try:
        assert await monitor.acheck() is False
        assert monitor.reason == "probe_hung"
        assert await monitor.acheck() is False
        assert calls == 1  # no second thread sent into the same hang
        assert ticks > 5  # the loop kept running meanwhile
        release.set()
        assert await monitor.acheck() is True
    finally:
        release.set()
        task.cancel()


async def test_run_backs_off_while_offline_and_wakes_online(share: Path) -> None:
    monitor = ShareMonitor(images_for(share), online_interval=0.05, offline_initial=0.05, offline_max=0.2)
    transitions: list[bool] = []
    came_back = asyncio.Event()

    def on_change(online: bool) -> None:
        transitions.append(online)
        if online and False in transitions:
            came_back.set()

    monitor.add_listener(on_change)
    moved = share.with_name("share-away")
    os.rename(share, moved)
    assert monitor.check() is False  # seen offline before run() starts re-checking
    stop = asyncio.Event()
    task = asyncio.create_task(monitor.run(stop))
    try:
        waiter = asyncio.create_task(monitor.wait_online())
        await asyncio.sleep(0)
        assert not waiter.done()
        os.rename(moved, share)
        await asyncio.wait_for(waiter, 10)
        await asyncio.wait_for(came_back.wait(), 10)
        assert monitor.online
        assert transitions == [False, True]
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_an_io_error_is_confirmed_before_the_share_goes_offline(
    share: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An SMB client reconnecting answers EIO for a few seconds: one failed probe of an
    # online share is looked at again, and a success keeps it online.
    monitor = ShareMonitor(images_for(share), confirm_seconds=30.0)
    seen: list[bool] = []
    monitor.add_listener(seen.append)
    assert await monitor.acheck() is True
    answers = iter(["marker_error:EIO", "marker_error:EIO", None])
    monkeypatch.setattr("reactor.watch.share.probe", lambda images: next(answers))
    assert await monitor.acheck() is True
    assert seen == [True] and monitor.blips == 1
    # An error that lasts is an outage; a clean "not found" is believed at once.
    lasting = ShareMonitor(images_for(share), confirm_seconds=1.0)
    lasting._apply(None)
    monkeypatch.setattr("reactor.watch.share.probe", lambda images: "root_error:EIO")
    assert await lasting.acheck() is False and lasting.reason == "root_error:EIO"
    gone = ShareMonitor(images_for(share), confirm_seconds=30.0)
    gone._apply(None)
    monkeypatch.setattr("reactor.watch.share.probe", lambda images: "marker_missing")
    assert await gone.acheck() is False
