"""Audit and repair (issue 7): every kind of corruption seeded by hand with SQL, found
exactly, left alone by a dry run, fixed with backups by --apply; and the path
constraints that keep derived and absolute paths out of every reactor table."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from reactor.config import Config
from reactor.ops import audit, repair
from reactor.store import constraints, sql
from tests.peek import is_path_violation

ENCODING = [0.01 * i for i in range(128)]
REACTOR_TABLES = ("face_metadata", "face_detections", "face_detection_failures", "reactor_claims")
GOOD = ("good/one_face.jpg", "good/no_faces.jpg")


@pytest.fixture
def config(make_config: Callable[..., Config]) -> Config:
    # "previews" is a site-specific derived folder: the SQL floor allows it, the
    # configured patterns (reactor.paths) do not.
    return make_config(images={"derived_folders": ("face_crops", "thumbnails", "thumbs", ".thumbnails", "previews")})


def touch(share: Path, *paths: str) -> None:
    for p in paths:
        f = share / p
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"\xff\xd8\xff\xe0 not decoded by these tests")


async def add_result(conn: asyncpg.Connection, path: str, face_count: int, face_rows: int) -> None:
    await conn.execute(
        "INSERT INTO face_metadata (image_path, face_count, model, scale) VALUES ($1, $2, 'hog', 1.0)",
        path,
        face_count,
    )
    await add_faces(conn, path, face_rows)


async def add_faces(conn: asyncpg.Connection, path: str, n: int) -> None:
    for i in range(n):
        await conn.execute(
            "INSERT INTO face_detections (image_path, face_index, box_top, box_right, box_bottom, box_left,"
            " score, encoding, model, scale) VALUES ($1, $2, 10, 60, 60, 10, 0.9, $3, 'hog', 1.0)",
            path,
            i,
            ENCODING,
        )


async def add_processed(conn: asyncpg.Connection, path: str, age_seconds: float = 0.0, processed: bool = True) -> None:
    await conn.execute(
        "INSERT INTO ai_metadata (image_path, is_processed, created_at)"
        " VALUES ($1, $2, now() - make_interval(secs => $3))",
        path,
        processed,
        age_seconds,
    )


async def without_path_check(conn: asyncpg.Connection, table: str, insert: Callable[[], Any]) -> None:
    """Insert a row the constraint refuses, as rows from before the constraint existed
    would be: drop it, insert, add it back NOT VALID (old rows kept, new ones checked)."""
    name = f"{table}_path_valid"
    definition = await conn.fetchval("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = $1", name)
    await conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
    await insert()
    await conn.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition} NOT VALID")


async def seed_corruption(conn: asyncpg.Connection, share: Path) -> None:
    touch(
        share,
        *GOOD,
        "banned/k.jpg",
        "orphan/a.jpg",
        "mismatch/b.jpg",
        "previews/p.jpg",
        "retried/e.jpg",
        "pending/f.jpg",
        "claimed/stale.jpg",
        "face_crops/c_face0.jpg",
    )
    # Sound rows, which must never be reported or touched.
    await add_result(conn, GOOD[0], 1, 1)
    await add_result(conn, GOOD[1], 0, 0)
    for p in GOOD:
        await add_processed(conn, p, 7200)
    await add_processed(conn, "fresh/g.jpg", 0)  # processed a moment ago: not pending yet
    await add_processed(conn, "notyet/h.jpg", 7200, processed=False)
    await add_processed(conn, "face_crops/x_face0.jpg", 7200)  # derived: never detected, not pending

    # Orphaned face rows: a restore with triggers (and so the foreign key) off.
    await conn.execute("SET session_replication_role = replica")
    await add_faces(conn, "orphan/a.jpg", 2)
    await conn.execute("SET session_replication_role = DEFAULT")
    await add_processed(conn, "orphan/a.jpg")
    # face_count says 3, one face row exists.
    await add_result(conn, "mismatch/b.jpg", 3, 1)
    await add_processed(conn, "mismatch/b.jpg")
    # A face crop recorded as a photo (seeds/002), and a site-specific derived folder.
    await without_path_check(
        conn,
        "face_metadata",
        lambda: conn.execute(
            "INSERT INTO face_metadata (image_path, face_count, model, scale)"
            " VALUES ('face_crops/c_face0.jpg', 1, 'hog', 1)"
        ),
    )
    await without_path_check(conn, "face_detections", lambda: add_faces(conn, "face_crops/c_face0.jpg", 1))
    await add_result(conn, "previews/p.jpg", 0, 0)
    # An absolute path in the legacy failures table; beside it, the reactor's own record
    # of a derived path it refused (type invalid_path), which is no corruption.
    await without_path_check(
        conn,
        "face_detection_failures",
        lambda: conn.execute(
            "INSERT INTO face_detection_failures (image_path, last_error_type) VALUES ('/mnt/photos/x.jpg', 'missing')"
        ),
    )
    await conn.execute(
        "INSERT INTO face_detection_failures (image_path, last_error_type, permanently_failed)"
        " VALUES ('face_crops/x_face0.jpg', 'invalid_path', TRUE)"
    )
    # A result whose file is gone.
    await add_result(conn, "gone/d.jpg", 0, 0)
    await add_processed(conn, "gone/d.jpg")
    # A failure superseded by a later success.
    await add_result(conn, "retried/e.jpg", 0, 0)
    await conn.execute(
        "INSERT INTO face_detection_failures (image_path, last_error_type, retry_count)"
        " VALUES ('retried/e.jpg', 'timeout', 1)"
    )
    # A result written by a detection that raced `reactor blacklist`: the blacklist wins.
    await add_result(conn, "banned/k.jpg", 1, 1)
    await conn.execute(
        "INSERT INTO face_detection_failures (image_path, last_error_type, permanently_failed)"
        " VALUES ('banned/k.jpg', 'blacklisted', TRUE)"
    )
    await add_processed(conn, "banned/k.jpg", 7200)
    # Processed an hour ago, never detected (a missed notification and a missed sweep).
    await add_processed(conn, "pending/f.jpg", 3600)
    # Claims: one expired, one held by an instance whose heartbeat stopped, one live.
    await conn.execute(
        "INSERT INTO reactor_instances (instance_id, hostname, pid, heartbeat_at) VALUES"
        " ('live-1', 'gpu1', 100, now()), ('gone-1', 'gpu2', 200, now() - interval '1 hour')"
    )
    await conn.execute(
        "INSERT INTO reactor_claims (image_path, instance_id, token, lease_until) VALUES"
        " ('claimed/expired.jpg', 'live-1', 1, now() - interval '1 minute'),"
        " ('claimed/stale.jpg', 'gone-1', 2, now() + interval '1 minute'),"
        " ('claimed/live.jpg', 'live-1', 3, now() + interval '1 minute')"
    )
    await add_processed(conn, "claimed/stale.jpg")
    await add_processed(conn, "claimed/live.jpg", 3600)


EXPECTED = {
    "orphan_faces": {"orphan/a.jpg"},
    "face_count_mismatch": {"mismatch/b.jpg"},
    "invalid_paths": {"face_crops/c_face0.jpg", "previews/p.jpg", "/mnt/photos/x.jpg"},
    "missing_files": {"gone/d.jpg"},
    "superseded_failures": {"retried/e.jpg", "banned/k.jpg"},
    "pending_processed": {"pending/f.jpg"},
    "dead_claims": {"claimed/expired.jpg", "claimed/stale.jpg"},
    "legacy_not_imported": set(),
    "legacy_zero": set(),
    "legacy_orphans": set(),
    "held_deletions": set(),
}
REQUEUED = {"orphan/a.jpg", "mismatch/b.jpg", "gone/d.jpg", "claimed/stale.jpg", "pending/f.jpg"}


async def snapshot(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for table in (*REACTOR_TABLES, "ai_metadata", "reactor_instances"):
        rows = await conn.fetch(f"SELECT * FROM {table}")
        out[table] = sorted((tuple(r.values()) for r in rows), key=repr)
    return out


async def backup_tables(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE tablename LIKE 'reactor\\_backup\\_%' ORDER BY 1")
    return [r["tablename"] for r in rows]


async def run_audit(conn: asyncpg.Connection, config: Config) -> audit.AuditReport:
    online, reason = audit.share_state(config)
    return await audit.run_audit(conn, config, share_online=online, share_reason=reason)


async def stand_in_reactor(conn: asyncpg.Connection, share: Path, paths: set[str]) -> None:
    """What the reactor does with a re-queued image (the reactor is not under test
    here): a result when the file is there, a `missing` failure when it is not."""
    for p in sorted(paths):
        if (share / p).is_file():
            await add_result(conn, p, 0, 0)
        else:
            await conn.execute(
                "INSERT INTO face_detection_failures (image_path, last_error_type) VALUES ($1, 'missing')", p
            )


async def test_audit_finds_exactly_the_seeded_rows(conn: asyncpg.Connection, config: Config, share: Path) -> None:
    await seed_corruption(conn, share)
    report = await run_audit(conn, config)
    assert report.share_online
    found = {name: set(f.paths) for name, f in report.findings.items()}
    assert found == EXPECTED
    assert report["orphan_faces"].rows == [{"image_path": "orphan/a.jpg", "faces": 2}]
    assert report["face_count_mismatch"].rows[0]["face_count"] == 3
    assert report["face_count_mismatch"].rows[0]["faces"] == 1
    reasons = {(r["table"], r["image_path"]): r["reason"] for r in report["invalid_paths"].rows}
    assert reasons == {
        ("face_metadata", "face_crops/c_face0.jpg"): "derived",
        ("face_metadata", "previews/p.jpg"): "derived",
        ("face_detection_failures", "/mnt/photos/x.jpg"): "absolute",
    }
    claims = {r["image_path"]: r["reason"] for r in report["dead_claims"].rows}
    assert claims == {"claimed/expired.jpg": "lease_expired", "claimed/stale.jpg": "heartbeat_stale"}
    assert report["pending_processed"].rows[0]["column"] == "created_at"
    assert not report.clean
    assert report.to_dict(sample=1)["checks"][2]["count"] == 3


async def test_repair_dry_run_changes_nothing(conn: asyncpg.Connection, config: Config, share: Path) -> None:
    await seed_corruption(conn, share)
    before = await snapshot(conn)
    online, reason = audit.share_state(config)
    result = await repair.repair(conn, config, apply=False, share_online=online, share_reason=reason)
    assert not result.applied
    assert set(result.plan.results) == {
        "mismatch/b.jpg",
        "face_crops/c_face0.jpg",
        "previews/p.jpg",
        "gone/d.jpg",
        "banned/k.jpg",
    }
    assert set(result.plan.failures) == {"/mnt/photos/x.jpg", "retried/e.jpg"}
    assert set(result.plan.orphan_faces) == {"orphan/a.jpg"}
    assert {p for p, _ in result.plan.claims} == EXPECTED["dead_claims"]
    assert result.plan.requeue == REQUEUED | {"claimed/expired.jpg"}
    assert await snapshot(conn) == before
    assert await backup_tables(conn) == []


async def test_repair_apply_fixes_backs_up_and_requeues(
    conn: asyncpg.Connection, config: Config, share: Path, dsn: str
) -> None:
    await seed_corruption(conn, share)
    listener = await asyncpg.connect(dsn)
    notified: list[dict[str, Any]] = []
    done = asyncio.Event()

    def on_notify(_c: object, _pid: int, _channel: str, payload: object) -> None:
        notified.append(json.loads(str(payload)))
        if len(notified) >= len(REQUEUED):
            done.set()

    await listener.add_listener(config.database.channel, on_notify)
    try:
        online, reason = audit.share_state(config)
        result = await repair.repair(conn, config, apply=True, share_online=online, share_reason=reason)
        await asyncio.wait_for(done.wait(), 10)
    finally:
        await listener.close()
    assert result.applied
    assert {n["path"] for n in notified} == REQUEUED
    assert all(n["type"] == "processed" for n in notified)
    assert result.requeued == len(REQUEUED)
    assert result.deleted == {
        "reactor_claims": 2,
        "face_detection_failures": 2,
        "face_detections": 5,
        "face_metadata": 5,
    }

    tables = await backup_tables(conn)
    assert len(tables) == 4 and all(t.startswith("reactor_backup_2") for t in tables)
    by_source = {src: name for src, (name, _) in result.backups.items()}
    assert set(by_source.values()) == set(tables)

    async def backed_up(source: str) -> set[tuple[str, str]]:
        rows = await conn.fetch(f'SELECT image_path, repair_reason FROM "{by_source[source]}"')
        return {(r["image_path"], r["repair_reason"]) for r in rows}

    assert await backed_up("face_metadata") == {
        ("mismatch/b.jpg", "face_count_mismatch"),
        ("face_crops/c_face0.jpg", "invalid_paths"),
        ("previews/p.jpg", "invalid_paths"),
        ("gone/d.jpg", "missing_files"),
        ("banned/k.jpg", "superseded_failures"),
    }
    assert await backed_up("face_detections") == {
        ("orphan/a.jpg", "orphan_faces"),
        ("mismatch/b.jpg", "face_count_mismatch"),
        ("face_crops/c_face0.jpg", "invalid_paths"),
        ("banned/k.jpg", "superseded_failures"),
    }
    assert await conn.fetchval(f'SELECT count(*) FROM "{by_source["face_detections"]}"') == 5
    assert await backed_up("face_detection_failures") == {
        ("/mnt/photos/x.jpg", "invalid_paths"),
        ("retried/e.jpg", "superseded_failures"),
    }
    assert await backed_up("reactor_claims") == {
        ("claimed/expired.jpg", "dead_claims"),
        ("claimed/stale.jpg", "dead_claims"),
    }
    # The backup keeps whole rows: the encodings of the removed faces are still there.
    enc = await conn.fetchval(f'SELECT encoding FROM "{by_source["face_detections"]}" LIMIT 1')
    assert len(enc) == 128

    # Sound rows are untouched; only the live claim is left.
    results = {r["image_path"] for r in await conn.fetch("SELECT image_path FROM face_metadata")}
    assert results == {*GOOD, "retried/e.jpg"}
    assert await conn.fetchval("SELECT count(*) FROM face_detections") == 1
    failures = {r["image_path"] for r in await conn.fetch("SELECT image_path FROM face_detection_failures")}
    assert failures == {"face_crops/x_face0.jpg", "banned/k.jpg"}
    # The constraints added NOT VALID over the seeded rows now hold for every row.
    assert sorted(result.validated) == [
        "face_detection_failures_path_valid",
        "face_detections_path_valid",
        "face_metadata_path_valid",
    ]
    assert await conn.fetchval("SELECT bool_and(convalidated) FROM pg_constraint WHERE conname LIKE '%path_valid'")
    assert [r["image_path"] for r in await conn.fetch("SELECT image_path FROM reactor_claims")] == ["claimed/live.jpg"]

    # Only the re-queued images remain to be detected; once they are, the audit is clean.
    after = await run_audit(conn, config)
    assert {name for name, f in after.findings.items() if f.count} <= {"pending_processed"}
    await stand_in_reactor(conn, share, {n["path"] for n in notified})
    second = await run_audit(conn, config)
    assert second.clean, second.to_dict()
    # Nothing left to do, nothing backed up again.
    again = await repair.repair(conn, config, apply=True, share_online=True)
    assert again.plan.empty and not again.applied
    assert await backup_tables(conn) == tables


async def test_missing_files_are_not_believed_while_the_share_is_offline(
    conn: asyncpg.Connection, config: Config, share: Path
) -> None:
    await add_result(conn, "gone/d.jpg", 0, 0)
    (share / ".reactor-share").unlink()
    online, reason = audit.share_state(config)
    assert not online and reason == "marker_missing"
    report = await audit.run_audit(conn, config, share_online=online, share_reason=reason)
    assert report["missing_files"].count == 0
    assert report["missing_files"].skipped is not None and "marker_missing" in report["missing_files"].skipped
    assert report.clean
    result = await repair.repair(conn, config, apply=True, share_online=online, share_reason=reason)
    assert result.plan.empty
    assert await conn.fetchval("SELECT count(*) FROM face_metadata") == 1


async def test_an_orphaned_result_is_not_reported_missing_again(
    conn: asyncpg.Connection, config: Config, share: Path
) -> None:
    await add_result(conn, "gone/d.jpg", 0, 0)
    await add_result(conn, "gone/e.jpg", 0, 0)
    for i in range(8):
        await add_result(conn, f"here/{i}.jpg", 0, 0)
        touch(share, f"here/{i}.jpg")
    # Already marked orphaned (its deletion was seen): it waits for its grace period.
    await conn.execute("UPDATE face_metadata SET orphaned_at = now() WHERE image_path = 'gone/e.jpg'")
    report = await run_audit(conn, config)
    assert [r["image_path"] for r in report["missing_files"].rows] == ["gone/d.jpg"]
    listed = await audit.run_audit(conn, config, share_online=True, share_reason=None, file_candidates=["gone/e.jpg"])
    assert listed["missing_files"].count == 0


async def test_mass_vanish_is_an_outage_not_deletions(
    conn: asyncpg.Connection, make_config: Callable[..., Config], share: Path
) -> None:
    config = make_config(watcher={"vanish_min_files": 3, "vanish_fraction": 0.5})
    for i in range(4):
        await add_result(conn, f"album/{i}.jpg", 0, 0)
    touch(share, "album/0.jpg")
    report = await run_audit(conn, config)
    assert report["missing_files"].count == 0
    assert report["missing_files"].skipped is not None and "3 of 4" in report["missing_files"].skipped


async def test_pending_is_skipped_without_a_time_column(conn: asyncpg.Connection, config: Config) -> None:
    await conn.execute("ALTER TABLE ai_metadata DROP COLUMN created_at")
    await add_processed_no_time(conn, "pending/f.jpg")
    report = await run_audit(conn, config)
    finding = report["pending_processed"]
    assert finding.count == 0 and finding.skipped is not None and "created_at" in finding.skipped


async def add_processed_no_time(conn: asyncpg.Connection, path: str) -> None:
    await conn.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ($1, TRUE)", path)


async def test_pending_uses_updated_at_when_upstream_has_it(conn: asyncpg.Connection, config: Config) -> None:
    await conn.execute("ALTER TABLE ai_metadata ADD COLUMN updated_at TIMESTAMP")
    await conn.execute(
        "INSERT INTO ai_metadata (image_path, is_processed, created_at, updated_at) VALUES"
        " ('old/just_processed.jpg', TRUE, now() - interval '1 day', now()),"
        " ('old/stuck.jpg', TRUE, now() - interval '1 day', now() - interval '1 hour')"
    )
    report = await run_audit(conn, config)
    assert report["pending_processed"].paths == ["old/stuck.jpg"]
    assert report["pending_processed"].rows[0]["column"] == "updated_at"


async def test_audit_without_schema_says_what_to_run(conn: asyncpg.Connection, config: Config) -> None:
    await conn.execute("DROP TABLE reactor_claims")
    with pytest.raises(audit.SchemaMissing, match=r"reactor_claims.*reactor db init"):
        await run_audit(conn, config)


async def test_repair_waits_for_a_lock_then_says_nothing_changed(
    conn: asyncpg.Connection, dsn: str, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock the store could not take within the timeout comes up as RepairBusy, one line
    that names the error, and the transaction left nothing behind."""
    monkeypatch.setattr(repair, "LOCK_TIMEOUT", "50ms")
    holder = await asyncpg.connect(dsn)
    try:
        async with holder.transaction():
            await holder.execute("LOCK TABLE reactor_claims IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(repair.RepairBusy, match=r"locked by other sessions \(LockNotAvailableError\)"):
                await repair.purge_orphans(conn, config)
    finally:
        await holder.close()
    assert not await conn.fetchval("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'reactor_backup_%'")


@pytest.mark.parametrize("table", REACTOR_TABLES)
@pytest.mark.parametrize(
    "path",
    [
        "face_crops/IMG_1_face0.jpg",
        "2024/Thumbnails/IMG_2.jpg",
        "/mnt/photos/IMG_3.jpg",
        "C:/photos/IMG_4.jpg",
        "a/../b.jpg",
    ],
)
async def test_constraint_rejects_derived_and_absolute_paths(conn: asyncpg.Connection, table: str, path: str) -> None:
    inserts: dict[str, tuple[str, *tuple[Any, ...]]] = {
        "face_metadata": ("INSERT INTO face_metadata (image_path, face_count, model, scale) VALUES ($1, 0, 'hog', 1)",),
        "face_detections": (
            "INSERT INTO face_detections (image_path, face_index, box_top, box_right, box_bottom, box_left,"
            " encoding, model, scale) VALUES ($1, 0, 1, 2, 2, 1, $2, 'hog', 1)",
            ENCODING,
        ),
        # A failure of any type but invalid_path (the reactor's record of a refused path).
        "face_detection_failures": (
            "INSERT INTO face_detection_failures (image_path, last_error_type) VALUES ($1, 'corrupt')",
        ),
        "reactor_claims": (
            "INSERT INTO reactor_claims (image_path, instance_id, token, lease_until) VALUES ($1, 'i', 1, now())",
        ),
    }
    query, *extra = inserts[table]
    # Foreign keys off, so face_detections reaches its CHECK without a face_metadata row.
    await conn.execute("SET session_replication_role = replica")
    with pytest.raises(asyncpg.CheckViolationError) as caught:
        await conn.execute(query, path, *extra)
    assert is_path_violation(caught.value)
    rejected = constraints.path_rejection(caught.value, path)
    assert rejected is not None and rejected.table == table
    message = str(rejected)
    assert "\n" not in message and repr(path) in message and f"{table}_path_valid" in message
    assert "relative" in message and "reactor audit" in message


async def test_other_check_violations_are_not_path_rejections(conn: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.CheckViolationError) as caught:
        await conn.execute(
            "INSERT INTO face_metadata (image_path, face_count, model, scale) VALUES ('a.jpg', -1, 'hog', 1)"
        )
    assert constraints.path_rejection(caught.value, "a.jpg") is None
    assert constraints.path_rejection(ValueError("x")) is None


async def test_every_integrity_block_runs(conn: asyncpg.Connection) -> None:
    """Every named block of sql/integrity.sql parses and runs (backup names filled in)."""
    blocks = sql.blocks("integrity.sql")
    for backup, source in (("b_fm", "face_metadata"), ("b_fd", "face_detections"), ("b_rc", "reactor_claims")):
        await conn.execute(sql.fill_identifiers(blocks["repair_create_backup"], backup=backup, source=source))
    args: dict[str, tuple[Any, ...]] = {
        "missing_tables": (["face_metadata"],),
        "table_columns": ("ai_metadata",),
        "results_present": (["a"],),
        "legacy_among": (["a"],),
        "results_present_unorphaned": (["a"],),
        "pending_processed": (300.0, "created_at"),
        "dead_claims": (60.0,),
        "backup_table_exists": ("b_fm",),
        "repair_backup_rows": (["a"], "r"),
        "repair_backup_orphan_faces": (["a"], "r"),
        "repair_backup_claims": (["a"], [1], ["r"]),
        "repair_delete_orphan_faces": (["a"],),
        "repair_delete_results": (["a"],),
        "repair_delete_failures": (["a"],),
        "repair_delete_claims": (["a"], [1]),
        "repair_requeue": ("face_reactor", ["a"]),
        "repair_unvalidated_constraints": (["face_metadata_path_valid"],),
    }
    targets = {"repair_backup_orphan_faces": "b_fd", "repair_backup_claims": "b_rc"}
    ran = []
    async with conn.transaction():
        for name, text in blocks.items():
            if name == "repair_create_backup":
                continue
            filled = sql.fill_identifiers(
                text, backup=targets.get(name, "b_fm"), source="face_metadata", constraint="face_metadata_path_valid"
            )
            await conn.fetch(filled, *args.get(name, ()))
            ran.append(name)
    assert len(ran) == len(blocks) - 1


def write_config(path: Path, dsn: str, share: Path) -> Path:
    path.write_text(
        f'[database]\ndsn = "{dsn}"\n[images]\nroot = "{share}"\n[health]\nenabled = false\n'
        '[logging]\nformat = "json"\n'
    )
    return path


def cli(config_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REACTOR_")}
    return subprocess.run(
        [sys.executable, "-m", "reactor", "--config", str(config_file), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
    )


async def test_cli_audit_repair_audit(conn: asyncpg.Connection, dsn: str, share: Path, tmp_path: Path) -> None:
    touch(share, "retried/e.jpg")
    await add_result(conn, "retried/e.jpg", 0, 0)
    await conn.execute(
        "INSERT INTO face_detection_failures (image_path, last_error_type) VALUES ('retried/e.jpg', 'oom')"
    )
    await conn.execute("SET session_replication_role = replica")
    await add_faces(conn, "orphan/a.jpg", 1)
    await conn.execute("SET session_replication_role = DEFAULT")
    cfg = write_config(tmp_path / "reactor.toml", dsn, share)

    found = await asyncio.to_thread(cli, cfg, "audit", "--json")
    assert found.returncode == 1, found.stderr
    counts = {c["check"]: c["count"] for c in json.loads(found.stdout)["checks"]}
    assert counts["superseded_failures"] == 1 and counts["orphan_faces"] == 1 and sum(counts.values()) == 2

    table = await asyncio.to_thread(cli, cfg, "audit")
    assert table.returncode == 1 and "orphan/a.jpg" in table.stdout and "superseded_failures" in table.stdout

    dry = await asyncio.to_thread(cli, cfg, "repair")
    assert dry.returncode == 0, dry.stderr
    assert "dry run" in dry.stdout and "would delete face_detection_failures: 1 images" in dry.stdout
    assert await conn.fetchval("SELECT count(*) FROM face_detection_failures") == 1

    applied = await asyncio.to_thread(cli, cfg, "repair", "--apply")
    assert applied.returncode == 0, applied.stderr
    assert "backed up 1 face_detection_failures rows into reactor_backup_" in applied.stdout

    clean = await asyncio.to_thread(cli, cfg, "audit")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.strip().endswith("audit: clean")


def json_log_events(stderr: str) -> list[str]:
    return [json.loads(line)["event"] for line in stderr.splitlines() if line.startswith("{")]


async def test_cli_repair_json_is_pure_json(conn: asyncpg.Connection, dsn: str, share: Path, tmp_path: Path) -> None:
    """`repair --apply --json` logs that it applied; the line goes to stderr, not into the JSON."""
    await conn.execute("SET session_replication_role = replica")
    await add_faces(conn, "orphan/a.jpg", 1)
    await conn.execute("SET session_replication_role = DEFAULT")
    applied = await asyncio.to_thread(cli, write_config(tmp_path / "r.toml", dsn, share), "repair", "--apply", "--json")
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)["applied"] is True
    assert "repair_applied" in json_log_events(applied.stderr)


async def test_cli_audit_and_repair_json_on_the_embedded_database(share: Path, tmp_path: Path) -> None:
    """The embedded database logs its start and stop: to stderr, so that stdout stays one JSON object."""
    config = tmp_path / "embedded.toml"
    config.write_text(
        f'[database]\ndsn = ""\nembedded_dir = "{tmp_path / "pgdata"}"\n[images]\nroot = "{share}"\n'
        '[health]\nenabled = false\n[logging]\nformat = "json"\n'
    )
    init = await asyncio.to_thread(cli, config, "db", "init")
    assert init.returncode == 0, init.stderr
    for command in (("audit", "--json"), ("repair", "--json")):
        out = await asyncio.to_thread(cli, config, *command)
        assert out.returncode == 0, out.stderr
        assert isinstance(json.loads(out.stdout), dict), out.stdout
        assert "embedded_db_starting" in json_log_events(out.stderr)


async def test_cli_audit_without_schema_is_one_line(
    conn: asyncpg.Connection, dsn: str, share: Path, tmp_path: Path
) -> None:
    await conn.execute("DROP TABLE face_detections")
    out = await asyncio.to_thread(cli, write_config(tmp_path / "r.toml", dsn, share), "audit")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "reactor db init" in out.stderr


def test_path_judge_agrees_with_the_mapper() -> None:
    """The per-folder shortcut gives validate's verdict and reason on every kind of path."""
    from reactor.paths import InvalidPath, PathMapper

    mapper = PathMapper("/share", ("face_crops", "thumb*", "[p]reviews"), max_length=40)
    judge = audit.PathJudge(mapper)
    paths = [
        "a.jpg",
        "2024/a.jpg",
        "2024/x/a.jpg",
        "2024/Face_Crops/a.jpg",
        "thumbnails/a.jpg",
        "thumbs2/a.jpg",
        "previews/a.jpg",
        "reviews/a.jpg",
        "2024/../a.jpg",
        "2024/./a.jpg",
        "2024//a.jpg",
        "2024/",
        "2024/.",
        "2024/..",
        "/abs/a.jpg",
        "C:/x/a.jpg",
        "2024\\a.jpg",
        "2024/a\\b.jpg",
        "",
        "2024/" + "n" * 40 + ".jpg",
        "f" * 39 + "/a.jpg",
        "face_crops/a.jpg",
        "2024/face_crops.jpg",
    ]
    for _ in range(2):  # the second round answers from the folder cache
        for path in paths:
            try:
                mapper.validate(path)
                expected = None
            except InvalidPath as exc:
                expected = exc.reason
            assert judge.reason(path) == expected, path


async def test_failure_without_a_type_cannot_hold_a_derived_path(conn: asyncpg.Connection) -> None:
    """Only an invalid_path failure may record a refused path; a NULL type is no loophole."""
    with pytest.raises(asyncpg.CheckViolationError) as caught:
        await conn.execute("INSERT INTO face_detection_failures (image_path) VALUES ('face_crops/x_face0.jpg')")
    assert constraints.path_rejection(caught.value, "face_crops/x_face0.jpg") is not None
    await conn.execute(
        "INSERT INTO face_detection_failures (image_path, last_error_type)"
        " VALUES ('face_crops/x_face0.jpg', 'invalid_path')"
    )


def test_audit_counts_only_files_certainly_gone(share: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """EACCES and EIO are not "missing", and neither is a name stored in the other
    Unicode normalization; only "not found" under a folder that is there is."""
    import errno
    import unicodedata

    from reactor.paths import PathMapper

    touch(share, "ok/here.jpg", "ok/locked.jpg", unicodedata.normalize("NFD", "ok/café.jpg"))
    real_lstat = os.lstat
    locked = str(share / "ok" / "locked.jpg")

    def lstat(path: str) -> os.stat_result:
        if str(path) == locked:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_lstat(path)

    monkeypatch.setattr("reactor.watch.scanner.os.lstat", lstat)
    paths = ["ok/here.jpg", "ok/locked.jpg", unicodedata.normalize("NFC", "ok/café.jpg"), "ok/gone.jpg"]
    assert audit._absent(PathMapper(str(share)), paths) == ["ok/gone.jpg"]


async def test_repair_leaves_a_legacy_result_whose_file_is_gone_unless_asked(
    conn: asyncpg.Connection, make_config: Callable[..., Config], share: Path
) -> None:
    """A legacy result (no model) is another program's row, even when its file is gone: a plain
    `repair --apply` keeps it; only `--legacy-orphans` removes it, after its backup."""
    config = make_config()
    await conn.execute("ALTER TABLE face_metadata ALTER COLUMN model DROP NOT NULL")  # as on an adopted table
    for path, model in (("old/legacy.jpg", None), ("old/ours.jpg", "hog")):
        await conn.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ($1, TRUE)", path)
        await conn.execute(
            "INSERT INTO face_metadata (image_path, face_count, model, scale) VALUES ($1, 0, $2, 1)", path, model
        )
    (share / "old").mkdir()
    plain = await repair.repair(conn, config, apply=True, share_online=True)
    assert plain.plan.results == {"old/ours.jpg": "missing_files"}
    assert await conn.fetchval("SELECT count(*) FROM face_metadata WHERE image_path = 'old/legacy.jpg'") == 1
    asked = await repair.repair(conn, config, apply=True, share_online=True, legacy_orphans=True)
    assert asked.plan.results == {"old/legacy.jpg": "missing_files"}
    assert await conn.fetchval("SELECT count(*) FROM face_metadata") == 0
    assert asked.backups["face_metadata"][1] == 1
