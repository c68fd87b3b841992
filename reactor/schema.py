"""Applying the schema: tables, constraints, the ai_metadata trigger, the version row."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from reactor import sql

SCHEMA_VERSION = 1
# pg_advisory_xact_lock key for `db init`: two instances starting together apply it once.
INIT_LOCK_KEY = 0x46414345_0001  # "FACE" 1


@dataclass
class InitReport:
    version: int
    standalone: bool
    adapted: list[str] = field(default_factory=list)


def trigger_files() -> list[str]:
    return sorted(f"triggers/{p.name}" for p in (sql.sql_root() / "triggers").glob("*.sql"))


async def init_schema(conn: asyncpg.Connection, *, standalone: bool) -> InitReport:
    """Apply schema, (standalone) ai_metadata, and triggers in one transaction."""
    report = InitReport(version=SCHEMA_VERSION, standalone=standalone)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", INIT_LOCK_KEY)
        await conn.execute(sql.text("schema.sql"))
        if standalone:
            await conn.execute(sql.text("standalone.sql"))
        for name in trigger_files():
            await conn.execute(sql.text(name))
        await conn.execute(
            "INSERT INTO reactor_schema (version) VALUES ($1) "
            "ON CONFLICT (singleton) DO UPDATE SET version = EXCLUDED.version, applied_at = now() "
            "WHERE reactor_schema.version IS DISTINCT FROM EXCLUDED.version",
            SCHEMA_VERSION,
        )
    return report
