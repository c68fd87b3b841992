"""Turning the database's refusal of a bad image path into one line a person can act on.

Every reactor table carries a CHECK constraint ``<table>_path_valid`` that calls
``reactor_valid_image_path`` (sql/schema.sql): relative, forward slashes, no ``.``
or ``..``, never inside a derived folder such as ``face_crops/`` (seeds/002). The
application validates first with reactor.paths; the constraint is the floor that
also stops other writers (a restore, a hand-written UPDATE). When it fires, asyncpg
raises CheckViolationError naming the constraint; ``path_rejection`` maps that to
``PathRejected`` with a message that says what to do next.

    try:
        await conn.execute(insert_result, path, ...)
    except asyncpg.CheckViolationError as exc:
        raise path_rejection(exc, path) or exc
"""

from __future__ import annotations

import asyncpg

# The constraint names in sql/schema.sql, and the table each guards.
PATH_CONSTRAINTS: dict[str, str] = {
    "face_metadata_path_valid": "face_metadata",
    "face_detections_path_valid": "face_detections",
    "face_detection_failures_path_valid": "face_detection_failures",
    "reactor_claims_path_valid": "reactor_claims",
}

ADVICE = (
    "image paths must be relative to the share root, use forward slashes, contain no '.' or '..' "
    "and stay out of derived folders (face_crops, thumbnails); fix the path in ai_metadata, "
    "then run `reactor audit`"
)


class PathRejected(Exception):
    """The database refused an image path for a reactor table; the message is one line."""

    def __init__(self, table: str, path: str | None, constraint: str) -> None:
        shown = repr(path) if path is not None else "an image path"
        super().__init__(f"the database refused {shown} for {table} (constraint {constraint}): {ADVICE}")
        self.table = table
        self.path = path
        self.constraint = constraint


def path_rejection(exc: BaseException, path: str | None = None) -> PathRejected | None:
    """PathRejected for a violation of one of the path constraints; None for anything else."""
    if not isinstance(exc, asyncpg.CheckViolationError):
        return None
    constraint = exc.constraint_name
    if constraint not in PATH_CONSTRAINTS:
        return None
    return PathRejected(PATH_CONSTRAINTS[constraint], path, constraint)
