"""What `reactor demo` reads and resets on its own embedded database (sql/demo.sql):
how many photos have an outcome, and the outcomes themselves."""

from __future__ import annotations

from collections.abc import Sequence

from reactor.store.dbtypes import Conn
from reactor.store.errors import translated
from reactor.store.sql import Queries

Q = Queries("demo.sql")

# top, right, bottom, left (dlib order, as stored), per image.
Boxes = dict[str, list[tuple[int, int, int, int]]]


async def reset(conn: Conn) -> None:
    """Start from an empty library (the demo's database only)."""
    with translated():
        await conn.execute(Q.demo_reset)


async def outcomes_done(conn: Conn, paths: Sequence[str]) -> int:
    """How many of these paths have a result or a failure (not counting `incomplete`)."""
    with translated():
        return int(await conn.fetchval(Q.outcomes_done, list(paths)))


async def outcomes(conn: Conn, paths: Sequence[str]) -> tuple[dict[str, int], dict[str, str], Boxes]:
    """Face counts of results, failure types of failures (a result wins), and boxes per image."""
    with translated():
        results = {r["image_path"]: r["face_count"] for r in await conn.fetch(Q.outcome_results, list(paths))}
        boxes: Boxes = {}
        for r in await conn.fetch(Q.outcome_boxes, list(paths)):
            boxes.setdefault(r["image_path"], []).append((r["box_top"], r["box_right"], r["box_bottom"], r["box_left"]))
        failures = {
            r["image_path"]: r["error_type"]
            for r in await conn.fetch(Q.outcome_failures, list(paths))
            if r["image_path"] not in results
        }
    return results, failures, boxes
