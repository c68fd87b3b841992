"""Several instances split the work instead of racing for it (issue 28).

A processed notification is queued only by the path's owner (its md5 modulo the live
instances); each instance reads its own share of the change log, with or without the
sweep's lock, and a share left unread for a lease is taken over. A stopping instance
hands its queue back to the log; one gone without stopping asks for the full walk. The
orphan stats count a table only as far as the purge bound depends on it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from reactor.config import Config
from reactor.core.queue import ImageQueue
from reactor.core.scheduler import SweepScheduler
from reactor.core.service import Reactor
from reactor.core.sweep import Sweeper
from reactor.core.work_share import WorkShare
from reactor.store import changes, orphans
from reactor.store.sweeps import LOCK_KEY as SWEEP_LOCK_KEY
from tests.reactor_support import add_processed, wait_until, write_photos
from tests.test_changes import drain
from tests.test_reactor import running

WEEK = 7 * 24 * 3600.0
# Paths that exercise the hash on more than ASCII.
PATHS = [f"share/{i:03}.jpg" for i in range(90)] + ["é/ü.png", "日本/写真.jpg", "a b/c'd.JPG"]


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(dsn, min_size=1, max_size=6)
    try:
        yield p
    finally:
        await p.close()


def sweeper(pool: asyncpg.Pool, instance: str, live: list[str], lease: float = 60.0) -> Sweeper:
    share = WorkShare(instance)
    share.update(live)
    return Sweeper(
        pool,
        ImageQueue(1000),
        page_size=7,
        lease_seconds=lease,
        instance_id=instance,
        share_online=lambda: True,
        walk_interval_seconds=WEEK,
        work_share=share,
    )


@contextlib.asynccontextmanager
async def lock_held_elsewhere(dsn: str) -> AsyncIterator[None]:
    """The sweep's lock, held by a connection of no instance here."""
    other = await asyncpg.connect(dsn)
    try:
        assert await other.fetchval("SELECT pg_try_advisory_lock($1)", SWEEP_LOCK_KEY)
        yield
    finally:
        await other.close()


async def test_a_paths_share_is_the_same_in_python_and_in_sql(pool: asyncpg.Pool) -> None:
    for count in (2, 3, 4, 7):
        rows = await pool.fetch(changes.Q.share_of, PATHS, count)
        assert {r["image_path"]: r["share"] for r in rows} == {p: changes.share_of(p, count) for p in PATHS}
    # Every share gets some of the paths: the split is not degenerate.
    assert {changes.share_of(p, 4) for p in PATHS} == {0, 1, 2, 3}


async def test_instances_read_their_own_shares_of_the_log_together(pool: asyncpg.Pool, dsn: str) -> None:
    await add_processed(pool, PATHS)
    live = ["a", "b", "c"]
    sweepers = [sweeper(pool, i, live) for i in live]
    # The lock is another's: each instance still reads its share (a storm worked by all).
    async with lock_held_elsewhere(dsn):
        counts = await asyncio.gather(*(s.sweep_changes(share_log=True) for s in sweepers))
    assert all(c.skipped == "another instance is sweeping" for c in counts)
    taken = [set(drain(s.queue)) for s in sweepers]
    for rank, got in enumerate(taken):
        assert got == {p for p in PATHS if changes.share_of(p, 3) == rank}
    assert sum(c.changes for c in counts) == len(PATHS)
    assert await pool.fetchval("SELECT count(*) FROM reactor_changes") == 0
    # Without share_log (`reactor sweep --once`), a skipped sweep reads nothing.
    await pool.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ('late.jpg', TRUE)")
    async with lock_held_elsewhere(dsn):
        assert [(await s.sweep_changes()).changes for s in sweepers] == [0, 0, 0]
    assert await pool.fetchval("SELECT count(*) FROM reactor_changes") == 1


