"""The reactor on the loopback SMB share (tests/smb_share.py): its configuration and a running instance.

Shared by tests/test_smb_share.py and tests/test_smb_faults.py, two modules so that the
test runner can spread them over two workers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from PIL import Image
from structlog.testing import capture_logs

from reactor.config import Config
from reactor.core.service import Reactor
from reactor.ops import samples
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
        # One child: the lanes are tested elsewhere, and the machine may have two cores.
        detector={"model": "hog", "timeout_seconds": 60.0, "workers": 1},
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
