"""The vision database as production has it (seeds/000, seeds/001), not made by the reactor:
the upstream's ai_metadata, the legacy worker's face_metadata (a serial key, the faces as
JSON, no time zone, another program's column) and a legacy face_detection_failures that
lacks file_size_bytes, original_width and original_height."""

from __future__ import annotations

import asyncpg

from reactor.store import schema

UPSTREAM_AI_METADATA = "CREATE TABLE ai_metadata (image_path TEXT NOT NULL, is_processed BOOLEAN, analysed_by TEXT)"
PRODUCTION_FAILURES = """
CREATE TABLE face_detection_failures (
    id SERIAL PRIMARY KEY,
    image_path TEXT NOT NULL UNIQUE,
    retry_count INTEGER DEFAULT 0,
    last_error TEXT,
    last_error_type TEXT,
    last_attempted_scale REAL,
    first_failure_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    last_failure_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    next_retry_after TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    permanently_failed BOOLEAN DEFAULT FALSE
);
"""
# The columns production's failures table lacks, which the reactor adapts to.
PRODUCTION_LACKS = frozenset({"file_size_bytes", "original_width", "original_height"})
# The legacy worker's table: a serial key, JSON as text for the boxes (so that a
# malformed row can exist), jsonb for the encodings, no time zone, and a column
# of another program's that the reactor does not know.
LEGACY_FACE_METADATA = """
CREATE TABLE face_metadata (
    id SERIAL PRIMARY KEY,
    image_path TEXT NOT NULL UNIQUE,
    face_count INTEGER NOT NULL,
    face_locations TEXT NOT NULL,
    face_encodings JSONB NOT NULL,
    detected_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    reviewed_by TEXT
);
"""


async def create(conn: asyncpg.Connection) -> None:
    """The three legacy tables, empty, then `reactor db init` on them."""
    await conn.execute(UPSTREAM_AI_METADATA + ";" + PRODUCTION_FAILURES + LEGACY_FACE_METADATA)
    await schema.init_schema(conn, standalone=False)
