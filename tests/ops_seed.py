"""A seeded database for the operations tests: results, failures, pending rows, heartbeats."""

from __future__ import annotations

import argparse
import inspect
import json
from typing import Any

import asyncpg

from reactor.config import Config
from reactor.handlers.common import database_problems

ENCODING = [0.01] * 128

# path -> face count
RESULTS = {"a/one.jpg": 0, "a/two.jpg": 1, "b/three.jpg": 2, "b/four.jpg": 3}
# path, type, retry_count, permanent, next retry offset in seconds (negative: due)
FAILURES = [
    ("c/broken.jpg", "corrupt", 2, True, -10),
    ("c/slow.jpg", "timeout", 1, False, -5),
    ("c/slower.jpg", "timeout", 3, False, 3600),
    ("c/gone.jpg", "missing", 1, False, -1),
]
PENDING = ["d/new1.jpg", "d/new2.jpg"]
UNPROCESSED = ["e/later.jpg"]


async def seed(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        processed = [*RESULTS, *(f[0] for f in FAILURES), *PENDING]
        await conn.executemany(
            "INSERT INTO ai_metadata (image_path, is_processed) VALUES ($1, $2)",
            [(p, True) for p in processed] + [(p, False) for p in UNPROCESSED],
        )
        for path, count in RESULTS.items():
            await conn.execute(
                "INSERT INTO face_metadata (image_path, face_count, model, scale, detected_at) "
                "VALUES ($1, $2, 'hog', 1.0, '2026-01-02T03:04:05Z')",
                path,
                count,
            )
            for i in range(count):
                await conn.execute(
                    "INSERT INTO face_detections (image_path, face_index, box_top, box_right, box_bottom, "
                    "box_left, score, encoding, model, scale) VALUES ($1, $2, 10, 60, 60, 10, 1.0, $3, 'hog', 1.0)",
                    path,
                    i,
                    ENCODING,
                )
        for path, etype, tries, permanent, offset in FAILURES:
            await conn.execute(
                "INSERT INTO face_detection_failures (image_path, retry_count, last_error, last_error_type, "
                "permanently_failed, next_retry_after) "
                "VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))",
                path,
                tries,
                f"{etype} happened",
                etype,
                permanent,
                float(offset),
            )
        state = {
            "queue_depth": 7,
            "current_image": "d/new1.jpg",
            "detector": "busy",
            "share_online": True,
            "listener": "connected",
        }
        await conn.execute(
            "INSERT INTO reactor_instances (instance_id, hostname, pid, state) VALUES ('live', 'box', 42, $1::jsonb)",
            json.dumps(state),
        )
        await conn.execute(
            "INSERT INTO reactor_instances (instance_id, hostname, pid, heartbeat_at, state) "
            "VALUES ('dead', 'box', 43, now() - interval '1 hour', '{}'::jsonb)"
        )
    finally:
        await conn.close()


async def invoke(register: Any, config: Config, argv: list[str]) -> int:
    """Parse argv with one handler module's parser and run its handler, as `reactor` would
    (reactor.cli.main: inside database_problems)."""
    parser = argparse.ArgumentParser(prog="reactor")
    sub = parser.add_subparsers(dest="command")
    register(sub)
    args = parser.parse_args(argv)
    with database_problems(config):
        result = args.handler(args, config)
        if inspect.iscoroutine(result):
            result = await result
    return int(result or 0)
