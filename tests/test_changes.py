"""The regular sweep reads the change log, the full walk the whole table (issue 28).

The ai_metadata trigger records every change in reactor_changes; the regular sweep
reads and deletes it; the walk's position and the watermark live in
reactor_sweep_state, so a restart or another instance continues them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from reactor.config import Config
from reactor.core.queue import ImageQueue, Priority
from reactor.core.scheduler import SweepScheduler
from reactor.core.sweep import Sweeper
from reactor.ops import status
from reactor.store import changes
from reactor.store.dbtypes import Conn
from reactor.store.errors import StoreUnavailable
from reactor.store.sweeps import LOCK_KEY as SWEEP_LOCK_KEY
from tests.pg import PgServer
from tests.reactor_support import add_processed, wait_until

WEEK = 7 * 24 * 3600.0


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    try:
        yield p
    finally:
        await p.close()


def sweeper(pool: asyncpg.Pool, queue: ImageQueue | None = None, instance: str = "me", page: int = 4) -> Sweeper:
    return Sweeper(
        pool,
        ImageQueue(1000) if queue is None else queue,
        page_size=page,
        lease_seconds=60.0,
        instance_id=instance,
        share_online=lambda: True,
        walk_interval_seconds=WEEK,
    )


def drain(queue: ImageQueue) -> list[str]:
    out = []
    while (entry := queue.get_nowait()) is not None:
        out.append(entry.path)
    return out


async def processed(conn: Conn | asyncpg.Pool, *paths: str) -> None:
    await add_processed(conn, paths)


async def results(conn: Conn | asyncpg.Pool, *paths: str) -> None:
    await conn.executemany(
        "INSERT INTO face_metadata (image_path, face_count, model, scale) VALUES ($1, 0, 'hog', 1)",
        [(p,) for p in paths],
    )


async def test_changes_between_two_sweeps_are_each_seen_once(pool: asyncpg.Pool) -> None:
    s = sweeper(pool)
    await processed(pool, "a.jpg", "b.jpg")
    await pool.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ('raw.jpg', FALSE)")
    first = await s.sweep_changes()
    assert (first.changes, first.pending, first.queued) == (2, 2, 2)
    assert sorted(drain(s.queue)) == ["a.jpg", "b.jpg"]
    # Drained without outcomes: the rows are still pending, but their changes were read.
    await pool.execute("UPDATE ai_metadata SET is_processed = TRUE WHERE image_path = 'raw.jpg'")
    await processed(pool, "c.jpg")
    second = await s.sweep_changes()
    assert (second.changes, second.pending) == (2, 2)
    assert sorted(drain(s.queue)) == ["c.jpg", "raw.jpg"]
    third = await s.sweep_changes()
    assert (third.changes, third.pending, third.queued) == (0, 0, 0)
    async with pool.acquire() as conn:
        state = await changes.read_state(conn, WEEK)
    # The log is trimmed behind the watermark: what was read is gone.
    assert state is not None and state.backlog == 0 and state.watermark >= 4


async def test_a_deleted_row_is_marked_and_a_returning_one_unmarked(pool: asyncpg.Pool) -> None:
    s = sweeper(pool)
    await processed(pool, "gone.jpg", "kept.jpg")
    await results(pool, "gone.jpg", "kept.jpg")
    await s.sweep_changes()
    await pool.execute("DELETE FROM ai_metadata WHERE image_path = 'gone.jpg'")
    counts = await s.sweep_changes()
    assert counts.orphans == 1 and counts.pending == 0
    assert await pool.fetchval("SELECT image_path FROM face_metadata WHERE orphaned_at IS NOT NULL") == "gone.jpg"
    await processed(pool, "gone.jpg")
    back = await s.sweep_changes()
    assert back.restored == 1 and back.pending == 0


async def test_a_restart_resumes_the_log_and_the_walk(pool: asyncpg.Pool) -> None:
    paths = [f"r/{i:02}.jpg" for i in range(10)]
    await processed(pool, *paths)
    # The queue holds one page: the regular sweep defers with the rest of the log unread.
    before = sweeper(pool, ImageQueue(5))
    deferred = await before.sweep_changes()
    assert deferred.deferred and deferred.changes == 4
    # A restart (a new sweeper, an empty queue) reads the rest, not the first page again.
    after = sweeper(pool)
    resumed = await after.sweep_changes()
    assert resumed.changes == 6 and sorted(drain(after.queue)) == paths[4:]
    # The walk, in chunks of one page, stopped after its first chunk by a restart.
    first = await sweeper(pool).sweep(pages=1)
    assert first.paused and not first.resumed
    seen = first.pending
    chunks = 0
    while True:
        chunk = await sweeper(pool).sweep(pages=1)  # every chunk a fresh process
        assert chunk.resumed
        seen += chunk.pending
        chunks += 1
        if not chunk.paused:
            break
        assert chunks < 10
    assert seen == len(paths)  # each row read once over the walk
    async with pool.acquire() as conn:
        state = await changes.state(conn, WEEK)
    assert state.walk_phase is None and state.walk_finished_at is not None and not state.walk_due
    assert state.walk_rows == len(paths)


async def test_a_truncate_and_refill_keeps_every_result(pool: asyncpg.Pool) -> None:
    paths = [f"t/{i:02}.jpg" for i in range(8)]
    await processed(pool, *paths)
    await results(pool, *paths)
    s = sweeper(pool)
    await s.sweep()  # the first walk
    await s.sweep_changes()
    await pool.execute("TRUNCATE ai_metadata")
    truncated = await s.sweep_changes()
    assert truncated.walk_requested
    assert await s.walk_due()
    walk = await s.sweep()  # the upstream has not refilled yet: every result is marked, none purged
    assert walk.orphans == len(paths) and walk.purged == 0
    assert not await s.walk_due()
    await processed(pool, *paths)
    refilled = await s.sweep_changes()
    assert refilled.restored == len(paths) and refilled.pending == 0 and refilled.queued == 0
    assert await pool.fetchval("SELECT count(*) FROM face_metadata WHERE orphaned_at IS NULL") == len(paths)


async def test_the_full_walk_finds_a_row_the_log_missed(pool: asyncpg.Pool) -> None:
    s = sweeper(pool)
    await s.sweep()
    # A write the trigger did not see (replication role: triggers do not fire).
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ('missed.jpg', TRUE)")
    assert (await s.sweep_changes()).pending == 0
    walk = await s.sweep()
    assert walk.pending == 1 and drain(s.queue) == ["missed.jpg"]


async def test_the_walk_position_moves_with_the_sweep_lock(pool: asyncpg.Pool, dsn: str) -> None:
    paths = [f"w/{i:02}.jpg" for i in range(12)]
    await processed(pool, *paths)
    one, two = sweeper(pool, instance="one"), sweeper(pool, instance="two")
    assert (await one.sweep(pages=1)).paused
    other = await asyncpg.connect(dsn)
    try:
        # While another instance holds the lock, a chunk is skipped and the position kept.
        assert await other.fetchval("SELECT pg_try_advisory_lock($1)", SWEEP_LOCK_KEY)
        assert (await two.sweep(pages=1)).skipped == "another instance is sweeping"
    finally:
        await other.close()
    taken = {"one": drain(one.queue), "two": []}
    turn = [two, one]
    for i in range(10):
        chunk = await turn[i % 2].sweep(pages=1)
        assert chunk.resumed
        taken[turn[i % 2].instance_id] += drain(turn[i % 2].queue)
        if not chunk.paused:
            break
    # Each instance continued where the other stopped: every row once, none twice.
    assert sorted(taken["one"] + taken["two"]) == paths
    assert taken["one"] and taken["two"]


class CrashingQueue(ImageQueue):
    """A queue whose instance dies (its sweep's connection terminated, the server then
    releasing the sweep's lock) once `at` paths are queued: a crash in the middle of a chunk."""

    def __init__(self, crash: Callable[[], None], at: int) -> None:
        super().__init__(1000)
        self.crash, self.at = crash, at

    def put(self, path: str, priority: Priority, *, redetect: bool = False) -> bool:
        queued = super().put(path, priority, redetect=redetect)
        if len(self) == self.at:
            self.crash()
        return queued


async def test_a_walk_cut_off_mid_chunk_is_continued_by_the_other_instance(
    pool: asyncpg.Pool, pg: PgServer, database: str
) -> None:
    paths = [f"x/{i:02}.jpg" for i in range(20)]
    await processed(pool, *paths)

    def terminate_the_sweeps_session() -> None:
        # The session that holds the sweep's advisory lock, i.e. the one walking.
        pg.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            f" AND ((classid::bigint << 32) | objid::bigint) = {SWEEP_LOCK_KEY}",
            database,
        )

    one = sweeper(pool, CrashingQueue(terminate_the_sweeps_session, 8), instance="one")
    two = sweeper(pool, instance="two")
    assert (await one.sweep(pages=2)).paused  # the retries page and one page of rows: paths 0-3, stored
    async with pool.acquire() as conn:
        stored = await changes.state(conn, WEEK)
    assert (stored.walk_phase, stored.walk_after) == ("pending", paths[3])
    # The next chunk (two pages) dies after its first page, before it stores its position:
    # the broken session comes out of the store as its own exception.
    with pytest.raises(StoreUnavailable):
        await one.sweep(pages=2)
    # The server released the dead session's lock: the other instance takes it and
    # continues the same walk from the stored point (re-reading the lost page, no more).
    walk = await two.sweep()
    assert walk.resumed and not walk.skipped
    assert drain(two.queue) == paths[4:]
    async with pool.acquire() as conn:
        done = await changes.state(conn, WEEK)
    assert done.walk_started_at == stored.walk_started_at and done.walk_phase is None and not done.walk_due