async def test_a_share_left_unread_for_a_lease_is_taken_over(pool: asyncpg.Pool) -> None:
    await add_processed(pool, PATHS)
    # b is live but does not read its share (busy, or gone before its heartbeat went stale).
    a = sweeper(pool, "a", ["a", "b"])
    first = await a.sweep_changes(share_log=True)
    mine = {p for p in PATHS if changes.share_of(p, 2) == 0}
    assert set(drain(a.queue)) == mine and first.changes == len(mine)
    await pool.execute("UPDATE reactor_changes SET changed_at = now() - interval '2 minutes'")
    second = await a.sweep_changes(share_log=True)
    assert set(drain(a.queue)) == set(PATHS) - mine and second.changes == len(PATHS) - len(mine)
    assert await pool.fetchval("SELECT count(*) FROM reactor_changes") == 0


async def test_the_orphan_stats_count_a_table_only_as_far_as_the_bound_needs(pool: asyncpg.Pool) -> None:
    policy = orphans.OrphanPolicy(purge_max=10, purge_max_fraction=0.1, purge_min=2)
    assert policy.count_cap == 101
    await pool.executemany(
        "INSERT INTO face_metadata (image_path, face_count, model, scale, orphaned_at) VALUES ($1, 0, 'hog', 1, $2)",
        [(f"o/{i:03}.jpg", datetime.now(UTC) - timedelta(days=30) if i < 4 else None) for i in range(150)],
    )
    async with pool.acquire() as conn:
        stat = next(s for s in await orphans.stats(conn, policy) if s.table == orphans.RESULTS)
    # The bound of 150 rows, from a count that stopped at the cap; the marks from the index.
    assert (stat.total, stat.bound, stat.marked, stat.due) == (101, policy.bound(150), 4, 4)
    await pool.execute("DELETE FROM face_metadata WHERE image_path >= 'o/050.jpg'")
    async with pool.acquire() as conn:
        stat = next(s for s in await orphans.stats(conn, policy) if s.table == orphans.RESULTS)
    assert (stat.total, stat.bound) == (50, 5)


async def test_a_start_continues_the_walk_under_way_and_starts_no_new_one(
    pool: asyncpg.Pool, make_config: Callable[..., Config]
) -> None:
    paths = [f"walk/{i:02}.jpg" for i in range(30)]
    await add_processed(pool, paths)
    before = sweeper(pool, "me", [])
    assert (await before.sweep(pages=2)).paused  # a chunk (the retries page, a page of rows), then a stop
    async with pool.acquire() as conn:
        stopped = await changes.state(conn, WEEK)
    assert stopped.walk_phase == "pending" and stopped.walk_after
    # The next process: its background walk continues from the stored point.
    config = make_config(sweep={"walk_chunk_pages": 1, "walk_pause_seconds": 0.01, "interval_seconds": 3600.0})
    after = sweeper(pool, "me", [])
    scheduler, halt = SweepScheduler(config, "me"), asyncio.Event()
    task = asyncio.create_task(scheduler.run_walk(after, halt))
    try:

        async def finished() -> bool:
            async with pool.acquire() as conn:
                return (await changes.state(conn, WEEK)).walk_finished_at is not None

        await wait_until(finished, 60, "the walk to finish")
    finally:
        halt.set()
        await asyncio.wait_for(task, 30)
    async with pool.acquire() as conn:
        done = await changes.state(conn, WEEK)
    # The same walk (its start unchanged), each row read once, and no second walk.
    assert done.walk_started_at == stopped.walk_started_at
    assert done.walk_rows == len(paths) and not done.walk_due and done.walk_phase is None
    assert sorted(drain(before.queue) + drain(after.queue)) == paths


