"""Claims, persistence and sweep queries against the real PostgreSQL schema."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import cast

import asyncpg
import pytest

from reactor.config import RetryConfig
from reactor.core.queue import ImageQueue, Priority
from reactor.core.sweep import SweepCounts, Sweeper
from reactor.detector.types import Detection, DetectionFailure, Face
from reactor.failure_types import ErrorType
from reactor.store import claims, errors, outcomes
from reactor.store.claims import Claim
from reactor.store.dbtypes import Conn
from reactor.store.schema import failure_columns
from reactor.store.sweeps import LOCK_KEY as SWEEP_LOCK_KEY
from tests.peek import priority_of

RETRY = RetryConfig(
    base_seconds=10.0, multiplier=2.0, max_delay_seconds=35.0, jitter=0.0, max_attempts=3, max_attempts_permanent=2
)


def face(i: int) -> Face:
    return Face(top=10 + i, right=60 + i, bottom=60 + i, left=10 + i, score=0.9, encoding=tuple([0.01 * i] * 128))


def detection(n: int) -> Detection:
    return Detection(
        faces=tuple(face(i) for i in range(n)),
        model="hog",
        scale=1.0,
        original_size=(640, 480),
        decode_ms=1.0,
        detect_ms=2.0,
        encode_ms=3.0,
        file_size_bytes=1234,
    )


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(dsn, min_size=1, max_size=3)
    assert p is not None
    yield p
    await p.close()


async def processed(conn: Conn, *paths: str) -> None:
    await conn.executemany(
        "INSERT INTO ai_metadata (image_path, is_processed) VALUES ($1, TRUE)", [(p,) for p in paths]
    )


async def test_claim_is_exclusive_until_the_lease_expires(conn: asyncpg.Connection) -> None:
    await processed(conn, "a.jpg")
    first = await claims.claim(conn, "a.jpg", "one", 60.0)
    assert isinstance(first, Claim) and first.attempt == 1
    assert await claims.claim(conn, "a.jpg", "two", 60.0) == "claimed_elsewhere"
    # An expired lease is taken over with a new token; the old token is fenced.
    await conn.execute("UPDATE reactor_claims SET lease_until = now() - interval '1 second'")
    second = await claims.claim(conn, "a.jpg", "two", 60.0)
    assert isinstance(second, Claim) and second.token > first.token
    with pytest.raises(errors.Fenced):
        await outcomes.record_success(conn, first, detection(1), "one")
    await outcomes.record_success(conn, second, detection(2), "two")
    row = cast(asyncpg.Record, await conn.fetchrow("SELECT face_count, instance_id, claim_token FROM face_metadata"))
    assert dict(row) == {"face_count": 2, "instance_id": "two", "claim_token": second.token}
    assert await conn.fetchval("SELECT count(*) FROM reactor_claims") == 0


async def test_claim_rechecks_eligibility_in_the_same_transaction(conn: asyncpg.Connection) -> None:
    await processed(conn, "done.jpg", "perm.jpg", "later.jpg")
    await conn.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ('raw.jpg', FALSE)")
    c = await claims.claim(conn, "done.jpg", "one", 60.0)
    assert isinstance(c, Claim)
    await outcomes.record_success(conn, c, detection(0), "one")
    assert await claims.claim(conn, "done.jpg", "two", 60.0) == "done"
    assert isinstance(await claims.claim(conn, "done.jpg", "two", 60.0, redetect=True), Claim)
    assert await claims.claim(conn, "raw.jpg", "two", 60.0) == "not_processed"
    await conn.execute(
        "INSERT INTO face_detection_failures (image_path, retry_count, permanently_failed, next_retry_after) "
        "VALUES ('perm.jpg', 2, TRUE, now()), ('later.jpg', 1, FALSE, now() + interval '1 hour')"
    )
    assert await claims.claim(conn, "perm.jpg", "two", 60.0) == "permanently_failed"
    assert await claims.claim(conn, "later.jpg", "two", 60.0) == "backing_off"
    manual = await claims.claim(conn, "perm.jpg", "two", 60.0, manual=True)
    assert isinstance(manual, Claim) and manual.attempt == 3
    # A rejected claim was rolled back: no claim rows except the two taken.
    assert await conn.fetchval("SELECT count(*) FROM reactor_claims") == 2


async def test_success_is_idempotent_and_clears_the_failure(conn: asyncpg.Connection) -> None:
    await processed(conn, "x/y.jpg")
    failure = DetectionFailure(ErrorType.TIMEOUT, "slow", scale=0.75)
    await outcomes.record_failure(conn, "x/y.jpg", failure, RETRY, await failure_columns(conn))
    await conn.execute("UPDATE face_detection_failures SET next_retry_after = now()")
    for faces in (3, 2):
        c = await claims.claim(conn, "x/y.jpg", "one", 60.0, redetect=True)
        assert isinstance(c, Claim)
        if faces == 3:
            assert c.last_scale == pytest.approx(0.75)
        await outcomes.record_success(conn, c, detection(faces), "one")
    assert await conn.fetchval("SELECT count(*) FROM face_metadata") == 1
    assert await conn.fetchval("SELECT face_count FROM face_metadata") == 2
    assert await conn.fetchval("SELECT count(*) FROM face_detections WHERE image_path = 'x/y.jpg'") == 2
    assert await conn.fetchval("SELECT count(*) FROM face_detection_failures") == 0
    enc = await conn.fetchval("SELECT encoding FROM face_detections WHERE face_index = 1")
    assert len(enc) == 128


async def test_failure_backoff_and_permanent_state(conn: asyncpg.Connection) -> None:
    await processed(conn, "bad.jpg", "corrupt.jpg")
    cols = await failure_columns(conn)
    delays = []
    for _ in range(3):
        before = datetime.now(UTC)
        rec = await outcomes.record_failure(conn, "bad.jpg", DetectionFailure(ErrorType.CRASH, "boom"), RETRY, cols)
        delays.append((rec.next_retry_after - before).total_seconds())
    # base 10, multiplier 2, cap 35, no jitter: 10, 20, then permanent after 3 tries.
    assert delays[0] == pytest.approx(10, abs=2) and delays[1] == pytest.approx(20, abs=2)
    assert rec.retry_count == 3 and rec.permanently_failed
    assert await conn.fetchval("SELECT count(*) FROM face_metadata") == 0
    first = await outcomes.record_failure(
        conn,
        "corrupt.jpg",
        DetectionFailure(ErrorType.CORRUPT, "cut", original_size=(10, 20), file_size_bytes=99),
        RETRY,
        cols,
    )
    assert not first.permanently_failed
    second = await outcomes.record_failure(conn, "corrupt.jpg", DetectionFailure(ErrorType.CORRUPT, "cut"), RETRY, cols)
    assert second.permanently_failed and second.retry_count == 2
    row = cast(
        asyncpg.Record, await conn.fetchrow("SELECT * FROM face_detection_failures WHERE image_path = 'corrupt.jpg'")
    )
    assert (row["original_width"], row["original_height"], row["file_size_bytes"]) == (10, 20, 99)
    assert row["last_error_type"] == "corrupt"


async def test_legacy_failures_table_without_optional_columns(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "ALTER TABLE face_detection_failures DROP COLUMN file_size_bytes, DROP COLUMN last_attempted_scale"
    )
    cols = await failure_columns(conn)
    assert "file_size_bytes" not in cols
    await processed(conn, "old.jpg")
    rec = await outcomes.record_failure(
        conn, "old.jpg", DetectionFailure(ErrorType.OOM, "oom", scale=0.5, file_size_bytes=5), RETRY, cols
    )
    assert rec.retry_count == 1
    c = await claims.claim(conn, "old.jpg", "one", 60.0, manual=True)
    assert isinstance(c, Claim) and c.last_scale is None


async def test_invalid_paths_are_recorded_as_permanent_failures(conn: asyncpg.Connection) -> None:
    cols = await failure_columns(conn)
    for path in ("/etc/passwd", "../up.jpg", "face_crops/a.jpg"):
        rec = await outcomes.record_failure(conn, path, DetectionFailure(ErrorType.INVALID_PATH, "bad"), RETRY, cols)
        assert rec.permanently_failed and rec.retry_count == 1
    # The path rule still holds for every other failure type.
    with pytest.raises(errors.RejectedPath):
        await outcomes.record_failure(conn, "/abs.jpg", DetectionFailure(ErrorType.CORRUPT, "x"), RETRY, cols)


async def test_sweep_finds_pending_retries_and_orphans_page_by_page(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await processed(
            conn, *[f"p/{i:03}.jpg" for i in range(25)], "due.jpg", "notdue.jpg", "perm.jpg", "done.jpg", "claimed.jpg"
        )
        await conn.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ('unprocessed.jpg', FALSE)")
        await conn.execute(
            "INSERT INTO face_detection_failures (image_path, retry_count, next_retry_after, permanently_failed) "
            "VALUES ('due.jpg', 1, now() - interval '1 s', FALSE), ('notdue.jpg', 1, now() + interval '1 h', FALSE), "
            "('perm.jpg', 2, now(), TRUE), ('gone-failure.jpg', 1, now(), FALSE)"
        )
        await conn.execute(
            "INSERT INTO face_metadata (image_path, face_count, model, scale) "
            "VALUES ('done.jpg', 1, 'hog', 1), ('gone-result.jpg', 0, 'hog', 1)"
        )
        await conn.execute(
            "INSERT INTO reactor_claims (image_path, instance_id, token, lease_until) "
            "VALUES ('claimed.jpg', 'other', 1, now() + interval '1 h')"
        )
    queue = ImageQueue(100)
    sweeper = Sweeper(pool, queue, page_size=4, lease_seconds=60.0, instance_id="me", share_online=lambda: True)
    dry = await sweeper.sweep(dry_run=True)
    assert dry.paths["retry"] == ["due.jpg"]
    assert len(dry.paths["pending"]) == 25
    assert sorted(dry.paths["orphan"]) == ["gone-failure.jpg", "gone-result.jpg"]
    assert len(queue) == 0
    counts = await sweeper.sweep()
    assert (counts.retries, counts.pending, counts.orphans, counts.queued) == (1, 25, 2, 26)
    assert priority_of(queue, "due.jpg") is Priority.RETRY
    assert priority_of(queue, "p/024.jpg") is Priority.BACKLOG
    assert "claimed.jpg" not in queue and "notdue.jpg" not in queue and "perm.jpg" not in queue
    async with pool.acquire() as conn:
        # Orphans are marked, not deleted (reactor.store.orphans: the grace period comes first).
        assert await conn.fetchval("SELECT count(*) FROM face_metadata") == 2
        assert await conn.fetchval("SELECT count(*) FROM face_detection_failures") == 4
        assert await conn.fetchval("SELECT count(*) FROM face_metadata WHERE orphaned_at IS NOT NULL") == 1
        assert await conn.fetchval("SELECT count(*) FROM face_detection_failures WHERE orphaned_at IS NOT NULL") == 1


async def test_sweep_defers_instead_of_overfilling_the_queue(pool: asyncpg.Pool) -> None:
    paths = [f"q/{i:03}.jpg" for i in range(12)]
    async with pool.acquire() as conn:
        await processed(conn, *paths)
    queue = ImageQueue(5)
    sweeper = Sweeper(pool, queue, page_size=4, lease_seconds=60.0, instance_id="me", share_online=lambda: True)
    seen: list[str] = []
    for _ in range(10):
        counts = await sweeper.sweep()
        assert len(queue) <= 5 and queue.dropped == 0
        taken = [e.path for e in (queue.get_nowait() for _ in range(len(queue))) if e is not None]
        seen.extend(taken)
        async with pool.acquire() as conn:  # what the detection loop would do with them
            await conn.executemany(
                "INSERT INTO face_metadata (image_path, face_count, model, scale) VALUES ($1, 0, 'hog', 1)",
                [(p,) for p in taken],
            )
        if not counts.deferred:
            break
    assert sorted(seen) == paths


async def test_a_deferred_sweep_resumes_its_cycle_and_orphans_run_once_at_its_end(pool: asyncpg.Pool) -> None:
    paths = [f"r/{i:03}.jpg" for i in range(12)]
    async with pool.acquire() as conn:
        await processed(conn, *paths)
        await conn.execute(
            "INSERT INTO face_metadata (image_path, face_count, model, scale) VALUES ('gone.jpg', 0, 'hog', 1)"
        )
    queue = ImageQueue(5)
    sweeper = Sweeper(pool, queue, page_size=4, lease_seconds=60.0, instance_id="me", share_online=lambda: True)
    sweeps: list[SweepCounts] = []
    for _ in range(10):
        counts = await sweeper.sweep()
        sweeps.append(counts)
        # Drained without writing outcomes: every row is still pending. A sweep that started
        # again from the first path would find the same rows for ever.
        while queue.get_nowait() is not None:
            pass
        if not counts.deferred:
            break
    assert not sweeps[-1].deferred and len(sweeps) > 2
    assert sum(c.pending for c in sweeps) == len(paths)  # each row read once in the cycle
    assert [c.resumed for c in sweeps] == [False] + [True] * (len(sweeps) - 1)
    # The orphan pass ran once, when the cycle completed.
    assert [c.orphans for c in sweeps] == [0] * (len(sweeps) - 1) + [1]
    assert all(c.orphans_skipped == "the cycle continues after the deferral" for c in sweeps[:-1])
    assert sweeper.resume_at is None
    # The next sweep is a new cycle, from the first path.
    again = await sweeper.sweep()
    assert not again.resumed and again.pending >= 4


async def test_orphans_are_kept_while_the_share_is_offline(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await processed(conn, "keep.jpg")
        await conn.execute(
            "INSERT INTO face_metadata (image_path, face_count, model, scale) VALUES ('gone.jpg', 0, 'hog', 1)"
        )
    sweeper = Sweeper(
        pool, ImageQueue(10), page_size=10, lease_seconds=60.0, instance_id="me", share_online=lambda: False
    )
    counts = await sweeper.sweep()
    # Marked (no harm in that) but never purged while the share is offline.
    assert counts.purged == 0 and counts.orphans_skipped == "share offline"
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM face_metadata") == 1


async def test_only_one_instance_sweeps_at_a_time(pool: asyncpg.Pool, dsn: str) -> None:
    other = await asyncpg.connect(dsn)
    try:
        assert await other.fetchval("SELECT pg_try_advisory_lock($1)", SWEEP_LOCK_KEY)
        sweeper = Sweeper(
            pool, ImageQueue(10), page_size=10, lease_seconds=60.0, instance_id="me", share_online=lambda: True
        )
        counts = await sweeper.sweep()
        assert counts.skipped == "another instance is sweeping"
    finally:
        await other.close()
    assert (await sweeper.sweep()).skipped is None


async def test_stale_claims_are_purged_and_own_claims_retaken(conn: asyncpg.Connection) -> None:
    await processed(conn, "s.jpg")
    c1 = await claims.claim(conn, "s.jpg", "me", 60.0)
    # A claim of this same instance whose reply was lost can be taken again.
    c2 = await claims.claim(conn, "s.jpg", "me", 60.0)
    assert isinstance(c1, Claim) and isinstance(c2, Claim) and c2.token > c1.token
    assert await claims.renew(conn, c2, 60.0)
    assert not await claims.renew(conn, c1, 60.0)
    await conn.execute("UPDATE reactor_claims SET lease_until = $1", datetime.now(UTC) - timedelta(hours=2))
    assert await claims.purge_stale(conn, 600.0) == 1
    assert await claims.release_instance(conn, "me", [c1.token, c2.token]) == 0
    # The teardown releases only the claims whose tokens this process drew.
    await processed(conn, "t.jpg")
    mine, theirs = await claims.claim(conn, "s.jpg", "me", 60.0), await claims.claim(conn, "t.jpg", "me", 60.0)
    assert isinstance(mine, Claim) and isinstance(theirs, Claim)
    assert await claims.release_instance(conn, "me", [mine.token]) == 1
    assert await conn.fetchval("SELECT token FROM reactor_claims") == theirs.token


@pytest.mark.parametrize("error_type", [ErrorType.INCOMPLETE, ErrorType.CORRUPT])
async def test_a_lost_commit_reply_is_recognised_for_every_kind_of_outcome(
    conn: asyncpg.Connection, error_type: ErrorType
) -> None:
    """The landed check asks the server whether the write's transaction committed: an
    ``incomplete`` outcome counts no try, so no row tells that it landed."""
    await processed(conn, "cut.jpg", "other.jpg")
    cols = await failure_columns(conn)
    claim = await claims.claim(conn, "cut.jpg", "me", 60.0)
    assert isinstance(claim, Claim)
    failure = DetectionFailure(error_type, "cut short")
    await outcomes.record_failure(conn, claim.path, failure, RETRY, cols, claim)  # its reply "lost"
    with pytest.raises(errors.Fenced):
        await outcomes.record_failure(conn, claim.path, failure, RETRY, cols, claim)  # the retry
    assert await outcomes.landed(conn, claim)
    # A claim taken over before its write: fenced, and nothing of it landed.
    first = await claims.claim(conn, "other.jpg", "me", 60.0)
    second = await claims.claim(conn, "other.jpg", "me", 60.0)
    assert isinstance(first, Claim) and isinstance(second, Claim)
    with pytest.raises(errors.Fenced):
        await outcomes.record_failure(conn, first.path, failure, RETRY, cols, first)
    assert not await outcomes.landed(conn, first)
