"""The operator's path of the README ("Setting up an existing vision database") walked on a
PostgreSQL that asks for passwords over TCP, for each kind of database owner in
docs/database-setup.md, and every advice line followed to see that it works."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from reactor import cli
from reactor import config as config_mod
from reactor.store import db
from tests.pg_tcp import ADMIN_PASSWORD, TcpServer, start_tcp_server
from tests.production_shape import UPSTREAM_AI_METADATA
from tests.reactor_support import process_config, write_photos
from tests.test_db_cli import run
from tests.test_schema import LEGACY_FAILURES

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
        return {
            "REACTOR_DATABASE__DSN": self.server.dsn(self.role, self.database),
            "REACTOR_DATABASE__PASSWORD": REACTOR_PASSWORD,
            **extra,
        }

    def owner_runs(
        self, sql: str, tmp: Path, *options: str, user: str | None = None
    ) -> subprocess.CompletedProcess[str]:
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
    server.admin(
        f"ALTER TABLE ai_metadata OWNER TO {owner}; ALTER TABLE face_detection_failures OWNER TO {owner}", database
    )
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
    assert "progress" not in init.stderr  # nothing was done, so no "done 0 of unknown"
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
        granted = site.owner_runs(
            f"GRANT CREATE ON SCHEMA public TO {site.owner};", tmp_path, "-v", "ON_ERROR_STOP=1", user=site.db_owner
        )
        assert granted.returncode == 0, granted.stderr
    set_up(site, tmp_path)
    # The reactor, as its role, records a photo.
    share = tmp_path / "share"
    share.mkdir()
    (share / ".reactor-share").write_text("marker\n")
    # Four photos once: the progress counts all four, also the ones in flight.
    paths = write_photos(share, [f"{kind}/IMG_000{i}.JPG" for i in range(1, 5 if kind == "superuser" else 2)])
    values = ", ".join(f"('{p}', TRUE)" for p in paths)
    tcp.admin(f"INSERT INTO ai_metadata (image_path, is_processed) VALUES {values}", site.database)
    config = process_config(tmp_path, tcp.dsn(site.role, site.database), share, "reactor")
    swept = run("--config", str(config), "sweep", "--once", env={"REACTOR_DATABASE__PASSWORD": REACTOR_PASSWORD})
    assert swept.returncode == 0, swept.stdout + swept.stderr[-3000:]
    assert REACTOR_PASSWORD not in swept.stdout + swept.stderr
    assert f"queued={len(paths)} " in swept.stdout and f"processed={len(paths)} " in swept.stdout
    done = [json.loads(line) for line in swept.stderr.splitlines() if '"progress_done"' in line]
    assert [(e["done"], e["total"]) for e in done] == [(len(paths), len(paths))]
    faces = tcp.admin(
        f"SELECT face_count FROM face_metadata WHERE image_path = ANY('{{{','.join(paths)}}}')", site.database
    )
    assert faces.split() == ["1"] * len(paths)


@pytest.fixture(scope="module")
def ready_site(tcp: TcpServer, tmp_path_factory: pytest.TempPathFactory) -> Site:
    """A site set up along the README by the owner of the database (not a superuser)."""
    site = make_site(tcp, "advice")
    set_up(site, tmp_path_factory.mktemp("advice"))
    return site


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout.splitlines()[-1]


def test_revoked_privilege_advice_is_the_grants(ready_site: Site, tmp_path: Path) -> None:
    site = ready_site
    site.server.admin(f"REVOKE INSERT ON face_metadata FROM {site.role}", site.database)
    check = run("db", "check", env=site.env())
    assert check.returncode == 1
    assert f"`reactor db sql --grants-only --role {site.role}`" in last_line(check)
    assert "db init" not in last_line(check)
    # Doing what it says: the owner runs the GRANTs.
    grants = run("db", "sql", "--grants-only", "--role", site.role, env=site.env())
    assert "CREATE TABLE" not in grants.stdout and "\\set ON_ERROR_STOP on" in grants.stdout
    assert site.owner_runs(grants.stdout, tmp_path, "-v", "ON_ERROR_STOP=1").returncode == 0
    assert run("db", "check", env=site.env()).returncode == 0


def test_no_usage_on_the_schema_is_named(ready_site: Site, tmp_path: Path) -> None:
    site = ready_site
    # The database owner owns schema public (pg_database_owner) and takes USAGE from everyone.
    revoke = site.owner_runs("REVOKE USAGE ON SCHEMA public FROM PUBLIC;", tmp_path, "-v", "ON_ERROR_STOP=1")
    assert revoke.returncode == 0, revoke.stderr
    refused = one_line(run("db", "init", env=site.env()))
    assert f"role {site.role} lacks USAGE on schema public" in refused
    assert "--standalone" not in refused and "not found" not in refused
    assert f"`reactor db sql --grants-only --role {site.role}`" in refused
    check = run("db", "check", env=site.env())
    assert check.returncode == 1
    assert "USAGE on schema public" in check.stdout and "--grants-only" in last_line(check)
    grants = run("db", "sql", "--grants-only", "--role", site.role, env=site.env()).stdout
    assert site.owner_runs(grants, tmp_path, "-v", "ON_ERROR_STOP=1").returncode == 0
    assert run("db", "init", env=site.env()).returncode == 0
    assert run("db", "check", env=site.env()).returncode == 0


def test_passwords_missing_or_wrong(ready_site: Site) -> None:
    site = ready_site
    env = site.env()
    del env["REACTOR_DATABASE__PASSWORD"]
    missing = one_line(run("db", "check", env=env))
    assert "no password is configured; set REACTOR_DATABASE__PASSWORD, PGPASSWORD or database.password_file" in missing
    assert f"host=127.0.0.1 port={site.server.port} database={site.database}" in missing
    # Doing what it says.
    assert run("db", "check", env={**env, "PGPASSWORD": REACTOR_PASSWORD}).returncode == 0
    wrong = one_line(run("db", "check", env={**env, "REACTOR_DATABASE__PASSWORD": "not-" + REACTOR_PASSWORD}))
    assert "password authentication failed" in wrong and "not-" not in wrong


def test_key_value_dsn_is_accepted(ready_site: Site) -> None:
    site = ready_site
    pairs = f"host=127.0.0.1 port={site.server.port} dbname={site.database} user={site.role} application_name=kv"
    check = run("db", "check", env={"REACTOR_DATABASE__DSN": pairs, "REACTOR_DATABASE__PASSWORD": REACTOR_PASSWORD})
    assert check.returncode == 0, check.stdout + check.stderr


def test_doctor_stderr_has_no_warning(ready_site: Site, tmp_path: Path) -> None:
    doctor = run("--log-level", "error", "doctor", "--skip-detector", env=site_env_with_share(ready_site, tmp_path))
    assert "models" in doctor.stdout
    assert "Warning" not in doctor.stderr, doctor.stderr


def site_env_with_share(site: Site, tmp_path: Path) -> dict[str, str]:
    (tmp_path / ".reactor-share").write_text("marker\n")
    return site.env(REACTOR_IMAGES__ROOT=str(tmp_path))


# Last of the tests on ready_site: it leaves the site on another channel.
def test_changed_channel_is_the_owners_step(ready_site: Site, tmp_path: Path) -> None:
    site = ready_site
    env = site.env(REACTOR_DATABASE__CHANNEL="vision_faces")
    check = run("db", "check", env=env)
    assert check.returncode == 1
    assert "notifies on channel face_reactor, not database.channel vision_faces" in check.stdout
    assert f"`reactor db sql --role {site.role}`" in last_line(check)
    init = one_line(run("db", "init", env=env))
    assert f"`reactor db sql --role {site.role}`" in init
    printed = run("db", "sql", "--role", site.role, env=env).stdout
    assert "channel CONSTANT text := 'vision_faces';" in printed
    assert site.owner_runs(printed, tmp_path, "-v", "ON_ERROR_STOP=1").returncode == 0
    assert run("db", "check", env=env).returncode == 0


def main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], cwd: Path, env: dict[str, str], *argv: str
) -> str:
    """`reactor ARGV` in this process, for refusals that happen before any connection: the
    one line on stderr, after checking the exit code 2, and that nothing leaked."""
    for name in list(os.environ):
        if name.startswith(("REACTOR_", "PG")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(cwd)
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return one_line(subprocess.CompletedProcess(argv, code, out.out, out.err))


def test_schemeless_dsn_in_a_process(tmp_path: Path) -> None:
    """The whole process: exit 2, one line, no traceback, no password, the target as parsed."""
    env = {"REACTOR_DATABASE__DSN": f"vision:{REACTOR_PASSWORD}@db.lan:6543/vision"}
    line = one_line(run("db", "init", env=env, cwd=tmp_path))
    assert "host=db.lan port=6543 database=vision" in line


@pytest.mark.parametrize(
    ("dsn", "names"),
    [
        # No scheme: once read as database "SECRET@db.lan:6543/vision".
        ("vision:{pw}@db.lan:6543/vision", "host=db.lan port=6543 database=vision"),
        ("postgresql://vision@db.lan:54x2/vision", "host=db.lan port=54x2 database=vision"),
        ("postgresql://vision:{pw}@db.lan:6543/vision", "host=db.lan port=6543 database=vision"),
        ("postgresql://vision@db.lan/vision?password={pw}", "host=db.lan port=5432 database=vision"),
        ("host=db.lan port=6543 dbname=vision user=vision password={pw}", "host=db.lan port=6543 database=vision"),
        ("host=db.lan port=65536 dbname=vision", "host=db.lan port=65536 database=vision"),
    ],
)
@pytest.mark.parametrize("where", ["env", "file"])
def test_bad_dsn_is_one_line_without_the_password(
    dsn: str,
    names: str,
    where: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = dsn.format(pw=REACTOR_PASSWORD)
    env = {"REACTOR_DATABASE__DSN": text}
    if where == "file":
        (tmp_path / "config.toml").write_text(f"[database]\ndsn = '{text}'\n")
        env = {}
    line = main(monkeypatch, capsys, tmp_path, env, "db", "check")
    assert names in line
    assert ("REACTOR_DATABASE__DSN" if where == "env" else "[database] dsn") in line
    if "{pw}" in dsn:
        assert "a password never goes in the configuration" in line
    assert not (tmp_path / ".reactor").exists()


def test_password_key_and_dsn_password_read_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "config.toml").write_text(f"[database]\npassword = '{REACTOR_PASSWORD}'\n")
    key = main(monkeypatch, capsys, tmp_path, {}, "db", "check")
    (tmp_path / "empty.toml").write_text("")
    in_dsn = main(
        monkeypatch,
        capsys,
        tmp_path,
        {
            "REACTOR_CONFIG": str(tmp_path / "empty.toml"),
            "REACTOR_DATABASE__DSN": f"postgresql://vision:{REACTOR_PASSWORD}@db.lan/vision",
        },
        "db",
        "check",
    )
    advice = key.split("[database] password: ")[1].strip()
    assert advice.startswith("a password never goes in the configuration") and advice in in_dsn


@pytest.mark.parametrize(
    ("var", "meant"),
    [
        ("REACTOR_DATABASE__DNS", "REACTOR_DATABASE__DSN"),
        ("REACTOR_DATABSE__DSN", "REACTOR_DATABASE__DSN"),
        ("REACTOR_DATABASE_PASSWORD", "REACTOR_DATABASE__PASSWORD"),
    ],
)
def test_mistyped_variable_stops_before_anything(
    var: str, meant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    line = main(monkeypatch, capsys, tmp_path, {var: "postgresql://vision@db.lan/vision"}, "db", "init")
    assert f"environment variable {var}: unknown; did you mean {meant}?" in line
    assert not (tmp_path / ".reactor").exists()
    # Doing what it says: the name it suggests is read.
    fixed = config_mod.load(None, env={meant: "postgresql://vision@db.lan/vision"})
    assert fixed.database.dsn == "postgresql://vision@db.lan/vision" or meant == "REACTOR_DATABASE__PASSWORD"


def test_database_variable_without_dsn_creates_no_embedded_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    line = main(monkeypatch, capsys, tmp_path, {"REACTOR_DATABASE__PASSWORD": REACTOR_PASSWORD}, "db", "init")
    assert "REACTOR_DATABASE__PASSWORD set but database.dsn is empty" in line
    assert "would create a new embedded database" in line
    assert not (tmp_path / ".reactor").exists()
    # Doing what it says: with the DSN set too, the configured server is used, nothing embedded.
    env = {"REACTOR_DATABASE__PASSWORD": REACTOR_PASSWORD, "REACTOR_DATABASE__DSN": "postgresql://vision@db.lan/vision"}
    with db.resolved_dsn(config_mod.load(None, env=env)) as target:
        assert target == "postgresql://vision@db.lan/vision"
    assert not (tmp_path / ".reactor").exists()