async def test_an_instance_gone_without_a_clean_stop_asks_for_the_walk(
    pool: asyncpg.Pool, make_config: Callable[..., Config], dsn: str
) -> None:
    s = sweeper(pool, "me", [])
    await s.sweep()
    assert not await s.walk_due()
    stale = datetime.now(UTC) - timedelta(hours=1)
    await pool.execute(
        "INSERT INTO reactor_instances (instance_id, hostname, pid, started_at, heartbeat_at, state)"
        " VALUES ('crashed', 'h', 1, $1, $1, '{}'), ('live', 'h', 2, now(), now(), '{}')",
        stale,
    )
    reactor = Reactor(make_config(), dsn, instance_id="me")
    async with pool.acquire() as conn:
        await reactor.take_gone_instances(conn, 30.0)
    assert await s.walk_due()
    assert sorted(await pool.fetchval("SELECT array_agg(instance_id) FROM reactor_instances")) == ["live"]
    await s.sweep()
    # An earlier process of this very id that did not remove its row counts as gone too.
    await pool.execute(
        "INSERT INTO reactor_instances (instance_id, hostname, pid, started_at, heartbeat_at, state)"
        " VALUES ('me', 'h', 3, $1, now(), '{}')",
        reactor.started_at - timedelta(minutes=1),
    )
    async with pool.acquire() as conn:
        await reactor.take_gone_instances(conn, 30.0)
    assert await s.walk_due()


async def test_two_reactors_split_the_notified_rows_and_a_stop_hands_its_queue_back(
    make_config: Callable[..., Config], dsn: str, share: Path, pool: asyncpg.Pool
) -> None:
    config = make_config(
        detector={"model": "hog", "timeout_seconds": 60.0, "workers": 1},
        sweep={"interval_seconds": 3600.0, "poll_seconds": 3600.0},
        health={"enabled": False, "heartbeat_seconds": 2.0},
    )
    # A heartbeat of 2 s: an instance counts as gone after 6 s without one, which a loaded
    # machine's event loop never takes (the shares would change under the test).
    paths = write_photos(share, [f"split/{i:02}.jpg" for i in range(10)])
    async with running(config, dsn, "inst-a") as a, running(config, dsn, "inst-b") as b:

        async def both_counted() -> bool:
            return a.work_share.count == 2 and b.work_share.count == 2

        await wait_until(both_counted, 60, "each instance to see the other's heartbeat")
        await add_processed(pool, paths)

        async def all_done() -> bool:
            return bool(await pool.fetchval("SELECT count(*) FROM face_metadata") == len(paths))

        await wait_until(all_done, 120, "a result for every row")
        # Each image detected by its owner, claimed once: no instance tried another's.
        owners = {r["image_path"]: r["instance_id"] for r in await pool.fetch("SELECT * FROM face_metadata")}
        assert owners == {p: ("inst-a", "inst-b")[changes.share_of(p, 2)] for p in paths}
        assert await pool.fetchval("SELECT last_value FROM reactor_claim_token_seq") == len(paths)

        # Detection paused (the share offline): what b has queued stays queued.
        (share / ".reactor-share").unlink()
        b.share.check()
        assert not b.share.online
        await pool.execute("DELETE FROM reactor_changes")
        held = write_photos(share, [f"held/{i:02}.jpg" for i in range(12)])
        await add_processed(pool, held)
        theirs = {p for p in held if changes.share_of(p, 2) == 1}

        async def queued() -> bool:
            # A lane already waiting for work takes one more image before it pauses.
            done = {r["image_path"] for r in await pool.fetch("SELECT image_path FROM face_metadata")}
            return set(b.queue.paths()) | set(b.lanes.in_flight) | set(b.lanes.current) | (done & theirs) == theirs

        await wait_until(queued, 60, "b to queue its share of the notified rows")
        await pool.execute("DELETE FROM reactor_changes")  # as if a sweep had read them
        stopping = set(b.queue.paths()) | set(b.lanes.in_flight) | set(b.lanes.current)
    # b stopped with those queued: they are back in the change log for any instance's sweep
    # (but the image in flight, which the shutdown lets finish).
    logged = {r["image_path"] for r in await pool.fetch("SELECT image_path FROM reactor_changes")}
    done = {r["image_path"] for r in await pool.fetch("SELECT image_path FROM face_metadata")}
    assert stopping - done and stopping - done <= logged
