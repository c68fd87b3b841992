"""The child holds no secrets and cannot take the host down (issue 13): real child
processes, the real engine, real files."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest
from PIL import Image

from reactor.config import DetectorConfig
from reactor.detector import Detection, DetectionFailure, DetectionJob, Detector, wire
from reactor.detector.child import is_secret
from reactor.detector.types import Face
from reactor.detector.waiting import receive
from reactor.failure_types import ErrorType
from tests.fault_engine import PARENT_ENVIRON_ENV
from tests.pg import PgServer
from tests.reactor_support import REPO, ReactorProcess, process_config, wait_until, write_photos

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


async def test_a_child_without_an_address_limit_is_replaced_over_its_memory_limit(tmp_path: Path) -> None:
    """As a CUDA child (no RLIMIT_AS): the parent watches its resident size."""
    hog, photo = write_photos(tmp_path, ["hog__rss_600__.jpg", "next.jpg"])
    detector = Detector(DetectorConfig(model="hog", engine="tests.fault_engine", max_memory_mb=300))
    await detector.start()
    try:
        over = await detector.detect(DetectionJob(local_path=str(tmp_path / hog)))
        assert isinstance(over, DetectionFailure) and over.error_type is ErrorType.OOM, over
        assert "detector.max_memory_mb=300" in over.message
        after = await detector.detect(DetectionJob(local_path=str(tmp_path / photo)))
        assert isinstance(after, Detection), after  # a new child
        assert detector.restarts == 1
    finally:
        await detector.close()


def _as_one_user() -> list[str]:
    """The prefix that runs a command as a plain user: root reads any process's /proc files
    (CAP_SYS_PTRACE), so as root the command runs in a user namespace of its own, where it
    keeps its uid and has no capabilities, as the service's own user would."""
    if os.getuid() != 0:
        return []
    if shutil.which("unshare") is None:
        pytest.skip("running as root without unshare: every process's environ is readable")
    return ["unshare", "--user", "--"]


@contextlib.asynccontextmanager
async def _tcp_to(socket_path: str) -> AsyncIterator[int]:
    """A loopback TCP port that leads to the test server's unix socket, whose folder a
    process without capabilities may not enter (it belongs to the server's user)."""

    writers: list[asyncio.StreamWriter] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        upstream_reader, upstream_writer = await asyncio.open_unix_connection(socket_path)
        writers.append(upstream_writer)
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for writer in writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await server.wait_closed()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_DUMPABLE) is Linux's")
async def test_the_detector_child_cannot_read_the_parents_environment(
    pg: PgServer, database: str, share: Path, tmp_path: Path
) -> None:
    """`reactor run` started with the password in its environment (as an EnvironmentFile
    would): its detector child cannot read it from /proc/<parent>/environ."""
    probe = tmp_path / "parent-environ.txt"
    async with _tcp_to(f"{pg.socket_dir}/.s.PGSQL.5432") as port:
        dsn = f"postgresql://postgres@127.0.0.1:{port}/{database}"
        config = process_config(tmp_path, dsn, share, "secret", detector={"engine": "tests.fault_engine"})
        env = {"REACTOR_DATABASE__PASSWORD": "s3cret-in-environ", PARENT_ENVIRON_ENV: str(probe)}
        reactor = ReactorProcess(config, tmp_path / "reactor.log", env=env, prefix=_as_one_user()).start()
        await _probe_environ(reactor, probe)


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.exists() else ""


async def _probe_environ(reactor: ReactorProcess, probe: Path) -> None:
    try:
        await reactor.wait_event("reactor_started")

        async def probed() -> bool:
            return bool(_text(probe))

        await wait_until(probed, 60, "the detector child to try the parent's environ")
        assert _text(probe) == "denied"
    finally:
        # Waited for off the event loop: the loop serves the TCP proxy that the reactor's
        # last writes go through on its way out.
        assert await asyncio.to_thread(reactor.stop) == 0


PEEK = """
import os, subprocess, sys
from reactor.util import hardening
peek = ["sh", "-c", "cat /proc/%d/environ >/dev/null 2>&1 && echo read || echo denied" % os.getpid()]
before = subprocess.run(peek, capture_output=True, text=True).stdout.strip()
marked = hardening.forbid_dumps()
after = subprocess.run(peek, capture_output=True, text=True).stdout.strip()
print(before, marked, hardening.dumpable(), after)
"""


def test_the_process_marks_itself_non_dumpable() -> None:
    """The platform branch itself, in a process of its own (pytest's stays dumpable): a
    child of the same user reads the environment before, and not after."""
    if not sys.platform.startswith("linux"):
        script = "from reactor.util import hardening; print(hardening.forbid_dumps(), hardening.dumpable())"
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60)
        assert done.stdout.strip() == "False None", done.stderr
        return
    done = subprocess.run(
        [*_as_one_user(), sys.executable, "-c", PEEK], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert done.stdout.strip() == "read True False denied", done.stderr
