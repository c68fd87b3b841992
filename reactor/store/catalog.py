"""What the reactor expects in the database, and `reactor db check`'s comparison with it.

The expectations mirror sql/schema.sql, sql/standalone.sql and sql/triggers/; a test
runs the check on a freshly initialised database, so the two cannot drift apart
silently.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import asyncpg

from reactor.errors import ReactorError
from reactor.store import legacy, privileges, sql, vectors
from reactor.store.relations import SEQUENCES, exists

Q = sql.Queries("catalog.sql")

SCHEMA_VERSION = 5
TRIGGER_FUNCTION = "reactor_ai_metadata_notify"
PATH_FUNCTION = "reactor_valid_image_path"
# The trigger function's NOTIFY channel is a literal in its body (a custom setting
# would need a superuser): sql/triggers/ai_metadata_notify.sql, `channel CONSTANT`.
CHANNEL_LINE = re.compile(r"channel CONSTANT text := '([^']*)';")

# Column name -> format_type() of every reactor-owned table.
TABLES: dict[str, dict[str, str]] = {
    "reactor_schema": {"singleton": "boolean", "version": "integer", "applied_at": "timestamp with time zone"},
    "face_metadata": {
        "image_path": "text",
        "face_count": "integer",
        "model": "text",
        "scale": "real",
        "original_width": "integer",
        "original_height": "integer",
        "decode_ms": "real",
        "detect_ms": "real",
        "encode_ms": "real",
        "instance_id": "text",
        "claim_token": "bigint",
        "detected_at": "timestamp with time zone",
        "settings": "text",
        "orphaned_at": "timestamp with time zone",
        "detect_width": "integer",
        "detect_height": "integer",
        "upsample": "integer",
        "min_face_px": "integer",
    },
    "face_detections": {
        "face_id": "bigint",
        "image_path": "text",
        "face_index": "integer",
        "box_top": "integer",
        "box_right": "integer",
        "box_bottom": "integer",
        "box_left": "integer",
        "score": "real",
        "encoding": "real[]",
        "model": "text",
        "scale": "real",
    },
    "reactor_claims": {
        "image_path": "text",
        "instance_id": "text",
        "token": "bigint",
        "claimed_at": "timestamp with time zone",
        "lease_until": "timestamp with time zone",
    },
    "reactor_instances": {
        "instance_id": "text",
        "hostname": "text",
        "pid": "integer",
        "started_at": "timestamp with time zone",
        "heartbeat_at": "timestamp with time zone",
        "state": "jsonb",
    },
    "reactor_redetect": {
        "image_path": "text",
        "reason": "text",
        "mode": "text",
        "requested_at": "timestamp with time zone",
    },
    "reactor_held_deletions": {"image_path": "text", "held_at": "timestamp with time zone", "reason": "text"},
    "reactor_orphan_purges": {"table_name": "text", "purged_at": "timestamp with time zone", "purged": "integer"},
    "reactor_control_replies": {
        "request_id": "text",
        "instance_id": "text",
        "swept": "boolean",
        "reply": "text",
        "replied_at": "timestamp with time zone",
    },
    "reactor_file_identity": {
        "image_path": "text",
        "size_bytes": "bigint",
        "mtime_ns": "bigint",
        "fingerprint": "text",
    },
    "reactor_changes": {"seq": "bigint", "image_path": "text", "changed_at": "timestamp with time zone"},
    "reactor_sweep_state": {
        "singleton": "boolean",
        "watermark": "bigint",
        "walk_phase": "text",
        "walk_after": "text",
        "walk_rows": "bigint",
        "walk_started_at": "timestamp with time zone",
        "walk_finished_at": "timestamp with time zone",
        "walk_requested_at": "timestamp with time zone",
        "updated_at": "timestamp with time zone",
    },
}
# Types an adopted legacy table may have instead (reported as adapted, not different):
# the legacy worker wrote detected_at without a time zone; the server's TimeZone
# setting is then the reference for reading it.
ADAPTED_TYPES: dict[tuple[str, str], tuple[str, ...]] = {
    ("face_metadata", "detected_at"): ("timestamp without time zone",),
}
# The legacy failures table: copies differ in column types (timestamp with or without
# time zone) and may lack the optional columns, so only names are compared.
FAILURES = "face_detection_failures"
FAILURE_REQUIRED = frozenset(
    {
        "image_path",
        "retry_count",
        "last_error",
        "last_error_type",
        "last_failure_at",
        "next_retry_after",
        "permanently_failed",
    }
)
FAILURE_OPTIONAL = frozenset(
    {
        "id",
        "original_width",
        "original_height",
        "file_size_bytes",
        "last_attempted_scale",
        "first_failure_at",
        # Without it, failure rows whose ai_metadata row is gone are kept, never purged.
        "orphaned_at",
        "file_mtime_ns",
    }
)
# Tables whose image_path carries the reactor_valid_image_path CHECK constraint.
PATH_TABLES = ("face_metadata", "face_detections", FAILURES, "reactor_claims", "reactor_redetect")
# Named indexes beyond primary keys and UNIQUE constraints: table -> index names.
INDEXES: dict[str, tuple[str, ...]] = {
    FAILURES: ("idx_fdf_next_retry", "idx_fdf_error_type", "idx_fdf_orphaned"),
    "face_metadata": ("idx_face_metadata_orphaned",),
    "reactor_claims": ("idx_reactor_claims_instance",),
    "reactor_file_identity": ("idx_reactor_file_identity_size",),
}
PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "reactor_schema": ("singleton",),
    "face_metadata": ("image_path",),
    "face_detections": ("image_path", "face_index"),
    "reactor_claims": ("image_path",),
    "reactor_instances": ("instance_id",),
    "reactor_redetect": ("image_path",),
    "reactor_file_identity": ("image_path",),
    "reactor_held_deletions": ("image_path",),
    "reactor_orphan_purges": ("table_name", "purged_at"),
    "reactor_control_replies": ("request_id", "instance_id"),
    "reactor_changes": ("seq",),
    "reactor_sweep_state": ("singleton",),
}
AI_METADATA = "ai_metadata"
# The columns the trigger and the sweep read, with the types they accept.
AI_METADATA_COLUMNS: dict[str, tuple[str, ...]] = {
    "image_path": ("text", "character varying"),
    "is_processed": ("boolean",),
}
SWEEP_INDEX = "idx_ai_metadata_processed_path"
# pg_trigger.tgtype bits: statement-level AFTER triggers carry only the event bit.
TRIGGERS: dict[str, tuple[int, bool, bool]] = {
    # name: (tgtype, has OLD TABLE, has NEW TABLE)
    "reactor_notify_insert": (4, False, True),
    "reactor_notify_update": (16, True, True),
    "reactor_notify_delete": (8, True, False),
    "reactor_notify_truncate": (32, False, False),
}

Status = Literal["ok", "missing", "different", "adapted", "advice"]
PROBLEMS = ("missing", "different")


@dataclass(frozen=True)
class Finding:
    kind: str  # table, column, index, constraint, trigger, function, version, privilege
    name: str
    status: Status
    detail: str = ""


@dataclass
class CheckReport:
    role: str = ""
    database: str = ""
    standalone: bool = False
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.status in PROBLEMS]

    @property
    def adapted(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "adapted"]

    def add(self, kind: str, name: str, status: Status, detail: str = "") -> None:
        self.findings.append(Finding(kind, name, status, detail))

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "role": self.role,
            "database": self.database,
            "standalone": self.standalone,
            "findings": [asdict(f) for f in self.findings],
        }


async def columns_of(conn: asyncpg.Connection, table: str) -> dict[str, str]:
    return {r["name"]: r["type"] for r in await conn.fetch(Q.table_columns, table)}


async def _check_tables(conn: asyncpg.Connection, report: CheckReport) -> None:
    for table, expected in TABLES.items():
        actual = await columns_of(conn, table)
        if not actual:
            report.add("table", table, "missing", "run `reactor db init`, or `reactor db sql` for the owner")
            continue
        report.add("table", table, "ok")
        for column, type_ in expected.items():
            if column not in actual:
                report.add("column", f"{table}.{column}", "missing", f"expected {type_}")
            elif actual[column] in ADAPTED_TYPES.get((table, column), ()):
                report.add("column", f"{table}.{column}", "adapted", f"legacy {actual[column]}, read as {type_}")
            elif actual[column] != type_:
                report.add("column", f"{table}.{column}", "different", f"expected {type_}, found {actual[column]}")


async def check_failures_table(conn: asyncpg.Connection, report: CheckReport) -> None:
    actual = set(await columns_of(conn, FAILURES))
    if not actual:
        report.add("table", FAILURES, "missing", "run `reactor db init`, or `reactor db sql` for the owner")
        return
    report.add("table", FAILURES, "ok")
    for column in sorted(FAILURE_REQUIRED - actual):
        report.add("column", f"{FAILURES}.{column}", "missing", "required; `reactor db sql` adds it")
    for column in sorted(FAILURE_OPTIONAL - actual):
        report.add("column", f"{FAILURES}.{column}", "adapted", "legacy table lacks this optional column; not stored")
    indexes = await conn.fetch(Q.table_indexes, FAILURES)
    if not any(r["is_unique"] and r["columns"] == ["image_path"] for r in indexes):
        report.add("index", f"{FAILURES}(image_path) UNIQUE", "missing", "failures are upserted by image_path")


async def check_legacy_results(conn: asyncpg.Connection, report: CheckReport) -> None:
    """An adopted legacy face_metadata: its JSON columns, what would fail a write, and
    legacy faces not yet copied into face_detections."""
    found = await legacy.columns(conn)
    if not found:
        return
    shape = legacy.shape_of(found)
    for name, type_ in shape.columns():
        report.add(
            "column", f"{legacy.TABLE}.{name}", "adapted", f"legacy JSON in {type_}: every new result writes it too"
        )
    for name, line in legacy.problems(found, tuple(TABLES[legacy.TABLE])):
        report.add("column", name, "different", line)
    if (
        shape.boxes_type is not None
        and "model" in found
        and await readable(conn, legacy.TABLE)
        and await exists(conn, "face_detections")
    ):
        waiting = await conn.fetchval(Q.legacy_not_imported)
        if waiting:
            report.add(
                "data",
                f"{legacy.TABLE} legacy faces",
                "advice",
                f"{waiting} legacy result(s) with faces not in face_detections; run `reactor db import-legacy`",
            )


async def check_vectors(conn: asyncpg.Connection, report: CheckReport) -> None:
    """Similarity search (reactor.store.vectors) is optional: its absence is advice, not a problem."""
    available, installed = await vectors.state(conn)
    if installed is None:
        detail = (
            "available on the server but not installed: `reactor db init` as a superuser, or the owner's SQL "
            "from `reactor db sql`, installs it"
            if available
            else "not available on this server"
        )
        report.add("extension", vectors.EXTENSION, "advice", f"{detail}; until then `reactor similar` is off")
        return
    report.add("extension", vectors.EXTENSION, "ok", f"version {installed}")
    if not await exists(conn, "face_detections"):
        return
    if not await conn.fetchval(Q.embedding_column):
        report.add("column", "face_detections.embedding", "missing", "expected vector(128)")
        return
    present = {r["name"] for r in await conn.fetch(Q.table_indexes, "face_detections")}
    report.add("index", vectors.INDEX, "ok" if vectors.INDEX in present else "missing", "HNSW on L2 distance")
    triggers = {r["name"] for r in await conn.fetch(Q.table_triggers, "face_detections")}
    report.add(
        "trigger",
        vectors.TRIGGER,
        "ok" if vectors.TRIGGER in triggers else "missing",
        "keeps embedding equal to encoding",
    )
    if await readable(conn, "face_detections"):
        unfilled = await conn.fetchval(vectors.SEARCH.missing_embeddings)
        if unfilled:
            report.add(
                "data",
                "face_detections.embedding",
                "advice",
                f"{unfilled} face(s) without an embedding yet; `reactor db init` fills them",
            )


async def _check_indexes(conn: asyncpg.Connection, report: CheckReport) -> None:
    for table, key in PRIMARY_KEYS.items():
        rows = await conn.fetch(Q.table_indexes, table)
        # The store's upserts (ON CONFLICT) need exactly this unique key.
        keyed = any(r["is_unique"] and r["columns"] == list(key) for r in rows)
        if not keyed and await exists(conn, table):
            report.add("index", f"{table}({', '.join(key)}) PRIMARY KEY", "missing")
    for table, names in INDEXES.items():
        if not await exists(conn, table):
            continue
        present = {r["name"] for r in await conn.fetch(Q.table_indexes, table)}
        for name in names:
            report.add("index", name, "ok" if name in present else "missing", "" if name in present else f"on {table}")
    if await exists(conn, "face_detections"):
        fks = [r for r in await conn.fetch(Q.foreign_keys, "face_detections") if "face_metadata" in r["definition"]]
        if not any("ON DELETE CASCADE" in r["definition"] and "ON UPDATE CASCADE" in r["definition"] for r in fks):
            report.add(
                "constraint",
                "face_detections -> face_metadata FOREIGN KEY",
                "missing",
                "faces must go with their result (ON DELETE/UPDATE CASCADE)",
            )
    for seq in SEQUENCES:
        if not await exists(conn, seq):
            report.add("sequence", seq, "missing")


async def _check_constraints(conn: asyncpg.Connection, report: CheckReport) -> None:
    for table in PATH_TABLES:
        rows = [r for r in await conn.fetch(Q.check_constraints, table) if PATH_FUNCTION in r["definition"]]
        name = f"{table} CHECK {PATH_FUNCTION}(image_path)"
        if not rows:
            if await exists(conn, table):
                report.add("constraint", name, "missing", "paths in this table are not checked by the database")
        elif not all(r["validated"] for r in rows):
            report.add("constraint", name, "adapted", "NOT VALID: rows older than the constraint are not checked")
        else:
            report.add("constraint", name, "ok")


async def ai_metadata_problems(conn: asyncpg.Connection) -> list[Finding]:
    """Columns of ai_metadata the trigger cannot read as it expects."""
    columns = await columns_of(conn, AI_METADATA)
    problems = []
    for column, types in AI_METADATA_COLUMNS.items():
        name = f"{AI_METADATA}.{column}"
        if column not in columns:
            problems.append(Finding("column", name, "missing", "the trigger and the sweep read this column"))
        elif not columns[column].startswith(types):
            problems.append(Finding("column", name, "different", f"expected {types[0]}, found {columns[column]}"))
    return problems


def installed_channel(source: str) -> str | None:
    """The channel a trigger function's body notifies on, or None if it has no such line."""
    found = CHANNEL_LINE.search(source)
    return found.group(1) if found else None


