"""The whole reactor on a real network mount: sshfs over a loopback sshd (tests/sshfs_share.py).

Photos are written on the server side, as another client of an SMB or NFS share would:
the reactor sees them only through the mount, with its attribute cache and its own
inode numbers. Skipped, with the reason, where sshfs cannot be set up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from PIL import Image
from structlog.testing import capture_logs

from reactor.config import Config
from reactor.core.health import degraded, evaluate
from reactor.core.service import Reactor
from reactor.ops import audit, samples, status
from reactor.paths import PathMapper
from reactor.store import held
from tests.reactor_support import reported, small_astronaut, wait_until, wait_watching
from tests.sshfs_share import CACHE_SECONDS, SshfsShare

SCAN_SECONDS = 0.5


def photo(folder: Path, name: str, n: int) -> Path:
    """A small face photo, different in content from every other ``n``."""
    image = small_astronaut().copy()
    image.paste(Image.new("RGB", (8, 8), ((n * 37) % 256, (n * 91) % 256, (n * 53) % 256)), (4 * (n % 50), 240))
    folder.mkdir(parents=True, exist_ok=True)
    return samples.write_jpeg(image, folder, name)


def write_with_a_pause(target: Path, data: bytes, pause: float) -> None:
    with open(target, "wb") as fh:
        fh.write(data[: len(data) // 2])
        fh.flush()
        time.sleep(pause)
        fh.write(data[len(data) // 2 :])


@dataclass
class Running:
    reactor: Reactor
    conn: asyncpg.Connection
    share: SshfsShare
    logs: list[MutableMapping[str, Any]] = field(default_factory=list)

    def detected(self) -> Counter[str]:
        return Counter(e["path"] for e in self.logs if e["event"] == "image_detected")

    def events(self, name: str) -> list[MutableMapping[str, Any]]:
        return [e for e in self.logs if e["event"] == name]

    async def results(self) -> list[str]:
        return [r["image_path"] for r in await self.conn.fetch("SELECT image_path FROM face_metadata ORDER BY 1")]

    async def failures(self) -> list[tuple[str, str]]:
        rows = await self.conn.fetch("SELECT image_path, last_error_type FROM face_detection_failures ORDER BY 1")
        return [(r["image_path"], r["last_error_type"]) for r in rows]

    async def scans(self, n: int) -> None:
        """Wait until the scanner has walked the share ``n`` more times."""
        watcher = self.reactor.watcher
        assert watcher is not None
        start = watcher.scanner.scans

        async def walked() -> bool:
            return watcher.scanner.scans >= start + n

        await wait_until(walked, 30, f"{n} scans")


def network_config(make_config: Callable[..., Config], share: SshfsShare, **watcher: Any) -> Config:
    return make_config(
        detector={"model": "hog", "timeout_seconds": 60.0},
        images={"root": str(share.mount), "register_files": "always", "require_mount": True},
        watcher={
            "scan_interval_seconds": SCAN_SECONDS,
            "network_stability_seconds": 1.0,
            "attribute_cache_seconds": float(CACHE_SECONDS),
            **watcher,
        },
        sweep={"interval_seconds": 3600.0, "poll_seconds": 3600.0},
    )


@contextlib.asynccontextmanager
async def running(config: Config, dsn: str, share: SshfsShare) -> AsyncIterator[Running]:
    (share.server / config.images.marker).touch()
    conn = await asyncpg.connect(dsn)
    reactor = Reactor(config, dsn)
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(reactor.run(stop))
        try:
            await wait_watching(reactor, task)
            yield Running(reactor, conn, share, logs)
        finally:
            stop.set()
            await asyncio.wait_for(task, 150)
            await conn.close()


async def test_copies_in_progress_end_with_one_result_and_no_failure(
    make_config: Callable[..., Config],
    dsn: str,
    sshfs: SshfsShare,
    tmp_path: Path,
) -> None:
    if not shutil.which("pv"):
        pytest.skip("pv is not installed (apt-get install pv; .ci/run does it)")
    config = network_config(make_config, sshfs)
    async with running(config, dsn, sshfs) as r:
        watcher = r.reactor.watcher
        assert watcher is not None and watcher.choice is not None
        assert watcher.choice.fstype == "fuse.sshfs" and not watcher.scanner.use_inode
        assert watcher.window == CACHE_SECONDS + 2.0  # the cache's time plus a margin, over the 1 s configured
        source = photo(tmp_path / "staging", "big.jpg", 1)
        size = source.stat().st_size
        (sshfs.server / "in").mkdir()
        # A rate-limited copy on the server side, about 3 s long.
        rate = max(1024, size // 3)
        copy = await asyncio.create_subprocess_shell(
            f"pv -q -L {rate} '{source}' > '{sshfs.server / 'in' / 'slow.jpg'}'"
        )
        # A copy that stalls for longer than the window: half the file, a pause, the rest.
        # The detector then sees a JPEG without its end marker, which is not a damaged one.
        data = photo(tmp_path / "staging", "stall.jpg", 2).read_bytes()
        pause = watcher.window + 3 * SCAN_SECONDS + 2.0
        await asyncio.to_thread(write_with_a_pause, sshfs.server / "in" / "stall.jpg", data, pause)
        assert await copy.wait() == 0

        async def both_done() -> bool:
            return await r.results() == ["in/slow.jpg", "in/stall.jpg"]

        await wait_until(both_done, 60, "results for both copies")
        assert await r.failures() == []
        await reported(r.detected, Counter(["in/slow.jpg", "in/stall.jpg"]), "the detections logged")
        failed = [e for e in r.logs if e["event"] in ("image_failed", "permanently_failed")]
        assert failed == []
        # When the stalled copy was queued mid-copy (stable for the whole window), it was
        # told apart from a damaged photo (no end marker; or, with the client's cache
        # still showing the old size, a size that changed during the read) and tried
        # again. Whether a scan falls inside the pause depends on the machine's load
        # (tests/test_network_identity.py checks the verdict itself on cut files).
        incomplete = r.events("image_incomplete")
        assert {e["path"] for e in incomplete} <= {"in/stall.jpg"}


async def test_remount_and_server_side_rename_detect_nothing_again(
    make_config: Callable[..., Config],
    dsn: str,
    sshfs: SshfsShare,
) -> None:
    for n in range(4):
        photo(sshfs.server / "album", f"p{n}.jpg", n)
    photo(sshfs.server, "top.jpg", 9)
    config = network_config(make_config, sshfs)
    everything = ["album/p0.jpg", "album/p1.jpg", "album/p2.jpg", "album/p3.jpg", "top.jpg"]
    async with running(config, dsn, sshfs) as r:

        async def all_done() -> bool:
            return await r.results() == everything

        await wait_until(all_done, 90, "results for the library")
        faces_before = await r.conn.fetch(
            "SELECT image_path, face_index, box_top, box_left FROM face_detections ORDER BY 1, 2"
        )
        inodes = {p: os.stat(sshfs.mount / p).st_ino for p in everything}

        # The connection drops and the share is mounted again: the new mount numbers
        # inodes afresh (looking files up in another order than the first scan did
        # makes sure of it, before the reactor sees the share again). Neither sorted
        # nor reversed: the first numbering follows the scan's lookups or, when FUSE
        # lists with readdirplus, the server folder's order (newest first on tmpfs).
        sshfs.kill()

        async def offline() -> bool:
            return not r.reactor.share.online

        await wait_until(offline, 30, "the share to go offline")

        def remount() -> dict[str, int]:
            sshfs.remount()
            shuffled = [everything[i] for i in (1, 4, 3, 0, 2)]
            return {p: os.stat(sshfs.mount / p).st_ino for p in shuffled}

        assert await asyncio.to_thread(remount) != inodes

        async def online() -> bool:
            return r.reactor.share.online and r.reactor.watcher is not None and r.reactor.watcher.state == "watching"

        await wait_until(online, 30, "the share to come back")
        await r.scans(4)
        await reported(r.detected, Counter(everything), "the detections logged")
        assert r.events("image_changed") == []

        # A folder renamed on the server: new paths, new inodes, the same files.
        os.rename(sshfs.server / "album", sshfs.server / "renamed")

        async def moved() -> bool:
            return await r.results() == [p.replace("album/", "renamed/") for p in everything]

        await wait_until(moved, 30, "the results to follow the server-side rename")
        await r.scans(2)
        await reported(r.detected, Counter(everything), "nothing detected again")
        faces_after = await r.conn.fetch(
            "SELECT image_path, face_index, box_top, box_left FROM face_detections ORDER BY 1, 2"
        )
        assert [(f["image_path"].replace("renamed/", "album/"), *tuple(f)[1:]) for f in faces_after] == [
            tuple(f) for f in faces_before
        ]
        registered = await r.conn.fetch("SELECT image_path FROM ai_metadata ORDER BY 1")
        assert [x["image_path"] for x in registered] == await r.results()


async def test_a_dead_mount_records_no_failure_and_deletes_nothing(
    make_config: Callable[..., Config],
    dsn: str,
    sshfs: SshfsShare,
) -> None:
    for n in range(3):
        photo(sshfs.server, f"k{n}.jpg", n)
    config = network_config(make_config, sshfs)
    async with running(config, dsn, sshfs) as r:
        everything = ["k0.jpg", "k1.jpg", "k2.jpg"]

        async def all_done() -> bool:
            return await r.results() == everything

        await wait_until(all_done, 90, "results for the library")
        sshfs.kill()  # the connection dies: the mount answers ENOTCONN
        photo(sshfs.server, "during.jpg", 7)  # written while this client is cut off

        async def offline() -> bool:
            return not r.reactor.share.online

        await wait_until(offline, 30, "the share to go offline")
        await asyncio.sleep(3 * SCAN_SECONDS)  # scans and deletion checks that must do nothing
        assert await r.results() == everything
        assert await r.failures() == []
        await asyncio.to_thread(sshfs.remount)

        async def caught_up() -> bool:
            return await r.results() == ["during.jpg", *everything]

        await wait_until(caught_up, 60, "the photo written meanwhile")
        assert await r.failures() == []
        await reported(r.detected, Counter(["during.jpg", *everything]), "the detections logged")
        assert r.events("image_deleted") == [] and r.events("folder_deleted") == []


def test_sshfs_fixture_reports_why_it_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests import sshfs_share

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(sshfs_share, "SSHD", None)
    reason = sshfs_share.unavailable()
    assert reason is not None and "not installed" in reason and "\n" not in reason


async def test_a_mass_deletion_is_held_once_then_applied_by_the_operator(
    make_config: Callable[..., Config],
    dsn: str,
    sshfs: SshfsShare,
) -> None:
    names = [f"lib/m{n}.jpg" for n in range(10)]
    for n, name in enumerate(names):
        photo(sshfs.server / "lib", name.split("/")[1], n)
    config = network_config(make_config, sshfs, vanish_min_files=3)
    async with running(config, dsn, sshfs) as r:

        async def all_done() -> bool:
            return await r.results() == names

        await wait_until(all_done, 90, "results for the library")
        gone = names[:4]  # 40 %: more than watcher.vanish_fraction
        for name in gone:
            (sshfs.server / name).unlink()

        async def held_rows() -> list[str]:
            return [x["image_path"] for x in await r.conn.fetch("SELECT image_path FROM reactor_held_deletions")]

        async def four_held() -> bool:
            return sorted(await held_rows()) == gone

        await wait_until(four_held, 60, "the mass deletion to be held")
        photo(sshfs.server / "lib", "new.jpg", 42)  # the share stays online for what is there

        async def new_done() -> bool:
            return "lib/new.jpg" in await r.results()

        await wait_until(new_done, 60, "the new photo's result")
        await r.scans(4)
        # Held once: no flapping between offline and online, no repeated withholding.
        assert len(r.events("deletions_held")) == 1
        assert len(r.events("share_mass_vanish")) == 1
        assert r.reactor.share.online
        assert set(gone) <= set(await r.results())  # nothing deleted yet
        snapshot = r.reactor.health_snapshot()
        assert snapshot["held_deletions"] == 4
        assert evaluate(snapshot, 0.0) == [] and "4 deletions held" in degraded(snapshot)[0]
        shown = await status.collect(r.conn, config.health.heartbeat_seconds)
        assert shown.held_deletions == 4 and "held deletions" in status.render_table(shown)
        report = await audit.run_audit(r.conn, config, share_online=True, share_reason=None, check_files=False)
        assert not report.clean and report["held_deletions"].count == 4

        # One file comes back: released, its result kept, nothing detected again.
        photo(sshfs.server / "lib", "m0.jpg", 0)

        async def released() -> bool:
            return sorted(await held_rows()) == gone[1:]

        await wait_until(released, 30, "the returned file to be released")
        result = await held.apply(r.conn, PathMapper.for_images(config.images), standalone=True)
        assert sorted(result.deleted) == gone[1:] and result.released == []
        assert result.backups["face_metadata"][1] == 3 and result.backups["face_detections"][1] == 3
        assert await r.results() == sorted(["lib/new.jpg", *names[:1], *names[4:]])
        assert await held_rows() == []
        await r.scans(2)
        assert r.reactor.health_snapshot()["held_deletions"] == 0
        await reported(r.detected, Counter([*names, "lib/new.jpg"]), "the detections logged")
