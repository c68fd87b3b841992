"""The whole reactor on a real SMB share: Samba on loopback, mounted with smbnetfs (tests/smb_share.py).

The twin of tests/test_network_share.py (sshfs) for the protocol production uses. Other
clients write on the server folder or through SMB itself (smbprotocol, as Windows does):
a copy that sets its final size first, a file held open with no sharing, the file server
stopping. The share root is a folder below the FUSE mount point, as on a real smbnetfs
mount, with images.require_mount on. Skipped, with the reason, where Samba or smbnetfs
cannot be set up.
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
from reactor.core.service import Reactor
from reactor.ops import samples
from reactor.util.identity import fingerprint_of_bytes
from reactor.watch.mounts import ATTRIBUTE_CACHE_DEFAULTS
from tests.reactor_support import small_astronaut, wait_until, wait_watching
from tests.smb_share import SmbShare

SCAN_SECONDS = 0.5


def photo_bytes(tmp: Path, n: int) -> bytes:
    """A small face photo's JPEG bytes, different in content from every other ``n``."""
    image = small_astronaut().copy()
    image.paste(Image.new("RGB", (8, 8), ((n * 37) % 256, (n * 91) % 256, (n * 53) % 256)), (4 * (n % 50), 240))
    return samples.write_jpeg(image, tmp, f"source-{n}.jpg").read_bytes()


def put(share: SmbShare, relative: str, data: bytes) -> None:
    """Written on the file server: another client's finished copy."""
    target = share.server / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


@dataclass
class Running:
    reactor: Reactor
    conn: asyncpg.Connection
    logs: list[MutableMapping[str, Any]] = field(default_factory=list)

    def detected(self) -> Counter[str]:
        return Counter(e["path"] for e in self.logs if e["event"] == "image_detected")

    def events(self, name: str) -> list[MutableMapping[str, Any]]:
        return [e for e in self.logs if e["event"] == name]

    async def results(self) -> list[str]:
        return [r["image_path"] for r in await self.conn.fetch("SELECT image_path FROM face_metadata ORDER BY 1")]

    async def fingerprint(self, path: str) -> str | None:
        value = await self.conn.fetchval("SELECT fingerprint FROM reactor_file_identity WHERE image_path = $1", path)
        return str(value) if value is not None else None

    async def failures(self) -> list[tuple[str, str]]:
        rows = await self.conn.fetch("SELECT image_path, last_error_type FROM face_detection_failures ORDER BY 1")
        return [(r["image_path"], r["last_error_type"]) for r in rows]

    async def scans(self, n: int) -> None:
        watcher = self.reactor.watcher
        assert watcher is not None
        start = watcher.scanner.scans

        async def walked() -> bool:
            return watcher.scanner.scans >= start + n

        await wait_until(walked, 60, f"{n} scans")


def smb_config(make_config: Callable[..., Config], share: SmbShare, **sections: dict[str, Any]) -> Config:
    watcher = sections.pop("watcher", {})
    sweep = sections.pop("sweep", {"interval_seconds": 3600.0, "poll_seconds": 3600.0})
    return make_config(
        detector={"model": "hog", "timeout_seconds": 60.0},
        # The root is a folder below the mount point (MNT/127.0.0.1:PORT/share).
        images={"root": str(share.root), "register_files": "always", "require_mount": True},
        # attribute_cache_seconds is left to reactor.watch.mounts: the fuse.smbnetfs entry.
        watcher={"scan_interval_seconds": SCAN_SECONDS, "network_stability_seconds": 1.0, **watcher},
        sweep=sweep,
        **sections,
    )


@contextlib.asynccontextmanager
async def running(config: Config, dsn: str, share: SmbShare) -> AsyncIterator[Running]:
    (share.server / config.images.marker).touch()
    conn = await asyncpg.connect(dsn)
    reactor = Reactor(config, dsn)
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(reactor.run(stop))
        try:
            await wait_watching(reactor, task)
            yield Running(reactor, conn, logs)
        finally:
            stop.set()
            await asyncio.wait_for(task, 150)
            await conn.close()


