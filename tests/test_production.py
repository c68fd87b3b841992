"""The reactor on the vision database as production has it (tests/production_shape.py:
seeds/000 and seeds/001): the legacy face_metadata with the old worker's rows and a
failures table without file_size_bytes, original_width and original_height. The watcher,
the sweep (many times), a photo missing and put back, a move, audit and repair all run
on it, and no query fails on a column that the table lacks."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from reactor import logs
from reactor.config import Config
from reactor.ops import audit, repair, samples
from reactor.store import schema
from tests import production_shape
from tests.pg import PgServer
from tests.reactor_support import small_astronaut, wait_until, write_photos
from tests.test_reactor import HOG, running

ENCODING = json.dumps([[round(0.01 * i, 2) for i in range(128)]])
# The old worker's results: one whose photo is processed upstream, and its failure row
# that saved nothing but an error (no type: the legacy worker wrote none).
LEGACY = [
    ("legacy/kept.jpg", 1, "[[10, 60, 70, 5]]", ENCODING),
    ("legacy/zero.jpg", 0, "[]", "[]"),
    # Its path left ai_metadata: another program's row all the same, never the sweep's to delete.
    ("legacy/unlisted.jpg", 1, "[[1, 2, 3, 4]]", ENCODING),
]


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    logs.configure(fmt="json", level="info", stream=out)
    yield out
    logging.getLogger().handlers[:] = [h for h in logging.getLogger().handlers if not getattr(h, "_reactor", False)]


@pytest.fixture
async def production(pg: PgServer) -> AsyncIterator[str]:
    name = f"production_{os.getpid()}_{id(pg) % 10000}"
    pg.psql(f"CREATE DATABASE {name}")
    conn = await asyncpg.connect(pg.dsn(name))
    try:
        await conn.execute(production_shape.UPSTREAM_AI_METADATA)
        await conn.execute(production_shape.PRODUCTION_FAILURES + production_shape.LEGACY_FACE_METADATA)
        await conn.executemany(
            "INSERT INTO face_metadata (image_path, face_count, face_locations, face_encodings, detected_at) "
            "VALUES ($1, $2, $3, $4::jsonb, '2024-05-01 12:00:00')",
            LEGACY,
        )
        await conn.execute(
            "INSERT INTO face_detection_failures (image_path, retry_count, last_error) VALUES ('legacy/old.png', 5, "
            "'NoneType object is not subscriptable')"
        )
        await add_processed_upstream(conn, [p for p, *_ in LEGACY if p != "legacy/unlisted.jpg"])
        await schema.init_schema(conn, standalone=False)
    finally:
        await conn.close()
    yield pg.dsn(name)
    pg.drop_database(name)


async def add_processed_upstream(conn: asyncpg.Connection, paths: list[str]) -> None:
    """The upstream's ai_metadata has no key: plain inserts."""
    await conn.executemany(
        "INSERT INTO ai_metadata (image_path, is_processed) VALUES ($1, TRUE)", [(p,) for p in paths]
    )


def events(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


async def test_watcher_sweep_restore_move_audit_and_repair_on_the_production_shape(
    make_config: Callable[..., Config], production: str, share: Path, log_stream: io.StringIO
) -> None:
    config = make_config(
        database={"dsn": production},
        detector=HOG,
        images={"register_files": "never"},
        sweep={"interval_seconds": 1.0, "orphan_grace_hours": 1 / 3600},
    )
    conn = await asyncpg.connect(production)
    try:
        missing = set(production_shape.PRODUCTION_LACKS) & {
            r["attname"]
            for r in await conn.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = 'face_detection_failures'::regclass AND attnum > 0"
            )
        }
        assert not missing, "db init added columns production lacks: the test would not test the shape"
        legacy_before = await conn.fetch(
            "SELECT * FROM face_metadata WHERE image_path LIKE 'legacy/%' ORDER BY image_path"
        )
        new = write_photos(share, ["new/a.jpg", "new/b.jpg"])
        async with running(config, production) as reactor:
            await add_processed_upstream(conn, [*new, "restore/back.jpg"])

            async def first_outcomes() -> bool:
                done = await conn.fetchval("SELECT count(*) FROM face_metadata WHERE image_path = ANY($1)", new)
                failed = await conn.fetchval(
                    "SELECT last_error_type FROM face_detection_failures WHERE image_path = 'restore/back.jpg'"
                )
                return bool(done == 2 and failed == "missing")

            await wait_until(first_outcomes, 120, "the new photos' results and the missing one's failure")
            # The missing photo is put back: the watcher's file event brings it to detection.
            samples.write_jpeg(small_astronaut(), share / "restore", "back.jpg")

            async def restored() -> bool:
                return bool(
                    await conn.fetchval("SELECT face_count FROM face_metadata WHERE image_path = 'restore/back.jpg'")
                )

            await wait_until(restored, 90, "the restored photo's result")
            assert not await conn.fetchval(
                "SELECT count(*) FROM face_detection_failures WHERE image_path = 'restore/back.jpg'"
            )
            # A move, as the upstream follows a rename on the share: the result and its face id follow.
            face_id = await conn.fetchval("SELECT face_id FROM face_detections WHERE image_path = 'new/a.jpg'")
            os.makedirs(share / "moved")
            os.rename(share / "new" / "a.jpg", share / "moved" / "a.jpg")
            await conn.execute("UPDATE ai_metadata SET image_path = 'moved/a.jpg' WHERE image_path = 'new/a.jpg'")

            async def followed() -> bool:
                return bool(
                    await conn.fetchval("SELECT face_id FROM face_detections WHERE image_path = 'moved/a.jpg'")
                    == face_id
                )

            await wait_until(followed, 90, "the result to follow the move")
            assert reactor.sweeper is not None and reactor.sweeper.completed >= 3  # well past the grace
        # The legacy rows are as the old worker left them, every column (another program reads them).
        legacy_after = await conn.fetch(
            "SELECT * FROM face_metadata WHERE image_path LIKE 'legacy/%' ORDER BY image_path"
        )
        assert [tuple(r) for r in legacy_after] == [tuple(r) for r in legacy_before]
        report = await audit.run_audit(conn, config, share_online=True)
        assert report["face_count_mismatch"].count == 0 and report["orphan_faces"].count == 0
        assert report["legacy_orphans"].paths == ["legacy/unlisted.jpg"]
        planned = await repair.repair(conn, config, apply=False, share_online=True)
        # The legacy rows' files are not on this share: still another program's rows.
        assert not planned.applied and not planned.plan.results
        # Only the operator's explicit command removes another program's row, after its backup.
        applied = await repair.repair(conn, config, apply=True, share_online=True, legacy_orphans=True)
        assert applied.plan.results["legacy/unlisted.jpg"] in ("legacy_orphans", "missing_files")
        backup = applied.backups["face_metadata"][0]
        assert await conn.fetchval(
            f'SELECT reviewed_by IS NULL FROM "{backup}" WHERE image_path = $1', "legacy/unlisted.jpg"
        )
        assert not await conn.fetchval("SELECT count(*) FROM face_metadata WHERE image_path = 'legacy/unlisted.jpg'")
    finally:
        await conn.close()
    bad = [
        e
        for e in events(log_stream)
        if (e.get("level") in ("error", "critical") or e["event"] == "file_event_failed")
        # watchdog's own race when its observer stops (an inotify read after the stop): not ours.
        and "thread is inactive" not in e["event"]
    ]
    assert not bad, bad[:3]
