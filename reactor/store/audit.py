"""What `reactor audit` reads (sql/integrity.sql): the rows that break the reactor's
invariants, every path in its tables (streamed), the results whose file it stats, and
the pending rows. Each read runs inside ``translated()``; rows come back as dicts, the
audit's findings hold them as they are.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from reactor.store.dbtypes import Conn
from reactor.store.errors import translated
from reactor.store.sql import Queries

Q = Queries("integrity.sql")
# Rows a cursor fetches at a time: memory stays flat on a library of millions.
PREFETCH = 5000


# The checks that are one read each: check -> its block.
CHECK_BLOCKS = {
    "orphan_faces": "orphan_faces",
    "face_count_mismatch": "face_count_mismatch",
    "superseded_failures": "superseded_failures",
    "dead_claims": "dead_claims",
    "legacy_not_imported": "legacy_not_imported_rows",
    "legacy_zero": "legacy_zero_rows",
    "held_deletions": "held_deletion_rows",
    "legacy_orphans": "legacy_orphan_rows",
}


async def finding_rows(conn: Conn, check: str, *args: Any) -> list[dict[str, Any]]:
    """The rows one check of CHECK_BLOCKS finds (dead_claims takes the seconds after
    which a claim's instance is gone)."""
    with translated():
        return [dict(r) for r in await conn.fetch(getattr(Q, CHECK_BLOCKS[check]), *args)]


async def table_columns(conn: Conn, table: str) -> dict[str, str]:
    """Column name -> type as PostgreSQL formats it."""
    with translated():
        return {r["column_name"]: r["column_type"] for r in await conn.fetch(Q.table_columns, table)}


async def pending_processed(conn: Conn, older_than_seconds: float, time_column: str) -> list[dict[str, Any]]:
    """Processed rows with neither result nor failure, waiting longer than ``older_than_seconds``
    by ai_metadata's ``time_column`` (image_path, since)."""
    with translated():
        return [dict(r) for r in await conn.fetch(Q.pending_processed, older_than_seconds, time_column)]


@dataclass(frozen=True)
class StoredPath:
    table: str
    image_path: str
    # What reactor_valid_image_path (the constraints' floor) says of it.
    sql_valid: bool
    token: int | None


async def reactor_paths(conn: Conn) -> AsyncIterator[StoredPath]:
    """Every path in a reactor table, streamed through a cursor (in a transaction, or a
    savepoint of the caller's)."""
    with translated():
        async with conn.transaction():
            async for r in conn.cursor(Q.reactor_paths, prefetch=PREFETCH):
                yield StoredPath(r["table_name"], r["image_path"], r["sql_valid"], r["token"])


async def result_paths(conn: Conn, *, unorphaned: bool) -> AsyncIterator[str]:
    """Every result's path, streamed; ``unorphaned``: those not marked orphaned."""
    with translated():
        async with conn.transaction():
            query = Q.result_paths_unorphaned if unorphaned else Q.result_paths
            async for r in conn.cursor(query, prefetch=PREFETCH):
                yield r["image_path"]


async def results_present(conn: Conn, paths: Sequence[str], *, unorphaned: bool) -> list[str]:
    """Which of ``paths`` have a result (not marked orphaned, with ``unorphaned``), sorted."""
    with translated():
        query = Q.results_present_unorphaned if unorphaned else Q.results_present
        return [r["image_path"] for r in await conn.fetch(query, list(paths))]


async def legacy_among(conn: Conn, paths: Sequence[str]) -> set[str]:
    """Which of these results the legacy worker wrote."""
    with translated():
        return {r["image_path"] for r in await conn.fetch(Q.legacy_among, list(paths))}
