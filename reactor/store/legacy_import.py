"""The legacy worker's faces copied into face_detections (sql/legacy.sql): the keyset
pages of legacy rows to import, where a rerun resumes, and the page's insert, which
leaves the rows the database refuses. Each function runs inside ``translated()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from reactor.store import legacy
from reactor.store.dbtypes import Conn
from reactor.store.errors import translated
from reactor.store.sql import Queries

Q = Queries("legacy.sql")

# One face: its box (top, right, bottom, left) and its encoding.
Face = tuple[list[int], list[float]]
Row = tuple[str, list[Face]]

# What the database says about one row's values (a range, pgvector's cast, a CHECK of
# another program's); anything else (a lost connection, a privilege) stops the import.
_ROW_REFUSED = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)


@dataclass(frozen=True)
class LegacyRow:
    """A legacy result with faces only in its JSON columns (read as text)."""

    image_path: str
    face_count: int
    boxes: str | None
    encodings: str | None
    # What reactor_valid_image_path says of the path.
    path_valid: bool


async def result_shape(conn: Conn) -> legacy.ResultShape:
    with translated():
        return await legacy.result_shape(conn)


async def resume_point(conn: Conn) -> str | None:
    """The greatest path among the imported face rows: every legacy row up to it was examined."""
    with translated():
        path: str | None = await conn.fetchval(Q.legacy_resume_point, legacy.LEGACY_MODEL)
    return path


async def not_imported_around(conn: Conn, after: str) -> tuple[int, int]:
    """Legacy rows with faces not imported yet: (up to ``after``, after it)."""
    with translated():
        row = await conn.fetchrow(Q.legacy_not_imported_around, after)
    assert row is not None
    return int(row["before"]), int(row["after"])


async def page(conn: Conn, after: str, limit: int) -> list[LegacyRow]:
    """The next ``limit`` legacy rows to import after the path ``after``."""
    with translated():
        rows = await conn.fetch(Q.legacy_to_import, after, limit)
    return [LegacyRow(r["image_path"], int(r["face_count"]), r["boxes"], r["encodings"], r["path_valid"]) for r in rows]


async def _insert(conn: Conn, path: str, faces: list[Face]) -> None:
    await conn.executemany(
        Q.legacy_insert_face,
        [(path, i, *box, encoding, legacy.LEGACY_MODEL) for i, (box, encoding) in enumerate(faces)],
    )


async def insert_page(conn: Conn, rows: Sequence[Row]) -> tuple[list[Row], list[tuple[str, str]]]:
    """The page in one transaction; if the database refuses a row, the page again with a
    savepoint per row, so that only the refused rows are left. (rows kept, (path, reason) refused)."""
    with translated():
        try:
            async with conn.transaction():
                for path, faces in rows:
                    await _insert(conn, path, faces)
            return list(rows), []
        except _ROW_REFUSED:
            pass
        kept: list[Row] = []
        refused: list[tuple[str, str]] = []
        async with conn.transaction():
            for path, faces in rows:
                try:
                    async with conn.transaction():
                        await _insert(conn, path, faces)
                    kept.append((path, faces))
                except _ROW_REFUSED as exc:
                    refused.append((path, f"refused by the database: {str(exc).splitlines()[0][:200]}"))
    return kept, refused
