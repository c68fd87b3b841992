"""A running Watcher on a real share folder and a real test database (test-only)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from reactor.config import Config
from reactor.core.queue import ImageQueue, Priority
from reactor.paths import PathMapper
from reactor.util.identity import FileIdentity
from reactor.watch.file_events import DatabaseSink, ReadyFile
from reactor.watch.share import ShareMonitor
from reactor.watch.watcher import Watcher


class CountingSink(DatabaseSink):
    """The real sink, counting the deletions it was handed (vision mode changes no row), its
    batches of settled photos, and its looks at their results."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.counts = {"deleted": 0, "ready": 0, "result_identities": 0}

    async def ready(self, files: Sequence[ReadyFile]) -> None:
        self.counts["ready"] += 1
        await super().ready(files)

    async def result_identities(self, paths: Sequence[str]) -> dict[str, FileIdentity]:
        self.counts["result_identities"] += 1
        return await super().result_identities(paths)

    async def deleted(self, path: str, *, directory: bool) -> None:
        await super().deleted(path, directory=directory)
        self.counts["deleted"] += 1


@dataclass
class Put:
    path: str
    redetect: bool
    at: float


@dataclass
class Harness:
    config: Config
    root: Path
    pool: asyncpg.Pool
    queue: ImageQueue
    share: ShareMonitor
    sink: CountingSink
    watcher: Watcher
    puts: list[Put] = field(default_factory=list)
    sweeps: int = 0

    def paths_put(self) -> list[str]:
        return [p.path for p in self.puts]

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn:
            return await conn.fetch(query, *args)

    async def results(self) -> list[str]:
        return [r["image_path"] for r in await self.fetch("SELECT image_path FROM face_metadata ORDER BY 1")]

    async def seed_result(self, path: str, faces: int = 1) -> None:
        """Results as a finished detection leaves them: face_metadata plus per-face rows."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO face_metadata (image_path, face_count, model, scale) VALUES ($1, $2, 'hog', 1.0)",
                path,
                faces,
            )
            for i in range(faces):
                await conn.execute(
                    "INSERT INTO face_detections (image_path, face_index, box_top, box_right, box_bottom, box_left,"
                    " score, encoding, model, scale) VALUES ($1, $2, 10, 60, 60, 10, 0.9, $3, 'hog', 1.0)",
                    path,
                    i,
                    [0.01 * i] * 128,
                )

    async def seed_failure(self, path: str) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO face_detection_failures (image_path, retry_count, last_error, last_error_type)"
                " VALUES ($1, 1, 'corrupt', 'corrupt')",
                path,
            )


async def until(predicate: Callable[[], Any], seconds: float = 15.0, what: str = "condition") -> None:
    """Poll a condition (sync or async) until it holds, or fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_watcher(config: Config, dsn: str) -> AsyncIterator[Harness]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=3)
    assert pool is not None
    queue = ImageQueue(1000)
    share = ShareMonitor(config.images, config.watcher, online_interval=0.2, offline_initial=0.1, offline_max=0.5)
    puts: list[Put] = []

    def enqueue(path: str, redetect: bool) -> bool:
        puts.append(Put(path, redetect, time.monotonic()))
        return queue.put(path, Priority.FILE_EVENT, redetect=redetect)

    harness: Harness

    def sweep() -> None:
        harness.sweeps += 1

    sink = CountingSink(pool, enqueue, register_files=config.register_files, request_sweep=sweep)
    images = config.images
    mapper = PathMapper(images.root, images.derived_folders, images.max_path_length)
    watcher = Watcher(config, mapper, share, sink)
    harness = Harness(config, Path(images.root), pool, queue, share, sink, watcher, puts)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(share.run(stop)), asyncio.create_task(watcher.run(stop))]
    try:
        await until(lambda: watcher.state == "watching", what="the watcher to start")
        yield harness
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 15)
        await pool.close()


def write_slowly(path: Path, chunks: int, delay: float, size: int = 64 * 1024) -> None:
    """A copy in progress: ``chunks`` writes, ``delay`` seconds apart (runs in a thread)."""
    with open(path, "wb") as fh:
        for i in range(chunks):
            fh.write(os.urandom(size))
            fh.flush()
            os.fsync(fh.fileno())
            if i < chunks - 1:
                time.sleep(delay)
