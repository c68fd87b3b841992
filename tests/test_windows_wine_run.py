"""``reactor run`` under a real Windows CPython (Wine, tests/wine.py), against the suite's
PostgreSQL on the Linux side of 127.0.0.1 over TCP, with a local folder as the share through
Wine's ``Z:\\`` drive, stopped by Ctrl+C with an image in flight."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from reactor.ops import samples
from tests import wine
from tests.pg_tcp import ADMIN_PASSWORD, TcpServer, start_tcp_server
from tests.reactor_support import add_processed, outcomes, process_config, reactor_cli, wait_until, write_photos

# Wine starts every Windows process slowly on a loaded machine: more than the suite's 180 s.
pytestmark = [wine.needed(), pytest.mark.timeout(420)]


@pytest.fixture
def tcp(tmp_path: Path) -> Iterator[TcpServer]:
    (tmp_path / "pgtcp").mkdir()
    server = start_tcp_server(tmp_path / "pgtcp")
    try:
        yield server
    finally:
        server.stop()


async def test_reactor_run_under_windows_stops_cleanly_on_ctrl_c(tcp: TcpServer, tmp_path: Path) -> None:
    python = wine.windows_python()
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
