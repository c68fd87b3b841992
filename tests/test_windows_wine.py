"""The Windows code paths, run by a real Windows CPython under Wine (tests/wine.py).

tools/wine/setup makes the environment (.ci/run runs it); without it these tests are skipped
with the reason. Under the Windows interpreter: the suite's platform tests (the paths under
the real ntpath, the detector's Windows waits), ``reactor detect``, the detector's crash, hang
and timeout replacement and its Job object, and ``reactor run`` against PostgreSQL on the
Linux side of 127.0.0.1 with a ``Z:\\`` share, stopped by Ctrl+C.

What Wine cannot show (Ctrl+Break delivery, the embedded database, NSSM) is listed with the
commands that check it on Windows in deploy/windows-service.md.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from reactor.ops import samples
from tests import wine
from tests.pg_tcp import ADMIN_PASSWORD, TcpServer, start_tcp_server
from tests.reactor_support import add_processed, outcomes, process_config, reactor_cli, wait_until, write_photos

REASON = wine.unavailable()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

# The suite's own tests that hold for Windows, run there as they are (each file whole
# unless a test is named). Left out: what needs the embedded PostgreSQL (it cannot start
# under Wine, deploy/windows-service.md) or scikit-image's sample photos (not installed).
PLATFORM_TESTS = (
    "tests/test_paths.py",
    "tests/test_windows_paths.py",
    "tests/test_windows_drives.py",
    "tests/test_detector_waiting.py",
    "tests/test_detector_lifetime.py::test_job_limit_structure_matches_the_windows_layout",
    "tests/test_aio.py",
    "tests/test_supervision.py",
    "tests/test_queue.py",
    "tests/test_progress.py",
    "tests/test_logs.py",
)


@pytest.fixture(scope="module")
def python() -> wine.WindowsPython:
    return wine.windows_python()


def test_the_suites_platform_tests_pass_under_windows(python: wine.WindowsPython, tmp_path: Path) -> None:
    result = python.run(
        python.module(
            "pytest",
            "-p",
            "no:cacheprovider",
            "-n",
            "0",
            "-q",
            "-rs",
            f"--basetemp={wine.windows_path(tmp_path / 'bt')}",
            *PLATFORM_TESTS,
        ),
        timeout=300,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-6000:]
    # The only skips: the three symlink cases of tests/test_paths.py, which Wine cannot
    # resolve, and the Linux-only halves of the drive tests; the network drive N: ran.
    skipped = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert all("symlinks" in line or "Windows always answers" in line for line in skipped), skipped
    assert re.search(r"\d+ passed", out) and "failed" not in out, out[-2000:]


def test_reactor_detect_under_windows(python: wine.WindowsPython, tmp_path: Path) -> None:
    wanted = {"astronaut.jpg", "collage_2x2.jpg", "astronaut.heic", "cat.jpg", "bad/empty.jpg", "bad/notes.jpg"}
    library = samples.build_library(tmp_path, include=lambda name: name in wanted)
    expected: dict[str, object] = {str(k): v for k, v in samples.expected(library).items()}
    expected["bad/gone.jpg"] = "missing"
    names = sorted(expected)
    result = python.run(
        python.module("reactor", "detect", *(wine.windows_path(tmp_path / name) for name in names)), timeout=300
    )
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert result.returncode == 1, result.stderr[-4000:]  # some failed, each typed
    found = {
        name: (line["face_count"] if line["ok"] else line["error_type"])
        for name, line in zip(names, lines, strict=True)
    }
    assert found == {name: (v if isinstance(v, int) else str(v)) for name, v in expected.items()}
    assert all(line["path"] == wine.windows_path(tmp_path / name) for name, line in zip(names, lines, strict=True))


def test_detector_crash_hang_and_job_object_under_windows(python: wine.WindowsPython, tmp_path: Path) -> None:
    write_photos(tmp_path, ["a.jpg"])
    result = python.run(python.module("tests.wine_detector", wine.windows_path(tmp_path)), timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.splitlines()[-1])
    crash, hang, orphan = report["crash"], report["hang"], report["orphan"]
    good, crashed, after = crash["steps"]
    assert good["ok"] and good["faces"] == 1, crash
    # abort() ends a Windows process with 3: a crash, not an engine that could not load.
    assert crashed["error_type"] == "crash" and "could not load" not in crashed["message"], crash
    # The next photo ran in a new child.
    assert after["ok"] and after["faces"] == 1 and after["pid_after"] not in (None, good["pid_after"]), crash
    assert crash["restarts"] == 1 and crash["state"] == "stopped", crash
    [hung] = hang["steps"]
    assert hung["error_type"] == "timeout", hang
    assert hang["replacement"] not in (None, hang["first"]) and hang["restarts"] == 1, hang
    # TerminateProcess on the stand-in reactor: the Job object ended its hung child.
    assert orphan["child_ended"], f"detector child outlived its killed parent: {orphan}"
    assert orphan["parent_exit"] != 0, orphan


@pytest.fixture
def tcp(tmp_path: Path) -> Iterator[TcpServer]:
    (tmp_path / "pgtcp").mkdir()
    server = start_tcp_server(tmp_path / "pgtcp")
    try:
        yield server
    finally:
        server.stop()


async def test_reactor_run_under_windows_stops_cleanly_on_ctrl_c(
    python: wine.WindowsPython, tcp: TcpServer, tmp_path: Path
) -> None:
    tcp.admin("CREATE DATABASE vision")
    dsn = tcp.dsn("postgres", "vision")
    password = tmp_path / "db-password.txt"
    password.write_text(ADMIN_PASSWORD + "\n")
    password.chmod(0o600)
    share = tmp_path / "share"
    share.mkdir()
    (share / ".reactor-share").write_text("face-reactor share marker\n")
    write_photos(share, ["a.jpg"])
    samples.write_text_as_jpeg(share / "bad", "notes.jpg")
    database = {"password_file": str(password)}
    linux = process_config(tmp_path, dsn, share, "linux", database=database)
    init = await asyncio.to_thread(reactor_cli, linux, "db", "init", "--standalone")
    assert init.returncode == 0, init.stderr
    # The same service on Windows: a Z:\ share (a local folder), the database over TCP.
    windows = process_config(
        tmp_path,
        dsn,
        share,
        "windows",
        database={"password_file": wine.windows_path(password)},
        images={"root": wine.windows_path(share), "register_files": "always"},
        detector={"engine": "tests.fault_engine", "timeout_seconds": 60.0, "workers": 1},
        watcher={"enabled": True, "stability_seconds": 0.5},
        sweep={"interval_seconds": 3600.0, "poll_seconds": 3600.0},
    )
    reactor = wine.WineReactor(python, windows, tmp_path / "reactor.log").start()
    conn = await asyncpg.connect(dsn, password=ADMIN_PASSWORD)
    try:
        await reactor.wait_event("watch_started", 240)
        await reactor.wait_event("listener_connected", 60)
        # NOTIFY: a processed row from the upstream side, its file not on the share.
        await add_processed(conn, ["gone.jpg"])
        # The watcher: a new photo on the share, registered and detected.
        write_photos(share, ["new/b.jpg"])

        async def done(*paths: str) -> bool:
            found = await outcomes(conn)
            return all(p in found for p in paths)

        await wait_until(lambda: done("a.jpg", "bad/notes.jpg", "gone.jpg", "new/b.jpg"), 180, "the first outcomes")
        # A photo that is slow in the engine (5 s) is in flight when Ctrl+C comes.
        write_photos(share, ["new/c__slow_5__.jpg"])

        async def in_flight() -> bool:
            state: str | None = await conn.fetchval("SELECT state ->> 'current_image' FROM reactor_instances")
            return state == "new/c__slow_5__.jpg"

        await wait_until(in_flight, 120, "the slow photo to be in flight")
        # Wine turns SIGINT into the console's Ctrl+C: Python's SIGINT handler, as on Windows.
        assert await asyncio.to_thread(reactor.stop, 120, signal.SIGINT) == 0, reactor.tail()
        reactor.ensure_dead()
        assert reactor.events("stop_requested")[0]["signal"] == "SIGINT"
        assert reactor.events("reactor_stopping") and reactor.events("reactor_stopped")
        assert await outcomes(conn) == {
            "a.jpg": ["result"],
            "bad/notes.jpg": ["failure:unsupported"],
            "gone.jpg": ["failure:missing"],
            "new/b.jpg": ["result"],
            "new/c__slow_5__.jpg": ["result"],
        }
        faces = await conn.fetch("SELECT image_path, face_count FROM face_metadata ORDER BY 1")
        assert [(r["image_path"], r["face_count"]) for r in faces] == [
            ("a.jpg", 1),
            ("new/b.jpg", 1),
            ("new/c__slow_5__.jpg", 1),
        ]
        assert await conn.fetchval("SELECT count(*) FROM reactor_claims") == 0
        assert await conn.fetchval("SELECT count(*) FROM reactor_instances") == 0
        assert reactor.events("files_registered"), "the watcher registered no file"
        # Windows was asked about the drive (GetDriveTypeW): Wine's Z: is a fixed drive.
        observer = reactor.events("watcher_observer")[0]
        assert (observer["observer"], observer["reason"], observer["fstype"]) == (
            "native",
            "local_drive",
            "drive_fixed",
        )
    finally:
        reactor.ensure_dead()
        await conn.close()
