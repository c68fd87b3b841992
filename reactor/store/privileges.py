"""The privileges the reactor's role needs, checked against a live database and
written out as GRANTs for the database owner (`reactor db sql`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import asyncpg

from reactor.store import sql
from reactor.store.relations import REACTOR_TABLES, SEQUENCES, exists

Q = sql.Queries("catalog.sql")

READ_ONLY = ("ai_metadata", "reactor_schema")
# Serial columns whose sequence an INSERT needs (legacy names vary, so it is looked up).
SERIALS = (("face_detection_failures", "id"), ("face_metadata", "id"))
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")

_SIMPLE_NAME = re.compile(r"^[a-z_][a-z0-9_$]*$")


@dataclass(frozen=True)
class Need:
    privilege: str
    target: str
    reason: str


def quote_ident(name: str) -> str:
    """A role or object name as SQL; only names that need it are quoted."""
    if _SIMPLE_NAME.match(name) and len(name) < 64:
        return name
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


async def _serial_sequences(conn: asyncpg.Connection) -> list[str]:
    found = []
    for table, column in SERIALS:
        seq = await conn.fetchval(Q.serial_sequence, table, column)
        if seq:
            found.append(str(seq))
    return found


async def _table_privilege(conn: asyncpg.Connection, table: str, privilege: str) -> bool:
    return bool(await conn.fetchval(Q.table_privilege, table, privilege))


async def schemas_without_usage(conn: asyncpg.Connection) -> list[str]:
    """Schemas holding ai_metadata or the reactor's tables where this role lacks USAGE."""
    names = ["ai_metadata", *REACTOR_TABLES, "reactor_schema"]
    return [r["schema"] for r in await conn.fetch(Q.schemas_without_usage, names)]


async def missing_runtime_privileges(conn: asyncpg.Connection) -> list[Need]:
    """Privileges the current role lacks on existing objects to run the reactor."""
    missing: list[Need] = []
    for table in READ_ONLY + REACTOR_TABLES:
        if not await exists(conn, table):
            continue
        wanted = ("SELECT",) if table in READ_ONLY else TABLE_PRIVILEGES
        for privilege in wanted:
            if not await _table_privilege(conn, table, privilege):
                reason = "the reactor reads it" if privilege == "SELECT" else "the reactor writes it"
                missing.append(Need(privilege, table, reason))
    for seq in (*SEQUENCES, *await _serial_sequences(conn)):
        if await exists(conn, seq) and not await conn.fetchval(Q.sequence_privilege, seq):
            missing.append(Need("USAGE", seq, "inserting rows draws from this sequence"))
    if await exists(conn, "ai_metadata") and not await _table_privilege(conn, "ai_metadata", "TRIGGER"):
        missing.append(Need("TRIGGER", "ai_metadata", "needed to install the notify trigger"))
    return missing


async def missing_init_privileges(conn: asyncpg.Connection, *, standalone: bool) -> list[Need]:
    """Privileges the current role lacks to apply the schema itself (`reactor db init`)."""
    ctx = await conn.fetchrow(Q.role_context)
    assert ctx is not None
    if ctx["superuser"]:
        return []
    missing: list[Need] = []
    if not ctx["can_create"]:
        missing.append(Need("CREATE", f"schema {ctx['schema']}", "to create the reactor's tables and functions"))
    owned = [*REACTOR_TABLES, "reactor_schema", *SEQUENCES]
    if standalone:
        owned.append("ai_metadata")
    for relation in owned:
        info = await conn.fetchrow(Q.relation_info, relation)
        if info is not None and not info["owned"]:
            missing.append(Need("ownership", relation, f"it is owned by {info['owner']}; indexes need its owner"))
    for function in ("reactor_valid_image_path", "reactor_ai_metadata_notify", "reactor_log_changes"):
        for info in await conn.fetch(Q.function_info, function):
            if not info["owned"]:
                missing.append(Need("ownership", f"function {function}", f"it is owned by {info['owner']}"))
    if (
        not standalone
        and await exists(conn, "ai_metadata")
        and not await _table_privilege(conn, "ai_metadata", "TRIGGER")
    ):
        missing.append(Need("TRIGGER", "ai_metadata", "to install the notify trigger"))
    return missing


def grant_sql(role: str) -> str:
    """GRANT statements that let `role` run the reactor on a database set up by its owner."""
    r = quote_ident(role)
    lit = quote_literal(role)
    serial_tables = ", ".join(f"to_regclass('{table}')" for table in sorted({t for t, _ in SERIALS}))
    lines = [
        "-- USAGE on the schema: without it the role sees none of the tables. Only the schema's",
        "-- owner (on PostgreSQL 15+ the database owner, for public) or a superuser can grant it.",
        "DO $usage$",
        "DECLARE s text := current_schema();",
        "BEGIN",
        f"    IF NOT has_schema_privilege({lit}, s, 'USAGE') THEN",
        f"        EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', s, {lit});",
        f"        IF NOT has_schema_privilege({lit}, s, 'USAGE') THEN",
        "            RAISE EXCEPTION 'face-reactor: role % cannot grant USAGE on schema %; its owner (%) runs: "
        "GRANT USAGE ON SCHEMA % TO %',",
        "                current_user, s, (SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = s),",
        f"                s, {lit};",
        "        END IF;",
        "    END IF;",
        "END",
        "$usage$;",
        f"GRANT SELECT ON ai_metadata, reactor_schema TO {r};",
        f"GRANT {', '.join(TABLE_PRIVILEGES)} ON {', '.join(REACTOR_TABLES)} TO {r};",
        f"GRANT USAGE, SELECT ON SEQUENCE {', '.join(SEQUENCES)} TO {r};",
        "-- The sequences behind the legacy tables' serial columns, whatever their names.",
        "DO $grant$",
        "DECLARE seq text;",
        "BEGIN",
        "    FOR seq IN",
        "        SELECT s.oid::regclass::text FROM pg_depend AS d",
        "        JOIN pg_class AS s ON s.oid = d.objid AND s.relkind = 'S'",
        "        WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass",
        "          AND d.deptype IN ('a', 'i')",
        f"          AND d.refobjid IN ({serial_tables})",
        "    LOOP",
        f"        EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %s TO %I', seq, {lit});",
        "    END LOOP;",
        "END",
        "$grant$;",
        "-- Lets the role replace the trigger itself on a later upgrade (`reactor db init`).",
        f"GRANT TRIGGER ON ai_metadata TO {r};",
    ]
    return "\n".join(lines) + "\n"
