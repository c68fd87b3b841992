"""The reactor in this process, on the real database, with the real detector on real photos:
notifications, listener loss, a PostgreSQL restart, and poison images."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import asyncpg
import pytest

from reactor.config import Config
from reactor.core.service import Reactor
from reactor.failure_types import ErrorType
from reactor.ops import samples
from tests.pg import PgServer
from tests.reactor_support import add_processed, count_results, outcomes, reported, wait_until, write_photos

# Two lanes side by side in every test here (conftest's make_config starts one).
HOG = {"model": "hog", "timeout_seconds": 60.0, "workers": 2}
NO_POLLING = {"interval_seconds": 3600.0, "poll_seconds": 3600.0}
FAST_LISTENER = {"probe_interval_seconds": 1.0, "reconnect_max_seconds": 1.0}


@contextlib.asynccontextmanager
async def running(config: Config, dsn: str, instance_id: str | None = None) -> AsyncIterator[Reactor]:
    reactor = Reactor(config, dsn, instance_id=instance_id)
    stop = asyncio.Event()
    task = asyncio.create_task(reactor.run(stop))

    async def started() -> bool:
        if task.done():
            task.result()
            raise AssertionError("the reactor stopped on its own")
        return reactor.sweeper is not None and reactor.sweeper.completed >= 1

    try:
        # Listening, and the start-up sweep (run after LISTEN) is over.
        await wait_until(started, 60, f"{instance_id or 'the reactor'} to start")
        yield reactor
    finally:
        stop.set()
        await asyncio.wait_for(task, 150)


@contextlib.asynccontextmanager
async def connection(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def test_notifications_alone_drive_detection(make_config: Callable[..., Config], dsn: str, share: Path) -> None:
    config = make_config(detector=HOG, sweep=NO_POLLING)
    paths = write_photos(share, [f"notify/{i:02}.jpg" for i in range(6)])
    async with running(config, dsn) as reactor, connection(dsn) as conn:
        assert reactor.sweeper is not None
        await add_processed(conn, paths)

        async def all_done() -> bool:
            return await count_results(conn, paths) == len(paths)

        await wait_until(all_done, 90, "results for every notified row")
        # No sweep ran after start-up: the notifications alone did it.
        assert reactor.sweeper.completed == 1
        faces = await conn.fetch("SELECT face_count FROM face_metadata WHERE image_path = ANY($1)", paths)
        assert [r["face_count"] for r in faces] == [1] * len(paths)
        assert await conn.fetchval("SELECT count(*) FROM face_detections") == len(paths)
    async with connection(dsn) as conn:
        assert await conn.fetchval("SELECT count(*) FROM reactor_claims") == 0
        assert await conn.fetchval("SELECT count(*) FROM reactor_instances") == 0


async def test_listener_killed_rows_arrive_through_reconnect_and_catch_up(
    make_config: Callable[..., Config], dsn: str, share: Path
) -> None:
    config = make_config(detector=HOG, sweep=NO_POLLING, database=FAST_LISTENER)
    during = write_photos(share, [f"during/{i}.jpg" for i in range(4)])
    after = write_photos(share, [f"after/{i}.jpg" for i in range(2)])
    async with running(config, dsn) as reactor, connection(dsn) as conn:
        assert reactor.listener is not None and reactor.sweeper is not None
        pid = await conn.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name LIKE 'face-reactor-listener%'"
        )
        assert pid is not None
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
        await add_processed(conn, during)
        listener = reactor.listener

        async def reconnected() -> bool:
            return listener.reconnects >= 1 and listener.state == "connected"

        await wait_until(reconnected, 30, "the listener to reconnect")

        async def during_done() -> bool:
            return await count_results(conn, during) == len(during)

        await wait_until(during_done, 90, "rows inserted while the listener was down")
        # The catch-up sweep after the reconnect, counted after its last statement.
        sweeper = reactor.sweeper
        assert sweeper is not None
        await reported(lambda: sweeper.completed >= 2, True, "the catch-up sweep")
        await add_processed(conn, after)

        async def after_done() -> bool:
            return await count_results(conn, after) == len(after)

        await wait_until(after_done, 90, "rows notified after the reconnect")


async def test_postgres_restart_mid_backlog_loses_nothing(
    make_config: Callable[..., Config], dsn: str, share: Path, pg: PgServer
) -> None:
    config = make_config(detector=HOG, sweep={"interval_seconds": 3600.0, "poll_seconds": 1.0}, database=FAST_LISTENER)
    paths = write_photos(share, [f"restart/{i:02}.jpg" for i in range(24)])
    async with running(config, dsn) as reactor:
        async with connection(dsn) as conn:
            await add_processed(conn, paths)

            async def some_done() -> bool:
                return await count_results(conn, paths) >= 3

            await wait_until(some_done, 90, "the backlog to start")
        await asyncio.to_thread(pg.restart)
        async with connection(dsn) as conn:

            async def every_row_has_an_outcome() -> bool:
                found = await outcomes(conn)
                return all(p in found for p in paths)

            await wait_until(every_row_has_an_outcome, 120, "an outcome for every row after the restart")
            found = await outcomes(conn)
            assert {p: found[p] for p in paths} == {p: ["result"] for p in paths}
        listener = reactor.listener
        assert listener is not None
        await reported(lambda: listener.reconnects >= 1, True, "the listener's reconnect")


async def test_poison_images_get_typed_failures_with_backoff_then_permanent(
    make_config: Callable[..., Config], dsn: str, share: Path
) -> None:
    retry = {
        "base_seconds": 60.0,
        "multiplier": 3.0,
        "max_delay_seconds": 3600.0,
        "jitter": 0.1,
        "max_attempts": 3,
        "max_attempts_permanent": 2,
    }
    config = make_config(detector=HOG, sweep=NO_POLLING, retry=retry)
    good = write_photos(share, ["good/1.jpg", "good/2.jpg"])
    bad = samples.build_library(
        share, include=lambda name: name in ("bad/truncated.jpg", "bad/empty.jpg", "bad/notes.jpg")
    )
    expected: dict[str, Any] = {s.name: s.failure for s in bad}
    expected["gone/missing.jpg"] = ErrorType.MISSING
    invalid = ["/abs/photo.jpg", "face_crops/crop.jpg", "a/../b.jpg"]
    expected.update({p: ErrorType.INVALID_PATH for p in invalid})
    everything = good + list(expected)
    async with running(config, dsn) as reactor, connection(dsn) as conn:
        await add_processed(conn, everything)

        async def all_recorded() -> bool:
            found = await outcomes(conn)
            # A JPEG cut short is `incomplete` first, and corrupt once found unchanged a window later.
            return len(found) == len(everything) and ["failure:incomplete"] not in found.values()

        await wait_until(all_recorded, 90, "an outcome for every row")
        found = await outcomes(conn)
        assert {p: found[p] for p in good} == {p: ["result"] for p in good}
        assert {p: found[p] for p in expected} == {p: [f"failure:{t.value}"] for p, t in expected.items()}
        rows = {r["image_path"]: r for r in await conn.fetch("SELECT * FROM face_detection_failures")}
        for path, error_type in expected.items():
            row = rows[path]
            assert row["retry_count"] == 1
            assert row["permanently_failed"] is (error_type is ErrorType.INVALID_PATH)
            if not row["permanently_failed"]:
                # First try: base 60 s, +/- 10 % jitter.
                delay = row["next_retry_after"] - row["last_failure_at"]
                assert timedelta(seconds=53) < delay < timedelta(seconds=67)

        async def retry_now() -> None:
            # What `reactor failures retry` does: make them due, then ask for a sweep.
            before = await conn.fetchval("SELECT sum(retry_count) FROM face_detection_failures")
            due = await conn.fetchval(
                "WITH d AS (UPDATE face_detection_failures SET next_retry_after = now() "
                "WHERE NOT permanently_failed RETURNING 1) SELECT count(*) FROM d"
            )
            reactor.request_sweep()

            async def retried() -> bool:
                return cast(
                    bool, await conn.fetchval("SELECT sum(retry_count) FROM face_detection_failures") == before + due
                )

            await wait_until(retried, 90, "the due retries to run")

        await retry_now()
        rows = {r["image_path"]: r for r in await conn.fetch("SELECT * FROM face_detection_failures")}
        for path, error_type in expected.items():
            if error_type is ErrorType.INVALID_PATH:
                assert rows[path]["retry_count"] == 1  # never retried
            elif error_type.permanent:
                assert rows[path]["retry_count"] == 2 and rows[path]["permanently_failed"]
            else:
                assert rows[path]["retry_count"] == 2 and not rows[path]["permanently_failed"]
                # Second try: 60 * 3 = 180 s, +/- 10 %.
                delay = rows[path]["next_retry_after"] - rows[path]["last_failure_at"]
                assert timedelta(seconds=160) < delay < timedelta(seconds=200)
        await retry_now()
        missing = cast(
            asyncpg.Record,
            await conn.fetchrow("SELECT * FROM face_detection_failures WHERE image_path = 'gone/missing.jpg'"),
        )
        assert missing["retry_count"] == 3 and missing["permanently_failed"]
        assert await conn.fetchval("SELECT count(*) FROM face_detection_failures WHERE NOT permanently_failed") == 0
        assert await conn.fetchval("SELECT count(*) FROM face_metadata WHERE image_path <> ALL($1)", good) == 0


@pytest.mark.parametrize("offline_reason", ["marker_missing"])
async def test_missing_is_not_recorded_while_the_share_is_offline(
    make_config: Callable[..., Config], dsn: str, share: Path, offline_reason: str
) -> None:
    config = make_config(detector=HOG, sweep=NO_POLLING)
    async with running(config, dsn) as reactor, connection(dsn) as conn:
        (share / ".reactor-share").unlink()
        reactor.share.check()
        assert reactor.share.reason == offline_reason
        await add_processed(conn, ["offline/missing.jpg"])

        async def queued_or_held() -> bool:
            return "offline/missing.jpg" in reactor.queue or reactor.health_snapshot()["current_image"] is not None

        await wait_until(queued_or_held, 30, "the notification to be queued")
        assert await conn.fetchval("SELECT count(*) FROM face_detection_failures") == 0
        write_photos(share, ["offline/missing.jpg"])
        (share / ".reactor-share").write_text("marker\n")
        reactor.share.check()

        async def done() -> bool:
            return await count_results(conn, ["offline/missing.jpg"]) == 1

        await wait_until(done, 60, "detection to resume when the share is back")
        assert await conn.fetchval("SELECT count(*) FROM face_detection_failures") == 0


async def test_database_down_at_start_is_waited_for(
    make_config: Callable[..., Config], dsn: str, share: Path, pg: PgServer
) -> None:
    config = make_config(detector=HOG, sweep=NO_POLLING, database=FAST_LISTENER)
    paths = write_photos(share, ["late/1.jpg"])
    await asyncio.to_thread(pg.stop)
    running_again = False
    reactor = Reactor(config, dsn)
    stop = asyncio.Event()
    task = asyncio.create_task(reactor.run(stop))
    try:

        async def waiting_for_database() -> bool:
            return reactor.health_snapshot()["database"] == "unavailable" and not task.done()

        await wait_until(waiting_for_database, 30, "the reactor to notice the database is down")
        await asyncio.to_thread(pg.start)
        running_again = True

        async def started() -> bool:
            return reactor.sweeper is not None and reactor.sweeper.completed >= 1

        await wait_until(started, 60, "the reactor to start once the database is up")
        async with connection(dsn) as conn:
            await add_processed(conn, paths)

            async def done() -> bool:
                return await count_results(conn, paths) == 1

            await wait_until(done, 60, "the row to be detected")
    finally:
        if not running_again:  # the rest of the session needs the server
            await asyncio.to_thread(pg.start)
        stop.set()
        await asyncio.wait_for(task, 150)


async def test_path_the_schema_rejects_is_recorded_not_fatal(
    make_config: Callable[..., Config], dsn: str, share: Path
) -> None:
    # Configured derived folders that omit "thumbs": the schema's floor still rejects it.
    config = make_config(detector=HOG, sweep=NO_POLLING, images={"root": str(share), "derived_folders": ["crops"]})
    paths = write_photos(share, ["thumbs/a.jpg", "ok/b.jpg"])
    async with running(config, dsn) as reactor, connection(dsn) as conn:
        await add_processed(conn, paths)

        async def both() -> bool:
            return len(await outcomes(conn)) == 2

        await wait_until(both, 60, "both rows to get an outcome")
        assert await outcomes(conn) == {"thumbs/a.jpg": ["failure:invalid_path"], "ok/b.jpg": ["result"]}
        assert reactor.supervisor.restarts().get("detection") == 0


async def test_bulk_hint_sweeps_and_deleted_hint_marks_the_results_orphaned(
    make_config: Callable[..., Config], dsn: str, share: Path
) -> None:
    config = make_config(detector=HOG, sweep=NO_POLLING)
    paths = write_photos(share, ["bulk/1.jpg", "bulk/2.jpg"])
    async with running(config, dsn) as reactor, connection(dsn) as conn:
        assert reactor.sweeper is not None
        # Rows whose own notifications never come (only their change-log rows, as the
        # trigger writes them for a statement past its bulk threshold); then the bulk hint.
        await conn.execute("ALTER TABLE ai_metadata DISABLE TRIGGER USER")
        await add_processed(conn, paths)
        await conn.execute("ALTER TABLE ai_metadata ENABLE TRIGGER USER")
        await conn.execute("SELECT reactor_log_changes($1::text[])", paths)
        await conn.execute("""SELECT pg_notify('face_reactor', '{"type": "bulk", "count": 2}')""")

        async def both_done() -> bool:
            return await count_results(conn, paths) == 2

        await wait_until(both_done, 60, "the sweep a bulk hint asks for")
        sweeper = reactor.sweeper
        assert sweeper is not None
        await reported(lambda: sweeper.completed, 2, "the sweep the bulk hint asked for")
        await conn.execute("DELETE FROM ai_metadata WHERE image_path = $1", paths[0])

        async def orphan_marked() -> bool:
            return bool(
                await conn.fetchval("SELECT orphaned_at IS NOT NULL FROM face_metadata WHERE image_path = $1", paths[0])
            )

        # Held, not deleted: the grace period (sweep.orphan_grace_hours) comes first.
        await wait_until(orphan_marked, 30, "the deleted row's result to be marked orphaned")
        assert await count_results(conn, paths) == 2
        assert await conn.fetchval("SELECT count(*) FROM face_detections WHERE image_path = $1", paths[0]) == 1
