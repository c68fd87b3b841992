"""The reactor on a production-shaped database: the legacy worker's face_metadata
(seeds/001, `save_face_data`) adopted in place, its faces imported, its lost faces
recovered, and a schema that cannot hold a result refused. Real embedded PostgreSQL,
real photos, and the `reactor` command in real processes."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from reactor.ops import legacy_import, samples
from tests.pg import BIN, PgServer
from tests.production_shape import LEGACY_FACE_METADATA, UPSTREAM_AI_METADATA
from tests.reactor_support import (
    ReactorProcess,
    detections_per_path,
    process_config,
    reactor_cli,
    small_astronaut,
    wait_until,
    write_photos,
)
from tests.test_schema import LEGACY_FAILURES

ENCODING = [round(0.01 * i, 2) for i in range(128)]
LEGACY_ROWS = [
    # path, face_count, face_locations, face_encodings
    ("legacy/one_face.jpg", 1, "[[10, 60, 70, 5]]", json.dumps([ENCODING])),
    ("legacy/two_faces.jpg", 2, "[[1, 2, 3, 4], [5, 6, 7, 8]]", json.dumps([ENCODING, ENCODING])),
    ("legacy/zero_real.jpg", 0, "[]", "[]"),  # a photo without a face
    ("legacy/zero_lost.jpg", 0, "[]", "[]"),  # a failure the legacy worker saved as 0 faces
    ("legacy/zero_missing.jpg", 0, "[]", "[]"),  # its file is gone
    ("legacy/malformed.jpg", 1, "[[10, 60, 70", json.dumps([ENCODING])),
    ("legacy/miscounted.jpg", 3, "[[1, 2, 3, 4]]", json.dumps([ENCODING])),
    ("legacy/short_encoding.jpg", 1, "[[1, 2, 3, 4]]", json.dumps([ENCODING[:100]])),
]
LEGACY_COLUMNS = "image_path, face_count, face_locations, face_encodings::text, detected_at, reviewed_by"


@pytest.fixture
def production(pg: PgServer, tmp_path: Path, share: Path) -> Iterator[tuple[str, Path]]:
    """A database shaped like production, not made by the reactor; its photos on the share."""
    name = f"prod_{os.getpid()}_{tmp_path.name[-12:]}".lower().replace("-", "_")
    pg.psql(f"CREATE DATABASE {name}")
    pg.psql(UPSTREAM_AI_METADATA, name)
    pg.psql(LEGACY_FAILURES, name)
    pg.psql(LEGACY_FACE_METADATA, name)
    values = ", ".join(
        f"('{p}', {n}, '{boxes}', '{encodings}'::jsonb, '2024-05-01 12:00:00', 'alice')"
        for p, n, boxes, encodings in LEGACY_ROWS
    )
    pg.psql(
        f"INSERT INTO face_metadata (image_path, face_count, face_locations, face_encodings, detected_at, "
        f"reviewed_by) VALUES {values}",
        name,
    )
    processed = [p for p, *_ in LEGACY_ROWS] + ["new/astronaut.jpg", "new/coffee.jpg"]
    pg.psql(
        "INSERT INTO ai_metadata (image_path, is_processed) VALUES " + ", ".join(f"('{p}', TRUE)" for p in processed),
        name,
    )
    for path in ("legacy/zero_lost.jpg", "new/astronaut.jpg"):
        samples.write_jpeg(small_astronaut(), (share / path).parent, Path(path).name)
    for path in ("legacy/zero_real.jpg", "new/coffee.jpg"):
        samples.write_jpeg(samples.coffee().resize((256, 171)), (share / path).parent, Path(path).name)
    config = process_config(tmp_path, pg.dsn(name), share, "prod")
    yield name, config
    pg.drop_database(name)


@pytest.fixture
async def prod_conn(pg: PgServer, production: tuple[str, Path]) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(pg.dsn(production[0]))
    try:
        yield connection
    finally:
        await connection.close()


async def legacy_rows(conn: asyncpg.Connection) -> list[tuple[Any, ...]]:
    rows = await conn.fetch(
        f"SELECT {LEGACY_COLUMNS} FROM face_metadata WHERE image_path LIKE 'legacy/%' ORDER BY image_path"
    )
    return [tuple(r) for r in rows]


async def init_and_check(config: Path) -> subprocess.CompletedProcess[str]:
    init = await asyncio.to_thread(reactor_cli, config, "db", "init")
    assert init.returncode == 0, init.stderr
    check = await asyncio.to_thread(reactor_cli, config, "db", "check")
    assert check.returncode == 0, check.stdout
    return init


async def test_production_database_is_adopted_and_new_results_are_written_in_both_forms(
    production: tuple[str, Path], prod_conn: asyncpg.Connection
) -> None:
    _, config = production
    before = await legacy_rows(prod_conn)
    init = await init_and_check(config)
    assert "adapted: face_metadata.detected_at" in init.stdout
    assert "adapted: face_metadata.face_locations: legacy JSON in text" in init.stdout
    # The reactor's columns were added nullable; nothing legacy was dropped or rewritten.
    assert await legacy_rows(prod_conn) == before

    once = await asyncio.to_thread(reactor_cli, config, "--log-format", "json", "sweep", "--once", "--json")
    assert once.returncode == 0, once.stderr
    assert not [line for line in once.stderr.splitlines() if '"level": "error"' in line]
    # Legacy rows count as done: only the two new photos were detected.
    assert json.loads(once.stdout)["processed"] == 2
    assert await legacy_rows(prod_conn) == before

    new = await prod_conn.fetchrow(
        "SELECT face_count, face_locations, face_encodings::text AS enc, model FROM face_metadata "
        "WHERE image_path = 'new/astronaut.jpg'"
    )
    assert new is not None and new["face_count"] == 1 and new["model"] == "hog"
    face = await prod_conn.fetchrow(
        "SELECT box_top, box_right, box_bottom, box_left, encoding FROM face_detections "
        "WHERE image_path = 'new/astronaut.jpg'"
    )
    assert face is not None
    assert json.loads(new["face_locations"]) == [
        [face["box_top"], face["box_right"], face["box_bottom"], face["box_left"]]
    ]
    encodings = json.loads(new["enc"])
    assert len(encodings) == 1 and len(encodings[0]) == 128
    assert encodings[0] == pytest.approx(list(face["encoding"]), abs=1e-6)
    zero = await prod_conn.fetchrow(
        "SELECT face_count, face_locations, face_encodings::text AS enc FROM face_metadata "
        "WHERE image_path = 'new/coffee.jpg'"
    )
    assert zero is not None and (zero["face_count"], zero["face_locations"], zero["enc"]) == (0, "[]", "[]")

    # A reader of the legacy format: SQL over the legacy box column, as other programs query it.
    legacy_reader = await prod_conn.fetch(
        "SELECT image_path, json_array_length(face_locations::json) AS boxes, "
        "(face_locations::json -> 0 ->> 0)::int AS first_top FROM face_metadata "
        "WHERE image_path <> 'legacy/malformed.jpg' ORDER BY image_path"
    )
    by_path = {r["image_path"]: r for r in legacy_reader}
    assert by_path["new/astronaut.jpg"]["boxes"] == 1
    assert by_path["new/astronaut.jpg"]["first_top"] == face["box_top"]

    status = await asyncio.to_thread(reactor_cli, config, "status", "--json")
    assert status.returncode == 0, status.stderr
    counts = json.loads(status.stdout)
    assert (counts["images_processed"], counts["legacy_results"], counts["legacy_zero_face"]) == (10, 8, 3)
    assert counts["pending"] == 0


async def test_import_legacy_copies_faces_once_and_reports_bad_rows(
    production: tuple[str, Path], prod_conn: asyncpg.Connection
) -> None:
    _, config = production
    await init_and_check(config)
    first = await asyncio.to_thread(reactor_cli, config, "db", "import-legacy", "--json", "--page-size", "2")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert (report["images"], report["faces"], report["rejected"]) == (2, 3, 3)
    reasons = {p["image_path"]: p["reason"] for p in report["problems"]}
    assert reasons["legacy/malformed.jpg"].startswith("malformed JSON")
    assert "face_count is 3 but face_locations holds 1 box" in reasons["legacy/miscounted.jpg"]
    assert "encoding 0 is not 128 numbers (100)" in reasons["legacy/short_encoding.jpg"]
    faces = await prod_conn.fetch(
        "SELECT image_path, face_index, box_top, box_right, box_bottom, box_left, model, scale "
        "FROM face_detections ORDER BY image_path, face_index"
    )
    assert [tuple(r) for r in faces] == [
        ("legacy/one_face.jpg", 0, 10, 60, 70, 5, "legacy", None),
        ("legacy/two_faces.jpg", 0, 1, 2, 3, 4, "legacy", None),
        ("legacy/two_faces.jpg", 1, 5, 6, 7, 8, "legacy", None),
    ]
    # A rerun resumes after the last row imported: the rows left before it are counted, not examined.
    second = await asyncio.to_thread(reactor_cli, config, "db", "import-legacy", "--json")
    again = json.loads(second.stdout)
    assert (again["images"], again["faces"], again["rejected"]) == (0, 0, 0)
    assert (again["resumed_after"], again["not_examined"]) == ("legacy/two_faces.jpg", 3)
    everything = await asyncio.to_thread(reactor_cli, config, "db", "import-legacy", "--json", "--from-start")
    anew = json.loads(everything.stdout)
    assert (anew["images"], anew["faces"], anew["rejected"], anew["resumed_after"]) == (0, 0, 3, None)
    assert await prod_conn.fetchval("SELECT count(*) FROM face_detections") == 3
    # The rows left as they were are what audit lists, with the command that deals with them.
    audit = await asyncio.to_thread(reactor_cli, config, "audit", "--json", "--skip-files")
    checks = {c["check"]: c for c in json.loads(audit.stdout)["checks"]}
    assert checks["legacy_not_imported"]["count"] == 3
    assert checks["face_count_mismatch"]["count"] == 0
    assert checks["legacy_zero"]["count"] == 3


# Rows of a legacy table whose JSON columns are both text (so NaN and Infinity can be
# there), in path order, interleaved with good ones: path, face_count, boxes, encodings.
BAD_ROWS = [
    ("imp/a_good.jpg", 1, "[[1, 2, 3, 4]]", json.dumps([ENCODING])),
    ("imp/b_infinity.jpg", 1, "[[Infinity, 2, 3, 4]]", json.dumps([ENCODING])),
    ("imp/c_good.jpg", 1, "[[1, 2, 3, 4]]", json.dumps([ENCODING])),
    ("imp/d_nan.jpg", 1, "[[1, 2, 3, 4]]", json.dumps([[math.nan, *ENCODING[1:]]])),
    ("imp/e_big_box.jpg", 1, "[[1, 2, 3, 3000000000]]", json.dumps([ENCODING])),
    ("imp/f_good.jpg", 1, "[[1, 2, 3, 4]]", json.dumps([ENCODING])),
    ("imp/g_beyond_real.jpg", 1, "[[1, 2, 3, 4]]", json.dumps([[1e39, *ENCODING[1:]]])),
    ("imp/h_short.jpg", 1, "[[1, 2, 3, 4]]", json.dumps([ENCODING[:127]])),
    # Refused by the database itself: another program's CHECK on face_detections.
    ("imp/i_refused.jpg", 1, "[[1, 2, 3, -5]]", json.dumps([ENCODING])),
    ("imp/j_good.jpg", 1, "[[1, 2, 3, 4]]", json.dumps([ENCODING])),
    ("imp/k_stops_the_run.jpg", 1, "[[1, 2, 3, 4]]", json.dumps([ENCODING])),
    ("imp/l_good.jpg", 1, "[[1, 2, 3, 4]]", json.dumps([ENCODING])),
]


async def test_import_legacy_skips_each_kind_of_bad_row_and_a_rerun_resumes(
    pg: PgServer, production: tuple[str, Path], prod_conn: asyncpg.Connection
) -> None:
    name, config = production
    pg.psql("ALTER TABLE face_metadata ALTER COLUMN face_encodings TYPE text USING face_encodings::text", name)
    values = ", ".join(f"('{p}', {n}, '{boxes}', '{encodings}')" for p, n, boxes, encodings in BAD_ROWS)
    pg.psql(f"INSERT INTO face_metadata (image_path, face_count, face_locations, face_encodings) VALUES {values}", name)
    await init_and_check(config)
    await prod_conn.execute("ALTER TABLE face_detections ADD CONSTRAINT other_program CHECK (box_left >= 0)")
    # The first run stops at a page (the connection lost, Ctrl-C): here a trigger's error.
    await prod_conn.execute(
        """CREATE FUNCTION stop_here() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.image_path = 'imp/k_stops_the_run.jpg' THEN RAISE EXCEPTION 'the run stops here'; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER stop_here BEFORE INSERT ON face_detections FOR EACH ROW EXECUTE FUNCTION stop_here()"""
    )
    import_ = ("db", "import-legacy", "--json", "--page-size", "2")
    stopped = await asyncio.to_thread(reactor_cli, config, *import_)
    assert stopped.returncode == 2 and stopped.stderr.count("\n") == 1
    assert "the import stopped: the run stops here" in stopped.stderr

    async def imported() -> list[str]:
        rows = await prod_conn.fetch("SELECT DISTINCT image_path FROM face_detections ORDER BY image_path")
        return [r["image_path"] for r in rows]

    # The pages before it were committed, bad rows skipped, the refused row left alone.
    assert await imported() == ["imp/a_good.jpg", "imp/c_good.jpg", "imp/f_good.jpg", "imp/j_good.jpg"]

    await prod_conn.execute("DROP TRIGGER stop_here ON face_detections")
    rerun = await asyncio.to_thread(reactor_cli, config, *import_)
    assert rerun.returncode == 0, rerun.stderr
    resumed = json.loads(rerun.stdout)
    # Resumed after the last row imported: the bad rows before it are not examined again.
    assert resumed["resumed_after"] == "imp/j_good.jpg"
    assert (resumed["images"], resumed["faces"], resumed["not_examined"]) == (4, 5, 6)
    assert {p["image_path"] for p in resumed["problems"]} == {
        "legacy/malformed.jpg",
        "legacy/miscounted.jpg",
        "legacy/short_encoding.jpg",
    }
    assert "imp/l_good.jpg" in await imported()

    everything = await asyncio.to_thread(reactor_cli, config, *import_, "--from-start")
    report = json.loads(everything.stdout)
    assert (report["images"], report["rejected"], report["resumed_after"]) == (0, 9, None)
    reasons = {p["image_path"]: p["reason"] for p in report["problems"]}
    assert reasons["imp/b_infinity.jpg"] == "malformed JSON in face_locations: Infinity is not a JSON number"
    assert reasons["imp/d_nan.jpg"] == "malformed JSON in face_encodings: NaN is not a JSON number"
    assert reasons["imp/e_big_box.jpg"].startswith("box 0 is outside INTEGER")
    assert reasons["imp/g_beyond_real.jpg"] == "encoding 0 holds 1e+39: not a finite number within REAL"
    assert reasons["imp/h_short.jpg"] == "encoding 0 is not 128 numbers (127)"
    assert reasons["imp/i_refused.jpg"].startswith("refused by the database:")
    assert "other_program" in reasons["imp/i_refused.jpg"]
    # Every bad row is still there as it was; nothing else was imported twice.
    assert await prod_conn.fetchval("SELECT count(*) FROM face_metadata WHERE image_path LIKE 'imp/%'") == 12
    assert await prod_conn.fetchval("SELECT count(*) FROM face_detections") == 9


async def test_legacy_zero_rows_are_recovered(production: tuple[str, Path], prod_conn: asyncpg.Connection) -> None:
    _, config = production
    await init_and_check(config)
    asked = await asyncio.to_thread(reactor_cli, config, "redetect", "--legacy-zero", "--json")
    assert asked.returncode == 0, asked.stderr
    # No reactor is running: the requests are processed here, with the rest of the
    # backlog (the two new photos).
    assert json.loads(asked.stdout) == {
        "added": 3,
        "requested": 3,
        "refused": 0,
        "refusals": [],
        "by": "here",
        "processed": 5,
    }
    rows = {
        r["image_path"]: r
        for r in await prod_conn.fetch(
            "SELECT image_path, face_count, model, face_locations, reviewed_by FROM face_metadata"
        )
    }
    # The photo with a face gets its face, legacy columns included; the other columns stay.
    lost = rows["legacy/zero_lost.jpg"]
    assert (lost["face_count"], lost["model"], lost["reviewed_by"]) == (1, "hog", "alice")
    assert len(json.loads(lost["face_locations"])) == 1
    # A real zero-face photo stays at zero, now written by the reactor.
    assert (rows["legacy/zero_real.jpg"]["face_count"], rows["legacy/zero_real.jpg"]["model"]) == (0, "hog")
    # A missing file keeps its legacy row; the failure is recorded beside it.
    missing = rows["legacy/zero_missing.jpg"]
    assert (missing["face_count"], missing["model"]) == (0, None)
    failure = await prod_conn.fetchval(
        "SELECT last_error_type FROM face_detection_failures WHERE image_path = 'legacy/zero_missing.jpg'"
    )
    assert failure == "missing"
    # Idempotent: a second request adds only what is neither detected nor already requested.
    again = await asyncio.to_thread(reactor_cli, config, "redetect", "--legacy-zero", "--json")
    assert json.loads(again.stdout) == {
        "added": 0,
        "requested": 1,
        "refused": 0,
        "refusals": [],
        "by": "here",
        "processed": 0,
    }


async def test_a_schema_that_cannot_hold_a_result_is_refused(
    production: tuple[str, Path], prod_conn: asyncpg.Connection
) -> None:
    _, config = production
    await init_and_check(config)
    await prod_conn.execute("ALTER TABLE face_metadata DROP COLUMN encode_ms")
    for command in (("run",), ("sweep", "--once")):
        result = await asyncio.to_thread(reactor_cli, config, *command, timeout=60)
        assert result.returncode == 2, (command, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.startswith("reactor:")]
        assert len(lines) == 1
        assert "face_metadata.encode_ms is missing" in lines[0]
        assert "run `reactor db init`" in lines[0]
    assert await prod_conn.fetchval("SELECT count(*) FROM face_metadata WHERE model IS NOT NULL") == 0
    # The advice works.
    await init_and_check(config)


@pytest.mark.parametrize(
    ("ddl", "expected"),
    [
        (
            "ALTER TABLE face_metadata ADD COLUMN owner_id INTEGER NOT NULL DEFAULT 0; "
            "ALTER TABLE face_metadata ALTER COLUMN owner_id DROP DEFAULT",
            "face_metadata.owner_id is NOT NULL without a default and the reactor cannot fill it",
        ),
        (
            "ALTER TABLE face_metadata ALTER COLUMN face_locations TYPE bytea USING face_locations::bytea",
            "face_metadata.face_locations is bytea",
        ),
        # Exactly text, json or jsonb: an array or a varchar(n) is refused too, at start.
        (
            "ALTER TABLE face_metadata ALTER COLUMN face_locations TYPE text[] USING ARRAY[face_locations]",
            "face_metadata.face_locations is text[]",
        ),
        (
            "ALTER TABLE face_metadata ALTER COLUMN face_encodings TYPE jsonb[] USING ARRAY[face_encodings]",
            "face_metadata.face_encodings is jsonb[]",
        ),
        (
            "ALTER TABLE face_metadata ALTER COLUMN face_locations TYPE varchar(4000)",
            "face_metadata.face_locations is character varying(4000)",
        ),
    ],
)
async def test_a_legacy_table_of_another_shape_is_refused_with_one_line(
    pg: PgServer, production: tuple[str, Path], ddl: str, expected: str
) -> None:
    name, config = production
    pg.psql(ddl, name)
    init = await asyncio.to_thread(reactor_cli, config, "db", "init")
    assert init.returncode == 2
    assert init.stderr.count("\n") == 1 and expected in init.stderr
    check = await asyncio.to_thread(reactor_cli, config, "db", "check")
    assert check.returncode == 1 and expected in check.stdout
    if "NOT NULL" in expected:
        # The owner's SQL makes such a column nullable, and then init goes through.
        owner = await asyncio.to_thread(reactor_cli, config, "db", "sql", "--role", "postgres")
        script = config.parent / "owner.sql"
        script.write_text(owner.stdout)
        psql = [str(BIN / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", pg.socket_dir, "-U", "postgres"]
        await asyncio.to_thread(subprocess.run, [*psql, "-d", name, "-f", str(script)], check=True, capture_output=True)
        await init_and_check(config)


async def test_a_legacy_json_column_changed_after_init_stops_the_reactor_at_start(
    pg: PgServer, production: tuple[str, Path], prod_conn: asyncpg.Connection
) -> None:
    name, config = production
    await init_and_check(config)
    failures = await prod_conn.fetchval("SELECT count(*) FROM face_detection_failures")
    pg.psql("ALTER TABLE face_metadata ALTER COLUMN face_locations TYPE varchar(4000)", name)
    result = await asyncio.to_thread(reactor_cli, config, "sweep", "--once", timeout=60)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("reactor:")]
    assert len(lines) == 1
    assert "face_metadata.face_locations is character varying(4000)" in lines[0]
    assert "ALTER TABLE face_metadata ALTER COLUMN face_locations TYPE text" in lines[0]
    # Refused before any detection: no image failed at run time for it.
    assert await prod_conn.fetchval("SELECT count(*) FROM face_detection_failures") == failures
    assert await prod_conn.fetchval("SELECT count(*) FROM face_metadata WHERE model IS NOT NULL") == 0


def test_parse_row_rejects_each_kind_of_bad_legacy_row() -> None:
    good = legacy_import.parse_row(1, "[[1, 2, 3, 4]]", json.dumps([ENCODING]))
    assert good == [([1, 2, 3, 4], [float(v) for v in ENCODING])]
    for boxes, encodings, why in [
        ('{"a": 1}', "[]", "face_locations is not a JSON list"),
        ("[[1, 2, 3, 4]]", "null", "face_encodings is not a JSON list"),
        ("[[1, 2, 3, 4]]", "[]", "1 box(es) but 0 encoding(s)"),
        ("[[1, 2, 3]]", json.dumps([ENCODING]), "box 0 is not [top, right, bottom, left]"),
        ('[[1, 2, 3, "x"]]', json.dumps([ENCODING]), "box 0 is not"),
        ("[[1.5, 2, 3, 4]]", json.dumps([ENCODING]), "box 0 is not"),
        ("[[1, 2, 3, 4]]", json.dumps([["x"] * 128]), "encoding 0 is not 128 numbers"),
        ("[[1, 2, 3, Infinity]]", json.dumps([ENCODING]), "Infinity is not a JSON number"),
        ("[[1, 2, 3, 4]]", json.dumps([[float("nan")] * 128]), "NaN is not a JSON number"),
        ("[" * 100000, "[]", "malformed JSON"),
    ]:
        with pytest.raises(ValueError, match=why.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            legacy_import.parse_row(1, boxes, encodings)


async def test_a_write_that_fails_on_the_schema_stops_detection(
    production: tuple[str, Path], prod_conn: asyncpg.Connection, tmp_path: Path, share: Path
) -> None:
    _, config = production
    await init_and_check(config)
    reactor = ReactorProcess(config, tmp_path / "blocked.log").start()
    try:
        await reactor.wait_event("reactor_started")
        await reactor.wait_event("sweep_done")
        # The schema changes under the running reactor: no result can be written now.
        await prod_conn.execute("ALTER TABLE face_metadata DROP COLUMN encode_ms")
        write_photos(share, ["later/a.jpg", "later/b.jpg"])
        # The upstream table has no unique key (add_processed's ON CONFLICT needs one).
        await prod_conn.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ('later/a.jpg', TRUE)")
        blocked = await reactor.wait_event("results_unwritable")
        assert blocked["path"] == "later/a.jpg" and "encode_ms" in blocked["error"]

        async def state_says_blocked() -> bool:
            state = await prod_conn.fetchval("SELECT state ->> 'write_blocked' FROM reactor_instances")
            return bool(state)

        await wait_until(state_says_blocked, 30, "the heartbeat to say detection stopped")
        await prod_conn.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ('later/b.jpg', TRUE)")
        swept = await asyncio.to_thread(reactor_cli, config, "sweep", "--json")
        assert swept.returncode == 0, swept.stderr
        # The image queued after the failure is never detected for a write that cannot succeed.
        assert detections_per_path(reactor)["later/b.jpg"] == 0
        assert not reactor.events("image_detected")
        assert await asyncio.to_thread(reactor.stop, 60) == 0
    finally:
        reactor.ensure_dead()
    assert await prod_conn.fetchval("SELECT count(*) FROM face_metadata WHERE image_path LIKE 'later/%'") == 0
