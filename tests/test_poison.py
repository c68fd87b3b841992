"""No input can stop detection (issue 13): whatever one queue entry is (a symlink loop,
a NUL, a lone surrogate, an undecodable name, an unexpected exception) ends as a
recorded failure for that path, and the reactor goes on to detect the next image."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from reactor.config import Config
from reactor.paths import InvalidPath, PathMapper, recordable
from reactor.store import claims as claims_mod
from tests.reactor_support import add_processed, wait_until, write_photos
from tests.test_reactor import HOG, NO_POLLING, running


def test_symlinks_are_resolved_before_the_rules(share: Path) -> None:
    (share / "loop").mkdir()
    os.symlink("b.jpg", share / "loop" / "a.jpg")
    os.symlink("a.jpg", share / "loop" / "b.jpg")
    (share / "face_crops").mkdir()
    (share / "face_crops" / "crop.jpg").write_bytes(b"x")
    (share / "photos").mkdir()
    os.symlink("../face_crops/crop.jpg", share / "photos" / "innocent.jpg")
    mapper = PathMapper(str(share))
    with pytest.raises(InvalidPath) as loop:
        mapper.resolve_in_share("loop/a.jpg")
    assert loop.value.reason == "symlink_loop"
    with pytest.raises(InvalidPath) as derived:
        mapper.resolve_in_share("photos/innocent.jpg")
    assert derived.value.reason == "derived"
    with pytest.raises(InvalidPath) as undecodable:
        mapper.validate("bad\udcff.jpg")
    assert undecodable.value.reason == "undecodable"
    assert recordable("bad\udcff.jpg") == "bad\\xff.jpg" and recordable("n\x00l.jpg") == "n\\x00l.jpg"


async def test_poison_entries_are_recorded_and_the_next_image_is_detected(
    make_config: Callable[..., Config],
    dsn: str,
    share: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (share / "loop").mkdir()
    os.symlink("b.jpg", share / "loop" / "a.jpg")
    os.symlink("a.jpg", share / "loop" / "b.jpg")
    real_claim = claims_mod.claim

    async def claim(conn: Any, path: str, *args: Any, **kwargs: Any) -> Any:
        if path == "boom.jpg":
            raise ZeroDivisionError("a bug that only this entry reaches")
        return await real_claim(conn, path, *args, **kwargs)

    monkeypatch.setattr("reactor.core.detection_loop.claims.claim", claim)
    release = threading.Event()
    real_look = PathMapper.look_in_share

    def look(self: PathMapper, db_path: str) -> tuple[Path, os.stat_result | OSError]:
        if db_path == "hung/stall.jpg":
            release.wait(60)  # as resolving on a hung mount does: far past the 10 s time limit
        return real_look(self, db_path)

    # The loop's path check (and its one look at the file on the way in).
    monkeypatch.setattr(PathMapper, "look_in_share", look)
    # The limit bounds the hung resolve and also each detection: 10 s leaves a fresh child
    # on a loaded machine time for the next image (3 s did not, and its retry comes too late).
    # The hung folder is its own ("hung/"): the folder of a call that hangs is stalled, and
    # its other photos fail at once until it answers (reactor.util.shareio).
    config = make_config(
        detector={**HOG, "timeout_seconds": 10.0}, images={"io_timeout_seconds": 10.0}, sweep=NO_POLLING
    )
    conn = await asyncpg.connect(dsn)
    try:
        async with running(config, dsn) as reactor:
            await add_processed(conn, ["loop/a.jpg", "boom.jpg", "hung/stall.jpg"])
            for path in ("nul\x00.jpg", "lone\udcff.jpg", "x" * 5000 + ".jpg"):
                payload = json.dumps({"type": "manual", "path": path})  # \u escapes: valid text for PG
                await conn.execute("SELECT pg_notify('face_reactor', $1)", payload)
            (next_path,) = write_photos(share, ["next.jpg"])
            await add_processed(conn, [next_path])

            async def detected() -> bool:
                return bool(await conn.fetchval("SELECT count(*) FROM face_metadata WHERE image_path = 'next.jpg'"))

            await wait_until(detected, 90, "the image after the poison entries to be detected")

            async def recorded() -> bool:
                return bool(await conn.fetchval("SELECT count(*) FROM face_detection_failures") == 3)

            await wait_until(recorded, 30, "a failure for each poison row")
            # The hints for paths with no ai_metadata row (they cannot have one) are
            # dropped by the claim's check; the rows that exist got their failure.
            rows = await conn.fetch("SELECT image_path, last_error_type FROM face_detection_failures ORDER BY 1")
            assert [(r["image_path"], r["last_error_type"]) for r in rows] == [
                ("boom.jpg", "runtime"),
                ("hung/stall.jpg", "io_stall"),
                ("loop/a.jpg", "invalid_path"),
            ]
            assert reactor.supervisor.restarts().get("detection") == 0
    finally:
        release.set()
        await conn.close()