async def _check_trigger(conn: asyncpg.Connection, report: CheckReport, channel: str) -> None:
    functions = await conn.fetch(Q.function_info, TRIGGER_FUNCTION)
    if not functions:
        report.add("function", TRIGGER_FUNCTION, "missing")
    else:
        installed = installed_channel(functions[0]["source"])
        if installed == channel:
            report.add("function", TRIGGER_FUNCTION, "ok", f"notifies on channel {channel}")
        else:
            report.add(
                "function",
                TRIGGER_FUNCTION,
                "different",
                f"notifies on channel {installed or '(none found)'}, not database.channel {channel}",
            )
    if not await conn.fetch(Q.function_info, PATH_FUNCTION):
        report.add("function", PATH_FUNCTION, "missing")
    if not await exists(conn, AI_METADATA):
        report.add("table", AI_METADATA, "missing", "the upstream table must exist before the trigger can be installed")
        return
    for problem in await ai_metadata_problems(conn):
        report.add("column", problem.name, problem.status, problem.detail)
    actual = {r["name"]: r for r in await conn.fetch(Q.table_triggers, AI_METADATA)}
    for name, (tgtype, old, new) in TRIGGERS.items():
        row = actual.get(name)
        if row is None:
            report.add("trigger", name, "missing", f"on {AI_METADATA}")
        elif (
            row["function"] != TRIGGER_FUNCTION
            or row["type"] != tgtype
            or (row["old_table"] is not None) != old
            or (row["new_table"] is not None) != new
        ):
            report.add("trigger", name, "different", "not the statement-level trigger `reactor db init` installs")
        elif row["enabled"] == "D":
            report.add("trigger", name, "different", "disabled (ALTER TABLE ai_metadata ENABLE TRIGGER ...)")
        else:
            report.add("trigger", name, "ok")
    indexes = await conn.fetch(Q.table_indexes, AI_METADATA)
    if not any(r["columns"] and r["columns"][0] == "image_path" for r in indexes):
        status: Status = "missing" if report.standalone else "advice"
        report.add("index", SWEEP_INDEX, status, "recommended for the sweep; see `reactor db sql`")


