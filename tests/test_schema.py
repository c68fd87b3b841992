"""`db init` and `db check` against real databases: idempotence, legacy failures tables,
roles without privileges, and the owner's SQL from `db sql`."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from reactor.store import catalog, schema
from tests.pg import BIN, PgServer
from tests.production_shape import UPSTREAM_AI_METADATA

_names = itertools.count()

# seeds/000 without file_size_bytes, as found in production.
LEGACY_FAILURES = """
CREATE TABLE face_detection_failures (
    id SERIAL PRIMARY KEY,
    image_path TEXT NOT NULL UNIQUE,
    retry_count INTEGER DEFAULT 0,
    last_error TEXT,
    last_error_type TEXT,
    original_width INTEGER,
    original_height INTEGER,
    last_attempted_scale REAL,
    first_failure_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    last_failure_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    next_retry_after TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    permanently_failed BOOLEAN DEFAULT FALSE
);
INSERT INTO face_detection_failures (image_path, retry_count, last_error)
VALUES ('apple/IMG_0073(1).PNG', 5, 'NoneType object is not subscriptable'),
       ('face_crops/IMG_0001_face0.jpg', 1, 'recorded by the old worker');
"""


@pytest.fixture
def empty_database(pg: PgServer) -> Iterator[str]:
    """A database without the reactor schema (not a copy of the template)."""
    name = f"e_{os.getpid()}_{next(_names)}"
    pg.psql(f"CREATE DATABASE {name}")
    yield name
    pg.drop_database(name)


@pytest.fixture
def make_role(pg: PgServer) -> Iterator[Callable[[str], str]]:
    """Creates LOGIN roles (trusted over the local socket); drops them and what they own."""
    created: list[tuple[str, str]] = []

    def make(database: str) -> str:
        role = f"r_{os.getpid()}_{next(_names)}"
        pg.psql(f"CREATE ROLE {role} LOGIN")
        created.append((role, database))
        return role

    yield make
    for role, database in created:
        pg.psql(f"DROP OWNED BY {role}", database)
        pg.psql(f"DROP ROLE {role}")


@pytest.fixture
async def admin(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def connect(pg: PgServer, database: str, user: str = "postgres") -> asyncpg.Connection:
    return await asyncpg.connect(pg.dsn(database, user=user))


SNAPSHOT_QUERIES = {
    "relations": "SELECT c.relname, c.relkind, pg_get_userbyid(c.relowner), c.relacl::text FROM pg_class c "
    "WHERE c.relnamespace = 'public'::regnamespace ORDER BY 1",
    "columns": "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
    "pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
    "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
    "WHERE c.relnamespace = 'public'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1, 2",
    "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1",
    "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), convalidated "
    "FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2",
    "triggers": "SELECT tgname, pg_get_triggerdef(oid), tgenabled FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1",
    "functions": "SELECT proname, prosrc, proconfig, pg_get_userbyid(proowner) FROM pg_proc "
    "WHERE pronamespace = 'public'::regnamespace ORDER BY 1",
    "version": "SELECT version, applied_at FROM reactor_schema",
}


async def snapshot(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {key: [tuple(r) for r in await conn.fetch(q)] for key, q in SNAPSHOT_QUERIES.items()}


def names(report: catalog.CheckReport, status: str) -> set[str]:
    return {f.name for f in report.findings if f.status == status}


async def test_init_twice_changes_nothing(pg: PgServer, empty_database: str) -> None:
    conn = await connect(pg, empty_database)
    try:
        first = await schema.init_schema(conn, standalone=True)
        assert first.applied and first.adapted == []
        before = await snapshot(conn)
        second = await schema.init_schema(conn, standalone=True)
        assert second.applied and second.adapted == []
        assert await snapshot(conn) == before
        report = await catalog.check(conn, channel="face_reactor", standalone=True)
        assert report.ok, report.problems
        assert report.adapted == []
    finally:
        await conn.close()


async def test_check_catches_dropped_column(admin: asyncpg.Connection) -> None:
    await admin.execute("ALTER TABLE face_metadata DROP COLUMN detect_ms")
    report = await catalog.check(admin, channel="face_reactor", standalone=True)
    assert not report.ok
    assert {(f.kind, f.name) for f in report.problems} == {("column", "face_metadata.detect_ms")}


async def test_check_catches_dropped_keys(admin: asyncpg.Connection) -> None:
    await admin.execute("ALTER TABLE face_detections DROP CONSTRAINT face_detections_image_path_fkey")
    await admin.execute("ALTER TABLE reactor_claims DROP CONSTRAINT reactor_claims_pkey")
    report = await catalog.check(admin, channel="face_reactor", standalone=True)
    assert names(report, "missing") == {
        "reactor_claims(image_path) PRIMARY KEY",
        "face_detections -> face_metadata FOREIGN KEY",
    }


async def test_check_catches_changed_column_type(admin: asyncpg.Connection) -> None:
    await admin.execute("ALTER TABLE reactor_claims ALTER COLUMN token TYPE INTEGER")
    report = await catalog.check(admin, channel="face_reactor", standalone=True)
    assert names(report, "different") == {"reactor_claims.token"}


async def test_check_catches_dropped_and_disabled_trigger(admin: asyncpg.Connection) -> None:
    await admin.execute("DROP TRIGGER reactor_notify_update ON ai_metadata")
    await admin.execute("ALTER TABLE ai_metadata DISABLE TRIGGER reactor_notify_delete")
    report = await catalog.check(admin, channel="face_reactor", standalone=True)
    assert names(report, "missing") == {"reactor_notify_update"}
    assert names(report, "different") == {"reactor_notify_delete"}


async def test_check_catches_other_channel_constraint_and_version(admin: asyncpg.Connection) -> None:
    await admin.execute("ALTER TABLE reactor_claims DROP CONSTRAINT reactor_claims_path_valid")
    await admin.execute("UPDATE reactor_schema SET version = 0")
    await admin.execute("DROP INDEX idx_fdf_next_retry")
    report = await catalog.check(admin, channel="elsewhere", standalone=True)
    assert {(f.kind, f.status) for f in report.problems} == {
        ("constraint", "missing"),
        ("version", "different"),
        ("function", "different"),
        ("index", "missing"),
    }


async def test_check_catches_missing_privileges(pg: PgServer, database: str, make_role: Callable[[str], str]) -> None:
    role = make_role(database)
    pg.psql(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}", database)
    conn = await connect(pg, database, role)
    try:
        report = await catalog.check(conn, channel="face_reactor", standalone=True)
    finally:
        await conn.close()
    assert report.role == role
    missing = names(report, "missing")
    assert "INSERT on face_metadata" in missing
    assert "DELETE on reactor_claims" in missing
    assert "USAGE on reactor_claim_token_seq" in missing
    assert "USAGE on face_detection_failures_id_seq" in missing
    assert "SELECT on ai_metadata" not in missing
    # TRIGGER only matters for installing the trigger, which is already there.
    assert names(report, "advice") == {"TRIGGER on ai_metadata"}
    assert all(f.kind == "privilege" for f in report.problems)


async def test_owner_sql_grants_are_enough(pg: PgServer, database: str, make_role: Callable[[str], str]) -> None:
    role = make_role(database)
    sql_file = Path(pg.pgdata) / f"grants-{role}.sql"
    sql_file.write_text(schema.owner_sql(role))
    pg.psql(f"\\i {sql_file}", database)
    conn = await connect(pg, database, role)
    try:
        report = await catalog.check(conn, channel="face_reactor", standalone=True)
        assert report.ok, report.problems
        # The owner already applied everything; init by this role changes nothing.
        result = await schema.init_schema(conn, standalone=False)
        assert not result.applied
    finally:
        await conn.close()


async def test_init_without_create_privilege_names_it(
    pg: PgServer, empty_database: str, make_role: Callable[[str], str]
) -> None:
    pg.psql(UPSTREAM_AI_METADATA, empty_database)
    role = make_role(empty_database)
    conn = await connect(pg, empty_database, role)
    try:
        with pytest.raises(schema.PrivilegeError) as err:
            await schema.init_schema(conn, standalone=False)
    finally:
        await conn.close()
    message = str(err.value)
    assert "\n" not in message
    assert f"role {role} lacks CREATE on schema public" in message
    assert "TRIGGER on ai_metadata" in message
    assert f"reactor db sql --role {role}" in message


async def test_init_with_current_schema_but_no_grants(
    pg: PgServer, database: str, make_role: Callable[[str], str]
) -> None:
    role = make_role(database)
    conn = await connect(pg, database, role)
    try:
        with pytest.raises(schema.SchemaError, match=f"the schema is current, but role {role} lacks SELECT on"):
            await schema.init_schema(conn, standalone=True)
    finally:
        await conn.close()


async def test_vision_database_from_owner_sql(
    pg: PgServer, empty_database: str, make_role: Callable[[str], str]
) -> None:
    """An upstream ai_metadata and a legacy failures table; the owner runs `db sql`'s output."""
    pg.psql(UPSTREAM_AI_METADATA, empty_database)
    pg.psql(LEGACY_FAILURES, empty_database)
    role = make_role(empty_database)
    sql_file = Path(pg.pgdata) / f"owner-{role}.sql"
    sql_file.write_text(schema.owner_sql(role))
    subprocess_out = pg.psql(f"\\i {sql_file}", empty_database)
    assert "ERROR" not in subprocess_out
    conn = await connect(pg, empty_database, role)
    try:
        report = await catalog.check(conn, channel="face_reactor", standalone=False)
        assert report.ok, report.problems
        # The owner's SQL added the missing column; the old face-crop row keeps the constraint NOT VALID.
        assert "file_size_bytes" in await schema.failure_columns(conn)
        assert [f.kind for f in report.adapted] == ["constraint"]
        await conn.execute("INSERT INTO face_detection_failures (image_path) VALUES ('new/photo.jpg')")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("INSERT INTO face_detection_failures (image_path) VALUES ('face_crops/x.jpg')")
    finally:
        await conn.close()


