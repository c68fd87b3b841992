"""Faces that keep their identity, re-detection on demand, and similarity search in the
same database: real embedded PostgreSQL with pgserver's pgvector, real photos, and the
`reactor` command in real processes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest
from PIL import Image, ImageDraw

from reactor.ops import samples
from reactor.store import face_identity
from tests.reactor_support import ReactorProcess, add_processed, process_config, reactor_cli, small_astronaut

pytestmark = pytest.mark.slow


async def cli_json(config: Path, *args: str) -> Any:
    done = await asyncio.to_thread(reactor_cli, config, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def faces_of(conn: asyncpg.Connection, path: str) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT face_id, face_index, box_top, box_right, box_bottom, box_left FROM face_detections "
            "WHERE image_path = $1 ORDER BY face_index",
            path,
        )
    )


def collage() -> Image.Image:
    return samples.collage(small_astronaut())


def without_one_face(image: Image.Image) -> Image.Image:
    """The collage with its bottom-right astronaut painted over."""
    edited = image.copy()
    w, h = edited.size
    ImageDraw.Draw(edited).rectangle((w // 2, h // 2, w, h), fill=(90, 90, 90))
    return edited


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
    await cli_json(config, "redetect", "--refresh", "c.jpg")
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
    for name in ("a.jpg", "b.jpg"):
        samples.write_jpeg(small_astronaut(), share, name)
    await add_processed(conn, ["a.jpg", "b.jpg"])
    await cli_json(config, "sweep", "--once")
    fingerprints = {
        r["image_path"]: r["settings"] for r in await conn.fetch("SELECT image_path, settings FROM face_metadata")
    }
    assert fingerprints["a.jpg"] and fingerprints["a.jpg"] == fingerprints["b.jpg"]
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


async def test_similar_finds_the_astronauts_copies_before_any_other_face(
    conn: asyncpg.Connection, config: Path, share: Path, tmp_path: Path
) -> None:
    face = small_astronaut()
    samples.write_jpeg(face, share, "astronaut.jpg")
    samples.write_exif_rotated(face, share, "rotated.jpg")
    samples.write_heic(face, share, "astronaut.heic")
    samples.write_jpeg(samples.collage(face), share, "collage.jpg")
    samples.write_jpeg(samples.coffee().resize((256, 171)), share, "coffee.jpg")
    paths = ["astronaut.jpg", "rotated.jpg", "astronaut.heic", "collage.jpg", "coffee.jpg"]
    await add_processed(conn, paths)
    await cli_json(config, "sweep", "--once")
    # Other people: real encodings moved far off (dlib's same-person distance is 0.6).
    encoding = np.array(await conn.fetchval("SELECT encoding FROM face_detections WHERE image_path = 'astronaut.jpg'"))
    rng = np.random.default_rng(7)
    for i in range(20):
        other = encoding + rng.normal(0, 0.1, 128)
        path = f"others/{i}.jpg"
        await conn.execute(
            "INSERT INTO face_metadata (image_path, face_count, model, scale) VALUES ($1, 1, 'hog', 1)", path
        )
        await conn.execute(
            "INSERT INTO face_detections (image_path, face_index, box_top, box_right, box_bottom, box_left, "
            "encoding, model, scale) VALUES ($1, 0, 0, 10, 10, 0, $2, 'hog', 1)",
            path,
            other.tolist(),
        )
    found = await cli_json(
        config,
        "similar",
        "astronaut.jpg",
        "--limit",
        "30",
        "--max-distance",
        "10",
        "--sheet",
        str(tmp_path / "sheet.png"),
    )
    order = [m["image_path"] for m in found["matches"]]
    copies = ["rotated.jpg", "astronaut.heic", "collage.jpg"]
    assert set(order[:6]) == set(copies)  # the collage's four faces, the rotated copy, the HEIC
    assert order.count("collage.jpg") == 4
    assert all(m["distance"] < 0.6 for m in found["matches"][:6])
    assert all(m["distance"] > 0.6 for m in found["matches"][6:])
    assert len(found["matches"]) == 26
    with Image.open(tmp_path / "sheet.png") as sheet:
        # The query and the six matches whose files are on the share, as crops in a grid of two rows.
        assert sheet.width > 0 and sheet.height > 0
    # Within dlib's threshold (the default) only her copies remain.
    close = await cli_json(config, "similar", "astronaut.jpg")
    assert {m["image_path"] for m in close["matches"]} == set(copies)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("nowhere.jpg",), "nowhere.jpg has no result"),
        (("coffee.jpg",), "coffee.jpg has no face rows"),
        (("astronaut.jpg", "--face", "3"), "--face takes 0 to 0, not 3"),
        (("collage.jpg",), "collage.jpg has 4 faces; choose one"),
    ],
)
async def test_similar_bad_input_is_one_line(
    conn: asyncpg.Connection, config: Path, share: Path, args: tuple[str, ...], expected: str
) -> None:
    samples.write_jpeg(small_astronaut(), share, "astronaut.jpg")
    samples.write_jpeg(samples.collage(small_astronaut()), share, "collage.jpg")
    samples.write_jpeg(samples.coffee().resize((256, 171)), share, "coffee.jpg")
    await add_processed(conn, ["astronaut.jpg", "collage.jpg", "coffee.jpg"])
    await cli_json(config, "sweep", "--once")
    done = await asyncio.to_thread(reactor_cli, config, "similar", *args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and expected in done.stderr


async def test_without_the_vector_extension_faces_are_still_stored(
    conn: asyncpg.Connection, config: Path, share: Path
) -> None:
    # A database set up on a server without pgvector has none of sql/vector.sql.
    await conn.execute(
        "DROP TRIGGER reactor_face_embedding ON face_detections; "
        "DROP FUNCTION reactor_face_embedding(); DROP EXTENSION vector CASCADE"
    )
    samples.write_jpeg(small_astronaut(), share, "astronaut.jpg")
    await add_processed(conn, ["astronaut.jpg"])
    assert (await cli_json(config, "sweep", "--once"))["processed"] == 1
    assert len(await faces_of(conn, "astronaut.jpg")) == 1
    check = await asyncio.to_thread(reactor_cli, config, "db", "check")
    assert check.returncode == 0, check.stdout
    assert "available on the server but not installed" in check.stdout
    done = await asyncio.to_thread(reactor_cli, config, "similar", "astronaut.jpg")
    assert done.returncode == 2 and "needs the vector extension" in done.stderr


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


async def test_db_init_fills_embeddings_of_faces_written_without_them(conn: asyncpg.Connection, config: Path) -> None:
    await conn.execute("ALTER TABLE face_detections DISABLE TRIGGER reactor_face_embedding")
    await conn.execute(
        "INSERT INTO face_metadata (image_path, face_count, model, scale) VALUES ('old.jpg', 1, 'hog', 1)"
    )
    await conn.execute(
        "INSERT INTO face_detections (image_path, face_index, box_top, box_right, box_bottom, box_left, encoding, "
        "model, scale) VALUES ('old.jpg', 0, 0, 10, 10, 0, array_fill(0.5::real, ARRAY[128]), 'hog', 1)"
    )
    await conn.execute("ALTER TABLE face_detections ENABLE TRIGGER reactor_face_embedding")
    check = await asyncio.to_thread(reactor_cli, config, "db", "check")
    assert "1 face(s) without an embedding yet; `reactor db init` fills them" in check.stdout
    init = await asyncio.to_thread(reactor_cli, config, "db", "init")
    assert init.returncode == 0, init.stderr
    assert await conn.fetchval("SELECT count(*) FROM face_detections WHERE embedding IS NULL") == 0
    check = await asyncio.to_thread(reactor_cli, config, "db", "check")
    assert "without an embedding" not in check.stdout


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
        assert len(reactor.events("image_detected")) == 2
        assert [r["face_id"] for r in await faces_of(conn, "c.jpg")] == before
        assert await asyncio.to_thread(reactor.stop, 60) == 0
    finally:
        reactor.ensure_dead()
