"""Orphans are held, not deleted (issue 13): marked with the time, un-marked when their
ai_metadata row comes back, purged only after the grace period, within a bound, while
the share is online; what is held shows in `reactor status` and `reactor repair`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from reactor.core.queue import ImageQueue
from reactor.core.sweep import Sweeper
from reactor.store import claims
from reactor.store.dbtypes import Conn
from reactor.store.orphans import OrphanPolicy
from tests.reactor_support import process_config

RESULTS = 1200
NO_GRACE = OrphanPolicy(grace_seconds=0.0, purge_max=1000, purge_max_fraction=0.05, purge_min=20)


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(dsn, min_size=1, max_size=3)
    assert p is not None
    yield p
    await p.close()


def sweeper(pool: asyncpg.Pool, policy: OrphanPolicy | None = None, online: bool = True) -> Sweeper:
    return Sweeper(
        pool,
        ImageQueue(5000),
        page_size=500,
        lease_seconds=60.0,
        instance_id="me",
        share_online=lambda: online,
        orphan_policy=policy,
    )


async def seed_results(conn: Conn, paths: list[str]) -> None:
    await conn.execute(
        "INSERT INTO ai_metadata (image_path, is_processed) SELECT p, TRUE FROM unnest($1::text[]) p", paths
    )
    await conn.execute(
        "INSERT INTO face_metadata (image_path, face_count, model, scale) "
        "SELECT p, 0, 'hog', 1 FROM unnest($1::text[]) p",
        paths,
    )


async def refill(conn: Conn, paths: list[str]) -> None:
    await conn.execute(
        "INSERT INTO ai_metadata (image_path, is_processed) SELECT p, TRUE FROM unnest($1::text[]) p", paths
    )


async def marked(conn: Conn) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM face_metadata WHERE orphaned_at IS NOT NULL"))


async def test_truncate_and_refill_in_batches_keeps_every_result(pool: asyncpg.Pool) -> None:
    paths = [f"lib/{i:05}.jpg" for i in range(RESULTS)]
    async with pool.acquire() as conn:
        await seed_results(conn, paths)
        await conn.execute("TRUNCATE ai_metadata")
    # Even with no grace at all, the bound holds a mass deletion: nothing is purged.
    eager = sweeper(pool, NO_GRACE)
    first = await eager.sweep()
    assert (first.orphans, first.purged) == (RESULTS, 0)
    async with pool.acquire() as conn:
        await refill(conn, paths[:400])
    second = await eager.sweep()
    assert second.restored == 400 and second.purged == 0
    assert second.orphans_held and "800 due > bound 60" in second.orphans_held
    async with pool.acquire() as conn:
        await refill(conn, paths[400:800])
        await refill(conn, paths[800:])
    third = await eager.sweep()
    assert third.restored == 800 and third.purged == 0 and third.orphans_held is None
    # Nothing is detected again: every result still counts as done.
    assert third.pending == 0 and len(eager.queue) == 0
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM face_metadata") == RESULTS
        assert await marked(conn) == 0


async def test_default_grace_keeps_orphans_and_a_row_that_comes_back_is_unmarked(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await seed_results(conn, ["a.jpg", "b.jpg", "keep.jpg"])
        await conn.execute("INSERT INTO face_detection_failures (image_path, retry_count) VALUES ('f.jpg', 1)")
        await conn.execute("DELETE FROM ai_metadata WHERE image_path IN ('a.jpg', 'b.jpg')")
    counts = await sweeper(pool).sweep()
    assert (counts.orphans, counts.purged) == (3, 0)
    async with pool.acquire() as conn:
        assert await marked(conn) == 2
        assert await conn.fetchval("SELECT orphaned_at IS NOT NULL FROM face_detection_failures") is True
        await refill(conn, ["a.jpg"])
        # A marked result is done: the claim skips it, nothing is detected again.
        assert await claims.claim(conn, "a.jpg", "me", 60.0) == "done"
    again = await sweeper(pool).sweep()
    assert again.restored == 1 and again.purged == 0
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT image_path, orphaned_at IS NOT NULL AS o FROM face_metadata ORDER BY 1")
        assert [(r["image_path"], r["o"]) for r in rows] == [("a.jpg", False), ("b.jpg", True), ("keep.jpg", False)]


async def test_purge_after_grace_only_online_and_only_if_still_orphaned(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await seed_results(conn, ["gone.jpg", "back.jpg", "keep.jpg"])
        await conn.execute("DELETE FROM ai_metadata WHERE image_path IN ('gone.jpg', 'back.jpg')")
    await sweeper(pool).sweep()  # marks both
    offline = await sweeper(pool, NO_GRACE, online=False).sweep()
    assert offline.purged == 0 and offline.orphans_skipped == "share offline"
    async with pool.acquire() as conn:
        await refill(conn, ["back.jpg"])
        assert await conn.fetchval("SELECT count(*) FROM face_metadata") == 3
    dry = await sweeper(pool, NO_GRACE).sweep(dry_run=True)
    assert dry.paths["purge"] == ["gone.jpg"]
    online = await sweeper(pool, NO_GRACE).sweep()
    assert online.purged == 1 and online.restored == 1
    async with pool.acquire() as conn:
        left = [r["image_path"] for r in await conn.fetch("SELECT image_path FROM face_metadata ORDER BY 1")]
        assert left == ["back.jpg", "keep.jpg"]


async def test_held_orphans_are_logged_once(pool: asyncpg.Pool) -> None:
    paths = [f"h/{i:03}.jpg" for i in range(30)]
    async with pool.acquire() as conn:
        await seed_results(conn, [*paths, "keep.jpg"])
        await conn.execute("DELETE FROM ai_metadata WHERE image_path <> 'keep.jpg'")
    tight = sweeper(pool, OrphanPolicy(grace_seconds=0.0, purge_max=10, purge_max_fraction=1.0, purge_min=0))
    with capture_logs() as logs:
        for _ in range(3):
            counts = await tight.sweep()
            assert counts.purged == 0 and counts.orphans_held
    assert [e["event"] for e in logs].count("orphans_held") == 1


async def test_deleted_hint_marks_instead_of_deleting(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await seed_results(conn, ["x.jpg"])
    s = sweeper(pool)
    assert await s.mark_orphan("x.jpg") == 0  # its row is still there: a stale hint changes nothing
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM ai_metadata")
    assert await s.mark_orphan("x.jpg") == 1
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM face_metadata") == 1 and await marked(conn) == 1


def reactor_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REACTOR_", "PG"))}
    return subprocess.run(
        [sys.executable, "-m", "reactor", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


async def test_status_and_repair_show_held_orphans_and_release_them(
    conn: asyncpg.Connection, dsn: str, share: Path, tmp_path: Path
) -> None:
    paths = [f"held/{i:03}.jpg" for i in range(40)]
    await seed_results(conn, [*paths, "keep.jpg"])
    await conn.execute("DELETE FROM ai_metadata WHERE image_path <> 'keep.jpg'")
    await conn.execute(
        "UPDATE face_metadata SET orphaned_at = now() - interval '100 hours' WHERE image_path <> 'keep.jpg'"
    )
    config = process_config(tmp_path, dsn, share, "orphans", sweep={"orphan_purge_max": 10})
    status = reactor_cli(config, "status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["orphans_held"] is True and report["orphans"]["face_metadata"]["due"] == 40
    table = reactor_cli(config, "status")
    assert "HELD" in table.stdout and "reactor repair --purge-orphans --apply" in table.stdout
    dry = reactor_cli(config, "repair", "--purge-orphans", "--skip-files")
    assert dry.returncode == 0, dry.stderr
    assert "would purge face_metadata: 40 orphans" in dry.stdout
    assert await conn.fetchval("SELECT count(*) FROM face_metadata") == 41
    applied = reactor_cli(config, "repair", "--purge-orphans", "--apply", "--skip-files")
    assert applied.returncode == 0, applied.stderr
    assert "purged face_metadata: 40 orphans" in applied.stdout
    assert [r["image_path"] for r in await conn.fetch("SELECT image_path FROM face_metadata")] == ["keep.jpg"]
    # The purged rows were backed up first, like every row repair removes.
    backup = re.search(r"backed up 40 face_metadata rows into (\S+)", applied.stdout)
    assert backup, applied.stdout
    assert await conn.fetchval(f'SELECT count(*) FROM "{backup[1]}" WHERE repair_reason = $1', "purge_orphans") == 40


async def adopt_legacy(conn: Conn, paths: list[str]) -> None:
    """Legacy results as an adopted legacy face_metadata holds them (model IS NULL: the
    legacy worker wrote them, `db init` only added the reactor's columns), with no
    ai_metadata row; the first one has imported faces (face_detections)."""
    await conn.execute("ALTER TABLE face_metadata ALTER COLUMN model DROP NOT NULL, ALTER COLUMN scale DROP NOT NULL")
    await conn.execute(
        "INSERT INTO face_metadata (image_path, face_count) SELECT p, 0 FROM unnest($1::text[]) p", paths
    )
    await conn.execute("UPDATE face_metadata SET face_count = 1 WHERE image_path = $1", paths[0])
    await conn.execute(
        "INSERT INTO face_detections (image_path, face_index, box_top, box_right, box_bottom, box_left, encoding, "
        "model) VALUES ($1, 0, 1, 2, 3, 0, array_fill(0.5::real, ARRAY[128]), 'legacy')",
        paths[0],
    )


async def test_legacy_rows_survive_every_sweep_and_only_repair_removes_them_after_a_backup(
    conn: asyncpg.Connection, dsn: str, share: Path, tmp_path: Path
) -> None:
    legacy = [f"legacy/{i:02}.jpg" for i in range(10)]
    await seed_results(conn, ["keep.jpg", "mine.jpg"])
    await adopt_legacy(conn, legacy)
    # An earlier version marked two of them long ago: they are not purged either.
    await conn.execute(
        "UPDATE face_metadata SET orphaned_at = now() - interval '400 hours' WHERE image_path = ANY($1::text[])",
        legacy[:2],
    )
    await conn.execute("DELETE FROM ai_metadata WHERE image_path = 'mine.jpg'")
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    assert pool is not None
    try:
        eager = sweeper(pool, NO_GRACE)
        purged = sum([(await eager.sweep()).purged for _ in range(12)])
    finally:
        await pool.close()
    # Only the reactor's own orphan went; no legacy row was marked, and the old marks are gone.
    assert purged == 1
    rows = await conn.fetch("SELECT image_path, orphaned_at FROM face_metadata WHERE model IS NULL ORDER BY 1")
    assert [(r["image_path"], r["orphaned_at"]) for r in rows] == [(p, None) for p in legacy]
    assert await conn.fetchval("SELECT count(*) FROM face_detections") == 1

    config = process_config(tmp_path, dsn, share, "legacy_orphans")
    audit = reactor_cli(config, "audit", "--json", "--skip-files")
    assert audit.returncode == 1, audit.stderr
    found = {c["check"]: c for c in json.loads(audit.stdout)["checks"]}["legacy_orphans"]
    assert found["count"] == 10 and [s["image_path"] for s in found["sample"]] == legacy[:5]
    # Without the option repair leaves them alone, applied or not; the option's dry run lists them.
    kept = reactor_cli(config, "repair", "--apply", "--skip-files")
    assert kept.returncode == 0, kept.stderr
    assert "10 legacy results whose path left ai_metadata are kept" in kept.stdout
    dry = reactor_cli(config, "repair", "--legacy-orphans", "--skip-files")
    assert dry.returncode == 0, dry.stderr
    assert "would delete face_metadata: 10 images (10 legacy_orphans)" in dry.stdout
    assert await conn.fetchval("SELECT count(*) FROM face_metadata WHERE model IS NULL") == 10

    applied = reactor_cli(config, "repair", "--legacy-orphans", "--apply", "--skip-files", "--json")
    assert applied.returncode == 0, applied.stderr
    backups = json.loads(applied.stdout)["backups"]
    assert backups["face_metadata"]["rows"] == 10 and backups["face_detections"]["rows"] == 1
    saved = await conn.fetch(f'SELECT image_path, repair_reason FROM "{backups["face_metadata"]["table"]}" ORDER BY 1')
    assert [(r["image_path"], r["repair_reason"]) for r in saved] == [(p, "legacy_orphans") for p in legacy]
    assert await conn.fetchval(f'SELECT count(*) FROM "{backups["face_detections"]["table"]}"') == 1
    left = [r["image_path"] for r in await conn.fetch("SELECT image_path FROM face_metadata ORDER BY 1")]
    assert left == ["keep.jpg"] and await conn.fetchval("SELECT count(*) FROM face_detections") == 0


async def advance(conn: Conn, hours: float) -> None:
    """Simulated time: every orphan mark and every recorded purge moves `hours` into the past."""
    back = timedelta(hours=hours)
    await conn.execute(
        "UPDATE face_metadata SET orphaned_at = orphaned_at - $1::interval WHERE orphaned_at IS NOT NULL", back
    )
    await conn.execute("UPDATE reactor_orphan_purges SET purged_at = purged_at - $1::interval", back)


async def test_orphans_marked_in_batches_over_time_never_purge_past_the_bound_in_any_window(
    pool: asyncpg.Pool,
) -> None:
    paths = [f"b/{i:03}.jpg" for i in range(60)]
    async with pool.acquire() as conn:
        await seed_results(conn, [*paths, "keep.jpg"])
    # At most 10 per 24 h; each batch alone fits, so a per-sweep bound would purge every one.
    policy = OrphanPolicy(grace_seconds=3600.0, purge_max=10, purge_max_fraction=1.0, purge_min=0)
    s = sweeper(pool, policy)
    batches = [3, 3, 4, 4, 1, 2, 3, 1, 2, 1, 1, 2, 2, 1]
    step_hours = 8.0
    events: list[tuple[float, int]] = []  # (simulated hour, rows purged by that sweep)
    held_seen = 0
    start = 0
    for step, size in enumerate(batches):
        now = step * step_hours
        async with pool.acquire() as conn:
            await conn.execute(
                "DELETE FROM ai_metadata WHERE image_path = ANY($1::text[])", paths[start : start + size]
            )
        start += size
        counts = await s.sweep()
        assert counts.orphans == size
        if counts.purged:
            events.append((now, counts.purged))
        held_seen += counts.orphans_held is not None
        async with pool.acquire() as conn:
            await advance(conn, step_hours)
    # In every 24 h window (ending at each purge) the sweeps purged at most the bound,
    # and the purges went on across windows: the bound limits the rate, it is not a one-off.
    for end, _ in events:
        assert sum(n for t, n in events if end - 24.0 < t <= end) <= 10, events
    total = sum(n for _, n in events)
    assert total > 10 and held_seen > 0, (events, held_seen)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT sum(purged) FROM reactor_orphan_purges") == total
        left = await conn.fetchval("SELECT count(*) FROM face_metadata")
    assert left == len(paths) + 1 - total
