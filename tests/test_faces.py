"""Faces that keep their identity, re-detection on demand, and similarity search in the
same database: real embedded PostgreSQL with pgserver's pgvector, real photos, and the
`reactor` command in real processes."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest
from PIL import Image, ImageDraw

from reactor.config import DetectorConfig
from reactor.config import load as load_config
from reactor.detector.settings import current_fingerprints, settings_fingerprint
from reactor.handlers import redetect
from reactor.ops import failures, samples
from reactor.store import face_identity
from tests.reactor_support import (
    ReactorProcess,
    add_processed,
    cli_json,
    faces_of,
    process_config,
    reported,
    small_astronaut,
)

pytestmark = pytest.mark.slow


def collage() -> Image.Image:
    return samples.collage(small_astronaut())


def without_one_face(image: Image.Image) -> Image.Image:
    """The collage with its bottom-right astronaut painted over."""
    edited = image.copy()
    w, h = edited.size
    ImageDraw.Draw(edited).rectangle((w // 2, h // 2, w, h), fill=(90, 90, 90))
    return edited


def with_model_auto(config: Path) -> None:
    config.write_text(config.read_text().replace('model = "hog"', 'model = "auto"'))


@pytest.fixture
def config(dsn: str, share: Path, tmp_path: Path) -> Path:
    return process_config(tmp_path, dsn, share, "faces")


async def test_ids_survive_refresh_and_an_edit_and_reset_renews_them(
    conn: asyncpg.Connection, config: Path, share: Path
) -> None:
    samples.write_jpeg(collage(), share, "c.jpg")
    await add_processed(conn, ["c.jpg"])
    assert (await cli_json(config, "sweep", "--once"))["processed"] == 1
    first = await faces_of(conn, "c.jpg")
    assert len(first) == 4
    # Another program attaches meaning to the faces.
    await conn.execute("ALTER TABLE face_detections ADD COLUMN person TEXT")
    await conn.execute("UPDATE face_detections SET person = 'astronaut ' || face_index WHERE image_path = 'c.jpg'")

    # The same photo again: every id and every added column stays.
    refreshed = await cli_json(config, "redetect", "--refresh", "c.jpg")
    assert (refreshed["requested"], refreshed["processed"]) == (1, 1)
    again = await faces_of(conn, "c.jpg")
    assert [(r["face_id"], r["face_index"]) for r in again] == [(r["face_id"], r["face_index"]) for r in first]
    assert await conn.fetchval("SELECT count(*) FROM face_detections WHERE person IS NOT NULL") == 4
    assert await conn.fetchval("SELECT count(*) FROM reactor_redetect") == 0

    # The photo edited to remove one face: the others keep their ids and columns.
    samples.write_jpeg(without_one_face(collage()), share, "c.jpg")
    # Named by its local file under the share root: the same image.
    await cli_json(config, "redetect", "--refresh", str(share / "c.jpg"))
    edited = await faces_of(conn, "c.jpg")
    assert len(edited) == 3
    old_ids = {r["face_id"] for r in first}
    assert {r["face_id"] for r in edited} < old_ids
    gone = old_ids - {r["face_id"] for r in edited}
    assert len(gone) == 1
    people = await conn.fetch("SELECT face_id, person FROM face_detections WHERE image_path = 'c.jpg'")
    assert all(r["person"] is not None for r in people)
    meta = await conn.fetchrow("SELECT face_count FROM face_metadata WHERE image_path = 'c.jpg'")
    assert meta is not None and meta["face_count"] == 3

    # --reset: every face gets a new id.
    reset = await cli_json(config, "redetect", "--reset", "c.jpg")
    assert reset["processed"] == 1
    renewed = {r["face_id"] for r in await faces_of(conn, "c.jpg")}
    assert len(renewed) == 3 and not renewed & old_ids


async def test_refresh_stale_takes_only_results_of_other_settings(
    conn: asyncpg.Connection, config: Path, share: Path
) -> None:
    # The configuration's "auto": the model is chosen on the machine (HOG without CUDA).
    with_model_auto(config)
    for name in ("a.jpg", "b.jpg"):
        samples.write_jpeg(small_astronaut(), share, name)
    await add_processed(conn, ["a.jpg", "b.jpg"])
    await cli_json(config, "sweep", "--once")
    rows = await conn.fetch("SELECT image_path, settings, model FROM face_metadata")
    fingerprints = {r["image_path"]: r["settings"] for r in rows}
    assert fingerprints["a.jpg"] and fingerprints["a.jpg"] == fingerprints["b.jpg"]
    # The fingerprint is of what ran, not of "auto".
    detector = load_config(config).detector
    assert detector.model == "auto" and rows[0]["model"] in ("hog", "cnn")
    assert fingerprints["a.jpg"] == settings_fingerprint(detector, rows[0]["model"])
    await conn.execute("UPDATE face_metadata SET settings = 'made-with-older-settings' WHERE image_path = 'b.jpg'")
    stale = await cli_json(config, "redetect", "--refresh", "--stale", "--all", "--no-wait")
    assert stale["requested"] == 1
    assert [r["image_path"] for r in await conn.fetch("SELECT image_path FROM reactor_redetect")] == ["b.jpg"]
    cancelled = await cli_json(config, "redetect", "--cancel", "--all")
    assert cancelled == {"cancelled": 1}


async def test_missing_retries_failures_but_not_the_blacklist(
    conn: asyncpg.Connection, config: Path, share: Path
) -> None:
    samples.write_jpeg(small_astronaut(), share / "m", "back.jpg")
    await add_processed(conn, ["m/back.jpg", "m/banned.jpg"])
    await conn.execute(
        "INSERT INTO face_detection_failures (image_path, retry_count, last_error_type, permanently_failed, "
        "next_retry_after) VALUES ('m/back.jpg', 5, 'missing', TRUE, now() + interval '1 day'), "
        "('m/banned.jpg', 1, 'blacklisted', TRUE, now() + interval '1 day')"
    )
    counts = await cli_json(config, "redetect", "--missing", "--prefix", "m/")
    assert (counts["retried"], counts["processed"]) == (1, 1)
    assert await conn.fetchval("SELECT face_count FROM face_metadata WHERE image_path = 'm/back.jpg'") == 1
    assert (
        await conn.fetchval("SELECT last_error_type FROM face_detection_failures WHERE image_path = 'm/banned.jpg'")
        == "blacklisted"
    )


def test_the_settings_fingerprint_is_of_what_ran_and_leaves_out_memory_limits() -> None:
    auto = DetectorConfig()
    assert settings_fingerprint(auto, "hog") == settings_fingerprint(replace(auto, model="hog"), "hog")
    assert settings_fingerprint(auto, "hog") != settings_fingerprint(auto, "cnn")
    assert settings_fingerprint(auto, "hog") == settings_fingerprint(replace(auto, max_memory_mb=1024), "hog")
    assert settings_fingerprint(auto, "hog") != settings_fingerprint(replace(auto, min_face_px=20), "hog")
    # The enlargement of small photos changes what is found; where the GPU budget is kept does not.
    assert settings_fingerprint(auto, "hog") != settings_fingerprint(replace(auto, max_enlargement=1.0), "hog")
    assert settings_fingerprint(auto, "cnn") == settings_fingerprint(replace(auto, gpu_budget_file=""), "cnn")
    # Today's results under "auto" may be of either model; under "cnn", of CNN only.
    assert current_fingerprints(auto) == [settings_fingerprint(auto, "hog"), settings_fingerprint(auto, "cnn")]
    assert current_fingerprints(replace(auto, model="cnn")) == [settings_fingerprint(auto, "cnn")]


def test_matching_by_overlap_best_first() -> None:
    old = [(10, (0, 100, 100, 0)), (11, (0, 300, 100, 200)), (12, (500, 600, 600, 500))]
    new = [(5, 305, 100, 205), (2, 98, 101, 1), (1000, 1100, 1100, 1000)]
    matching = face_identity.match(old, new)
    assert matching.kept == (11, 10, None)
    assert matching.removed == (12,)
    # A box overlapping two old faces takes the better one; the other stays unmatched.
    crowded = face_identity.match([(1, (0, 100, 100, 0)), (2, (0, 150, 100, 50))], [(0, 140, 100, 40)])
    assert crowded.kept == (2,) and crowded.removed == (1,)
    assert face_identity.match([], []).kept == ()


async def test_redetect_through_a_running_reactor_follows_its_progress(
    conn: asyncpg.Connection, config: Path, share: Path, tmp_path: Path
) -> None:
    samples.write_jpeg(samples.collage(small_astronaut()), share, "c.jpg")
    await add_processed(conn, ["c.jpg"])
    reactor = ReactorProcess(config, tmp_path / "daemon.log").start()
    try:
        await reactor.wait_event("image_detected")
        before = [r["face_id"] for r in await faces_of(conn, "c.jpg")]
        counts = await cli_json(config, "redetect", "--refresh", "c.jpg")
        assert counts["by"] != "here" and (counts["requested"], counts["answered"]) == (1, 1)
        assert (counts["stopped"], counts["still_pending"]) == ("done", {})
        await reported(lambda: len(reactor.events("image_detected")), 2, "the logged detections")
        assert [r["face_id"] for r in await faces_of(conn, "c.jpg")] == before
        assert await asyncio.to_thread(reactor.stop, 60) == 0
    finally:
        reactor.ensure_dead()


async def test_redetect_refuses_what_would_never_be_taken_and_following_ends(
    conn: asyncpg.Connection, dsn: str, config: Path, share: Path
) -> None:
    names = ["ok.jpg", "banned.jpg", "broken.jpg", "dropped.jpg", "later.jpg"]
    samples.write_jpeg(small_astronaut(), share, "ok.jpg")
    await add_processed(conn, names)
    # Results as the reactor writes them; only ok.jpg has a file, and is detected again.
    await conn.executemany(
        "INSERT INTO face_metadata (image_path, face_count, model, scale) VALUES ($1, 0, 'hog', 1.0)",
        [(name,) for name in names],
    )
    # Blacklisted (its result goes), permanently failed (a result and a failed retry),
    # no longer processed upstream, and one whose last try failed and backs off a day.
    await failures.blacklist(conn, ["banned.jpg"], "not a photo")
    await conn.execute(
        "INSERT INTO face_detection_failures (image_path, retry_count, last_error_type, permanently_failed, "
        "last_failure_at, next_retry_after) VALUES "
        "('broken.jpg', 2, 'corrupt', TRUE, now(), now() + interval '1 day'), "
        "('later.jpg', 1, 'timeout', FALSE, now(), now() + interval '1 day')"
    )
    await conn.execute("UPDATE ai_metadata SET is_processed = FALSE WHERE image_path = 'dropped.jpg'")

    # Without a running reactor: refused with their reasons, the rest processed here.
    asked = await cli_json(config, "redetect", "--refresh", *names)
    reasons = {r["image_path"]: r["reason"] for r in asked["refusals"]}
    assert (asked["requested"], asked["refused"], asked["processed"]) == (2, 3, 1)
    assert reasons["banned.jpg"].startswith("blacklisted")
    assert reasons["broken.jpg"].startswith("permanently failed")
    assert reasons["dropped.jpg"].startswith("not processed in ai_metadata")
    # later.jpg backs off: requested, taken at its next try (not refused, not waited for here).
    assert [r["image_path"] for r in await conn.fetch("SELECT image_path FROM reactor_redetect")] == ["later.jpg"]
    missing = await cli_json(config, "redetect", "--missing", "banned.jpg", "nowhere.jpg")
    assert {r["image_path"]: r["reason"][:11] for r in missing["refusals"]} == {
        "banned.jpg": "blacklisted",
        "nowhere.jpg": "not process",
    }

    # A reactor that is live (its heartbeat is fresh) but takes nothing: following ends
    # at once when all that is pending backs off, and after --timeout while one waits.
    await conn.execute(
        "INSERT INTO reactor_instances (instance_id, hostname, pid, heartbeat_at) "
        "VALUES ('idle', 'test', 1, now() + interval '1 hour')"
    )
    backing_off = await cli_json(config, "redetect", "--refresh", "later.jpg")
    assert (backing_off["by"], backing_off["stopped"], backing_off["answered"]) == (
        "idle",
        "nothing_about_to_be_taken",
        0,
    )
    assert backing_off["still_pending"] == {"backing_off": {"images": 1, "example": "later.jpg"}}
    waited = await cli_json(config, "redetect", "--refresh", "ok.jpg", "banned.jpg", "--timeout", "1")
    assert (waited["requested"], waited["refused"], waited["stopped"]) == (1, 1, "timeout")
    assert waited["still_pending"] == {"waiting": {"images": 1, "example": "ok.jpg"}}
    # The reactor gone while following: following ends too, saying what waits.
    await conn.execute(
        "INSERT INTO reactor_redetect (image_path, reason) VALUES ('ok.jpg', 'refresh:test') "
        "ON CONFLICT (image_path) DO UPDATE SET reason = EXCLUDED.reason"
    )
    other = await asyncpg.connect(dsn)
    try:
        follower = asyncio.create_task(redetect._follow(other, load_config(config), "refresh:test", 1, 0))
        await conn.execute("UPDATE reactor_instances SET heartbeat_at = now() - interval '1 hour'")
        ended = await asyncio.wait_for(follower, 60)
    finally:
        await other.close()
    assert (ended["stopped"], ended["still_pending"]) == (
        "reactor_gone",
        {"waiting": {"images": 1, "example": "ok.jpg"}},
    )
