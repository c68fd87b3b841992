"""Similarity search in the same database: pgvector's embeddings, `reactor similar`, and
faces stored without the extension; real embedded PostgreSQL and the `reactor` command in
real processes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import numpy as np
import pytest
from PIL import Image

from reactor.ops import samples
from tests.pg import PgServer
from tests.reactor_support import add_processed, cli_json, faces_of, process_config, reactor_cli, small_astronaut

pytestmark = pytest.mark.slow


@pytest.fixture
def config(dsn: str, share: Path, tmp_path: Path) -> Path:
    return process_config(tmp_path, dsn, share, "faces")


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


@pytest.fixture(scope="module")
def swept(pg: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A database where `reactor sweep --once` detected a face, four and none, and its share:
    detected once for the file, then copied for each test that asks `similar` about it."""
    tmp = tmp_path_factory.mktemp("swept")
    share = tmp / "share"
    share.mkdir()
    (share / ".reactor-share").write_text("face-reactor share marker\n")
    samples.write_jpeg(small_astronaut(), share, "astronaut.jpg")
    samples.write_jpeg(samples.collage(small_astronaut()), share, "collage.jpg")
    samples.write_jpeg(samples.coffee().resize((256, 171)), share, "coffee.jpg")
    name = pg.fresh_database()
    pg.psql(
        "INSERT INTO ai_metadata (image_path, is_processed) VALUES "
        "('astronaut.jpg', TRUE), ('collage.jpg', TRUE), ('coffee.jpg', TRUE)",
        name,
    )
    swept = reactor_cli(process_config(tmp, pg.dsn(name), share, "swept"), "sweep", "--once", "--json")
    assert swept.returncode == 0, swept.stderr
    assert json.loads(swept.stdout)["processed"] == 3
    yield name, share
    pg.drop_database(name)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("nowhere.jpg",), "nowhere.jpg has no result"),
        (("coffee.jpg",), "coffee.jpg has no face rows"),
        (("astronaut.jpg", "--face", "3"), "--face takes 0 to 0, not 3"),
        (("collage.jpg",), "collage.jpg has 4 faces; choose one"),
        (("/elsewhere/collage.jpg",), "invalid image path '/elsewhere/collage.jpg': the path is not under the share"),
    ],
)
async def test_similar_bad_input_is_one_line(
    pg: PgServer, swept: tuple[str, Path], tmp_path: Path, args: tuple[str, ...], expected: str
) -> None:
    template, share = swept
    database = pg.fresh_database(template)
    try:
        config = process_config(tmp_path, pg.dsn(database), share, "similar")
        done = await asyncio.to_thread(reactor_cli, config, "similar", *args)
    finally:
        pg.drop_database(database)
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
