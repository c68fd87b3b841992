"""Deletion rules that hold for every path (issue 22): a folder that leaves the share counts
all its files for the mass-vanish guard; a folder that errors for one scan moves nothing to
a same-content copy elsewhere; a row stored NFC whose file is NFD is that file; a held path
that validation rejects is skipped by `reactor deletions --apply`. Real share folders, a
real database, the real watcher."""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path

import asyncpg
import pytest

from reactor.config import Config, ImagesConfig, WatcherConfig
from reactor.handlers import deletions as deletions_handler
from reactor.paths import PathMapper
from reactor.store import held
from reactor.util.identity import FileIdentity, read_identity
from reactor.watch.candidates import Candidates
from reactor.watch.moves import MoveMatcher
from reactor.watch.scanner import Scanner
from reactor.watch.share import ShareMonitor
from tests.ops_seed import invoke
from tests.watch_harness import Harness, running_watcher, until

NFC = unicodedata.normalize("NFC", "café/été.jpg")
NFD = unicodedata.normalize("NFD", NFC)


def fast(make_config: Callable[..., Config], observer: str) -> Config:
    return make_config(
        watcher={
            "observer": observer,
            "stability_seconds": 0.5,
            "network_stability_seconds": 0.5,
            "scan_interval_seconds": 0.3,
        },
        images={"register_files": "always"},
    )


async def holds(h: Harness, expected: list[str]) -> bool:
    rows = await h.fetch("SELECT image_path FROM reactor_held_deletions ORDER BY 1")
    return [r["image_path"] for r in rows] == expected


@pytest.mark.parametrize("observer", ["native", "polling"])
async def test_a_folder_of_100_photos_leaving_at_once_is_held_as_a_mass_vanish(
    observer: str, make_config: Callable[..., Config], dsn: str, share: Path, tmp_path: Path
) -> None:
    """Moved out of the share in one rename: one folder event for the native observer, which
    counts as its 100 files (of 120), not as one path."""
    trip = [f"trip/{i:03}.jpg" for i in range(100)]
    for rel in [*trip, *(f"home/{i:02}.jpg" for i in range(20))]:
        (share / rel).parent.mkdir(parents=True, exist_ok=True)
        (share / rel).write_bytes(b"x" * 10)
    async with running_watcher(fast(make_config, observer), dsn) as h:
        await h.seed_result(trip[0])
        os.rename(share / "trip", tmp_path / "trip-elsewhere")
        await until(lambda: holds(h, trip), seconds=30, what="the folder's files to be held")
        # Held for the operator: no registration dropped, no result marked.
        registered = await h.fetch("SELECT count(*) AS n FROM ai_metadata WHERE image_path LIKE 'trip/%'")
        assert registered[0]["n"] == 100
        orphaned = await h.fetch("SELECT count(*) AS n FROM face_metadata WHERE orphaned_at IS NOT NULL")
        assert orphaned[0]["n"] == 0 and h.sink.counts["deleted"] == 0


async def test_an_erroring_folder_and_a_same_mtime_copy_elsewhere_move_nothing(
    share: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a network share moves are told by content; a folder that errors for one scan is
    unknown, not vanished, so its photo is not "moved" to an identical copy elsewhere."""
    (share / "sick").mkdir()
    (share / "sick" / "c.jpg").write_bytes(b"jpeg" * 500)
    images = dataclasses.replace(ImagesConfig(), root=str(share))
    monitor = ShareMonitor(images, online_interval=0.0, offline_initial=0.0)
    candidates = Candidates(images, WatcherConfig(), PathMapper(str(share)))
    known = {"sick/c.jpg": read_identity(str(share / "sick" / "c.jpg"))}

    async def identities(paths: Sequence[str]) -> dict[str, FileIdentity]:
        return {p: i for p in paths if (i := known.get(p)) is not None}

    scanner = Scanner(candidates, monitor)
    scanner.use_inode = False
    scanner.match_moves = MoveMatcher(identities, candidates.local)
    assert await scanner.scan() is not None
    (share / "other").mkdir()
    shutil.copy2(share / "sick" / "c.jpg", share / "other" / "c.jpg")  # same size, mtime, content
    real_scandir = os.scandir

    def failing_scandir(path: str) -> object:
        if str(path) == str(share / "sick"):
            raise OSError(errno.EIO, os.strerror(errno.EIO), path)
        return real_scandir(path)

    monkeypatch.setattr("reactor.watch.scanner.os.scandir", failing_scandir)
    d = await scanner.scan()
    assert d is not None and d.moved == [] and d.deleted == [] and d.created == ["other/c.jpg"]
    assert "sick/c.jpg" in scanner.snapshot
    # The control: once the folder is readable and the photo really gone, it is a move.
    monkeypatch.setattr("reactor.watch.scanner.os.scandir", real_scandir)
    (share / "sick" / "c.jpg").unlink()
    (share / "other" / "c.jpg").rename(share / "other" / "d.jpg")
    d = await scanner.scan()
    assert d is not None and d.moved == [("sick/c.jpg", "other/d.jpg")]


async def test_nfc_rows_whose_files_are_nfd_are_kept_at_start_up(
    make_config: Callable[..., Config], dsn: str, share: Path, conn: asyncpg.Connection
) -> None:
    """Standalone start-up reconcile: a registered row stored NFC whose file name is NFD is
    that file, not a deletion; a registered file really gone is (the control)."""
    (share / NFD).parent.mkdir(parents=True)
    (share / NFD).write_bytes(b"x" * 10)
    assert not (share / NFC).exists()  # this file system keeps the bytes as written
    for path in (NFC, "gone.jpg"):
        await conn.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ($1, TRUE)", path)
        await conn.execute(
            "INSERT INTO face_metadata (image_path, face_count, model, scale) VALUES ($1, 0, 'hog', 1)", path
        )
    async with running_watcher(fast(make_config, "native"), dsn) as h:

        async def gone_marked() -> bool:
            rows = await h.fetch("SELECT image_path FROM face_metadata WHERE orphaned_at IS NOT NULL")
            return [r["image_path"] for r in rows] == ["gone.jpg"]

        await until(gone_marked, seconds=30, what="the really deleted file to be marked")
        rows = await h.fetch("SELECT orphaned_at FROM face_metadata WHERE image_path = $1", NFC)
        assert rows[0]["orphaned_at"] is None
        assert await h.fetch("SELECT 1 FROM ai_metadata WHERE image_path = $1", NFC)


async def test_deletions_apply_keeps_nfc_rows_with_nfd_files_and_skips_a_rejected_path(
    make_config: Callable[..., Config], conn: asyncpg.Connection, share: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(images={"marker": ".reactor-share"})
    (share / NFD).parent.mkdir(parents=True)
    (share / NFD).write_bytes(b"x")
    for path in (NFC, "gone.jpg"):
        await conn.execute(
            "INSERT INTO face_metadata (image_path, face_count, model, scale) VALUES ($1, 0, 'hog', 1)", path
        )
    await held.hold(conn, [NFC, "gone.jpg", "a\\b.jpg"], "mass_vanish_confirmed")
    assert await invoke(deletions_handler.register, config, ["deletions", "--apply"]) == 0
    out = capsys.readouterr().out
    assert "deleted the results of 1 held files; released 1 that are back" in out
    assert "skipped 1 held paths" in out and "'a\\\\b.jpg' (backslash)" in out
    assert [r["image_path"] for r in await conn.fetch("SELECT image_path FROM face_metadata")] == [NFC]
    assert [r["image_path"] for r in await conn.fetch("SELECT image_path FROM reactor_held_deletions")] == ["a\\b.jpg"]