async def test_legacy_failures_without_file_size(pg: PgServer, empty_database: str) -> None:
    pg.psql(UPSTREAM_AI_METADATA, empty_database)
    pg.psql(LEGACY_FAILURES, empty_database)
    conn = await connect(pg, empty_database)
    try:
        report = await schema.init_schema(conn, standalone=False)
        assert report.applied
        assert any("file_size_bytes" in note for note in report.adapted)
        assert any("NOT VALID" in note for note in report.adapted)
        columns = await schema.failure_columns(conn)
        assert "file_size_bytes" not in columns
        assert {"image_path", "retry_count", "next_retry_after", "permanently_failed"} <= columns
        # The legacy rows are still there, including the one the path rule now refuses.
        assert await conn.fetchval("SELECT count(*) FROM face_detection_failures") == 2
        check = await catalog.check(conn, channel="face_reactor", standalone=False)
        assert check.ok, check.problems
        assert {f.name for f in check.adapted} == {
            "face_detection_failures.file_size_bytes",
            "face_detection_failures CHECK reactor_valid_image_path(image_path)",
        }
        # Against a vision database the sweep index is the owner's call: advice only.
        assert names(check, "advice") == {catalog.SWEEP_INDEX}
        again = await schema.init_schema(conn, standalone=False)
        assert again.adapted == report.adapted
    finally:
        await conn.close()


