from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from pathlib import Path

from structlog.testing import capture_logs

from reactor.config import ImagesConfig, WatcherConfig
from reactor.share import ShareMonitor, probe


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


def test_record_vanish_threshold(share: Path) -> None:
    watcher = dataclasses.replace(WatcherConfig(), vanish_fraction=0.2, vanish_min_files=5)
    monitor = ShareMonitor(images_for(share), watcher, online_interval=30)
    assert monitor.check() is True
    assert monitor.record_vanish(4, 10) is False  # under vanish_min_files
    assert monitor.record_vanish(10, 100) is False  # 10 % is under the fraction
    assert monitor.online is True
    with capture_logs() as logs:
        assert monitor.record_vanish(30, 100) is True
    assert monitor.online is False
    assert monitor.reason == "mass_vanish"
    # The marker is still there, but the hold keeps the share offline.
    assert monitor.check() is False
    assert [e["event"] for e in logs] == ["share_mass_vanish", "share_offline"]


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


async def test_mass_vanish_hold_expires(share: Path) -> None:
    watcher = dataclasses.replace(WatcherConfig(), vanish_fraction=0.2, vanish_min_files=1)
    monitor = ShareMonitor(images_for(share), watcher, online_interval=0.05, offline_initial=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(monitor.run(stop))
    try:
        await asyncio.wait_for(monitor.wait_online(), 10)
        assert monitor.record_vanish(5, 10) is True
        assert not monitor.online
        await asyncio.wait_for(monitor.wait_online(), 10)
        assert monitor.online
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
