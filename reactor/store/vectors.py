"""Similarity search in PostgreSQL: face encodings as pgvector ``vector(128)`` values.

Where the server has the pgvector extension (the embedded pgserver ships it),
`reactor db init` installs sql/vector.sql: an ``embedding`` column kept equal to the
encoding by a trigger, and an HNSW index on L2 distance. Without the extension
nothing changes for detection or storage; `reactor db check` says what is missing
and `reactor similar` refuses with one line.
"""

from __future__ import annotations

import asyncpg

from reactor.store import sql
from reactor.store.dbtypes import Conn, rows_affected

Q = sql.Queries("catalog.sql")
SEARCH = sql.Queries("similar.sql")
EXTENSION = "vector"
INDEX = "idx_face_detections_embedding"
TRIGGER = "reactor_face_embedding"
BACKFILL_PAGE = 5000


async def state(conn: Conn) -> tuple[bool, str | None]:
    """(available on the server, installed version or None)."""
    row = await conn.fetchrow(Q.vector_extension)
    assert row is not None
    return bool(row["available"]), row["installed"]


async def install(conn: asyncpg.Connection) -> list[str]:
    """Install sql/vector.sql inside `db init`'s transaction; what init adapted to, if anything."""
    available, _ = await state(conn)
    if not available:
        return [
            f"the {EXTENSION} extension is not available on this server: similarity search "
            "(`reactor similar`) is off; everything else works"
        ]
    try:
        async with conn.transaction():  # a savepoint: a refusal leaves the rest of init standing
            await conn.execute(sql.text("vector.sql"))
    except asyncpg.InsufficientPrivilegeError as exc:
        return [
            f"the {EXTENSION} extension could not be installed ({exc}): similarity search is off; a superuser "
            f"runs CREATE EXTENSION {EXTENSION} once, then `reactor db init` again"
        ]
    return []


async def backfill(conn: Conn) -> int:
    """Fill the embedding of faces written before the column existed, page by page."""
    _, installed = await state(conn)
    if installed is None or not await conn.fetchval(Q.embedding_column):
        return 0
    filled = 0
    while True:
        status = await conn.execute(SEARCH.backfill_embeddings, BACKFILL_PAGE)
        count = rows_affected(status)
        filled += count
        if count < BACKFILL_PAGE:
            return filled


def owner_sql() -> str:
    """sql/vector.sql for the owner's script, run only where psql finds the extension
    installable: CREATE EXTENSION vector needs a superuser (pgvector is not trusted)."""
    return "\n".join(
        [
            "-- Similarity search (optional): where the pgvector extension can be installed.",
            "SELECT exists(SELECT 1 FROM pg_available_extensions WHERE name = 'vector')",
            "       AND (exists(SELECT 1 FROM pg_extension WHERE extname = 'vector')",
            "            OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)) AS reactor_vector \\gset",
            "\\if :reactor_vector",
            sql.text("vector.sql"),
            "\\else",
            "\\echo 'face-reactor: the vector extension is not installed and this role cannot install it: "
            "similarity search stays off (a superuser runs CREATE EXTENSION vector, then this file again)'",
            "\\endif",
        ]
    )