async def test_legacy_failures_missing_required_column(pg: PgServer, empty_database: str) -> None:
    pg.psql(UPSTREAM_AI_METADATA, empty_database)
    pg.psql("CREATE TABLE face_detection_failures (id SERIAL, image_path TEXT UNIQUE, retry_count INT)", empty_database)
    conn = await connect(pg, empty_database)
    try:
        with pytest.raises(schema.SchemaError, match="lacks required columns last_error, last_error_type"):
            await schema.init_schema(conn, standalone=False)
        # Nothing was applied: init is one transaction.
        assert await conn.fetchval("SELECT to_regclass('face_metadata')") is None
    finally:
        await conn.close()


async def test_init_needs_ai_metadata_unless_standalone(pg: PgServer, empty_database: str) -> None:
    conn = await connect(pg, empty_database)
    try:
        with pytest.raises(schema.SchemaError, match=r"ai_metadata not found.*--standalone"):
            await schema.init_schema(conn, standalone=False)
        await schema.init_schema(conn, standalone=True)
        assert await conn.fetchval("SELECT to_regclass('ai_metadata')::text") == "ai_metadata"
    finally:
        await conn.close()


async def test_init_refuses_newer_schema(admin: asyncpg.Connection) -> None:
    await admin.execute("UPDATE reactor_schema SET version = 99")
    with pytest.raises(schema.SchemaError, match="version 99, newer"):
        await schema.init_schema(admin, standalone=True)


