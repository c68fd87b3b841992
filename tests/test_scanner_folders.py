"""The folder-by-folder scanner finds what a whole-share walk and diff find (issue 28, test 2).

The reference is the walk and diff the scanner used before (``walk`` + ``diff`` over
two whole snapshots); the scanner under test compares one folder at a time with its
packed per-folder snapshot (reactor.watch.folders).
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from reactor.config import Config, ImagesConfig, WatcherConfig
from reactor.paths import PathMapper
from reactor.watch import folders, watcher
from reactor.watch.candidates import Candidates
from reactor.watch.folders import FolderSnapshot
from reactor.watch.scanner import ScanDiff, Scanner, diff, walk
from reactor.watch.share import ShareMonitor
from tests.watch_harness import running_watcher, until


def scanner_for(share: Path, **watcher_cfg: object) -> Scanner:
    images = dataclasses.replace(ImagesConfig(), root=str(share))
    wcfg = dataclasses.replace(WatcherConfig(), **watcher_cfg)  # type: ignore[arg-type]
    monitor = ShareMonitor(images, wcfg, online_interval=0.0, offline_initial=0.0)
    return Scanner(Candidates(images, wcfg, PathMapper(str(share))), monitor)


def write(share: Path, rel: str, size: int = 10) -> None:
    path = share / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)


def normalized(d: ScanDiff) -> tuple[list[str], list[str], list[str], list[tuple[str, str]]]:
    return sorted(d.created), sorted(d.modified), sorted(d.deleted), sorted(d.moved)


def apply(scanner: Scanner, d: ScanDiff) -> None:
    """What the watcher does once it has handled a scan's changes (recording what a walk
    sees: on Windows a listing's inode is 0, os.stat's is not)."""
    seen = walk(scanner.candidates).files
    for path in d.created + d.modified:
        scanner.record(path, seen[path])
    for src, dst in d.moved:
        scanner.move(src, dst)
    for path in d.deleted:
        scanner.forget(path)


def test_the_packed_snapshot_is_a_mapping_that_survives_eviction() -> None:
    snap = FolderSnapshot()
    expected = {}
    for f in range(folders.HOT_FOLDERS * 3):  # more folders than stay unpacked
        for n in range(5):
            path = f"y/{f:03}/IMG_{n}.JPG" if f else f"IMG_{n}.JPG"
            snap.put(path, (n, 10**18 + n, 2**63 + n))
            expected[path] = (n, 10**18 + n, 2**63 + n)
    assert snap == expected and len(snap) == len(expected)
    assert snap.pop("y/001/IMG_0.JPG") == expected.pop("y/001/IMG_0.JPG")
    assert "y/001/IMG_0.JPG" not in snap and snap.get("y/002/IMG_1.JPG") == expected["y/002/IMG_1.JPG"]
    assert sorted(snap.drop_under("y/002")) == [f"y/002/IMG_{n}.JPG" for n in range(5)]
    assert snap.count_under("y") == len(expected) - 10
    # A name that is not UTF-8 (a Linux share) or holds a lone surrogate (a Windows
    # one) round-trips through the packed form.
    odd = ["y/003/caf\udce9.jpg", "y/003/\ud800.jpg"]  # os.fsdecode(b"caf\xe9.jpg") on Linux
    for path in odd:
        snap.put(path, (1, 2, 3))
    for f in range(folders.HOT_FOLDERS + 1):
        snap.folder(f"y/{f:03}")
        snap.put(f"z/{f}/a.jpg", (1, 1, 1))  # pushes y/003 out of the unpacked set
    assert [snap[path] for path in odd] == [(1, 2, 3)] * 2


async def test_random_changes_are_found_as_the_whole_share_diff_finds_them(share: Path) -> None:
    """Creations, changes, moves within and across folders, deletions, folders that appear
    and disappear: each scan reports what the reference diff of two walks reports."""
    rng = random.Random(28)
    for f in range(6):
        for n in range(8):
            write(share, f"2024/album{f}/IMG_{n:03}.JPG")
    scanner = scanner_for(share, vanish_fraction=1.0)
    candidates = scanner.candidates
    assert await scanner.scan() == ScanDiff()  # the baseline reports nothing
    before = walk(candidates).files
    assert scanner.snapshot == before
    counter = 1000
    for _step in range(12):
        files = sorted(before)
        for _ in range(rng.randint(1, 6)):
            op = rng.choice(["create", "modify", "rename", "move", "delete", "new_folder", "drop_folder"])
            counter += 1
            if op == "create":
                write(share, f"2024/album{rng.randrange(6)}/NEW_{counter}.JPG")
            elif op == "new_folder":
                for n in range(rng.randint(1, 4)):
                    write(share, f"2025/trip{counter}/IMG_{n}.JPG")
            elif not files:
                continue
            elif op == "modify":
                write(share, rng.choice(files), size=rng.randint(11, 99))
            elif op in ("rename", "move"):
                src = rng.choice(files)
                folder = os.path.dirname(src) if op == "rename" else f"2024/album{rng.randrange(6)}"
                if (share / src).exists():
                    (share / folder).mkdir(parents=True, exist_ok=True)
                    os.rename(share / src, share / folder / f"MV_{counter}.JPG")
            elif op == "delete":
                (share / rng.choice(files)).unlink(missing_ok=True)
            else:
                victim = share / os.path.dirname(rng.choice(files))
                for child in victim.iterdir():
                    child.unlink()
                victim.rmdir()
        after = walk(candidates).files
        got = await scanner.scan()
        assert got is not None
        assert normalized(got) == normalized(diff(before, after))
        # Reported again until the watcher has applied it: the snapshot is what was handled.
        again = await scanner.scan()
        assert again is not None and normalized(again) == normalized(got)
        apply(scanner, got)
        assert scanner.snapshot == after
        assert await scanner.scan() == ScanDiff()
        before = after


async def test_a_folder_that_appears_and_disappears(share: Path) -> None:
    write(share, "keep/a.jpg")
    scanner = scanner_for(share, vanish_fraction=1.0)
    assert await scanner.scan() == ScanDiff()
    for n in range(3):
        write(share, f"new/deeper/{n}.jpg")
    d = await scanner.scan()
    assert d is not None and sorted(d.created) == [f"new/deeper/{n}.jpg" for n in range(3)]
    apply(scanner, d)
    for n in range(3):
        (share / f"new/deeper/{n}.jpg").unlink()
    (share / "new" / "deeper").rmdir()
    (share / "new").rmdir()
    d = await scanner.scan()
    assert d is not None and sorted(d.deleted) == [f"new/deeper/{n}.jpg" for n in range(3)] and not d.created
    apply(scanner, d)
    assert scanner.snapshot == walk(scanner.candidates).files == {"keep/a.jpg": scanner.snapshot["keep/a.jpg"]}


async def test_a_folder_renamed_is_its_files_moved(share: Path) -> None:
    for n in range(4):
        write(share, f"trip/{n}.jpg")
    scanner = scanner_for(share, vanish_fraction=1.0)
    assert await scanner.scan() == ScanDiff()
    os.rename(share / "trip", share / "holiday")
    d = await scanner.scan()
    assert d is not None and sorted(d.moved) == [(f"trip/{n}.jpg", f"holiday/{n}.jpg") for n in range(4)]
    assert not (d.created or d.deleted)
    scanner.move_prefix("trip", "holiday")
    assert await scanner.scan() == ScanDiff()


async def test_the_first_scan_logs_its_progress(share: Path) -> None:
    for f in range(5):
        for n in range(3):
            write(share, f"{f}/{n}.jpg")
    scanner = scanner_for(share)
    scanner.progress_interval = 0.0  # an event per folder, instead of one every 10 s
    with capture_logs() as events:
        assert await scanner.scan() == ScanDiff()
        assert await scanner.scan() == ScanDiff()  # a rescan is no first scan: no progress
    progress = [e for e in events if e["event"].startswith("progress")]
    assert progress and all(e["label"] == "first_scan" for e in progress)
    assert [e["done"] for e in progress if e["event"] == "progress"] == sorted(
        e["done"] for e in progress if e["event"] == "progress"
    )
    assert progress[-1]["event"] == "progress_done" and progress[-1]["done"] == 15
    done = [e for e in events if e["event"] == "first_scan_done"]
    assert len(done) == 1 and done[0]["files"] == 15


async def test_start_up_reconciles_in_pages(
    make_config: Callable[..., Config],
    dsn: str,
    share: Path,
    conn: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Registered paths and the snapshot are read a few at a time at start-up (pages of 3
    here): every file is registered, every registered file gone is a deletion, and the
    start passes log their progress."""
    monkeypatch.setattr(watcher, "BASELINE_CHUNK", 3)
    on_share = [f"{f}/{n}.jpg" for f in ("a", "b", "c") for n in range(4)]
    for rel in on_share:
        write(share, rel)
    gone = ["a/9.jpg", "d/0.jpg"]
    for path in [*on_share[:5], *gone]:
        await conn.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ($1, TRUE)", path)
    config = make_config(
        watcher={"observer": "native", "stability_seconds": 0.3, "vanish_fraction": 1.0},
        images={"register_files": "always"},
    )
    with capture_logs() as events:
        async with running_watcher(config, dsn) as h:

            async def settled() -> bool:
                rows = await h.fetch("SELECT image_path FROM ai_metadata ORDER BY 1")
                return [r["image_path"] for r in rows] == sorted(on_share)

            await until(settled, 30, what="the share registered and the gone paths deleted")
    labels = {e["label"] for e in events if e["event"] == "progress_done"}
    assert {"first_scan", "start_register", "start_checks"} <= labels
