from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from reactor.config import Config, load
from tests import schedule, smb_share, sshfs_share
from tests.pg import PgServer, build_template, ensure_system_user, start_server
from tests.reactor_support import ReactorProcess
from tests.smb_share import SmbShare
from tests.sshfs_share import SshfsShare


@pytest.fixture(scope="session")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    server = start_server(tmp_path_factory.mktemp("pgdata"))
    build_template(server)
    yield server
    server.shutdown()


@pytest.fixture
def database(pg: PgServer) -> Iterator[str]:
    """The name of a fresh database, a copy of the template, dropped after the test."""
    name = pg.fresh_database()
    yield name
    pg.drop_database(name)


@pytest.fixture
def dsn(pg: PgServer, database: str) -> str:
    return pg.dsn(database)


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the test's fresh database, as the superuser."""
    connection = await asyncpg.connect(dsn)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def intruder(pg: PgServer, database: str) -> AsyncIterator[asyncpg.Connection]:
    """A role that may connect and nothing else: NOTIFY needs no privilege."""
    admin = await asyncpg.connect(pg.dsn(database))
    await admin.execute("DO $$ BEGIN CREATE ROLE intruder LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    await admin.close()
    conn = await asyncpg.connect(pg.dsn(database, user="intruder"))
    yield conn
    await conn.close()


@pytest.fixture
def share(tmp_path: Path) -> Path:
    """An empty, online share root (it holds the marker file)."""
    root = tmp_path / "share"
    root.mkdir()
    (root / ".reactor-share").write_text("face-reactor share marker\n")
    return root


@pytest.fixture
def make_config(dsn: str, share: Path, tmp_path: Path) -> Callable[..., Config]:
    """A Config on the test database and share; keyword overrides per section,
    e.g. make_config(sweep={"interval_seconds": 3600})."""

    def make(**sections: dict[str, Any]) -> Config:
        base = load(None, env={})
        values: dict[str, Any] = {
            "database": {"dsn": dsn, "embedded_dir": str(tmp_path / "unused-pgdata")},
            "images": {"root": str(share)},
            "health": {"enabled": False},
            # One detector child, whatever the cores of the machine running the tests: each
            # child loads the models (~1.5 CPU seconds) and a reactor waits for all of them.
            # The lanes side by side run where a test asks for two: tests/test_reactor.py
            # (the core end-to-end runs), tests/test_lanes.py, tests/test_status.py.
            "detector": {"workers": 1},
        }
        for section, overrides in sections.items():
            values.setdefault(section, {}).update(overrides)
        replaced = {name: dataclasses.replace(getattr(base, name), **fields) for name, fields in values.items()}
        return dataclasses.replace(base, **replaced)

    return make


@pytest.fixture(scope="session")
def sshfs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshfsShare]:
    """A real network share (sshfs over a loopback sshd); skipped where it cannot be made."""
    reason = sshfs_share.unavailable()
    if reason:
        pytest.skip(f"no sshfs share: {reason}")
    server = SshfsShare(tmp_path_factory.mktemp("sshfs"))
    try:
        server.start()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        server.close()
        pytest.skip(f"no sshfs share: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    yield server
    server.close()


@pytest.fixture
def sshfs(sshfs_server: SshfsShare) -> SshfsShare:
    sshfs_server.reset()
    return sshfs_server


@pytest.fixture(scope="session")
def smb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmbShare]:
    """A real SMB share (Samba on a loopback port, mounted with smbnetfs); skipped where it cannot be made."""
    reason = smb_share.unavailable()
    if reason:
        pytest.skip(f"no SMB share: {reason}")
    server = SmbShare(tmp_path_factory.mktemp("smb"))
    try:
        server.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        server.close()
        pytest.skip(f"no SMB share: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    yield server
    server.close()


@pytest.fixture
def smb(smb_server: SmbShare) -> SmbShare:
    smb_server.reset()
    return smb_server


@pytest.fixture
def procs() -> Iterator[list[ReactorProcess]]:
    """Reactor processes a test started; each is killed at the end if it is still alive."""
    started: list[ReactorProcess] = []
    yield started
    for proc in started:
        proc.ensure_dead()


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller, or a run without workers
        ensure_system_user()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    schedule.order(items)
