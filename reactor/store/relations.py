"""The reactor's own tables and sequence, and whether a relation exists.

One list for everything that names them: the audit, the privileges and GRANTs, and
`reactor db check` (whose column expectations per table are reactor.store.catalog.TABLES).
Relations are named as text and resolved with to_regclass, so they follow search_path
like the rest of the reactor's SQL.
"""

from __future__ import annotations

from collections.abc import Sequence

from reactor.store import sql
from reactor.store.dbtypes import Conn
from reactor.store.errors import translated
from reactor.store.sql import quote_identifier

Q = sql.Queries("catalog.sql")
INTEGRITY = sql.Queries("integrity.sql")

# The tables the running reactor reads and writes (reactor_schema is only read).
REACTOR_TABLES = (
    "face_metadata",
    "face_detections",
    "face_detection_failures",
    "reactor_claims",
    "reactor_instances",
    "reactor_redetect",
    "reactor_file_identity",
    "reactor_held_deletions",
    "reactor_orphan_purges",
    "reactor_control_replies",
    "reactor_changes",
    "reactor_sweep_state",
)
SEQUENCES = ("reactor_claim_token_seq",)
# Copies of rows taken before they are deleted (`reactor repair`, held mass deletions).
BACKUP_PREFIX = "reactor_backup_"


async def exists(conn: Conn, relation: str) -> bool:
    """Whether ``relation`` (a table, sequence, index ...) resolves on the search_path."""
    return await conn.fetchrow(Q.relation_info, relation) is not None


async def exists_named(conn: Conn, name: str) -> bool:
    """Whether a relation of exactly this name (case kept, as a generated backup name that
    holds a "T") is on the search_path; ``exists`` folds an unquoted name to lower case."""
    return await exists(conn, quote_identifier(name))


async def missing(conn: Conn, tables: Sequence[str] = REACTOR_TABLES) -> list[str]:
    """Those of ``tables`` that do not resolve on the search_path, sorted."""
    with translated():
        return [r["table_name"] for r in await conn.fetch(INTEGRITY.missing_tables, list(tables))]