async def test_init_rejects_odd_channel(admin: asyncpg.Connection) -> None:
    with pytest.raises(schema.SchemaError, match=r"\[database\] channel"):
        await schema.init_schema(admin, standalone=True, channel="bad'; DROP TABLE x; --")


def test_owner_sql_mentions_grants_and_sweep_index() -> None:
    text = schema.owner_sql("Vision User")
    assert 'GRANT SELECT ON ai_metadata, reactor_schema TO "Vision User";' in text
    assert "GRANT SELECT, INSERT, UPDATE, DELETE ON face_metadata" in text
    assert "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_ai_metadata_processed_path" in text
    assert "channel CONSTANT text := 'face_reactor';" in text
    assert "\\set ON_ERROR_STOP on" in text
    assert BIN.exists()


async def test_concurrent_inits_apply_once(pg: PgServer, empty_database: str) -> None:
    """Two instances starting together: the advisory lock serialises them, both succeed."""
    first, second = await connect(pg, empty_database), await connect(pg, empty_database)
    try:
        reports = await asyncio.gather(
            schema.init_schema(first, standalone=True), schema.init_schema(second, standalone=True)
        )
        assert all(r.applied for r in reports)
        assert (await catalog.check(first, channel="face_reactor", standalone=True)).ok
    finally:
        await first.close()
        await second.close()


def test_one_list_of_the_reactors_tables() -> None:
    """reactor.store.relations names the tables that db check expects columns for (reactor.store.catalog)."""
    from reactor.store import catalog, relations

    assert set(relations.REACTOR_TABLES) | {"reactor_schema"} == set(catalog.TABLES) | {catalog.FAILURES}


async def test_a_generated_name_with_capitals_is_found_by_its_exact_name(conn: asyncpg.Connection) -> None:
    """Repair names its backups reactor_backup_<yyyymmddThhmmss>_<table>: looked up unquoted,
    the "T" folds to "t" and an existing backup is never found (a second repair in the same
    second then failed on CREATE instead of taking the next name)."""
    from reactor.store import relations
    from reactor.store.sql import quote_identifier

    name = "reactor_backup_20261201T000000_probe"
    await conn.execute(f"CREATE TABLE {quote_identifier(name)} (x int)")
    try:
        assert await relations.exists_named(conn, name)
        assert not await relations.exists(conn, name)
    finally:
        await conn.execute(f"DROP TABLE {quote_identifier(name)}")


def test_the_owners_preflight_checks_every_table_the_reactor_has() -> None:
    """sql/owner.sql refuses early, with one line, a table owned by another role: its list
    is the reactor's (reactor.store.relations) plus ai_metadata and reactor_schema."""
    import re

    from reactor.store import relations, sql

    preflight = sql.text("owner.sql").split("unnest(ARRAY[", 1)[1].split("])", 1)[0]
    named = set(re.findall(r"'([a-z_]+)'", preflight))
    assert named == {*relations.REACTOR_TABLES, *relations.SEQUENCES, "ai_metadata", "reactor_schema"}
