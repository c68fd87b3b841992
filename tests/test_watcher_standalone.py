"""Standalone mode end to end: the whole reactor, the real detector, real photos, and
nobody writing ai_metadata by hand."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import asyncpg
from structlog.testing import capture_logs

from reactor.config import Config
from reactor.core.service import Reactor
from tests.reactor_support import wait_until, wait_watching, write_photos


async def test_photos_dropped_into_an_empty_folder_get_results(
    make_config: Callable[..., Config],
    dsn: str,
    share: Path,
) -> None:
    config = make_config(
        detector={"model": "hog", "timeout_seconds": 60.0},
        images={"register_files": "always"},
        watcher={"observer": "native", "stability_seconds": 0.5},
        sweep={"interval_seconds": 3600.0, "poll_seconds": 3600.0},
    )
    assert config.register_files
    before = write_photos(share, ["old/before.jpg"])  # found by the start-up scan
    conn = await asyncpg.connect(dsn)
    reactor = Reactor(config, dsn)
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(reactor.run(stop))
        try:
            await wait_watching(reactor, task)
            (share / "drop").mkdir()
            dropped = await asyncio.to_thread(write_photos, share, ["drop/a.jpg", "drop/b.JPG", "drop/c.jpg"])
            await asyncio.to_thread(write_photos, share, ["drop/face_crops/crop.jpg", "drop/partial.jpg.part"])
            everything = sorted(before + dropped)

            async def all_done() -> bool:
                rows = await conn.fetch("SELECT image_path FROM face_metadata ORDER BY 1")
                return [r["image_path"] for r in rows] == everything

            await wait_until(all_done, 120, "results for every photo on the share")
            registered = await conn.fetch("SELECT image_path, is_processed FROM ai_metadata ORDER BY 1")
            assert [(r["image_path"], r["is_processed"]) for r in registered] == [(p, True) for p in everything]
            faces = await conn.fetch("SELECT face_count FROM face_metadata ORDER BY image_path")
            assert [r["face_count"] for r in faces] == [1] * len(everything)

            # A rename in standalone mode moves the registration too, and detects nothing.
            await asyncio.to_thread(os.rename, share / "drop" / "a.jpg", share / "drop" / "renamed.jpg")

            async def moved() -> bool:
                rows = await conn.fetch(
                    "SELECT image_path FROM ai_metadata WHERE image_path LIKE 'drop/%' "
                    "AND image_path IN (SELECT image_path FROM face_metadata) ORDER BY 1"
                )
                return [r["image_path"] for r in rows] == ["drop/b.JPG", "drop/c.jpg", "drop/renamed.jpg"]

            await wait_until(moved, 30, "the rename to move results and registration")
        finally:
            stop.set()
            await asyncio.wait_for(task, 150)
            await conn.close()
    detected = Counter(e["path"] for e in logs if e["event"] == "image_detected")
    assert detected == Counter(everything)  # each photo once; the rename added none
