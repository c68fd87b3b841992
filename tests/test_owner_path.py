"""The operator's path of the README ("Setting up an existing vision database") walked on a
PostgreSQL that asks for passwords over TCP, for each kind of database owner in
docs/database-setup.md, and every advice line followed to see that it works."""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.pg_tcp import ADMIN_PASSWORD, TcpServer, start_tcp_server
from tests.reactor_support import process_config, write_photos
from tests.test_db_cli import run
from tests.test_schema import LEGACY_FAILURES, UPSTREAM_AI_METADATA

REACTOR_PASSWORD = "r3actor-Secret!"
OWNER_PASSWORD = "0wner-Secret!"
_ids = itertools.count()


@pytest.fixture(scope="module")
def tcp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TcpServer]:
    server = start_tcp_server(tmp_path_factory.mktemp("pgtcp"))
    yield server
    server.stop()


@dataclass
class Site:
    """A vision database: upstream ai_metadata, a legacy failures table, the reactor's role
    with nothing but CONNECT, and the owner who runs the printed SQL."""

    server: TcpServer
    database: str
    role: str
    owner: str
    owner_password: str
    db_owner: str

    def env(self, **extra: str) -> dict[str, str]:
        return {"REACTOR_DATABASE__DSN": self.server.dsn(self.role, self.database),
                "REACTOR_DATABASE__PASSWORD": REACTOR_PASSWORD, **extra}

    def owner_runs(self, sql: str, tmp: Path, *options: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
        path = tmp / f"owner-{next(_ids)}.sql"
        path.write_text(sql)
        password = self.owner_password if (user or self.owner) == self.owner else OWNER_PASSWORD
        return self.server.psql_file(path, user or self.owner, password, self.database, *options)

    def has(self, relation: str) -> bool:
        out = self.server.admin(f"SELECT to_regclass('{relation}') IS NOT NULL", self.database)
        return out.split() == ["t"]


def make_site(server: TcpServer, kind: str) -> Site:
    n = next(_ids)
    database, role = f"vision_{kind}_{n}", f"reactor_{n}"
    server.admin(f"CREATE ROLE {role} LOGIN PASSWORD '{REACTOR_PASSWORD}'")
    if kind == "superuser":
        owner, owner_password, db_owner = "postgres", ADMIN_PASSWORD, "postgres"
    else:
        db_owner = f"dbowner_{n}"
        server.admin(f"CREATE ROLE {db_owner} LOGIN PASSWORD '{OWNER_PASSWORD}'")
        owner, owner_password = db_owner, OWNER_PASSWORD
        if kind == "tables_owner":
            owner = f"tblowner_{n}"
            server.admin(f"CREATE ROLE {owner} LOGIN PASSWORD '{OWNER_PASSWORD}'")
    server.admin(f"CREATE DATABASE {database} OWNER {db_owner}")
    server.admin(UPSTREAM_AI_METADATA + ";" + LEGACY_FAILURES, database)
    server.admin(f"ALTER TABLE ai_metadata OWNER TO {owner}; ALTER TABLE face_detection_failures OWNER TO {owner}",
                 database)
    return Site(server, database, role, owner, owner_password, db_owner)


def one_line(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    for secret in (REACTOR_PASSWORD, OWNER_PASSWORD, ADMIN_PASSWORD):
        assert secret not in result.stdout + result.stderr
    return result.stderr


def set_up(site: Site, tmp: Path) -> None:
    """README: `db init` refuses with one line; the owner runs `db sql`'s file; init and check pass."""
    refused = one_line(run("db", "init", env=site.env()))
    assert f"role {site.role} lacks CREATE on schema public" in refused
    assert f"`reactor db sql --role {site.role}`" in refused
    printed = run("db", "sql", "--role", site.role, env=site.env())
    assert printed.returncode == 0, printed.stderr
    assert f"-d {site.database} -f face-reactor.sql" in printed.stdout
    applied = site.owner_runs(printed.stdout, tmp, "-v", "ON_ERROR_STOP=1")
    assert applied.returncode == 0, applied.stderr
    assert "ERROR" not in applied.stderr
    assert site.has("idx_ai_metadata_processed_path")
    init = run("db", "init", env=site.env())
    assert init.returncode == 0, init.stderr
    assert "already current" in init.stdout
    check = run("db", "check", env=site.env())
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.splitlines()[-1].startswith(f"all in order (role {site.role}, database {site.database})")


@pytest.mark.parametrize("kind", ["superuser", "database_owner", "tables_owner"])
def test_owner_kinds_walk_the_readme(tcp: TcpServer, kind: str, tmp_path: Path) -> None:
    site = make_site(tcp, kind)
    if kind == "tables_owner":
        # Without the database owner's GRANT the file stops at its first statement, even when
        # psql is run without -v ON_ERROR_STOP (the file sets it), and changes nothing.
        printed = run("db", "sql", "--role", site.role, env=site.env()).stdout
        stopped = site.owner_runs(printed, tmp_path)
        assert stopped.returncode == 3, stopped.stdout + stopped.stderr
        errors = [line for line in stopped.stderr.splitlines() if "ERROR" in line]
        assert len(errors) == 1 and f"GRANT CREATE ON SCHEMA public TO {site.owner}" in errors[0], stopped.stderr
        assert not site.has("face_metadata") and not site.has("idx_ai_metadata_processed_path")
        # docs/database-setup.md: the database owner's one statement for this kind.
        granted = site.owner_runs(f"GRANT CREATE ON SCHEMA public TO {site.owner};", tmp_path, "-v",
                                  "ON_ERROR_STOP=1", user=site.db_owner)
        assert granted.returncode == 0, granted.stderr
    set_up(site, tmp_path)
    # The reactor, as its role, records a photo.
    share = tmp_path / "share"
    share.mkdir()
    (share / ".reactor-share").write_text("marker\n")
    [path] = write_photos(share, [f"{kind}/IMG_0001.JPG"])
    tcp.admin(f"INSERT INTO ai_metadata (image_path, is_processed) VALUES ('{path}', TRUE)", site.database)
    config = process_config(tmp_path, tcp.dsn(site.role, site.database), share, "reactor")
    swept = run("--config", str(config), "sweep", "--once", env={"REACTOR_DATABASE__PASSWORD": REACTOR_PASSWORD})
    assert swept.returncode == 0, swept.stdout + swept.stderr[-3000:]
    assert REACTOR_PASSWORD not in swept.stdout + swept.stderr
    faces = tcp.admin(f"SELECT face_count FROM face_metadata WHERE image_path = '{path}'", site.database)
    assert faces.split() == ["1"]
