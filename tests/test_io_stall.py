"""One hung folder stops nothing else (issue 24): a folder of the share that is a real
network mount whose client is stopped (SIGSTOP), while the rest of the share answers.

Every file-system call on the share runs on the share's own threads with a deadline
(reactor.util.shareio): the hung folder is skipped by the scan and its photos fail as
io_stall, the other folders are detected, the share stays online, /healthz names the
stalled folder, and once the folder answers again (SIGCONT) its photos are detected."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from reactor.config import Config, DetectorConfig
from reactor.core.service import Reactor
from reactor.detector import Detection, DetectionFailure, DetectionJob, Detector, prefetch
from reactor.failure_types import ErrorType
from reactor.paths import gone_by_folder
from reactor.util.shareio import IoStall, ShareIO
from tests.httpget import http_request
from tests.reactor_support import add_processed, wait_until, write_photos
from tests.sshfs_share import SshfsShare


async def test_a_call_past_its_deadline_stalls_its_folder_until_it_returns(tmp_path: Path) -> None:
    io = ShareIO(deadline_seconds=0.5, workers=2)
    recovered: list[str] = []
    io.add_recovery_listener(recovered.append)
    release = asyncio.Event()
    loop = asyncio.get_running_loop()
    hung = str(tmp_path / "hung")

    def hang() -> str:
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(60)
        return "answered"

    with pytest.raises(IoStall):
        await io.call(hung, hang)
    assert io.stalled() == [hung]
    with pytest.raises(IoStall):  # at once, without a thread: the folder is stalled
        await io.call(os.path.join(hung, "sub"), os.listdir, str(tmp_path))
    assert await io.call(str(tmp_path / "fine"), lambda: "fine") == "fine"  # another folder answers
    release.set()

    async def answered() -> bool:
        return not io.stalled()

    await wait_until(answered, 30, "the stuck call to return")
    assert recovered == [hung]
    assert await io.call(hung, lambda: "again") == "again"


async def test_gone_by_folder_times_each_folder_on_its_own(tmp_path: Path) -> None:
    """The deletion check of paths in two folders (the watcher's and a moved photo's old
    paths): the folder that hangs leaves its own paths unknown and is the one marked
    stalled; the other's gone file is gone. (The move check once timed every path under
    the first path's folder: a hang in the second was blamed on the first.)"""
    io = ShareIO(deadline_seconds=0.5, workers=2)
    release = threading.Event()
    (tmp_path / "fine").mkdir()
    (tmp_path / "hung").mkdir()
    (tmp_path / "fine" / "here.jpg").write_bytes(b"x")

    def local(path: str) -> str:
        # On the share's threads only (grouping by folder maps paths on the loop too).
        if path.startswith("hung/") and threading.current_thread() is not threading.main_thread():
            release.wait(60)  # the folder's client does not answer
        return str(tmp_path / path)

    paths = ["fine/here.jpg", "fine/gone.jpg", "hung/a.jpg"]
    try:
        states = await gone_by_folder(io, paths, local)
        assert states == {"fine/here.jpg": False, "fine/gone.jpg": True, "hung/a.jpg": None}
        assert io.stalled() == [str(tmp_path / "hung")]
    finally:
        release.set()


