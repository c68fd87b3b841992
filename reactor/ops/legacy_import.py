"""`reactor db import-legacy`: the legacy worker's faces, copied into face_detections.

The legacy rows already count as done (they are face_metadata rows); the import
makes their faces visible to every reactor command (status, audit, repair) by
copying the legacy boxes and encodings into face_detections, one keyset page per
transaction. Idempotent: a row whose faces were imported is not selected again.
A row whose JSON is malformed, whose box count disagrees with face_count, whose
encodings are not 128 numbers each, or whose path breaks the path rule is
reported and left as it is; the rest goes on.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from reactor.store import legacy, sql
from reactor.util.progress import Progress

Q = sql.Queries("legacy.sql")
CATALOG = sql.Queries("catalog.sql")
# Problem rows listed in the report; the rest are counted.
MAX_LISTED = 50


class NotLegacy(Exception):
    """This face_metadata has no legacy columns to import from; the message says why."""


@dataclass
class ImportReport:
    images: int = 0
    faces: int = 0
    rejected: int = 0
    problems: list[dict[str, str]] = field(default_factory=list)

    def reject(self, path: str, reason: str) -> None:
        self.rejected += 1
        if len(self.problems) < MAX_LISTED:
            self.problems.append({"image_path": path, "reason": reason})

    def as_dict(self) -> dict[str, Any]:
        return {"images": self.images, "faces": self.faces, "rejected": self.rejected, "problems": self.problems}


def _number_list(value: Any, length: int | None) -> list[float] | None:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        return None
    # Python's JSON reads NaN and Infinity: a box of them would overflow int(), and neither
    # is a pixel nor an encoding.
    if not all(math.isfinite(v) for v in value):
        return None
    return [float(v) for v in value]


Face = tuple[list[int], list[float]]


def parse_row(face_count: int, boxes_text: str | None, encodings_text: str | None) -> list[Face]:
    """The faces of one legacy row as (box, encoding) pairs; ValueError says what is wrong."""
    try:
        boxes = json.loads(boxes_text) if boxes_text is not None else None
        encodings = json.loads(encodings_text) if encodings_text is not None else None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"malformed JSON: {exc}") from None
    if not isinstance(boxes, list):
        raise ValueError(f"{legacy.BOXES} is not a JSON list")
    if not isinstance(encodings, list):
        raise ValueError(f"{legacy.ENCODINGS} is not a JSON list")
    if len(boxes) != face_count:
        raise ValueError(f"face_count is {face_count} but {legacy.BOXES} holds {len(boxes)} box(es)")
    if len(encodings) != len(boxes):
        raise ValueError(f"{len(boxes)} box(es) but {len(encodings)} encoding(s)")
    faces = []
    for i, (box, encoding) in enumerate(zip(boxes, encodings, strict=True)):
        numbers = _number_list(box, 4)
        if numbers is None or any(v != int(v) for v in numbers):
            raise ValueError(f"box {i} is not [top, right, bottom, left] in whole pixels: {str(box)[:80]}")
        vector = _number_list(encoding, legacy.ENCODING_LENGTH)
        if vector is None:
            size = len(encoding) if isinstance(encoding, list) else type(encoding).__name__
            raise ValueError(f"encoding {i} is not {legacy.ENCODING_LENGTH} numbers ({size})")
        faces.append(([int(v) for v in numbers], vector))
    return faces


async def _import_row(conn: asyncpg.Connection, row: asyncpg.Record, report: ImportReport) -> None:
    path = row["image_path"]
    if not row["path_valid"]:
        report.reject(path, "the path breaks the path rule (a derived folder?): see `reactor audit`")
        return
    try:
        faces = parse_row(int(row["face_count"]), row["boxes"], row["encodings"])
    except ValueError as exc:
        report.reject(path, str(exc))
        return
    await conn.executemany(
        Q.legacy_insert_face,
        [(path, i, *box, encoding, legacy.LEGACY_MODEL) for i, (box, encoding) in enumerate(faces)],
    )
    report.images += 1
    report.faces += len(faces)


async def import_legacy(conn: asyncpg.Connection, *, page_size: int, progress: Progress | None = None) -> ImportReport:
    shape = await legacy.result_shape(conn)
    if shape.boxes_type is None or shape.encodings_type is None:
        raise NotLegacy(
            f"{legacy.TABLE} has no {legacy.BOXES} and {legacy.ENCODINGS} JSON columns: there are no legacy "
            "faces to import (`reactor db check` shows the table's shape)"
        )
    report = ImportReport()
    if progress is not None:
        progress.set_total(await conn.fetchval(CATALOG.legacy_not_imported))
    after = ""
    while True:
        rows = await conn.fetch(Q.legacy_to_import, after, page_size)
        async with conn.transaction():
            for row in rows:
                await _import_row(conn, row, report)
        if progress is not None:
            progress.advance(len(rows))
        if len(rows) < page_size:
            return report
        after = rows[-1]["image_path"]