def measure_attribute_cache(share: SmbShare, tries: int = 3) -> float:
    """Seconds until a change made on the server shows through the mount (the client's cache)."""
    probe = share.server / "cache-probe.bin"
    seen = share.root / "cache-probe.bin"
    probe.write_bytes(b"x")
    longest = 0.0
    for n in range(tries):
        os.stat(seen)  # cached now
        with open(probe, "ab") as fh:
            fh.write(b"y" * (n + 1))
        size = probe.stat().st_size
        started = time.monotonic()
        while os.stat(seen).st_size != size:
            if time.monotonic() - started > 30:
                raise AssertionError("the mount never showed the server's change")
            time.sleep(0.01)
        longest = max(longest, time.monotonic() - started)
    probe.unlink()
    return longest


async def test_new_files_under_a_window_that_follows_the_measured_cache(
    make_config: Callable[..., Config], dsn: str, smb: SmbShare, tmp_path: Path
) -> None:
    cache = await asyncio.to_thread(measure_attribute_cache, smb)
    print(f"fuse.smbnetfs attribute cache measured: {cache:.2f} s")
    # The entry in reactor.watch.mounts covers what was measured (the FUSE default of 1 s),
    # with the scheduling slack of a loaded machine.
    assert cache <= ATTRIBUTE_CACHE_DEFAULTS["fuse.smbnetfs"] + 2.0
    for n in range(3):
        put(smb, f"album/n{n}.jpg", photo_bytes(tmp_path, n))
    config = smb_config(make_config, smb)
    async with running(config, dsn, smb) as r:
        watcher = r.reactor.watcher
        assert watcher is not None and watcher.choice is not None
        assert watcher.choice.fstype == "fuse.smbnetfs" and not watcher.scanner.use_inode
        assert watcher.window == ATTRIBUTE_CACHE_DEFAULTS["fuse.smbnetfs"] + 2.0  # not the 90 s of an unknown type
        assert r.reactor.share.online  # require_mount: the mount point is above the root
        put(smb, "album/later.jpg", photo_bytes(tmp_path, 7))
        everything = ["album/later.jpg", "album/n0.jpg", "album/n1.jpg", "album/n2.jpg"]

        async def all_done() -> bool:
            return await r.results() == everything

        await wait_until(all_done, 90, "results for the new files")
        assert await r.failures() == []
        assert r.detected() == Counter(everything)


async def test_an_explorer_copy_gets_no_result_until_it_is_closed(
    make_config: Callable[..., Config], dsn: str, smb: SmbShare, tmp_path: Path
) -> None:
    data = photo_bytes(tmp_path, 3)
    config = smb_config(make_config, smb)
    async with running(config, dsn, smb) as r:
        window = r.reactor.watcher.window if r.reactor.watcher else 0.0
        loop = asyncio.get_running_loop()
        (smb.server / "in").mkdir()
        before_close: list[list[str]] = []

        def look() -> None:
            before_close.append(asyncio.run_coroutine_threadsafe(r.results(), loop).result(30))

        # Through the share the size is final from the start and the mtime stays frozen
        # until the close: the stability window passes in the middle of the copy.
        client = smb.client()
        try:
            await asyncio.to_thread(client.explorer_copy, "in/copy.jpg", data, window + 8.0, look)
        finally:
            client.close()
        assert before_close == [[]], "a result was recorded from a copy still being written"

        async def done() -> bool:
            return await r.results() == ["in/copy.jpg"]

        await wait_until(done, 60, "the result of the closed copy")
        assert await r.fingerprint("in/copy.jpg") == fingerprint_of_bytes(data)
        assert await r.failures() == []
        assert [e for e in r.logs if e["event"] in ("image_failed", "permanently_failed")] == []
        # It was read mid-copy (the window passed while the size and mtime were frozen)
        # and found incomplete, not recorded.
        assert r.events("image_incomplete"), "the copy was never read before it was closed"
        print(f"incomplete reads of the copy: {len(r.events('image_incomplete'))}")


