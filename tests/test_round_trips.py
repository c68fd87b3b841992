"""Round trips per image, counted on the real database (issue 26): a failure is written
by one statement whatever the table's shape, and a batch of file events takes one pooled
connection. The counters sit below the boundary under
test: asyncpg's own query logger sees every statement the connection sends."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import asyncpg
import pytest

from reactor.config import RetryConfig
from reactor.detector.types import DetectionFailure
from reactor.failure_types import ErrorType
from reactor.store import claims, held, outcomes
from reactor.store.claims import Claim
from reactor.store.schema import failure_columns
from reactor.watch.file_events import DatabaseSink, ReadyFile
from tests import production_shape

RETRY = RetryConfig(
    base_seconds=10.0, multiplier=2.0, max_delay_seconds=35.0, jitter=0.0, max_attempts=3, max_attempts_permanent=2
)


@contextmanager
def statements(conn: asyncpg.Connection) -> Iterator[list[str]]:
    """The text of every statement ``conn`` sends while the block runs."""
    sent: list[str] = []

    def log(record: asyncpg.connection.LoggedQuery) -> None:
        sent.append(record.query)

    conn.add_query_logger(log)
    try:
        yield sent
    finally:
        conn.remove_query_logger(log)


_WRITES_FAILURES = re.compile(r"\b(INSERT INTO|UPDATE)\s+face_detection_failures\b", re.IGNORECASE)


def failure_writes(sent: list[str]) -> list[str]:
    return [q for q in sent if _WRITES_FAILURES.search(q)]


FULL = DetectionFailure(
    ErrorType.CORRUPT, "cut", scale=0.5, original_size=(640, 480), file_size_bytes=99, file_mtime_ns=7
)


async def claimed(conn: asyncpg.Connection, path: str) -> Claim:
    await conn.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ($1, TRUE)", path)
    claim = await claims.claim(conn, path, "me", 60.0)
    assert isinstance(claim, Claim)
    return claim


@pytest.mark.parametrize("lacks", [frozenset(), production_shape.PRODUCTION_LACKS], ids=["full", "production"])
async def test_a_failure_is_one_statement_on_any_shape(conn: asyncpg.Connection, lacks: frozenset[str]) -> None:
    if lacks:
        await conn.execute(
            "ALTER TABLE face_detection_failures " + ", ".join(f"DROP COLUMN {c}" for c in sorted(lacks))
        )
    cols = await failure_columns(conn)
    claim = await claimed(conn, "a/b.jpg")
    with statements(conn) as sent:
        rec = await outcomes.record_failure(conn, claim.path, FULL, RETRY, cols, claim)
    # Was an upsert and up to four UPDATEs of the optional columns.
    assert len(failure_writes(sent)) == 1, sent
    assert rec.retry_count == 1 and not rec.permanently_failed
    row = cast(asyncpg.Record, await conn.fetchrow("SELECT to_jsonb(f) AS r FROM face_detection_failures f"))
    written = {"original_width": 640, "original_height": 480, "file_size_bytes": 99, "file_mtime_ns": 7}
    assert {k: v for k, v in written.items() if k not in lacks}.items() <= json.loads(row["r"]).items()


async def test_an_unknown_value_keeps_the_rows_and_the_mtime_is_this_trys(conn: asyncpg.Connection) -> None:
    """The same outcome as the UPDATEs it replaced: a size or scale the failure does not
    know leaves the row's, the mtime is always the one of this try."""
    cols = await failure_columns(conn)
    await conn.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ('c.jpg', TRUE)")
    await outcomes.record_failure(conn, "c.jpg", FULL, RETRY, cols)
    with statements(conn) as sent:
        rec = await outcomes.record_failure(conn, "c.jpg", DetectionFailure(ErrorType.CORRUPT, "cut"), RETRY, cols)
    assert len(failure_writes(sent)) == 1, sent
    assert rec.retry_count == 2 and rec.permanently_failed
    row = cast(asyncpg.Record, await conn.fetchrow("SELECT * FROM face_detection_failures"))
    kept = (row["original_width"], row["original_height"], row["file_size_bytes"], row["last_attempted_scale"])
    assert kept == (640, 480, 99, 0.5)
    assert row["file_mtime_ns"] is None


async def test_an_incomplete_file_is_one_write_too(conn: asyncpg.Connection) -> None:
    cols = await failure_columns(conn)
    claim = await claimed(conn, "d.jpg")
    cut = DetectionFailure(ErrorType.INCOMPLETE, "short", file_size_bytes=5, file_mtime_ns=9)
    with statements(conn) as sent:
        rec = await outcomes.record_failure(conn, claim.path, cut, RETRY, cols, claim)
    assert len(failure_writes(sent)) == 1, sent
    assert rec.retry_count == 0
    assert await conn.fetchval("SELECT file_size_bytes FROM face_detection_failures") == 5


class CountingPool:
    """The real pool, counting its acquires."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.acquired = 0

    def acquire(self) -> Any:
        self.acquired += 1
        return self.pool.acquire()


@pytest.mark.parametrize("standalone", [True, False], ids=["standalone", "vision"])
async def test_a_batch_of_file_events_takes_one_pooled_connection(
    conn: asyncpg.Connection, dsn: str, standalone: bool
) -> None:
    """Every step of a batch (registration, invalid names, row forms, requeued failures,
    held deletions released, results of changed files) on one connection: was up to five."""
    if not standalone:
        await conn.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ('n/é.jpg', TRUE)")
    await conn.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ('n/f.jpg', TRUE)")
    await conn.execute(
        "INSERT INTO face_metadata (image_path, face_count, model, scale) VALUES ('n/f.jpg', 0, 'hog', 1.0)"
    )
    await outcomes.record_failure(conn, "n/f.jpg", FULL, RETRY, await failure_columns(conn))
    await held.hold(conn, ["n/f.jpg"], "share offline")
    queued: list[tuple[str, bool]] = []

    def enqueue(path: str, redetect: bool) -> bool:
        queued.append((path, redetect))
        return True

    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    assert pool is not None
    try:
        counting = CountingPool(pool)
        sink = DatabaseSink(cast(asyncpg.Pool, counting), enqueue, register_files=standalone)
        decomposed = unicodedata.normalize("NFD", "n/é.jpg")
        files = [
            ReadyFile("n/f.jpg", changed=True, size=1, mtime_ns=1),
            ReadyFile(decomposed),
            ReadyFile("n/bad-\udcff.jpg"),
        ]
        await sink.ready(files)
    finally:
        await pool.close()
    assert counting.acquired == 1
    assert ("n/f.jpg", True) in queued
    assert (decomposed if standalone else "n/é.jpg", False) in queued
    assert await held.count(conn) == 0
