"""The ai_metadata trigger sends exactly the expected notifications, once per commit."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Any, cast

import asyncpg
import pytest

from reactor.store import catalog, schema
from tests.pg import PgServer

CHANNEL = "face_reactor"
SENTINEL = '{"type": "sentinel"}'


class Collector:
    """Listens on the channel; `drain` returns what arrived up to a sentinel sent afterwards.

    Notifications reach a listener in commit order, so once the sentinel (committed
    after the statement under test) has arrived, everything before it has too.
    """

    def __init__(self, listener: asyncpg.Connection, writer: asyncpg.Connection, channel: str = CHANNEL) -> None:
        self.listener = listener
        self.writer = writer
        self.channel = channel
        self.received: list[dict[str, Any]] = []
        self.sentinel = asyncio.Event()

    def on_notify(self, _conn: object, _pid: int, channel: str, payload: object) -> None:
        assert channel == self.channel
        data = json.loads(cast(str, payload))  # asyncpg sends a str; its stubs promise only an object
        if data == {"type": "sentinel"}:
            self.sentinel.set()
        else:
            self.received.append(data)

    async def drain(self) -> list[dict[str, Any]]:
        self.sentinel.clear()
        await self.writer.execute("SELECT pg_notify($1, $2)", self.channel, SENTINEL)
        await asyncio.wait_for(self.sentinel.wait(), 10)
        out, self.received = self.received, []
        return out


@pytest.fixture
async def conns(dsn: str) -> AsyncIterator[tuple[asyncpg.Connection, Collector]]:
    writer = await asyncpg.connect(dsn)
    listener = await asyncpg.connect(dsn)
    collector = Collector(listener, writer)
    await listener.add_listener(CHANNEL, collector.on_notify)
    try:
        yield writer, collector
    finally:
        await listener.close()
        await writer.close()


def processed(path: str) -> dict[str, Any]:
    return {"type": "processed", "path": path}


def deleted(path: str) -> dict[str, Any]:
    return {"type": "deleted", "path": path}


async def test_insert_notifies_processed_rows_only(conns: tuple[asyncpg.Connection, Collector]) -> None:
    db, col = conns
    await db.execute(
        "INSERT INTO ai_metadata (image_path, is_processed) "
        "VALUES ('a/1.jpg', TRUE), ('a/2.jpg', FALSE), ('b.jpg', TRUE)"
    )
    assert await col.drain() == [processed("a/1.jpg"), processed("b.jpg")]
    await db.execute("INSERT INTO ai_metadata (image_path) VALUES ('c.jpg')")
    assert await col.drain() == []


async def test_update_to_processed_notifies(conns: tuple[asyncpg.Connection, Collector]) -> None:
    db, col = conns
    await db.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ('x.jpg', FALSE), ('y.jpg', FALSE)")
    assert await col.drain() == []
    await db.execute("UPDATE ai_metadata SET is_processed = TRUE WHERE image_path = 'x.jpg'")
    assert await col.drain() == [processed("x.jpg")]


async def test_no_op_updates_send_nothing(conns: tuple[asyncpg.Connection, Collector]) -> None:
    db, col = conns
    await db.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ('x.jpg', TRUE), ('y.jpg', FALSE)")
    assert await col.drain() == [processed("x.jpg")]
    await db.execute("UPDATE ai_metadata SET is_processed = TRUE WHERE image_path = 'x.jpg'")
    await db.execute("UPDATE ai_metadata SET created_at = now()")
    await db.execute("UPDATE ai_metadata SET is_processed = FALSE WHERE image_path = 'y.jpg'")
    await db.execute("UPDATE ai_metadata SET is_processed = TRUE WHERE image_path = 'nothing.jpg'")
    assert await col.drain() == []


async def test_unprocessing_a_row_sends_nothing(conns: tuple[asyncpg.Connection, Collector]) -> None:
    db, col = conns
    await db.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ('x.jpg', TRUE)")
    await db.execute("UPDATE ai_metadata SET is_processed = FALSE")
    assert await col.drain() == [processed("x.jpg")]


async def test_delete_notifies_processed_rows_only(conns: tuple[asyncpg.Connection, Collector]) -> None:
    db, col = conns
    await db.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ('gone.jpg', TRUE), ('raw.jpg', FALSE)")
    await col.drain()
    await db.execute("DELETE FROM ai_metadata")
    assert await col.drain() == [deleted("gone.jpg")]


async def test_path_change_of_processed_row(conns: tuple[asyncpg.Connection, Collector]) -> None:
    db, col = conns
    await db.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ('old/p.jpg', TRUE), ('u.jpg', FALSE)")
    await col.drain()
    await db.execute("UPDATE ai_metadata SET image_path = 'new/p.jpg' WHERE image_path = 'old/p.jpg'")
    assert await col.drain() == [processed("new/p.jpg"), deleted("old/p.jpg")]
    # An unprocessed row that moves is nobody's business yet.
    await db.execute("UPDATE ai_metadata SET image_path = 'v.jpg' WHERE image_path = 'u.jpg'")
    assert await col.drain() == []


async def test_rolled_back_statement_sends_nothing(conns: tuple[asyncpg.Connection, Collector]) -> None:
    db, col = conns
    tx = db.transaction()
    await tx.start()
    await db.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ('r.jpg', TRUE)")
    await tx.rollback()
    assert await col.drain() == []


async def test_bulk_update_sends_one_hint(conns: tuple[asyncpg.Connection, Collector]) -> None:
    db, col = conns
    await db.execute(
        "INSERT INTO ai_metadata (image_path, is_processed) "
        "SELECT 'bulk/' || g || '.jpg', FALSE FROM generate_series(1, 100000) AS g"
    )
    assert await col.drain() == []
    status = await db.execute("UPDATE ai_metadata SET is_processed = TRUE")
    assert status == "UPDATE 100000"
    assert await col.drain() == [{"type": "bulk", "count": 100000}]


async def test_threshold_is_per_statement(conns: tuple[asyncpg.Connection, Collector]) -> None:
    db, col = conns
    await db.execute(
        "INSERT INTO ai_metadata (image_path, is_processed) "
        "SELECT 't/' || lpad(g::text, 4, '0') || '.jpg', TRUE FROM generate_series(1, 1000) AS g"
    )
    got = await col.drain()
    assert len(got) == 1000
    assert got[0] == processed("t/0001.jpg")
    assert all(n["type"] == "processed" for n in got)
    await db.execute(
        "INSERT INTO ai_metadata (image_path, is_processed) "
        "SELECT 'u/' || g || '.jpg', TRUE FROM generate_series(1, 1001) AS g"
    )
    assert await col.drain() == [{"type": "bulk", "count": 1001}]


async def test_over_long_path_falls_back_to_bulk(conns: tuple[asyncpg.Connection, Collector]) -> None:
    db, col = conns
    long_path = "deep/" * 1700 + "p.jpg"  # over 8000 bytes: no NOTIFY payload can carry it
    await db.execute(
        "INSERT INTO ai_metadata (image_path, is_processed) VALUES ($1, TRUE), ('short.jpg', TRUE)", long_path
    )
    assert await col.drain() == [processed("short.jpg"), {"type": "bulk", "count": 1}]


async def test_payloads_are_small_json(conns: tuple[asyncpg.Connection, Collector]) -> None:
    db, col = conns
    path = 'apple/IMG_0073(1) "quoted" ü.PNG'
    await db.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ($1, TRUE)", path)
    assert await col.drain() == [processed(path)]


async def test_configured_channel(dsn: str) -> None:
    db = await asyncpg.connect(dsn)
    listener = await asyncpg.connect(dsn)
    try:
        await schema.init_schema(db, standalone=True, channel="vision_faces")
        col = Collector(listener, db, channel="vision_faces")
        await listener.add_listener("vision_faces", col.on_notify)
        await db.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ('c.jpg', TRUE)")
        assert await col.drain() == [processed("c.jpg")]
    finally:
        await listener.close()
        await db.close()


async def test_upstream_role_without_privileges_of_its_own(pg: PgServer, database: str) -> None:
    """The pipeline's role writes ai_metadata; the trigger needs nothing more from it."""
    role = f"upstream_{os.getpid()}"
    pg.psql(f"CREATE ROLE {role} LOGIN")
    try:
        pg.psql(
            f"GRANT SELECT, INSERT, UPDATE ON ai_metadata TO {role}; "
            f"GRANT USAGE ON SEQUENCE ai_metadata_id_seq TO {role}",
            database,
        )
        pipeline = await asyncpg.connect(pg.dsn(database, user=role))
        listener = await asyncpg.connect(pg.dsn(database))
        try:
            col = Collector(listener, pipeline)
            await listener.add_listener(CHANNEL, col.on_notify)
            await pipeline.execute("INSERT INTO ai_metadata (image_path) VALUES ('up/a.jpg')")
            await pipeline.execute("UPDATE ai_metadata SET is_processed = TRUE")
            assert await col.drain() == [processed("up/a.jpg")]
            # The change log is written through reactor_log_changes (SECURITY DEFINER): the
            # pipeline's role has no privilege on reactor_changes, and needs none.
            assert await listener.fetchval("SELECT array_agg(image_path) FROM reactor_changes") == ["up/a.jpg"]
            await pipeline.execute("UPDATE ai_metadata SET image_path = 'up/b.jpg'")
            assert await listener.fetchval("SELECT array_agg(image_path ORDER BY seq) FROM reactor_changes") == [
                "up/a.jpg",
                "up/a.jpg",
                "up/b.jpg",
            ]
        finally:
            await listener.close()
            await pipeline.close()
    finally:
        pg.psql(f"DROP OWNED BY {role}", database)
        pg.psql(f"DROP ROLE {role}")