async def readable(conn: asyncpg.Connection, table: str) -> bool:
    return await exists(conn, table) and bool(await conn.fetchval(Q.table_privilege, table, "SELECT"))


async def _check_version(conn: asyncpg.Connection, report: CheckReport) -> None:
    if not await readable(conn, "reactor_schema"):
        return  # reported as a missing table or a missing SELECT privilege
    row = await conn.fetchrow(Q.schema_version)
    if row is None:
        report.add("version", "reactor_schema", "missing", f"expected version {SCHEMA_VERSION}")
    elif row["version"] != SCHEMA_VERSION:
        report.add("version", "reactor_schema", "different", f"expected {SCHEMA_VERSION}, found {row['version']}")
    else:
        report.add("version", "reactor_schema", "ok", f"version {SCHEMA_VERSION}")


async def check(conn: asyncpg.Connection, *, channel: str, standalone: bool) -> CheckReport:
    """Compare the live database with what the reactor needs; read-only."""
    ctx = await conn.fetchrow(Q.role_context)
    assert ctx is not None
    report = CheckReport(role=ctx["role"], database=ctx["database"], standalone=standalone)
    hidden = await privileges.schemas_without_usage(conn)
    if hidden:
        # Everything there looks missing to this role; the one problem is USAGE.
        for schema in hidden:
            report.add("privilege", f"USAGE on schema {schema}", "missing", "without it the role sees no table there")
        return report
    await _check_tables(conn, report)
    await check_failures_table(conn, report)
    await check_legacy_results(conn, report)
    await check_vectors(conn, report)
    await _check_indexes(conn, report)
    await _check_constraints(conn, report)
    await _check_trigger(conn, report, channel)
    await _check_version(conn, report)
    trigger_installed = not any(f.kind == "trigger" and f.status in PROBLEMS for f in report.findings)
    for need in await privileges.missing_runtime_privileges(conn):
        # TRIGGER is needed only to (re)install the trigger, not to run.
        status: Status = "advice" if need.privilege == "TRIGGER" and trigger_installed else "missing"
        report.add("privilege", f"{need.privilege} on {need.target}", status, need.reason)
    return report


class SchemaUnusable(ReactorError):
    """No result could be written with the schema as it is: the reactor refuses to detect.
    The message names what is missing and the command that fixes it (reactor.store.writable)."""