def test_smb_fixture_reports_why_it_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests import smb_share

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(smb_share, "SMBD", None)
    reason = smb_share.unavailable()
    assert reason is not None and "not installed" in reason and "\n" not in reason


async def test_a_file_locked_by_another_client_fails_alone_and_the_share_stays_online(
    make_config: Callable[..., Config], dsn: str, smb: SmbShare, tmp_path: Path
) -> None:
    put(smb, "lock/held.jpg", photo_bytes(tmp_path, 4))
    put(smb, "lock/free.jpg", photo_bytes(tmp_path, 5))
    client = smb.client()
    release = client.hold_locked("lock/held.jpg")  # an open with no sharing, as an editor holds it
    config = smb_config(
        make_config,
        smb,
        retry={"base_seconds": 2.0, "jitter": 0.0, "max_attempts": 20},
        sweep={"interval_seconds": 2.0, "poll_seconds": 3600.0},
    )
    try:
        async with running(config, dsn, smb) as r:

            async def failed_once() -> bool:
                return "lock/free.jpg" in await r.results() and ("lock/held.jpg", "unreadable") in await r.failures()

            await wait_until(failed_once, 90, "the locked file's failure and the free file's result")
            # Opening the locked file makes smbnetfs reconnect: the marker answers EIO
            # for a few seconds. One failed probe does not take the share offline.
            await r.scans(2)
            assert r.events("share_offline") == []
            assert r.reactor.watcher is not None and r.reactor.watcher.sessions == 1
            release()

            async def detected() -> bool:
                return await r.results() == ["lock/free.jpg", "lock/held.jpg"]

            await wait_until(detected, 90, "the file's result once the lock is gone")
            assert await r.failures() == []
            assert r.events("share_offline") == []
    finally:
        with contextlib.suppress(Exception):
            release()
        client.close()


async def test_smbd_stopped_and_restarted_records_nothing_and_catches_up(
    make_config: Callable[..., Config], dsn: str, smb: SmbShare, tmp_path: Path
) -> None:
    everything = [f"k{n}.jpg" for n in range(3)]
    for n, name in enumerate(everything):
        put(smb, name, photo_bytes(tmp_path, n))
    config = smb_config(make_config, smb)
    async with running(config, dsn, smb) as r:

        async def all_done() -> bool:
            return await r.results() == everything

        await wait_until(all_done, 90, "results for the library")
        await asyncio.to_thread(smb.stop_smbd)
        put(smb, "during.jpg", photo_bytes(tmp_path, 7))  # written on the server meanwhile

        async def offline() -> bool:
            return not r.reactor.share.online

        await wait_until(offline, 60, "the share to go offline")
        offline_at = time.monotonic()
        await asyncio.to_thread(smb.start_smbd)

        async def caught_up() -> bool:
            return await r.results() == ["during.jpg", *everything]

        await wait_until(caught_up, 90, "the photo written while smbd was down")
        print(f"share back {time.monotonic() - offline_at:.1f} s after smbd restarted")
        assert await r.failures() == []
        assert r.detected() == Counter(["during.jpg", *everything])
        assert r.events("image_deleted") == [] and r.events("folder_deleted") == []