async def test_trigger_errors_never_fail_the_upstream_write(conns: tuple[asyncpg.Connection, Collector]) -> None:
    db, col = conns
    # A column type the trigger cannot read: it must warn, not break the pipeline.
    await db.execute("DROP INDEX idx_ai_metadata_processed_path")
    await db.execute("ALTER TABLE ai_metadata ALTER COLUMN is_processed DROP DEFAULT")
    await db.execute("ALTER TABLE ai_metadata ALTER COLUMN is_processed TYPE integer USING is_processed::int")
    warnings: list[str] = []
    db.add_log_listener(lambda _conn, msg: warnings.append(msg.message))
    status = await db.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ('w.jpg', 1)")
    assert status == "INSERT 0 1"
    assert await col.drain() == []
    assert any("notification skipped" in w for w in warnings)
    report = await catalog.check(db, channel=CHANNEL, standalone=True)
    assert [(f.name, f.status) for f in report.problems] == [("ai_metadata.is_processed", "different")]
    with pytest.raises(schema.SchemaError, match="ai_metadata cannot carry the trigger"):
        await schema.init_schema(db, standalone=False)


async def test_a_filling_notify_queue_never_fails_the_upstreams_write(
    conns: tuple[asyncpg.Connection, Collector],
) -> None:
    """A full queue fails the notifying transaction's commit; the trigger backs off first.
    The queue's usage is shadowed through the writer's own search_path (the trigger is not
    SECURITY DEFINER, so it resolves names as the writing session does)."""
    db, col = conns
    await db.execute(
        "CREATE FUNCTION public.pg_notification_queue_usage() RETURNS double precision "
        "LANGUAGE sql AS 'SELECT current_setting(''test.queue_usage'')::float8'"
    )
    await db.execute("SET search_path = public, pg_catalog")
    await db.execute("SET test.queue_usage = '0.6'")
    await db.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ('q/1.jpg', TRUE), ('q/2.jpg', TRUE)")
    assert await col.drain() == [{"type": "bulk", "count": 2}]
    await db.execute("SET test.queue_usage = '0.95'")
    await db.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ('q/3.jpg', TRUE)")
    assert await col.drain() == []
    assert await db.fetchval("SELECT count(*) FROM ai_metadata WHERE image_path LIKE 'q/%'") == 3
    await db.execute("SET test.queue_usage = '0.0'")
    await db.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ('q/4.jpg', TRUE)")
    assert await col.drain() == [processed("q/4.jpg")]
