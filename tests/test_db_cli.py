"""`reactor db init|check|sql` as a user runs them: real processes, real databases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from reactor.config import load
from reactor.store import catalog, db
from tests.pg import PgServer
from tests.production_shape import UPSTREAM_AI_METADATA
from tests.test_schema import LEGACY_FAILURES

SECRET = "s3cret-Pw!"


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("REACTOR_", "PG"))}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "reactor", *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=170
    )


def postgres_running_in(data_dir: Path) -> bool:
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if any(str(data_dir) in part for part in cmdline) and any("postgres" in part for part in cmdline[:1]):
            return True
    return False


def test_embedded_init_and_check(tmp_path: Path) -> None:
    """The README's promise: `reactor db init && reactor db check` exits 0 on the embedded default."""
    data_dir = tmp_path / "pgdata"
    env = {"REACTOR_DATABASE__EMBEDDED_DIR": str(data_dir)}
    init = run("db", "init", env=env, cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    assert f"schema version {catalog.SCHEMA_VERSION} applied (standalone" in init.stdout
    check = run("db", "check", "--json", env=env, cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    report = json.loads(check.stdout)
    assert report["ok"] and report["standalone"]
    assert {f["name"] for f in report["findings"] if f["kind"] == "trigger"} == {
        "reactor_notify_truncate",
        "reactor_notify_insert",
        "reactor_notify_update",
        "reactor_notify_delete",
        # pgserver ships pgvector: the embedding trigger of similarity search.
        "reactor_face_embedding",
    }
    # Stopped cleanly on exit: no server left behind, and its log says so.
    assert not (data_dir / "postmaster.pid").exists()
    assert not postgres_running_in(data_dir)
    events = [json.loads(line)["event"] for line in check.stderr.splitlines() if line.startswith("{")]
    assert events[0] == "embedded_db_starting" and events[-1] == "embedded_db_stopped"


def test_embedded_default_dir_is_under_the_working_directory(tmp_path: Path) -> None:
    result = run("db", "init", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / ".reactor" / "pgdata" / "PG_VERSION").exists()
    assert not (tmp_path / ".reactor" / "pgdata" / "postmaster.pid").exists()


def test_check_reports_problems_and_exits_1(pg: PgServer, database: str) -> None:
    pg.psql("ALTER TABLE face_metadata DROP COLUMN model; DROP TRIGGER reactor_notify_insert ON ai_metadata", database)
    env = {"REACTOR_DATABASE__DSN": pg.dsn(database)}
    result = run("db", "check", "--standalone", env=env)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(line.split()[:3] == ["missing", "column", "face_metadata.model"] for line in lines)
    assert any(line.split()[:3] == ["missing", "trigger", "reactor_notify_insert"] for line in lines)
    assert lines[-1].startswith("2 problem(s) (role postgres, database")
    # Doing what check advises mends both: init reinstalls the trigger and adds the
    # column back (nullable, as when it adopts a legacy face_metadata).
    assert "run `reactor db init`" in lines[-1]
    assert run("db", "init", "--standalone", env=env).returncode == 0
    after = run("db", "check", "--standalone", "--json", env=env)
    assert after.returncode == 0, after.stdout
    problems = [f["name"] for f in json.loads(after.stdout)["findings"] if f["status"] in ("missing", "different")]
    assert problems == []


def test_init_without_privilege_is_one_line_exit_2(pg: PgServer, database: str) -> None:
    role = f"r_cli_{os.getpid()}"
    pg.psql(f"CREATE ROLE {role} LOGIN")
    pg.psql("ALTER TABLE face_metadata DROP COLUMN scale", database)
    try:
        result = run("db", "init", env={"REACTOR_DATABASE__DSN": pg.dsn(database, user=role)})
        assert result.returncode == 2
        assert result.stdout == ""
        assert result.stderr.count("\n") == 1
        assert f"role {role} lacks CREATE on schema public" in result.stderr
        assert f"`reactor db sql --role {role}`" in result.stderr
        check = run("db", "check", "--json", env={"REACTOR_DATABASE__DSN": pg.dsn(database, user=role)})
        assert check.returncode == 1
        missing = {f["name"] for f in json.loads(check.stdout)["findings"] if f["status"] == "missing"}
        assert {"face_metadata.scale", "SELECT on ai_metadata", "INSERT on face_detections"} <= missing
    finally:
        pg.psql(f"DROP ROLE {role}")


@pytest.mark.parametrize("how", ["dsn", "env"])
def test_unreachable_database_one_line_without_password(tmp_path: Path, how: str) -> None:
    if how == "dsn":
        env = {"REACTOR_DATABASE__DSN": f"postgresql://vision:{SECRET}@127.0.0.1:9/vision"}
    else:
        env = {"REACTOR_DATABASE__DSN": "postgresql://vision@127.0.0.1:9/vision", "REACTOR_DATABASE__PASSWORD": SECRET}
    for action in ("init", "check"):
        result = run("db", action, env=env, cwd=tmp_path)
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1, result.stderr
        if how == "dsn":
            # A password in the DSN is refused before any connection (docs/database-setup.md).
            assert "holds a password (host=127.0.0.1 port=9 database=vision)" in result.stderr
        else:
            assert "cannot connect to PostgreSQL at host=127.0.0.1 port=9 database=vision" in result.stderr
        assert SECRET not in result.stderr + result.stdout


def test_sql_prints_owner_script_for_role(tmp_path: Path) -> None:
    result = run("db", "sql", "--role", "vision", cwd=tmp_path)
    assert result.returncode == 0
    assert "GRANT SELECT, INSERT, UPDATE, DELETE ON face_metadata" in result.stdout
    assert "TO vision;" in result.stdout
    assert "idx_ai_metadata_processed_path" in result.stdout
    default = run("db", "sql", env={"REACTOR_DATABASE__DSN": "postgresql://photos@db.lan/vision"}, cwd=tmp_path)
    assert "GRANT TRIGGER ON ai_metadata TO photos;" in default.stdout


def test_unusable_embedded_dir_is_one_line_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    result = run("db", "init", env={"REACTOR_DATABASE__EMBEDDED_DIR": str(blocker)}, cwd=tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("reactor:")]
    assert errors == [result.stderr.splitlines()[-1]]
    assert f"cannot start the embedded PostgreSQL in {blocker}" in errors[0]
    assert "Traceback" not in result.stderr


async def test_missing_database_names_it(pg: PgServer) -> None:
    config = load(None, env={})
    with pytest.raises(db.DatabaseUnavailable) as err:
        await db.connect(pg.dsn("no_such_db"), config)
    assert "\n" not in str(err.value)
    assert "database=no_such_db" in str(err.value)
    assert 'database "no_such_db" does not exist' in str(err.value)


def test_legacy_database_init_and_check_say_what_they_adapted(pg: PgServer) -> None:
    name = f"legacy_cli_{os.getpid()}"
    pg.psql(f"CREATE DATABASE {name}")
    try:
        pg.psql(UPSTREAM_AI_METADATA, name)
        pg.psql(LEGACY_FAILURES, name)
        env = {"REACTOR_DATABASE__DSN": pg.dsn(name)}
        init = run("db", "init", env=env)
        assert init.returncode == 0, init.stderr
        assert "adapted: face_detection_failures has no file_size_bytes column" in init.stdout
        assert "NOT VALID" in init.stdout
        check = run("db", "check", env=env)
        assert check.returncode == 0, check.stdout
        adapted = [line.split()[2] for line in check.stdout.splitlines() if line.startswith("adapted")]
        assert "face_detection_failures.file_size_bytes" in adapted
        assert check.stdout.splitlines()[-1].startswith("all in order")
    finally:
        pg.drop_database(name)
