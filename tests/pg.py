"""The embedded PostgreSQL used by the test suite: one server per session, a template
database with the schema built once, and a fresh database per test (STYLE.md #9)."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pgserver

BIN = Path(pgserver.__file__).parent / "pginstall" / "bin"
TEMPLATE = "reactor_template"
# The system user pgserver runs PostgreSQL as when the tests run as root.
SYSTEM_USER = "pgserver"
_counter = itertools.count()


def run_psql(host: str, database: str, sql: str, *options: str, port: int | None = None) -> str:
    """``sql`` through psql as the superuser on ``host`` (a socket folder); raises on any error."""
    out = subprocess.run(
        [
            str(BIN / "psql"),
            "-X",
            "-q",
            *options,
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            host,
            *(("-p", str(port)) if port is not None else ()),
            "-U",
            "postgres",
            "-d",
            database,
            "-c",
            sql,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout


@dataclass
class PgServer:
    pgdata: Path
    server: pgserver.PostgresServer

    @property
    def socket_dir(self) -> str:
        return str(self.pgdata)

    def dsn(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@/{database}?host={self.socket_dir}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        return run_psql(self.socket_dir, database, sql)

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [str(BIN / "pg_ctl"), "-D", str(self.pgdata), "-w", "-l", str(self.pgdata / "restart.log"), *args],
            check=True,
            capture_output=True,
            text=True,
            # pg_ctl refuses to run as root; pgserver then runs PostgreSQL as its own user.
            user=self.server.system_user,
        )

    def stop(self) -> None:
        self.pg_ctl("stop", "-m", "fast")

    def start(self) -> None:
        opts = f"-k {self.socket_dir} -c listen_addresses=''"
        self.pg_ctl("start", "-o", opts)

    def restart(self) -> None:
        self.stop()
        self.start()

    def shutdown(self) -> None:
        """End of the session. pgserver stops only the postmaster it started itself; one
        started again by restart() would outlive the test run, so stop that one here."""
        self.server.cleanup()
        if (self.pgdata / "postmaster.pid").exists():
            self.stop()

    def fresh_database(self, template: str = TEMPLATE) -> str:
        """A new database, a copy of ``template``: the schema only, or a state that a test
        file built once for several tests (no one may be connected to it)."""
        name = f"t_{os.getpid()}_{next(_counter)}"
        self.psql(f"CREATE DATABASE {name} TEMPLATE {template}")
        return name

    def drop_database(self, name: str) -> None:
        self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# A test server's data lives as long as the test run and no test crashes the machine: the
# writes need not reach the disk. Without this every commit, and every DROP DATABASE after a
# test, waits on fsync; on a machine whose disk is busy that is most of a short test's time.
# Kept in postgresql.auto.conf, so a server that a test restarts runs the same way.
UNSYNCED = {"fsync": "off", "full_page_writes": "off"}


def ensure_system_user() -> None:
    """As root, pgserver runs PostgreSQL as its own system user, created by ``useradd`` on
    first use. Several test workers starting their servers at once on a fresh machine can
    each create it, the last writer's uid winning: a data directory chowned to the lost uid
    is then unreadable ("could not access directory ... Permission denied"). The test
    session's controller creates the user once, before any worker starts."""
    if sys.platform == "win32" or os.geteuid() != 0:
        return
    from pgserver import utils

    utils.ensure_user_exists(SYSTEM_USER)


def start_server(pgdata: Path) -> PgServer:
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    pg = PgServer(pgdata=pgdata, server=server)
    for setting, value in UNSYNCED.items():
        pg.psql(f"ALTER SYSTEM SET {setting} = {value}")
    pg.psql("SELECT pg_reload_conf()")
    return pg


def build_template(pg: PgServer) -> None:
    """The template holds the reactor schema, the trigger and a standalone ai_metadata."""
    from reactor.store import schema

    pg.psql(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
    pg.psql(f"CREATE DATABASE {TEMPLATE}")

    async def apply() -> None:
        conn = await asyncpg.connect(pg.dsn(TEMPLATE))
        try:
            await schema.init_schema(conn, standalone=True)
        finally:
            await conn.close()

    asyncio.run(apply())
