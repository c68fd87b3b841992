"""Standalone registration is never lost, and names match their rows (issue 13)."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from reactor.config import Config
from reactor.paths import PathMapper
from reactor.watch.file_events import DatabaseSink, ReadyFile
from tests.watch_harness import running_watcher, until

NFC = unicodedata.normalize("NFC", "café/crème.jpg")
NFD = unicodedata.normalize("NFD", NFC)


async def test_a_name_that_is_not_utf8_is_recorded_and_the_rest_of_its_batch_registered(dsn: str) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    assert pool is not None
    try:
        sink = DatabaseSink(pool, lambda p, r: True, register_files=True)
        # os.fsdecode's form of the bytes b"bad\xff.jpg" on a Linux share.
        assert await sink.register(["ok/a.jpg", "bad\udcff.jpg", "ok/b.jpg"]) == 2
        async with pool.acquire() as conn:
            rows = await conn.fetch("SELECT image_path FROM ai_metadata ORDER BY 1")
            assert [r["image_path"] for r in rows] == ["ok/a.jpg", "ok/b.jpg"]
            failure = await conn.fetchrow(
                "SELECT image_path, last_error_type, permanently_failed FROM face_detection_failures"
            )
            assert failure is not None and tuple(failure) == ("bad\\xff.jpg", "invalid_path", True)
    finally:
        await pool.close()


@pytest.mark.parametrize("failing", ["registered", "register", "refresh_failures"])
async def test_a_baseline_whose_registration_failed_is_registered_by_the_next_session(
    make_config: Callable[..., Config],
    dsn: str,
    share: Path,
    monkeypatch: pytest.MonkeyPatch,
    failing: str,
) -> None:
    """A database error anywhere in the first scan's registration (reading what is
    registered, writing it, refreshing failures): the baseline is taken again."""
    (share / "a.jpg").write_bytes(b"x" * 10)
    (share / "b.jpg").write_bytes(b"x" * 10)
    real = getattr(DatabaseSink, failing)
    calls = 0

    async def flaky(self: DatabaseSink, *args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise asyncpg.ConnectionDoesNotExistError("connection lost during the first scan")
        return await real(self, *args)

    monkeypatch.setattr(DatabaseSink, failing, flaky)
    config = make_config(watcher={"observer": "native", "stability_seconds": 0.5}, images={"register_files": "always"})
    async with running_watcher(config, dsn) as h:

        async def registered() -> bool:
            rows = await h.fetch("SELECT image_path FROM ai_metadata ORDER BY 1")
            return [r["image_path"] for r in rows] == ["a.jpg", "b.jpg"]

        await until(registered, 30, what="the next session to register the baseline")
        assert h.watcher.sessions >= 2
        assert calls >= 2


def test_a_row_in_one_normalization_finds_the_file_in_the_other(share: Path) -> None:
    (share / NFD).parent.mkdir()
    (share / NFD).write_bytes(b"x")
    assert PathMapper(str(share)).resolve_in_share(NFC).name == Path(NFD).name


async def test_a_file_event_uses_the_rows_spelling(dsn: str) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    assert pool is not None
    queued: list[tuple[str, bool]] = []

    def enqueue(path: str, redetect: bool) -> Any:
        queued.append((path, redetect))
        return True

    try:
        async with pool.acquire() as conn:
            await conn.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ($1, TRUE)", NFC)
        sink = DatabaseSink(pool, enqueue, register_files=False)
        await sink.ready([ReadyFile(NFD), ReadyFile("plain.jpg")])
        assert queued == [(NFC, False), ("plain.jpg", False)]
    finally:
        await pool.close()