async def test_status_shows_the_log_and_the_walk(pool: asyncpg.Pool, dsn: str) -> None:
    await processed(pool, *[f"s/{i}.jpg" for i in range(10)])
    s = sweeper(pool)
    assert (await s.sweep(pages=1)).paused
    conn = await asyncpg.connect(dsn)
    try:
        report = await status.collect(conn, 30.0, walk_interval_seconds=WEEK)
    finally:
        await conn.close()
    assert report.sweep is not None
    shown = report.as_json()["sweep"]
    assert shown["changes_waiting"] == 10 and shown["walk"]["under_way"] and shown["walk"]["phase"] == "pending"
    assert "changes waiting" in status.render_table(report) and "full walk" in status.render_table(report)


async def test_the_walks_orphan_pass_goes_in_windows_and_resumes(pool: asyncpg.Pool) -> None:
    gone = [f"o/{i:03}.jpg" for i in range(100)]
    await results(pool, *gone)  # results whose ai_metadata rows are gone
    phases: list[str] = []
    marked = 0
    for _ in range(20):
        chunk = await sweeper(pool).sweep(pages=1)  # a window of 40 results per chunk
        marked += chunk.orphans
        async with pool.acquire() as conn:
            state = await changes.state(conn, WEEK)
        if not chunk.paused:
            break
        phases.append(f"{state.walk_phase}:{state.walk_after}")
    assert marked == len(gone)
    # Paused inside the orphan pass, a window (40 rows) at a time, and continued from there.
    assert {"orphans:face_metadata:o/039.jpg", "orphans:face_metadata:o/079.jpg"} <= set(phases)
    assert await pool.fetchval("SELECT count(*) FROM face_metadata WHERE orphaned_at IS NULL") == 0


async def test_the_background_walk_runs_when_asked_in_paused_chunks(
    pool: asyncpg.Pool, make_config: Callable[..., Config]
) -> None:
    config = make_config(sweep={"walk_chunk_pages": 1, "walk_pause_seconds": 0.01, "interval_seconds": 3600.0})
    paths = [f"b/{i:03}.jpg" for i in range(30)]
    s = sweeper(pool)
    await s.sweep()  # a walk just finished: none is due by the interval
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")  # the log misses them
        await processed(conn, *paths)
    # Asked for, as when an instance is found gone (what it had queued is in no queue now).
    await s.request_walk()
    scheduler, halt = SweepScheduler(config, "me"), asyncio.Event()
    task = asyncio.create_task(scheduler.run_walk(s, halt))
    try:

        async def walked() -> bool:
            return len(s.queue) == len(paths) and not await s.walk_due()

        await wait_until(walked, 60, "the walk asked for")
    finally:
        halt.set()
        await asyncio.wait_for(task, 30)
    assert sorted(drain(s.queue)) == paths
    assert s.walked > 2  # one page of 4 rows per chunk (the first walk was one more)
