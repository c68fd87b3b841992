"""Read-ahead of the next photo's bytes, without a detector child."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from reactor.detector import child, prefetch
from reactor.detector.prefetch import Prefetcher, ReadStalled, read_ahead
from reactor.detector.types import Detection, DetectionFailure, DetectionJob, Outcome
from reactor.failure_types import ErrorType
from reactor.store.claims import Claim, ImageState


async def test_take_returns_the_bytes_read_ahead(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    path.write_bytes(b"\xff\xd8 first version")
    prefetcher = Prefetcher()
    read = prefetcher.start(str(path))
    assert prefetcher.start(str(path)) is read  # the same hint twice reads once
    assert await prefetcher.take(str(path), 5) == b"\xff\xd8 first version"
    assert prefetcher.hits == 1
    # Used once; without a hint the file is read now (the parent does every read, timed).
    assert await prefetcher.take(str(path), 5) == b"\xff\xd8 first version"
    assert prefetcher.hits == 1


async def test_a_file_that_changed_after_the_read_is_not_used(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    path.write_bytes(b"\xff\xd8 first version")
    prefetcher = Prefetcher()
    await asyncio.wait_for(asyncio.shield(prefetcher.start(str(path))), 5)
    path.write_bytes(b"\xff\xd8 second, longer version")
    assert await prefetcher.take(str(path), 5) is None
    assert prefetcher.hits == 0


async def test_a_vanished_file_is_not_used(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    path.write_bytes(b"\xff\xd8 photo")
    prefetcher = Prefetcher()
    await asyncio.wait_for(asyncio.shield(prefetcher.start(str(path))), 5)
    path.unlink()
    assert await prefetcher.take(str(path), 5) is None


async def test_another_path_discards_the_hint(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    prefetcher = Prefetcher()
    prefetcher.start(str(a))
    assert await prefetcher.take(str(b), 5) == b"b"  # read now, not from the hint
    assert prefetcher.hits == 0


async def test_the_photos_of_a_batch_are_read_beside_the_hint(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.jpg", tmp_path / "b.jpg", tmp_path / "c.jpg"
    for path in (a, b, c):
        path.write_bytes(path.name.encode())
    prefetcher = Prefetcher()
    prefetcher.start(str(c))  # the image after the batch
    reads = await asyncio.gather(prefetcher.read_now(str(a), 5), prefetcher.read_now(str(b), 5))
    assert list(reads) == [b"a.jpg", b"b.jpg"]
    assert prefetcher.hinted(str(c))  # still being read ahead
    assert await prefetcher.take(str(c), 5) == b"c.jpg" and prefetcher.hits == 1
    assert await prefetcher.read_now(str(tmp_path / "gone.jpg"), 5) is None  # the child says why


async def test_a_batch_read_that_a_write_overtakes_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The photos of a batch get the same look after their read as the one photo's: a copy
    landing between the read and that look leaves the file to the child, never half of it."""
    path = tmp_path / "a.jpg"
    path.write_bytes(b"\xff\xd8 first part")
    real_read = prefetch.read_ahead

    def read_then_overtaken(p: str, limit: int, seen: object = None) -> prefetch.Prefetched | None:
        got = real_read(p, limit, seen)  # type: ignore[arg-type]
        path.write_bytes(b"\xff\xd8 first part, and the rest of the copy")
        return got

    monkeypatch.setattr(prefetch, "read_ahead", read_then_overtaken)
    assert await Prefetcher().read_now(str(path), 5) is None


async def test_a_read_that_stalls_is_read_stalled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read that hangs on the share is its own failure (io_stall), never a detection
    timeout: the detector child never sees the job, and the next try keeps its scale."""
    path = tmp_path / "a.jpg"
    path.write_bytes(b"\xff\xd8 photo")
    release = threading.Event()

    def hung_read(p: str, limit: int = 0, seen: object = None) -> None:
        release.wait(30)  # as a read from a hung mount does

    monkeypatch.setattr(prefetch, "read_ahead", hung_read)
    try:
        with pytest.raises(ReadStalled):
            await Prefetcher().take(str(path), 0.2)
    finally:
        release.set()
    state = ImageState(
        done=False,
        processed=True,
        has_failure=True,
        retry_count=1,
        permanently_failed=False,
        backing_off=False,
        last_scale=0.5,
        last_error_type=ErrorType.IO_STALL.value,
    )
    assert Claim("a.jpg", 1, state).last_scale is None


def test_read_ahead_leaves_odd_files_to_the_child(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    big = tmp_path / "big.jpg"
    big.write_bytes(os.urandom(2048))
    assert read_ahead(str(tmp_path / "empty.jpg")) is None
    assert read_ahead(str(tmp_path)) is None  # a directory
    assert read_ahead(str(tmp_path / "missing.jpg")) is None
    assert read_ahead(str(big), limit=1024) is None
    read = read_ahead(str(big))
    assert read is not None and read.size == 2048


class PlainEngine:
    """An engine with only the contract's ``detect(job)``, like bench/fast_engine.py."""

    cuda = False

    def __init__(self) -> None:
        self.jobs: list[DetectionJob] = []

    def detect(self, job: DetectionJob) -> Outcome:
        self.jobs.append(job)
        if job.local_path.endswith("boom.jpg"):
            raise KeyError("boom")
        return Detection(faces=(), model="hog", scale=1.0, original_size=(1, 1), decode_ms=0, detect_ms=0, encode_ms=0)


def test_prefetched_bytes_are_optional_for_an_engine() -> None:
    engine = PlainEngine()
    job = DetectionJob(local_path="/photos/a.jpg")
    assert isinstance(child.run_one(engine, job, b"\xff\xd8 bytes it cannot take"), Detection)
    assert engine.jobs == [job]


def test_an_engine_exception_becomes_a_runtime_failure() -> None:
    outcome = child.run_one(PlainEngine(), DetectionJob(local_path="/photos/boom.jpg"))
    assert isinstance(outcome, DetectionFailure)
    assert outcome.error_type is ErrorType.RUNTIME
    assert "KeyError" in outcome.message
