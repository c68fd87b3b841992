"""The child holds no secrets and cannot take the host down (issue 13): real child
processes, the real engine, real files."""

from __future__ import annotations

import multiprocessing
import os
import sys
from pathlib import Path

import psutil
import pytest
from PIL import Image

from reactor.config import DetectorConfig
from reactor.detector import Detection, DetectionFailure, DetectionJob, Detector, wire
from reactor.detector.child import is_secret
from reactor.detector.types import Face
from reactor.detector.waiting import receive
from reactor.errors import ErrorType
from tests.reactor_support import write_photos

SIDE_EFFECTS: list[str] = []


class Evil:
    """Unpickling this would run code in the parent."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (SIDE_EFFECTS.append, ("unpickled!",))


async def test_the_parent_never_unpickles_what_the_child_sends() -> None:
    parent, child = multiprocessing.Pipe()
    try:
        child.send(("result", Evil()))  # a pickle, as a compromised child could send
        kind, _ = await receive(parent, 5)
        assert kind == "invalid" and SIDE_EFFECTS == []
        child.send_bytes(b'{"kind": "result", "payload": {"detection": {"faces": [[1, 2, 3]]}}}')
        assert (await receive(parent, 5))[0] == "invalid"
        child.send_bytes(b"[" * 50_000 + b"]" * 50_000)
        assert (await receive(parent, 5))[0] == "invalid"
    finally:
        parent.close()
        child.close()


def test_outcomes_cross_the_wire_unchanged() -> None:
    face = Face(top=1, right=50, bottom=60, left=2, score=0.75, encoding=tuple(0.01 * i for i in range(128)))
    detection = Detection(
        faces=(face,),
        model="hog",
        scale=0.5,
        original_size=(640, 480),
        decode_ms=1.5,
        detect_ms=2.0,
        encode_ms=3.0,
        file_size_bytes=1234,
        cascade_scale=1.0,
        upsample=1,
        detect_size=(320, 240),
        min_face_px=128,
        file_mtime_ns=1_700_000_000_123_456_789,
        fingerprint="0123456789abcdef0123456789abcdef",
    )
    failure = DetectionFailure(
        ErrorType.OOM, "out of memory", scale=0.5, original_size=(9, 9), details={"model": "cnn"}, file_mtime_ns=42
    )
    for outcome in (detection, failure):
        assert wire.decode(wire.encode("result", outcome)) == ("result", outcome)
    assert wire.decode(wire.encode("ready", {"cuda": False, "pid": 42})) == (
        "ready",
        {"cuda": False, "gpus": 0, "pid": 42},
    )
    card = {"cuda": True, "pid": 42, "card": "NVIDIA GeForce GTX 1650 4096 MiB", "card_pixels": 4_051_764}
    assert wire.decode(wire.encode("ready", card)) == ("ready", {**card, "gpus": 0})
    for bad in ({"card": 7}, {"card": "x" * 5000}, {"card_pixels": -1}, {"card_pixels": "4e6"}):
        with pytest.raises(wire.BadMessage):
            wire.decode(wire.encode("ready", {"cuda": True, "pid": 42, **bad}))


async def test_the_child_holds_no_secrets_and_runs_under_a_memory_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "s3cret-pg")
    monkeypatch.setenv("REACTOR_DATABASE__PASSWORD", "s3cret-reactor")
    monkeypatch.setenv("REACTOR_DATABASE__DSN", "postgresql://u:s3cret-dsn@db/vision")
    monkeypatch.setenv("VISION_API_TOKEN", "s3cret-token")
    detector = Detector(DetectorConfig(engine="tests.fault_engine", max_memory_mb=4096))
    await detector.start()
    try:
        assert detector.pid is not None
        child = psutil.Process(detector.pid)
        environment = child.environ()
        assert not [k for k in environment if is_secret(k)]
        assert "s3cret" not in repr(environment)
        if sys.platform.startswith("linux"):
            assert child.rlimit(psutil.RLIMIT_AS)[0] == 4096 * 1024 * 1024
    finally:
        await detector.close()
    # The reactor's own environment is as it was.
    assert os.environ["PGPASSWORD"] == "s3cret-pg"


async def test_a_huge_sparse_file_and_a_bomb_are_too_large_and_the_host_stays_up(tmp_path: Path) -> None:
    sparse = tmp_path / "sparse.jpg"
    sparse.touch()
    os.truncate(sparse, 2 * 1024**3)  # 2 GB of nothing: no disk, no memory, unless someone reads it
    bomb = tmp_path / "bomb.png"
    Image.new("L", (20_000, 20_000)).save(bomb, optimize=True)  # 400 Mpx in a small file
    assert bomb.stat().st_size < 5 * 1024 * 1024
    (photo,) = write_photos(tmp_path, ["next.jpg"])
    detector = Detector(DetectorConfig(model="hog", timeout_seconds=60.0))
    await detector.start()
    try:
        big = await detector.detect(DetectionJob(local_path=str(sparse)))
        assert isinstance(big, DetectionFailure) and big.error_type is ErrorType.TOO_LARGE
        assert big.file_size_bytes == 2 * 1024**3
        boom = await detector.detect(DetectionJob(local_path=str(bomb)))
        assert isinstance(boom, DetectionFailure) and boom.error_type is ErrorType.TOO_LARGE
        after = await detector.detect(DetectionJob(local_path=str(tmp_path / photo)))
        assert isinstance(after, Detection) and after.face_count == 1
        assert detector.restarts == 0
    finally:
        await detector.close()
