"""A legacy face_detection_failures keeps `timestamp without time zone` columns: they are
read as the server's TimeZone and always reach Python, and the user, with a zone."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from pathlib import Path

import asyncpg
import pytest

from reactor.config import RetryConfig, load
from reactor.detector.types import DetectionFailure
from reactor.failure_types import ErrorType
from reactor.handlers import failures as failures_handler
from reactor.store import outcomes, schema
from tests.ops_seed import invoke
from tests.pg import PgServer
from tests.production_shape import UPSTREAM_AI_METADATA
from tests.test_schema import LEGACY_FAILURES

LATER = "apple/IMG_0073(1).PNG"


async def test_naive_failure_times_are_the_servers_zone(
    pg: PgServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"legacy_tz_{os.getpid()}"
    pg.psql(f"CREATE DATABASE {name}")
    try:
        # The server's zone, not UTC and not this machine's: New York (UTC-4 in July, UTC-5 in January).
        pg.psql(f"ALTER DATABASE {name} SET timezone = 'America/New_York'")
        pg.psql(UPSTREAM_AI_METADATA + ";" + LEGACY_FAILURES, name)
        pg.psql(
            "UPDATE face_detection_failures SET next_retry_after = '2031-07-01 12:00:00', "
            f"last_failure_at = '2024-01-15 08:30:00' WHERE image_path = '{LATER}';"
            "UPDATE face_detection_failures SET next_retry_after = '2020-01-01 00:00:00' "
            f"WHERE image_path <> '{LATER}'",
            name,
        )
        base = load(None, env={})
        config = dataclasses.replace(
            base,
            database=dataclasses.replace(base.database, dsn=pg.dsn(name)),
            images=dataclasses.replace(base.images, root=str(tmp_path)),
        )
        assert await invoke(failures_handler.register, config, ["failures", "list", "--json"]) == 0
        rows = {r["image_path"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
        assert rows[LATER]["next_retry_after"] == "2031-07-01T16:00:00+00:00"
        assert rows[LATER]["last_failure_at"] == "2024-01-15T13:30:00+00:00"
        # The text list compares with now: not permanent, one due, one later (the legacy crash).
        assert await invoke(failures_handler.register, config, ["failures", "list"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert any(line.startswith(LATER) and "retry after 2031-07-01T16:00:00+00:00" in line for line in lines)
        assert any(line.startswith("face_crops/") and "due now" in line for line in lines)
        # Recording a failure on the legacy table hands back an aware time too.
        conn = await asyncpg.connect(pg.dsn(name))
        try:
            await schema.init_schema(conn, standalone=False)
            columns = await schema.failure_columns(conn)
            record = await outcomes.record_failure(
                conn, "new/photo.jpg", DetectionFailure(ErrorType.TIMEOUT, "slow"), RetryConfig(jitter=0.0), columns
            )
            stored = await conn.fetchval(
                "SELECT next_retry_after AT TIME ZONE current_setting('TimeZone') FROM face_detection_failures "
                "WHERE image_path = 'new/photo.jpg'"
            )
        finally:
            await conn.close()
        assert isinstance(record.next_retry_after, dt.datetime) and record.next_retry_after.tzinfo is not None
        assert record.next_retry_after == stored
    finally:
        pg.drop_database(name)
