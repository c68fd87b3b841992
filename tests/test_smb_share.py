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
    return make_config(
        detector={"model": "hog", "timeout_seconds": 60.0},
        # The root is a folder below the mount point (MNT/127.0.0.1:PORT/share).
        images={"root": str(share.root), "register_files": "always", "require_mount": True},
        # attribute_cache_seconds is left to reactor.watch.mounts: the fuse.smbnetfs entry.
        watcher={"scan_interval_seconds": SCAN_SECONDS, "network_stability_seconds": 1.0, **watcher},
        sweep={"interval_seconds": 3600.0, "poll_seconds": 3600.0},
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
        print(f"incomplete reads of the copy: {len(r.events('image_incomplete'))}")


def test_smb_fixture_reports_why_it_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests import smb_share

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(smb_share, "SMBD", None)
    reason = smb_share.unavailable()
    assert reason is not None and "not installed" in reason and "\n" not in reason
