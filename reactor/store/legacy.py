"""The legacy worker's face_metadata (seeds/001, `save_face_data`), adopted in place.

Production databases hold the legacy worker's results, which other programs of the
vision system read: ``face_count``, the boxes (``face_locations``) and the 128-d
encodings (``face_encodings``) as JSON lists, and ``detected_at`` without a time
zone. The reactor adopts that table instead of replacing it: `db init` adds the
columns it needs (sql/schema.sql), and every new result writes the legacy columns
too, in the legacy format, in the same transaction as its face rows.

This module is the one home of what the legacy shape is: which columns are the
legacy JSON columns and in which types they may be stored, which columns the
reactor can fill, and how a table of another shape is told apart.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from reactor.store import sql
from reactor.store.dbtypes import Conn

Q = sql.Queries("catalog.sql")

TABLE = "face_metadata"
BOXES = "face_locations"
ENCODINGS = "face_encodings"
LEGACY_JSON_COLUMNS = (BOXES, ENCODINGS)
# The types a legacy JSON column may have, exactly (format_type's names): new results
# are written as JSON text cast to it. An array (text[], jsonb[]) or a varchar(n), which
# the legacy worker never wrote and where a long result would not fit, is refused at
# start like any other type, not found out by a failed write per image.
JSON_TYPES = ("text", "json", "jsonb")
# The model name of face rows imported from the legacy columns.
LEGACY_MODEL = "legacy"
ENCODING_LENGTH = 128


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    not_null: bool
    has_default: bool


@dataclass(frozen=True)
class ResultShape:
    """What a result write must fill beyond the reactor's own columns: the legacy JSON
    columns this face_metadata has, with their types (None: the column is absent)."""

    boxes_type: str | None = None
    encodings_type: str | None = None

    @property
    def legacy(self) -> bool:
        return self.boxes_type is not None or self.encodings_type is not None

    def columns(self) -> list[tuple[str, str]]:
        """(column, SQL type) of each legacy JSON column present, in a fixed order."""
        present = ((BOXES, self.boxes_type), (ENCODINGS, self.encodings_type))
        return [(name, type_) for name, type_ in present if type_ is not None]


# The reactor's own face_metadata: no legacy columns to fill.
NO_LEGACY = ResultShape()


async def columns(conn: Conn, table: str = TABLE) -> dict[str, Column]:
    return {
        r["name"]: Column(r["name"], r["type"], bool(r["not_null"]), bool(r["has_default"]))
        for r in await conn.fetch(Q.table_columns, table)
    }


def is_json_type(type_: str) -> bool:
    return type_ in JSON_TYPES


def _conversion(column: Column) -> str:
    """The owner's statement that makes a legacy JSON column of another type usable."""
    alter = f"ALTER TABLE {TABLE} ALTER COLUMN {column.name} TYPE"
    if column.type.startswith(("character varying", "character(")) and not column.type.endswith("[]"):
        return f"{alter} text"  # lossless
    # How an array or another type maps to JSON depends on what it holds.
    return f"{alter} jsonb USING ..."


def shape_of(found: dict[str, Column]) -> ResultShape:
    """The legacy JSON columns a result write fills; one of another type is not filled
    (``problems`` reports it, and `db init` refuses while it is NOT NULL)."""

    def usable(name: str) -> str | None:
        column = found.get(name)
        if column is None or not is_json_type(column.type):
            return None
        # One of JSON_TYPES, a plain type name: reactor.store.outcomes casts to it.
        return column.type

    return ResultShape(boxes_type=usable(BOXES), encodings_type=usable(ENCODINGS))


async def result_shape(conn: Conn) -> ResultShape:
    return shape_of(await columns(conn))


def problems(found: dict[str, Column], fillable: Sequence[str]) -> list[tuple[str, str]]:
    """Why a result cannot be written into this face_metadata: (column, one line) each.

    ``fillable`` are the columns the reactor writes itself. A legacy column that is
    NOT NULL with no default and that the reactor cannot fill would fail every
    insert; so would a legacy JSON column of a type that cannot hold JSON text.
    """
    lines: list[tuple[str, str]] = []
    if found and "image_path" not in found:
        lines.append(
            (
                f"{TABLE}.image_path",
                f"{TABLE} has no image_path column: it is not a face_metadata the "
                "reactor can adopt; rename it and run `reactor db init` to create the reactor's own",
            )
        )
    for column in found.values():
        if column.name in LEGACY_JSON_COLUMNS and not is_json_type(column.type):
            lines.append(
                (
                    f"{TABLE}.{column.name}",
                    f"{TABLE}.{column.name} is {column.type}: the reactor writes "
                    f"the legacy {column.name} as JSON into {', '.join(JSON_TYPES)} only; ask the owner to "
                    f"convert the column ({_conversion(column)})",
                )
            )
        elif (
            column.not_null
            and not column.has_default
            and column.name not in fillable
            and column.name not in LEGACY_JSON_COLUMNS
        ):
            lines.append(
                (
                    f"{TABLE}.{column.name}",
                    f"{TABLE}.{column.name} is NOT NULL without a default and the "
                    "reactor cannot fill it; ask the owner to run the SQL printed by `reactor db sql` (it "
                    f"makes the column nullable), or give it a default (ALTER TABLE {TABLE} ALTER COLUMN "
                    f"{column.name} SET DEFAULT ...)",
                )
            )
    return lines


def encode(boxes: Sequence[Sequence[int]], encodings: Sequence[Sequence[float]]) -> tuple[str, str]:
    """The legacy columns' values: boxes as [top, right, bottom, left] lists and
    encodings as lists of 128 floats, each a JSON list in face order, formatted as the
    legacy worker's json.dumps wrote them."""
    return (
        json.dumps([[int(v) for v in box] for box in boxes]),
        json.dumps([[float(v) for v in enc] for enc in encodings]),
    )


def nullable_sql(known: Sequence[str]) -> str:
    """Owner SQL: a legacy NOT NULL column without a default that the reactor cannot
    fill becomes nullable (its values are kept), so that inserts of new results work."""
    listed = ", ".join(f"'{name}'" for name in (*known, *LEGACY_JSON_COLUMNS))
    return f"""-- A legacy face_metadata column that is NOT NULL without a default, and that the
-- reactor cannot fill, would fail every new result: it becomes nullable (no value is
-- changed). Give it a default instead, before running this file, to keep it NOT NULL.
DO $$
DECLARE
    col TEXT;
BEGIN
    FOR col IN
        SELECT attname FROM pg_attribute
        WHERE attrelid = to_regclass('{TABLE}') AND attnum > 0 AND NOT attisdropped
          AND attnotnull AND NOT atthasdef AND attidentity = '' AND attgenerated = ''
          AND attname NOT IN ({listed})
    LOOP
        EXECUTE format('ALTER TABLE {TABLE} ALTER COLUMN %I DROP NOT NULL', col);
    END LOOP;
END
$$;"""