async def test_a_hung_folder_is_io_stall_while_the_rest_of_the_share_is_detected(
    make_config: Callable[..., Config], dsn: str, share: Path, sshfs: SshfsShare
) -> None:
    local = write_photos(share, ["here/a.jpg", "here/b.jpg"])
    (sshfs.server / "remote").mkdir()
    write_photos(sshfs.server, ["remote/r1.jpg", "remote/r2.jpg"])
    remote = ["remote/r1.jpg", "remote/r2.jpg"]
    mountpoint = share / "remote"
    mountpoint.mkdir()
    client = sshfs.mount_folder(sshfs.server / "remote", mountpoint)
    config = make_config(
        detector={"model": "hog", "timeout_seconds": 60.0},
        images={"io_timeout_seconds": 3.0},
        # The network mount's stability window short, as in tests/test_network_share.py: the
        # hung folder's photos are found by a scan once it answers, then wait out the window.
        watcher={
            "observer": "polling",
            "scan_interval_seconds": 1.0,
            "stability_seconds": 0.5,
            "network_stability_seconds": 1.0,
        },
        sweep={"interval_seconds": 3600.0, "poll_seconds": 3600.0},
        health={"enabled": True, "host": "127.0.0.1", "port": 0},
    )
    conn = await asyncpg.connect(dsn)
    reactor = Reactor(config, dsn)
    stop = asyncio.Event()
    client.send_signal(signal.SIGSTOP)  # every call into share/remote hangs from now on
    task = asyncio.create_task(reactor.run(stop))
    try:
        await add_processed(conn, local + remote)

        async def outcomes() -> dict[str, str]:
            done = {r["image_path"]: "detected" for r in await conn.fetch("SELECT image_path FROM face_metadata")}
            failed = await conn.fetch("SELECT image_path, last_error_type FROM face_detection_failures")
            return {**{r["image_path"]: r["last_error_type"] for r in failed}, **done}

        async def split() -> bool:
            if task.done():
                task.result()
            found = await outcomes()
            return all(found.get(p) == "detected" for p in local) and all(found.get(p) == "io_stall" for p in remote)

        await wait_until(split, 120, "the local photos detected and the hung ones io_stall")
        assert reactor.share.online
        assert reactor.share.io.stalled() == [str(mountpoint)]
        assert reactor.health is not None
        port = reactor.health.port
        # Healthy once every lane's detector is up: on a loaded machine a second lane's child
        # may still be loading its models after the first lane has detected the local photos.
        seen: list[tuple[int, bytes]] = []

        async def healthy() -> bool:
            status, _, body = await http_request("127.0.0.1", port, "/healthz")
            seen.append((status, body))
            return status == 200

        await wait_until(healthy, 60, "/healthz to say healthy while the folder hangs")
        body = seen[-1][1]
        assert str(mountpoint) in json.dumps(json.loads(body))
        assert reactor.watcher is not None and reactor.watcher.state == "watching"

        client.send_signal(signal.SIGCONT)

        async def all_detected() -> bool:
            if task.done():
                task.result()
            found = await outcomes()
            return all(found.get(p) == "detected" for p in local + remote)

        await wait_until(all_detected, 120, "the folder's photos detected once it answers")
        assert reactor.share.io.stalled() == []
        assert reactor.supervisor.restarts() == dict.fromkeys(reactor.supervisor.restarts(), 0)
    finally:
        client.send_signal(signal.SIGCONT)
        stop.set()
        await asyncio.wait_for(task, 150)
        await conn.close()
        sshfs.unmount_folder(client, mountpoint)


def _pad(path: Path, size: int) -> None:
    """Bytes after the JPEG's end: still a valid photo, now larger than the read-ahead limit."""
    with open(path, "ab") as out:
        out.write(b"\0" * size)


async def test_a_large_file_is_streamed_to_the_child_under_the_same_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over the read-ahead limit the reactor streams the file in chunks, each read on the
    share's threads with its deadline: the child never reads the share, and a chunk that
    hangs is io_stall (the child replaced, the scale kept), never a detection timeout."""
    (big_name, small) = write_photos(tmp_path, ["big.jpg", "next.jpg"])
    big = tmp_path / big_name
    _pad(big, prefetch.MAX_PREFETCH_BYTES + 1024 * 1024)
    io = ShareIO(deadline_seconds=2.0)
    detector = Detector(DetectorConfig(model="hog", timeout_seconds=60.0), io=io)
    release = threading.Event()
    real = prefetch._chunk_of

    def hung(path: str, offset: int, size: int) -> bytes:
        if offset > 0:
            release.wait(60)  # as a read from a hung mount does
        return real(path, offset, size)

    await detector.start()
    try:
        whole = await detector.detect(DetectionJob(local_path=str(big)))
        assert isinstance(whole, Detection), whole
        monkeypatch.setattr(prefetch, "_chunk_of", hung)
        stalled = await detector.detect(DetectionJob(local_path=str(big)))
        assert isinstance(stalled, DetectionFailure) and stalled.error_type is ErrorType.IO_STALL, stalled
        assert stalled.scale is None  # the next try keeps its scale
        assert io.stalled() == [str(tmp_path)]
        release.set()

        async def answered() -> bool:
            return not io.stalled()

        await wait_until(answered, 30, "the stuck read to return")
        after = await detector.detect(DetectionJob(local_path=str(tmp_path / small)))
        assert isinstance(after, Detection), after
    finally:
        release.set()
        await detector.close()
