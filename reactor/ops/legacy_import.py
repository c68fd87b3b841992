"""`reactor db import-legacy`: the legacy worker's faces, copied into face_detections.

The legacy rows already count as done (they are face_metadata rows); the import
makes their faces visible to every reactor command (status, audit, repair) by
copying the legacy boxes and encodings into face_detections, one keyset page per
transaction. Idempotent: a row whose faces were imported is not selected again.
A row whose JSON is malformed or holds NaN or Infinity, whose box count disagrees
with face_count, whose boxes are not whole numbers within INTEGER, whose encodings
are not 128 finite numbers within REAL each, whose path breaks the path rule, or
that the database refuses all the same (pgvector's cast, another program's
constraint) is reported and left as it is; the rest goes on.

A rerun resumes after the last row imported, derived from what is already there
(the greatest path among the legacy face rows): pages are committed in path order,
so every row up to it was examined by an earlier run. ``from_start`` examines every
row again (rows fixed by hand, or rows added behind that point).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from reactor.errors import ReactorError
from reactor.store import legacy
from reactor.store import legacy_import as rows_store
from reactor.store.dbtypes import Conn
from reactor.store.legacy_import import Face, LegacyRow
from reactor.util.progress import Progress

# Problem rows listed in the report; the rest are counted.
MAX_LISTED = 50
# The columns' ranges: box_* are INTEGER, encoding REAL[] (and pgvector's vector is
# float4 too), so a value outside them would fail the page's transaction.
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
REAL_MAX = 3.4028234663852886e38


class NotLegacy(ReactorError):
    """This face_metadata has no legacy columns to import from; the message says why."""


@dataclass
class ImportReport:
    images: int = 0
    faces: int = 0
    rejected: int = 0
    problems: list[dict[str, str]] = field(default_factory=list)
    # Where this run started: after this path (None: from the first row).
    resumed_after: str | None = None
    # Legacy rows with faces, not imported, up to resumed_after: examined by an earlier
    # run (and left then), or added behind it; ``from_start`` examines them again.
    not_examined: int = 0

    def reject(self, path: str, reason: str) -> None:
        self.rejected += 1
        if len(self.problems) < MAX_LISTED:
            self.problems.append({"image_path": path, "reason": reason})

    def as_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "faces": self.faces,
            "rejected": self.rejected,
            "problems": self.problems,
            "resumed_after": self.resumed_after,
            "not_examined": self.not_examined,
        }


def _number_list(value: Any, length: int | None) -> list[float] | None:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        return None
    # A JSON integer beyond a float's range (1 followed by 400 zeros) reads as infinite.
    return [float(v) if abs(v) < 2.0**1023 else (math.inf if v > 0 else -math.inf) for v in value]


def _not_json(constant: str) -> Any:
    # Python's json reads NaN and Infinity, which JSON has not (a text column can hold them).
    raise ValueError(f"{constant} is not a JSON number")


def _loads(column: str, text: str | None) -> Any:
    try:
        return json.loads(text, parse_constant=_not_json) if text is not None else None
    except (ValueError, RecursionError) as exc:  # json.JSONDecodeError, NaN or Infinity, deep nesting
        raise ValueError(f"malformed JSON in {column}: {exc}") from None


def _box(i: int, box: Any) -> list[int]:
    numbers = _number_list(box, 4)
    if numbers is not None and not all(INT_MIN <= v <= INT_MAX for v in numbers):
        raise ValueError(f"box {i} is outside INTEGER: {str(box)[:80]}")
    if numbers is None or not all(v == int(v) for v in numbers):
        raise ValueError(f"box {i} is not [top, right, bottom, left] in whole pixels: {str(box)[:80]}")
    return [int(v) for v in numbers]


def _encoding(i: int, encoding: Any) -> list[float]:
    vector = _number_list(encoding, legacy.ENCODING_LENGTH)
    if vector is None:
        size = len(encoding) if isinstance(encoding, list) else type(encoding).__name__
        raise ValueError(f"encoding {i} is not {legacy.ENCODING_LENGTH} numbers ({size})")
    outside = [v for v in vector if not (math.isfinite(v) and abs(v) <= REAL_MAX)]
    if outside:
        raise ValueError(f"encoding {i} holds {outside[0]!r}: not a finite number within REAL")
    return vector


def parse_row(face_count: int, boxes_text: str | None, encodings_text: str | None) -> list[Face]:
    """The faces of one legacy row as (box, encoding) pairs; ValueError says what is wrong."""
    boxes = _loads(legacy.BOXES, boxes_text)
    encodings = _loads(legacy.ENCODINGS, encodings_text)
    if not isinstance(boxes, list):
        raise ValueError(f"{legacy.BOXES} is not a JSON list")
    if not isinstance(encodings, list):
        raise ValueError(f"{legacy.ENCODINGS} is not a JSON list")
    if len(boxes) != face_count:
        raise ValueError(f"face_count is {face_count} but {legacy.BOXES} holds {len(boxes)} box(es)")
    if len(encodings) != len(boxes):
        raise ValueError(f"{len(boxes)} box(es) but {len(encodings)} encoding(s)")
    return [
        (_box(i, box), _encoding(i, encoding)) for i, (box, encoding) in enumerate(zip(boxes, encodings, strict=True))
    ]


@dataclass
class _Page:
    """One page's outcome, added to the report once its transaction has committed."""

    rows: list[tuple[str, list[Face]]] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)

    def add_to(self, report: ImportReport) -> None:
        for path, reason in self.rejected:
            report.reject(path, reason)
        report.images += len(self.rows)
        report.faces += sum(len(faces) for _, faces in self.rows)


def _parse_page(rows: Sequence[LegacyRow]) -> _Page:
    page = _Page()
    for row in rows:
        if not row.path_valid:
            page.rejected.append(
                (row.image_path, "the path breaks the path rule (a derived folder?): see `reactor audit`")
            )
            continue
        try:
            page.rows.append((row.image_path, parse_row(row.face_count, row.boxes, row.encodings)))
        except ValueError as exc:
            page.rejected.append((row.image_path, str(exc)))
    return page


async def _import_page(conn: Conn, page: _Page) -> None:
    """The page in one transaction; the rows the database refuses are left (and reported)."""
    page.rows, refused = await rows_store.insert_page(conn, page.rows)
    page.rejected.extend(refused)


async def import_legacy(
    conn: Conn, *, page_size: int, progress: Progress | None = None, from_start: bool = False
) -> ImportReport:
    shape = await rows_store.result_shape(conn)
    if shape.boxes_type is None or shape.encodings_type is None:
        raise NotLegacy(
            f"{legacy.TABLE} has no {legacy.BOXES} and {legacy.ENCODINGS} JSON columns: there are no legacy "
            "faces to import (`reactor db check` shows the table's shape)"
        )
    report = ImportReport()
    if not from_start:
        report.resumed_after = await rows_store.resume_point(conn)
    after = report.resumed_after or ""
    report.not_examined, left = await rows_store.not_imported_around(conn, after)
    if progress is not None:
        progress.set_total(left)
    while True:
        rows = await rows_store.page(conn, after, page_size)
        page = _parse_page(rows)
        await _import_page(conn, page)
        page.add_to(report)
        if progress is not None:
            progress.advance(len(rows))
        if len(rows) < page_size:
            return report
        after = rows[-1].image_path
