"""Hostile input costs one input, never a task (issue 24): notifications and file names
that PostgreSQL cannot store (NUL, lone surrogates, not UTF-8), 8 KB payloads, deep
nesting and wrong types, sent from outside while detection runs."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from reactor.config import Config
from reactor.core import gate
from reactor.core.service import Reactor
from reactor.util import storable
from reactor.util.ratelimit import RateLimiter
from reactor.watch.file_events import DatabaseSink, ReadyFile
from tests.httpget import http_request
from tests.reactor_support import wait_until, wait_watching, write_photos

CHANNEL = "face_reactor"
NOT_UTF8 = os.fsdecode(b"IMG\xe9.jpg")  # how Python names a Latin-1 file on a UTF-8 system


def test_what_postgresql_can_store() -> None:
    assert storable.problem("apple/IMG_0073(1).PNG") is None
    assert storable.problem("a\x00b") == storable.Unstorable.NUL
    assert storable.problem("\ud800.jpg") == storable.Unstorable.NOT_UTF8
    assert storable.problem(NOT_UTF8) == storable.Unstorable.NOT_UTF8
    assert storable.problem("é" * 3000, 4096) == storable.Unstorable.TOO_LONG
    assert storable.storable("é" * 2000, 4096)


def _hostile_payloads(real: str) -> list[str]:
    """Each is sent as it is; json.dumps keeps NUL and lone surrogates as \\u escapes."""
    objects: list[Any] = [
        {"type": "deleted", "path": real + "\x00"},
        {"type": "deleted", "path": "\ud800"},
        {"type": "deleted", "path": NOT_UTF8},
        {"type": "processed", "path": "x\x00.jpg"},
        {"type": "processed", "path": "\udce9.jpg"},
        {"type": "manual", "path": "\udfff"},
        {"type": "deleted", "path": 123},
        {"type": "deleted", "path": {"nested": [1, [2, [3]]]}},
        {"type": ["deleted"], "path": real},
        {"type": "processed", "path": "p" * 7900},  # close to the 8000-byte NOTIFY limit
        {"type": "sweep_request", "id": "\x00"},
    ]
    raw = ["[" * 3990 + "]" * 3990, "null", "42", '"deleted"', "{", '{"type": "deleted", "path": "\\ud800\\u0000"}']
    # 6000 bytes of UTF-8: longer than a path may be (escaped, it would not fit a NOTIFY).
    raw.append(json.dumps({"type": "deleted", "path": "é" * 3000}, ensure_ascii=False))
    return [json.dumps(o) for o in objects] + raw


def _write_not_utf8(share: Path, folder: str) -> None:
    """A photo whose name is Latin-1 bytes, and a folder of such a name with a photo in it."""
    source = (share / folder / "seed.jpg").read_bytes()
    base = os.fsencode(share / folder)
    with open(base + b"/IMG\xe9.jpg", "wb") as out:
        out.write(source)
    os.makedirs(base + b"/F\xf6lder", exist_ok=True)
    with open(base + b"/F\xf6lder/x.jpg", "wb") as out:
        out.write(source)


async def test_hostile_notifications_and_file_names_cost_no_task(
    make_config: Callable[..., Config],
    dsn: str,
    share: Path,
    intruder: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The gate logs each problem once per five minutes and process: another test in this
    # worker process may have used that already.
    monkeypatch.setattr(gate, "_ignored", RateLimiter(300.0, max_keys=100))
    config = make_config(
        detector={"model": "hog", "timeout_seconds": 60.0},
        images={"register_files": "always"},
        watcher={"observer": "native", "stability_seconds": 0.5},
        sweep={"interval_seconds": 3600.0, "poll_seconds": 3600.0},
        health={"enabled": True, "host": "127.0.0.1", "port": 0},
    )
    good = write_photos(share, ["old/seed.jpg", "old/b.jpg"])
    _write_not_utf8(share, "old")  # seen by the start-up scan: refresh_failures, register
    conn = await asyncpg.connect(dsn)
    reactor = Reactor(config, dsn)
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(reactor.run(stop))
        try:
            await wait_watching(reactor, task)
            for _ in range(3):  # each more than once: a task that died once would be restarted
                for payload in _hostile_payloads(good[0]):
                    await intruder.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
            # Bytes that are not UTF-8 never leave the sender: the server refuses the text.
            with pytest.raises(asyncpg.PostgresError):
                await intruder.execute("SELECT pg_notify('face_reactor', convert_from('\\xe9'::bytea, 'UTF8'))")
            (share / "new").mkdir()
            good += await asyncio.to_thread(write_photos, share, ["new/seed.jpg", "new/c.jpg"])
            await asyncio.to_thread(_write_not_utf8, share, "new")  # seen by the watcher while it runs
            await asyncio.to_thread(os.rename, os.fsencode(share / "new") + b"/IMG\xe9.jpg", share / "new" / "d.jpg")
            good.append("new/d.jpg")

            async def all_detected() -> bool:
                rows = await conn.fetch("SELECT image_path FROM face_metadata")
                return sorted(r["image_path"] for r in rows) == sorted(good)

            await wait_until(all_detected, 120, "every good photo detected")
            assert reactor.health is not None
            status, _, body = await http_request("127.0.0.1", reactor.health.port, "/healthz")
            assert status == 200, body
            assert reactor.supervisor.restarts() == dict.fromkeys(reactor.supervisor.restarts(), 0)
        finally:
            stop.set()
            await asyncio.wait_for(task, 150)
            await conn.close()
    assert not [e for e in logs if e.get("exc_info") or e["event"] in ("task_died", "task_failing")]
    ignored = {e["problem"] for e in logs if e["event"] == "notification_ignored"}
    assert {"bad_path:nul", "bad_path:not_utf8", "bad_path:too_long", "not_json"} <= ignored, ignored


async def test_names_that_are_not_utf8_are_left_out_of_holds_and_failure_refreshes(dsn: str) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        sink = DatabaseSink(pool, lambda _p, _r: True, register_files=True)
        assert await sink.hold([NOT_UTF8, "kept.jpg"], "mass_vanish_confirmed") == 1
        assert await sink.refresh_failures([ReadyFile(NOT_UTF8, size=1, mtime_ns=1)]) == []
        await sink.deleted(NOT_UTF8, directory=False)
        await sink.moved(NOT_UTF8, "ok.jpg", directory=False)  # the arrival of a name a row can carry
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM ai_metadata WHERE image_path = 'ok.jpg'") == 1
    finally:
        await pool.close()