async def test_a_server_side_rename_keeps_the_results(
    make_config: Callable[..., Config], dsn: str, smb: SmbShare, tmp_path: Path
) -> None:
    everything = [f"album/p{n}.jpg" for n in range(3)]
    for n, name in enumerate(everything):
        put(smb, name, photo_bytes(tmp_path, n))
    config = smb_config(make_config, smb)
    async with running(config, dsn, smb) as r:

        async def all_done() -> bool:
            return await r.results() == everything

        await wait_until(all_done, 90, "results for the library")
        os.rename(smb.server / "album", smb.server / "renamed")

        async def moved() -> bool:
            return await r.results() == [p.replace("album/", "renamed/") for p in everything]

        await wait_until(moved, 60, "the results to follow the server-side rename")
        await r.scans(2)
        assert r.detected() == Counter(everything)  # nothing detected again


async def test_files_that_return_with_other_content_are_detected_again(
    make_config: Callable[..., Config], dsn: str, smb: SmbShare, tmp_path: Path
) -> None:
    names = [f"r/a{n}.jpg" for n in range(4)]
    for n, name in enumerate(names):
        put(smb, name, photo_bytes(tmp_path, n))
    config = smb_config(make_config, smb)
    async with running(config, dsn, smb) as r:

        async def all_done() -> bool:
            return await r.results() == names

        await wait_until(all_done, 90, "results for the library")
        # Deleted (its result orphaned), then restored from elsewhere with other content.
        (smb.server / "r/a0.jpg").unlink()

        async def orphaned() -> bool:
            return any(e["path"] == "r/a0.jpg" for e in r.events("image_deleted"))

        await wait_until(orphaned, 60, "the deletion")
        other = photo_bytes(tmp_path, 20)
        put(smb, "r/a0.jpg", other)

        async def redetected() -> bool:
            return await r.fingerprint("r/a0.jpg") == fingerprint_of_bytes(other)

        await wait_until(redetected, 60, "the restored file's new result")
    # Overwritten while the reactor was stopped: found at start-up, detected again.
    newer = photo_bytes(tmp_path, 21)
    put(smb, "r/a1.jpg", newer)
    async with running(config, dsn, smb) as r:

        async def found() -> bool:
            return await r.fingerprint("r/a1.jpg") == fingerprint_of_bytes(newer)

        await wait_until(found, 90, "the file overwritten while stopped to be detected again")
        await r.scans(2)
        assert r.detected() == Counter(["r/a1.jpg"])
        assert await r.failures() == []


async def test_a_mass_deletion_is_held_once_and_a_file_returning_changed_is_detected_again(
    make_config: Callable[..., Config], dsn: str, smb: SmbShare, tmp_path: Path
) -> None:
    names = [f"lib/m{n}.jpg" for n in range(8)]
    for n, name in enumerate(names):
        put(smb, name, photo_bytes(tmp_path, n))
    config = smb_config(make_config, smb, watcher={"vanish_min_files": 3})
    async with running(config, dsn, smb) as r:

        async def all_done() -> bool:
            return await r.results() == names

        await wait_until(all_done, 90, "results for the library")
        gone = names[:4]  # half: more than watcher.vanish_fraction
        for name in gone:
            (smb.server / name).unlink()

        async def held_rows() -> list[str]:
            return [x["image_path"] for x in await r.conn.fetch("SELECT image_path FROM reactor_held_deletions")]

        async def four_held() -> bool:
            return sorted(await held_rows()) == gone

        await wait_until(four_held, 60, "the mass deletion to be held")
        await r.scans(2)
        assert len(r.events("deletions_held")) == 1 and r.reactor.share.online
        assert set(gone) <= set(await r.results())
        # One comes back as it was (kept), one with other content (detected again).
        put(smb, "lib/m0.jpg", photo_bytes(tmp_path, 0))
        other = photo_bytes(tmp_path, 30)
        put(smb, "lib/m1.jpg", other)

        async def released() -> bool:
            return sorted(await held_rows()) == gone[2:] and await r.fingerprint("lib/m1.jpg") == fingerprint_of_bytes(
                other
            )

        await wait_until(released, 60, "the returned files to be released, the changed one detected again")
        await r.scans(2)
        assert r.detected() == Counter([*names, "lib/m1.jpg"])
