"""Applying the schema (`reactor db init`) and the SQL a database owner runs instead
(`reactor db sql`): tables, constraints, the ai_metadata trigger, the version row."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from reactor.config import CHANNEL_RULE, Config, is_channel_name
from reactor.errors import ReactorError
from reactor.store import advice, catalog, db, legacy, privileges, relations, sql, vectors
from reactor.store.catalog import FAILURE_OPTIONAL, FAILURE_REQUIRED, FAILURES, SCHEMA_VERSION
from reactor.util.progress import Progress

__all__ = ["SCHEMA_VERSION", "InitReport", "PrivilegeError", "SchemaError", "failure_columns", "init_schema"]

Q = sql.Queries("catalog.sql")
# pg_advisory_xact_lock key for `db init`: two instances starting together apply it once.
INIT_LOCK_KEY = 0x46414345_0001  # "FACE" 1
DEFAULT_CHANNEL = "face_reactor"
# Column definitions the owner's SQL adds to a legacy failures table that lacks them.
FAILURE_COLUMN_TYPES = {
    "retry_count": "INTEGER NOT NULL DEFAULT 0",
    "last_error": "TEXT",
    "last_error_type": "TEXT",
    "original_width": "INTEGER",
    "original_height": "INTEGER",
    "file_size_bytes": "BIGINT",
    "file_mtime_ns": "BIGINT",
    "last_attempted_scale": "REAL",
    "first_failure_at": "TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP",
    "last_failure_at": "TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP",
    "next_retry_after": "TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP",
    "permanently_failed": "BOOLEAN DEFAULT FALSE",
    "orphaned_at": "TIMESTAMPTZ",
}


# Optional failure columns that sql/schema.sql adds itself when they are missing.
ADDED_BY_INIT = frozenset({"file_mtime_ns", "orphaned_at"})


class SchemaError(ReactorError):
    """The database cannot take the schema as it is; the message says what to do."""


class PrivilegeError(SchemaError):
    """The role lacks a privilege `db init` needs; the message names it and `reactor db sql`."""

    def __init__(self, role: str, missing: list[privileges.Need]) -> None:
        what = ", ".join(f"{n.privilege} on {n.target}" for n in missing)
        super().__init__(
            f"role {role} lacks {what} ({missing[0].reason}); {advice.owner_sql(role)}, then run `reactor db check`"
        )
        self.role = role
        self.missing = missing


@dataclass
class InitReport:
    version: int
    standalone: bool
    # What init did differently because of what it found (legacy columns, NOT VALID).
    adapted: list[str] = field(default_factory=list)
    # False when the role could not apply DDL but the schema was already current.
    applied: bool = True


def trigger_files() -> list[str]:
    return sorted(f"triggers/{p.name}" for p in (sql.sql_root() / "triggers").glob("*.sql"))


def validate_channel(channel: str) -> str:
    """database.channel is embedded in DDL: the config's rule, checked again here for callers
    that did not load it from a file."""
    if not is_channel_name(channel):
        raise SchemaError(f"[database] channel: expected {CHANNEL_RULE}, got {channel!r}")
    return channel


def script(name: str, channel: str) -> str:
    """A DDL file under sql/, with database.channel written into the trigger function."""
    text = sql.text(name)
    if name.startswith("triggers/") and catalog.CHANNEL_LINE.search(text):
        line = f"channel CONSTANT text := {privileges.quote_literal(validate_channel(channel))};"
        text = catalog.CHANNEL_LINE.sub(lambda _: line, text, count=1)
    return text


async def failure_columns(conn: asyncpg.Connection) -> frozenset[str]:
    """The columns face_detection_failures has here; legacy copies lack some (file_size_bytes)."""
    return frozenset(await catalog.columns_of(conn, FAILURES))


async def _preconditions(conn: asyncpg.Connection, standalone: bool) -> list[str]:
    """Refuse what init cannot repair; return what it will adapt to."""
    row = await conn.fetchrow(Q.schema_version) if await catalog.readable(conn, "reactor_schema") else None
    if row is not None and row["version"] > SCHEMA_VERSION:
        raise SchemaError(
            f"the database has reactor schema version {row['version']}, newer than this reactor's "
            f"{SCHEMA_VERSION}; upgrade face-reactor instead of running `reactor db init`"
        )
    hidden = await privileges.schemas_without_usage(conn)
    if hidden:
        role = await conn.fetchval("SELECT current_user")
        raise SchemaError(
            f"role {role} lacks USAGE on schema {', '.join(hidden)}, so it sees no table there; "
            f"{advice.grants(role)}, then run `reactor db check`"
        )
    if not standalone and not await relations.exists(conn, catalog.AI_METADATA):
        raise SchemaError(
            "ai_metadata not found: point [database] dsn at the vision database, "
            "or run `reactor db init --standalone` to create ai_metadata here"
        )
    if not standalone:
        unusable = await catalog.ai_metadata_problems(conn)
        if unusable:
            what = "; ".join(f"{f.name}: {f.status}, {f.detail}" for f in unusable)
            raise SchemaError(
                f"ai_metadata cannot carry the trigger ({what}); point [database] dsn at the vision database"
            )
    await _adoptable_results(conn)
    present = await failure_columns(conn)
    if not present:
        return []
    lacking = sorted(FAILURE_REQUIRED - present)
    if lacking:
        raise SchemaError(
            f"{FAILURES} lacks required columns {', '.join(lacking)}; ask its owner to run the SQL "
            "printed by `reactor db sql`, which adds them"
        )
    return [
        f"{FAILURES} has no {column} column: failures are recorded without it"
        for column in sorted(FAILURE_OPTIONAL - present - ADDED_BY_INIT)
    ]


async def _adoptable_results(conn: asyncpg.Connection) -> None:
    """Refuse a face_metadata that no result could be written into after init: a legacy
    table of another shape, or one whose paths repeat (no unique index can be built)."""
    found = await legacy.columns(conn)
    if not found:
        return
    lines = legacy.problems(found, tuple(catalog.TABLES[legacy.TABLE]))
    if lines:
        raise SchemaError(lines[0][1])
    duplicates = await conn.fetch(Q.duplicate_paths) if await catalog.readable(conn, legacy.TABLE) else []
    if duplicates:
        listed = ", ".join(f"{r['image_path']!r} ({r['copies']} rows)" for r in duplicates)
        raise SchemaError(
            f"{legacy.TABLE} holds some image_path more than once ({listed}); results are keyed by path, so "
            "keep one row per path (the newest detected_at) and run `reactor db init` again"
        )


async def _apply(conn: asyncpg.Connection, standalone: bool, channel: str, progress: Progress | None) -> None:
    scripts = ["schema.sql", *(["standalone.sql"] if standalone else []), *trigger_files()]
    if progress is not None:
        progress.set_total(len(scripts) + 1)
    for name in scripts:
        await conn.execute(script(name, channel))
        if progress is not None:
            progress.advance()
    await conn.execute(Q.record_version, SCHEMA_VERSION)
    if progress is not None:
        progress.advance()


async def init_schema(
    conn: asyncpg.Connection,
    *,
    standalone: bool,
    channel: str = DEFAULT_CHANNEL,
    progress: Progress | None = None,
) -> InitReport:
    """Apply schema, (standalone) ai_metadata, and triggers in one transaction.

    A role that may not create objects gets PrivilegeError, unless the owner has
    already applied everything (`reactor db sql`): then nothing is done.
    """
    validate_channel(channel)
    report = InitReport(version=SCHEMA_VERSION, standalone=standalone)
    async with conn.transaction():
        await conn.execute(Q.init_lock, INIT_LOCK_KEY)
        report.adapted.extend(await _preconditions(conn, standalone))
        missing = await privileges.missing_init_privileges(conn, standalone=standalone)
        if missing:
            current = await catalog.check(conn, channel=channel, standalone=standalone)
            if any(f.kind != "privilege" for f in current.problems):
                raise PrivilegeError(current.role, missing)
            if current.problems:
                lacking = ", ".join(f.name for f in current.problems)
                raise SchemaError(
                    f"the schema is current, but role {current.role} lacks {lacking}; {advice.grants(current.role)}"
                )
            report.applied = False
        else:
            try:
                await _apply(conn, standalone, channel, progress)
                report.adapted.extend(await vectors.install(conn))
            except asyncpg.InsufficientPrivilegeError as exc:
                role = await conn.fetchval("SELECT current_user")
                raise SchemaError(f"role {role}: {exc}; {advice.owner_sql(role)}") from None
        for finding in (await catalog.check(conn, channel=channel, standalone=standalone)).adapted:
            if finding.kind == "constraint" or finding.name.startswith(f"{legacy.TABLE}."):
                report.adapted.append(f"{finding.name}: {finding.detail}")
    if report.applied:
        # After the commit, in pages: a large face table is never locked as a whole.
        await vectors.backfill(conn)
    return report


def _header(what: str, role: str, database: str) -> list[str]:
    return [
        f"-- face-reactor schema version {SCHEMA_VERSION}: {what} for the role {role}, database {database}.",
        "-- Who may run it: docs/database-setup.md (a superuser, the owner of the database and of",
        "-- ai_metadata, or the owner of ai_metadata with CREATE on the schema). For example:",
        f"--     psql -v ON_ERROR_STOP=1 -U OWNER -h HOST -d {database} -f face-reactor.sql",
        "-- It stops at the first error, and then nothing has changed (one transaction).",
        "\\set ON_ERROR_STOP on",
    ]


def owner_sql(role: str, channel: str = DEFAULT_CHANNEL, database: str = "vision") -> str:
    """Everything a database owner runs for a role that may not create objects itself."""
    legacy_failures = "\n".join(
        f"ALTER TABLE {FAILURES} ADD COLUMN IF NOT EXISTS {column} {definition};"
        for column, definition in FAILURE_COLUMN_TYPES.items()
    )
    parts = [
        *_header("the schema, the trigger and the GRANTs", role, database),
        "BEGIN;",
        sql.blocks("owner.sql")["owner_preflight"],
        sql.text("schema.sql"),
        "-- Columns a legacy face_detection_failures table may lack.",
        legacy_failures,
        legacy.nullable_sql(tuple(catalog.TABLES[legacy.TABLE])),
        *(script(name, channel) for name in trigger_files()),
        vectors.owner_sql(),
        f"INSERT INTO reactor_schema (version) VALUES ({SCHEMA_VERSION})",
        "ON CONFLICT (singleton) DO UPDATE SET version = EXCLUDED.version, applied_at = now();",
        "",
        privileges.grant_sql(role),
        "COMMIT;",
        "",
        "-- Recommended: the sweep pages through processed paths. CONCURRENTLY does not block",
        "-- the upstream pipeline's writes; it cannot run inside a transaction block, and",
        "-- ON_ERROR_STOP keeps it from running after a failed transaction.",
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {catalog.SWEEP_INDEX}",
        "    ON ai_metadata (image_path) WHERE is_processed;",
    ]
    return "\n".join(parts) + "\n"


def grants_sql(role: str, database: str = "vision") -> str:
    """Only the GRANTs (`reactor db sql --grants-only`), e.g. after a privilege was revoked."""
    parts = [*_header("the GRANTs", role, database), "BEGIN;", privileges.grant_sql(role), "COMMIT;"]
    return "\n".join(parts) + "\n"


async def prepare_embedded(config: Config, dsn: str) -> None:
    """The embedded database is ours: apply the standalone schema before running."""
    if config.embedded:
        async with db.connection(dsn, config) as conn:
            await init_schema(conn, standalone=True, channel=config.database.channel)
