"""Similarity search in PostgreSQL: face encodings as pgvector ``vector(128)`` values.

Where the server has the pgvector extension (the embedded pgserver ships it),
`reactor db init` installs sql/vector.sql: an ``embedding`` column kept equal to the
encoding by a trigger, and an HNSW index on L2 distance. Without the extension
nothing changes for detection or storage; `reactor db check` says what is missing
and `reactor similar` refuses with one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from reactor.store import sql
from reactor.store.dbtypes import Conn, rows_affected
from reactor.store.errors import translated

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


@dataclass(frozen=True)
class StoredFace:
    """One face row as the search reads it; ``box`` is top, right, bottom, left (dlib order)."""

    image_path: str
    face_id: int
    face_index: int
    box: tuple[int, int, int, int]
    has_embedding: bool = True
    # L2 distance to the query face (nearest only).
    distance: float = 0.0


def _box(row: Any) -> tuple[int, int, int, int]:
    return (row["box_top"], row["box_right"], row["box_bottom"], row["box_left"])


async def has_result(conn: Conn, path: str) -> bool:
    """Whether ``path`` has a result row (with zero faces or more)."""
    with translated():
        return await conn.fetchval(SEARCH.result_of, path) is not None


async def faces_of(conn: Conn, path: str) -> list[StoredFace]:
    """The faces of one image, in order."""
    with translated():
        rows = await conn.fetch(SEARCH.query_faces, path)
    return [StoredFace(path, r["face_id"], r["face_index"], _box(r), r["has_embedding"]) for r in rows]


async def nearest(conn: Conn, face_id: int, *, limit: int, ef_search: int, exact: bool = False) -> list[StoredFace]:
    """The ``limit`` faces nearest to ``face_id``, closest first; ``ef_search`` is the HNSW
    breadth for this search, ``exact`` scans every face instead of using the index."""
    with translated():
        async with conn.transaction():
            await conn.execute(SEARCH.search_breadth, str(ef_search))
            if exact:
                await conn.execute(SEARCH.exact_search)
            rows = await conn.fetch(SEARCH.nearest_faces, face_id, limit)
    return [
        StoredFace(r["image_path"], r["face_id"], r["face_index"], _box(r), distance=float(r["distance"])) for r in rows
    ]


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
