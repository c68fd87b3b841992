"""A file that comes back is detected; nothing overrides the blacklist (issue 13)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import asyncpg

from reactor.config import Config
from reactor.core.service import Reactor
from reactor.ops import failures
from reactor.store import claims
from reactor.store.claims import Claim
from tests.reactor_support import add_processed, wait_until, wait_watching, write_photos

PERMANENT_MISSING = (
    "INSERT INTO face_detection_failures (image_path, retry_count, last_error_type, "
    "permanently_failed, next_retry_after) VALUES ($1, 3, $2, TRUE, now() + interval '1 day')"
)


async def test_a_file_event_requeues_only_file_access_failures(conn: asyncpg.Connection) -> None:
    await add_processed(conn, ["m.jpg", "c.jpg", "s.jpg"])
    for path, kind in (("m.jpg", "missing"), ("c.jpg", "corrupt"), ("s.jpg", "io_stall")):
        await conn.execute(PERMANENT_MISSING, path, kind)
    assert await claims.claim(conn, "m.jpg", "me", 60.0) == "permanently_failed"
    assert isinstance(await claims.claim(conn, "m.jpg", "me", 60.0, file_event=True), Claim)
    assert isinstance(await claims.claim(conn, "s.jpg", "me", 60.0, file_event=True), Claim)
    # The content was the problem: a file event is no reason to look again.
    assert await claims.claim(conn, "c.jpg", "me", 60.0, file_event=True) == "permanently_failed"


async def test_nothing_but_naming_it_takes_back_a_blacklist(conn: asyncpg.Connection) -> None:
    await add_processed(conn, ["b.jpg", "t.jpg"])
    await failures.blacklist(conn, ["b.jpg"], "a painting")
    await conn.execute(PERMANENT_MISSING, "t.jpg", "timeout")
    for kwargs in ({"manual": True}, {"redetect": True}, {"file_event": True}):
        assert await claims.claim(conn, "b.jpg", "me", 60.0, **kwargs) == "blacklisted"
    changed = await failures.retry(conn, "face_reactor", everything=True)
    assert changed.done == ["t.jpg"]
    assert await claims.claim(conn, "b.jpg", "me", 60.0, manual=True) == "blacklisted"
    named = await failures.retry(conn, "face_reactor", paths=["b.jpg"])
    assert named.done == ["b.jpg"]
    assert isinstance(await claims.claim(conn, "b.jpg", "me", 60.0), Claim)


async def test_a_restored_file_is_detected_within_the_stability_window(
    make_config: Callable[..., Config],
    dsn: str,
    share: Path,
    conn: asyncpg.Connection,
) -> None:
    config = make_config(
        detector={"model": "hog", "timeout_seconds": 60.0},
        watcher={"observer": "native", "stability_seconds": 0.5},
        sweep={"interval_seconds": 3600.0, "poll_seconds": 3600.0},
    )
    await add_processed(conn, ["restored/back.jpg"])
    await conn.execute(PERMANENT_MISSING, "restored/back.jpg", "missing")
    reactor = Reactor(config, dsn)
    stop = asyncio.Event()
    task = asyncio.create_task(reactor.run(stop))
    try:
        await wait_watching(reactor, task)
        (share / "restored").mkdir()
        await asyncio.to_thread(write_photos, share, ["restored/back.jpg"])

        async def detected() -> bool:
            query = "SELECT count(*) FROM face_metadata WHERE image_path = $1"
            return bool(await conn.fetchval(query, "restored/back.jpg"))

        await wait_until(detected, 90, "the restored file to be detected")
        assert await conn.fetchval("SELECT count(*) FROM face_detection_failures") == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 120)
