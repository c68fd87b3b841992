"""The watcher on a real share folder and a real database, with both observers."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from reactor.config import Config
from reactor.watch.file_events import DatabaseSink
from tests.peek import priority_of, watched_dirs
from tests.watch_harness import Harness, running_watcher, until, write_slowly

OBSERVERS = ["native", "polling"]


def fast(make_config: Callable[..., Config], observer: str, register: str = "never", window: float = 0.5) -> Config:
    return make_config(
        watcher={
            "observer": observer,
            "stability_seconds": window,
            "network_stability_seconds": window,
            "scan_interval_seconds": 0.3,
        },
        images={"register_files": register},
    )


@pytest.mark.parametrize("observer", OBSERVERS)
async def test_a_slow_copy_is_enqueued_once_after_it_ends(
    observer: str,
    make_config: Callable[..., Config],
    dsn: str,
    share: Path,
) -> None:
    # Writes 0.3 s apart, a 1 s window: the margin absorbs a loaded CI machine.
    async with running_watcher(fast(make_config, observer, window=1.0), dsn) as h:
        target = share / "2024" / "IMG_0001.JPG"
        target.parent.mkdir()
        await asyncio.sleep(0)  # let a polling scan notice the new folder in its own time
        await asyncio.to_thread(write_slowly, target, chunks=11, delay=0.3)  # about 3 s
        copy_ended = time.monotonic()
        await until(lambda: h.puts, what="the copied photo to be queued")
        assert h.puts[0].at >= copy_ended
        # A later polling scan or a late inotify event must not queue it again.
        await until(
            lambda: h.watcher.tracker.__len__() == 0 and h.watcher.scanner.snapshot.get("2024/IMG_0001.JPG"),
            what="the tracker to settle",
        )
        assert h.paths_put() == ["2024/IMG_0001.JPG"]
        assert not h.puts[0].redetect


@pytest.mark.parametrize("observer", OBSERVERS)
async def test_a_rename_moves_results_without_detecting_again(
    observer: str,
    make_config: Callable[..., Config],
    dsn: str,
    share: Path,
) -> None:
    """Standalone: the reactor owns the registrations, so it moves them with the results."""
    (share / "a").mkdir()
    (share / "a" / "one.jpg").write_bytes(b"jpeg" * 100)
    (share / "a" / "two.jpg").write_bytes(b"jpeg" * 200)
    async with running_watcher(fast(make_config, observer, register="always"), dsn) as h:
        await h.seed_result("a/one.jpg", faces=2)
        await h.seed_result("a/two.jpg", faces=1)
        await h.seed_failure("a/bad.jpg")
        (share / "a" / "bad.jpg").write_bytes(b"not a jpeg")
        await until(lambda: "a/bad.jpg" in h.watcher.scanner.snapshot, what="bad.jpg to be seen")
        os.rename(share / "a" / "one.jpg", share / "a" / "uno.jpg")
        os.rename(share / "a" / "bad.jpg", share / "a" / "malo.jpg")
        await until(lambda: _has(h, "a/uno.jpg"), what="results to follow the rename")
        faces = await h.fetch("SELECT image_path, count(*) AS n FROM face_detections GROUP BY 1 ORDER BY 1")
        assert [(r["image_path"], r["n"]) for r in faces] == [("a/two.jpg", 1), ("a/uno.jpg", 2)]
        await until(lambda: _failure_paths(h, ["a/malo.jpg"]), what="the failure row to follow")
        # A folder rename moves everything below it in one statement.
        os.rename(share / "a", share / "b")
        await until(lambda: _results_are(h, ["b/two.jpg", "b/uno.jpg"]), what="the folder move")
        await until(lambda: _failure_paths(h, ["b/malo.jpg"]), what="the failure row to follow the folder")
        assert [p for p in h.puts if p.path.endswith(("uno.jpg", "two.jpg"))] == []


async def test_vision_mode_moves_and_deletions_are_the_upstreams(
    make_config: Callable[..., Config],
    dsn: str,
    share: Path,
) -> None:
    """Vision mode: the watcher never renames or deletes results; the upstream's change of
    ai_metadata follows (a `deleted` hint marks, a notification brings the new path)."""
    (share / "one.jpg").write_bytes(b"jpeg" * 100)
    (share / "two.jpg").write_bytes(b"jpeg" * 100)
    async with running_watcher(fast(make_config, "native"), dsn) as h:
        await h.seed_result("one.jpg", faces=2)
        await h.seed_result("two.jpg")
        os.rename(share / "one.jpg", share / "uno.jpg")
        os.unlink(share / "two.jpg")
        await until(lambda: "uno.jpg" in h.paths_put(), what="the new path to be queued")
        await until(lambda: h.sink.counts["deleted"] == 1, what="the deletion to be seen")
        assert await h.results() == ["one.jpg", "two.jpg"]
        assert await _orphaned(h) == []
        assert [dict(r) for r in await h.fetch("SELECT count(*) AS n FROM face_detections")] == [{"n": 3}]


@pytest.mark.parametrize("observer", OBSERVERS)
async def test_deleting_a_file_marks_its_results_orphaned(
    observer: str,
    make_config: Callable[..., Config],
    dsn: str,
    share: Path,
) -> None:
    """Standalone: a deletion drops the registration and marks the rows; only the grace purges."""
    for name in ("keep.jpg", "gone.jpg", "failed.jpg"):
        (share / name).write_bytes(b"x" * 10)
    (share / "old").mkdir()
    (share / "old" / "p.png").write_bytes(b"x" * 10)
    async with running_watcher(fast(make_config, observer, register="always"), dsn) as h:
        for path in ("keep.jpg", "gone.jpg", "old/p.png"):
            await h.seed_result(path)
        await h.seed_failure("failed.jpg")
        os.unlink(share / "gone.jpg")
        os.unlink(share / "failed.jpg")
        os.unlink(share / "old" / "p.png")
        os.rmdir(share / "old")
        gone = ["failed.jpg", "gone.jpg", "old/p.png"]
        await until(lambda: _orphaned_are(h, gone), what="the deleted photos' rows to be marked")
        assert await h.results() == ["gone.jpg", "keep.jpg", "old/p.png"]
        assert await _failure_paths(h, ["failed.jpg"])
        registered = [r["image_path"] for r in await h.fetch("SELECT image_path FROM ai_metadata")]
        assert registered == ["keep.jpg"]


async def test_changed_content_is_detected_again(make_config: Callable[..., Config], dsn: str, share: Path) -> None:
    (share / "p.jpg").write_bytes(b"v1" * 100)
    async with running_watcher(fast(make_config, "native"), dsn) as h:
        await h.seed_result("p.jpg")
        await asyncio.to_thread((share / "p.jpg").write_bytes, b"v2, longer" * 100)
        await until(lambda: h.puts, what="the changed photo to be queued")
        assert [(p.path, p.redetect) for p in h.puts] == [("p.jpg", True)]
        assert priority_of(h.queue, "p.jpg") is not None


async def test_offline_share_orphans_nothing_and_resumes(
    make_config: Callable[..., Config],
    dsn: str,
    share: Path,
) -> None:
    for name in ("a.jpg", "b.jpg"):
        (share / name).write_bytes(b"x" * 10)
    away = share.with_name("share-unmounted")
    with capture_logs() as logs:
        async with running_watcher(fast(make_config, "native", register="always"), dsn) as h:
            await h.seed_result("a.jpg")
            await h.seed_result("b.jpg")
            os.rename(share, away)  # the mount point vanishes, as an unmount does
            await until(lambda: not h.share.online and h.watcher.state == "share_offline", what="offline")
            os.unlink(away / "a.jpg")
            (away / "c.jpg").write_bytes(b"new" * 10)
            # Give the watcher every chance to act on what it can no longer see.
            await until(lambda: h.share.transitions >= 2, what="the offline transition")
            checks = h.watcher.rescans
            await asyncio.sleep(1.0)
            assert h.watcher.rescans == checks
            assert await h.results() == ["a.jpg", "b.jpg"]
            assert await h.fetch("SELECT 1 FROM face_detection_failures") == []
            assert h.puts == []
            assert h.sweeps == 0
            os.rename(away, share)
            await until(lambda: "c.jpg" in h.paths_put(), what="processing to resume")
            # Back online, the reconciliation sees that a.jpg is really gone: marked, held.
            await until(lambda: _orphaned_are(h, ["a.jpg"]), what="the reconciled deletion")
            assert await h.results() == ["a.jpg", "b.jpg"]
    offline = [e for e in logs if e["event"] == "share_offline"]
    assert len(offline) == 1 and offline[0]["reason"] == "root_missing"
    assert h.sweeps == 1  # the reconciliation sweep after the share came back


@pytest.mark.parametrize("observer", OBSERVERS)
async def test_derived_hidden_and_partial_files_are_never_queued(
    observer: str,
    make_config: Callable[..., Config],
    dsn: str,
    share: Path,
) -> None:
    async with running_watcher(fast(make_config, observer, register="always"), dsn) as h:
        ignored = [
            "face_crops/a.jpg",
            "thumbnails/b.jpg",
            "c.jpg.part",
            "@eaDir/d.jpg",
            "._e.jpg",
            ".f.jpg",
            "x/Thumbs/g.jpg",
            "~$h.jpg",
        ]
        for rel in ignored:
            (share / rel).parent.mkdir(parents=True, exist_ok=True)
            (share / rel).write_bytes(b"x" * 100)
        (share / "real.jpg").write_bytes(b"x" * 100)
        await until(lambda: "real.jpg" in h.paths_put(), what="the real photo to be queued")
        # A .part renamed to its final name is a new photo.
        os.rename(share / "c.jpg.part", share / "c.jpg")
        await until(lambda: "c.jpg" in h.paths_put(), what="the finished download to be queued")
        registered = [r["image_path"] for r in await h.fetch("SELECT image_path FROM ai_metadata ORDER BY 1")]
        assert registered == ["c.jpg", "real.jpg"]
        assert sorted(h.paths_put()) == ["c.jpg", "real.jpg"]
        if observer == "native" and h.watcher.native is not None and h.watcher.native.filtered:
            # Ignored folders never get an inotify watch.
            assert watched_dirs(h.watcher.native) == sorted([str(share), str(share / "x")])


async def test_a_dead_observer_is_restarted(make_config: Callable[..., Config], dsn: str, share: Path) -> None:
    async with running_watcher(fast(make_config, "native"), dsn) as h:
        native = h.watcher.native
        assert native is not None
        with capture_logs() as logs:
            for emitter in list(native._observer.emitters):
                emitter.stop()  # as if the emitter thread died
            await until(lambda: h.watcher.sessions == 2 and h.watcher.state == "watching", what="a restart")
        assert any(e["event"] == "observer_died" for e in logs)
        (share / "after.jpg").write_bytes(b"x" * 10)
        await until(lambda: "after.jpg" in h.paths_put(), what="events after the restart")


async def test_an_event_queue_overflow_triggers_a_rescan(
    make_config: Callable[..., Config],
    dsn: str,
    share: Path,
) -> None:
    async with running_watcher(fast(make_config, "native"), dsn) as h:
        native = h.watcher.native
        assert native is not None and native.filtered
        before, sweeps = h.watcher.rescans, h.sweeps
        with capture_logs() as logs:
            # What watchdog calls when inotify reports IN_Q_OVERFLOW.
            for emitter in list(native._observer.emitters):
                await asyncio.to_thread(emitter._inotify.on_queue_overflow)
            await until(lambda: h.watcher.rescans > before and h.sweeps > sweeps, what="the rescan")
        assert any(e["event"] == "event_queue_overflow" for e in logs)


@pytest.mark.parametrize("age", ["old", "fresh"])
async def test_photos_that_settle_together_are_handed_over_in_one_batch(
    make_config: Callable[..., Config], dsn: str, share: Path, tmp_path: Path, age: str
) -> None:
    """A folder of 40 photos appears (a restore, a move from outside the share): they settle
    together and are looked at and handed over in one batch, not one round trip each. Old
    photos are handed over by the walk that finds them; fresh ones settle in the stability
    tracker, which hands over all that settled in one look."""
    names = [f"restored/{i:03}.jpg" for i in range(40)]
    staging = tmp_path / "restored"
    staging.mkdir()
    for name in names:
        (tmp_path / name).write_bytes(b"\xff\xd8" + name.encode())
        if age == "old":
            os.utime(tmp_path / name, (1_600_000_000, 1_600_000_000))
    async with running_watcher(fast(make_config, "polling"), dsn) as h:
        before = dict(h.sink.counts)
        os.rename(staging, share / "restored")
        await until(lambda: sorted(h.paths_put()) == names, what="the restored photos to be queued")
        # One batch each; two where the observer reports the folder over two polls.
        assert h.sink.counts["ready"] - before["ready"] <= 2, h.sink.counts
        assert h.sink.counts["result_identities"] - before["result_identities"] <= 2, h.sink.counts


async def _has(h: Harness, path: str) -> bool:
    return path in await h.results()


async def _results_are(h: Harness, paths: list[str]) -> bool:
    return await h.results() == paths


async def _orphaned(h: Harness) -> list[str]:
    rows = await h.fetch(
        "SELECT image_path FROM face_metadata WHERE orphaned_at IS NOT NULL UNION "
        "SELECT image_path FROM face_detection_failures WHERE orphaned_at IS NOT NULL ORDER BY 1"
    )
    return [r["image_path"] for r in rows]


async def _orphaned_are(h: Harness, paths: list[str]) -> bool:
    return await _orphaned(h) == paths


async def _failure_paths(h: Harness, paths: list[str]) -> bool:
    rows = await h.fetch("SELECT image_path FROM face_detection_failures ORDER BY 1")
    return [r["image_path"] for r in rows] == paths


async def test_a_move_onto_an_existing_photo_replaces_its_results(dsn: str) -> None:
    """The sink alone, on the real schema: the destination's old results and failure go,
    the source's follow, and a source with nothing detected queues the destination."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    assert pool is not None
    queued: list[tuple[str, bool]] = []

    def enqueue(path: str, redetect: bool) -> bool:
        queued.append((path, redetect))
        return True

    sink = DatabaseSink(pool, enqueue, register_files=True)
    try:
        async with pool.acquire() as conn:
            await sink.register(["src.jpg", "dst.jpg", "new.jpg"])
            for path, faces in (("src.jpg", 2), ("dst.jpg", 3)):
                await conn.execute(
                    "INSERT INTO face_metadata (image_path, face_count, model, scale) VALUES ($1, $2, 'hog', 1)",
                    path,
                    faces,
                )
            await conn.execute(
                "INSERT INTO face_detection_failures (image_path, last_error_type) VALUES ('dst.jpg', 'corrupt')"
            )
            await sink.moved("src.jpg", "dst.jpg", directory=False)
            rows = await conn.fetch("SELECT image_path, face_count FROM face_metadata ORDER BY 1")
            assert [(r["image_path"], r["face_count"]) for r in rows] == [("dst.jpg", 2)]
            assert await conn.fetchval("SELECT count(*) FROM face_detection_failures") == 0
            registered = await conn.fetch("SELECT image_path FROM ai_metadata ORDER BY 1")
            assert [r["image_path"] for r in registered] == ["dst.jpg", "new.jpg"]
            assert queued == []
            await sink.moved("new.jpg", "newer.jpg", directory=False)
            assert queued == [("newer.jpg", False)]
            assert await sink.registered() == ["dst.jpg", "newer.jpg"]
    finally:
        await pool.close()
