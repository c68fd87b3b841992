import asyncio
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from reactor.config import Config, RetryConfig
from reactor.detector.types import Detection, DetectionFailure
from reactor.errors import UsageError
from reactor.failure_types import ErrorType
from reactor.handlers import failures as failures_handler
from reactor.ops import failures
from reactor.store import claims, errors, outcomes
from tests.ops_seed import invoke, seed
from tests.pg import PgServer

DETECTION = Detection(
    faces=(), model="hog", scale=1.0, original_size=(640, 480), decode_ms=1.0, detect_ms=2.0, encode_ms=3.0
)


async def run(config: Config, *argv: str) -> int:
    return await invoke(failures_handler.register, config, list(argv))


async def fetch_failures(dsn: str) -> dict[str, asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT image_path, last_error_type, retry_count, permanently_failed, last_error, "
            "next_retry_after <= now() AS due FROM face_detection_failures"
        )
    finally:
        await conn.close()
    return {r["image_path"]: r for r in rows}


async def test_list_filters(dsn: str, make_config: Callable[..., Config], capsys: pytest.CaptureFixture[str]) -> None:
    await seed(dsn)
    config = make_config()
    assert await run(config, "failures", "list", "--json") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["image_path"] for r in rows] == ["c/broken.jpg", "c/gone.jpg", "c/slow.jpg", "c/slower.jpg"]

    assert await run(config, "failures", "list", "--json", "--type", "timeout") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["image_path"], r["retry_count"]) for r in rows] == [("c/slow.jpg", 1), ("c/slower.jpg", 3)]

    assert await run(config, "failures", "list", "--permanent") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("c/broken.jpg  corrupt  tries=2  permanent  corrupt happened")
    assert out[1] == "1 failures"
    assert out[2].startswith("  corrupt: replace the file")


async def test_retry_paths_clears_backoff_and_notifies(
    dsn: str, make_config: Callable[..., Config], capsys: pytest.CaptureFixture[str]
) -> None:
    await seed(dsn)
    config = make_config()
    listener = await asyncpg.connect(dsn)
    got: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(config.database.channel, lambda *a: got.put_nowait(a[3]))
    try:
        code = await run(config, "failures", "retry", "c/broken.jpg", "c/slower.jpg", "no/such.jpg")
        captured = capsys.readouterr()
        assert code == 1
        assert captured.out.splitlines() == ["queued: c/broken.jpg", "queued: c/slower.jpg", "2 queued, 1 not found"]
        assert captured.err.splitlines() == ["not found: no/such.jpg (no failure recorded for it)"]
        payloads = [json.loads(await asyncio.wait_for(got.get(), 10)) for _ in range(2)]
        assert sorted(p["path"] for p in payloads) == ["c/broken.jpg", "c/slower.jpg"]
        assert {p["type"] for p in payloads} == {"manual"}
    finally:
        await listener.close()
    rows = await fetch_failures(dsn)
    for path in ("c/broken.jpg", "c/slower.jpg"):
        assert (rows[path]["permanently_failed"], rows[path]["retry_count"], rows[path]["due"]) == (False, 0, True)
    # Untouched: still its own schedule.
    assert rows["c/slow.jpg"]["retry_count"] == 1


async def test_retry_by_type_and_all(
    dsn: str, make_config: Callable[..., Config], capsys: pytest.CaptureFixture[str]
) -> None:
    await seed(dsn)
    config = make_config()
    assert await run(config, "failures", "retry", "--type", "timeout") == 0
    assert capsys.readouterr().out.splitlines()[-1] == "2 queued"
    rows = await fetch_failures(dsn)
    assert all(rows[p]["due"] and rows[p]["retry_count"] == 0 for p in ("c/slow.jpg", "c/slower.jpg"))
    assert rows["c/broken.jpg"]["permanently_failed"] is True

    assert await run(config, "failures", "retry", "--all") == 0
    assert capsys.readouterr().out.splitlines()[-1] == "4 queued"
    rows = await fetch_failures(dsn)
    assert not any(r["permanently_failed"] for r in rows.values())


async def test_retry_needs_exactly_one_selection(dsn: str, make_config: Callable[..., Config]) -> None:
    with pytest.raises(UsageError, match="exactly one"):
        await run(make_config(), "failures", "retry", "--all", "--type", "corrupt")
    with pytest.raises(UsageError, match="exactly one"):
        await run(make_config(), "failures", "retry")


async def test_forget_known_and_unknown(
    dsn: str, make_config: Callable[..., Config], capsys: pytest.CaptureFixture[str], share: Path
) -> None:
    await seed(dsn)
    # A local path under the share root means the same image as its database path.
    code = await run(make_config(), "failures", "forget", str(share / "c" / "gone.jpg"), "nope.jpg")
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out.splitlines() == ["forgotten: c/gone.jpg", "1 forgotten, 1 not found"]
    assert captured.err.splitlines() == ["not found: nope.jpg (no failure recorded for it)"]
    assert set(await fetch_failures(dsn)) == {"c/broken.jpg", "c/slow.jpg", "c/slower.jpg"}


async def test_blacklist_marks_permanent_and_drops_results(
    dsn: str, make_config: Callable[..., Config], capsys: pytest.CaptureFixture[str]
) -> None:
    await seed(dsn)
    code = await run(make_config(), "blacklist", "b/four.jpg", "c/slow.jpg", "--reason", "a painting")
    assert code == 0
    assert capsys.readouterr().out.splitlines()[-1] == "2 blacklisted"
    rows = await fetch_failures(dsn)
    for path in ("b/four.jpg", "c/slow.jpg"):
        row = rows[path]
        assert (row["last_error_type"], row["permanently_failed"], row["last_error"]) == (
            "blacklisted",
            True,
            "a painting",
        )
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM face_metadata WHERE image_path = 'b/four.jpg'") == 0
        assert await conn.fetchval("SELECT count(*) FROM face_detections WHERE image_path = 'b/four.jpg'") == 0
    finally:
        await conn.close()
    # Listed as permanent, by type.
    assert await run(make_config(), "failures", "list", "--type", "blacklisted", "--json") == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["image_path"], r["permanent"], r["next_retry_after"]) for r in listed] == [
        ("b/four.jpg", True, "never"),
        ("c/slow.jpg", True, "never"),
    ]


async def test_retry_by_type_never_takes_back_the_blacklist(
    dsn: str, make_config: Callable[..., Config], capsys: pytest.CaptureFixture[str]
) -> None:
    await seed(dsn)
    assert await run(make_config(), "blacklist", "c/slow.jpg", "--reason", "a painting") == 0
    # Like --all: every blacklisted image at once would undo choices made one by one.
    with pytest.raises(UsageError, match="taken back one by one, by name"):
        await run(make_config(), "failures", "retry", "--type", "blacklisted")
    assert (await fetch_failures(dsn))["c/slow.jpg"]["permanently_failed"] is True
    capsys.readouterr()
    assert await run(make_config(), "failures", "retry", "c/slow.jpg") == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 queued"


async def test_a_detection_in_flight_does_not_undo_the_blacklist(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO ai_metadata (image_path, is_processed) VALUES ('f/a.jpg', TRUE), ('f/b.jpg', TRUE)"
        )
        # Claimed and being detected when the blacklist comes: both outcome writes are fenced.
        in_flight = await claims.claim(conn, "f/a.jpg", "one", 60.0)
        assert isinstance(in_flight, claims.Claim)
        await failures.blacklist(conn, ["f/a.jpg"], "not a photo")
        with pytest.raises(errors.Fenced):
            await outcomes.record_success(conn, in_flight, DETECTION, "one")
        failure = DetectionFailure(ErrorType.TIMEOUT, "too slow")
        with pytest.raises(errors.Fenced):
            await outcomes.record_failure(conn, "f/a.jpg", failure, RetryConfig(), frozenset(), in_flight)
        row = await conn.fetchrow("SELECT last_error_type, permanently_failed FROM face_detection_failures")
        assert row is not None and tuple(row) == ("blacklisted", True)
        assert await conn.fetchval("SELECT count(*) FROM face_metadata") == 0
        # And a result written under a claim the blacklist did not fence (another
        # writer's blacklist row) never deletes a blacklist row.
        other = await claims.claim(conn, "f/b.jpg", "one", 60.0)
        assert isinstance(other, claims.Claim)
        await conn.execute(
            "INSERT INTO face_detection_failures (image_path, retry_count, last_error, last_error_type, "
            "permanently_failed, last_failure_at, next_retry_after) "
            "VALUES ('f/b.jpg', 0, 'by hand', 'blacklisted', TRUE, now(), 'infinity')"
        )
        await outcomes.record_success(conn, other, DETECTION, "one")
        assert (
            await conn.fetchval("SELECT last_error_type FROM face_detection_failures WHERE image_path = 'f/b.jpg'")
            == "blacklisted"
        )
    finally:
        await conn.close()


async def test_blacklist_rejects_invalid_path(dsn: str, make_config: Callable[..., Config]) -> None:
    with pytest.raises(UsageError, match="derived folder"):
        await run(make_config(), "blacklist", "x/face_crops/1.jpg", "--reason", "crop")


async def test_large_retry_sends_one_bulk_hint(
    dsn: str, make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    from reactor.ops import failures

    await seed(dsn)
    monkeypatch.setattr(failures, "NOTIFY_LIMIT", 3)
    config = make_config()
    listener = await asyncpg.connect(dsn)
    got: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(config.database.channel, lambda *a: got.put_nowait(a[3]))
    try:
        assert await run(config, "failures", "retry", "--all") == 0
        assert json.loads(await asyncio.wait_for(got.get(), 10)) == {"type": "bulk", "count": 4}
        # One hint only: a second message would arrive with the first, in the same transaction.
        await listener.execute("SELECT 1")
        assert got.empty()
    finally:
        await listener.close()


def test_readme_failure_types_match_the_code() -> None:
    from reactor.failure_types import ADVICE, ErrorType

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Failure types", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = (cells[2], cells[3])
    expected = {t.value: ("permanent" if t.permanent else "transient", ADVICE[t]) for t in ErrorType}
    expected[ErrorType.BLACKLISTED] = ("permanent", ADVICE[ErrorType.BLACKLISTED])
    assert rows == expected


async def test_failures_without_privileges_is_one_line(
    pg: PgServer, database: str, make_config: Callable[..., Config]
) -> None:
    role = f"noperm_{os.getpid()}"
    pg.psql(f"CREATE ROLE {role} LOGIN")
    try:
        config = make_config(database={"dsn": pg.dsn(database, user=role)})
        with pytest.raises(UsageError) as info:
            await run(config, "failures", "list")
        assert str(info.value) == (
            "permission denied for table face_detection_failures; ask the database owner to run the GRANTs printed "
            f"by `reactor db sql --grants-only --role {role}` (`reactor doctor` lists what is missing)"
        )
    finally:
        pg.psql(f"DROP OWNED BY {role}", database)
        pg.psql(f"DROP ROLE {role}")


async def test_retry_reaches_a_running_reactor_at_once(
    dsn: str, share: Path, make_config: Callable[..., Config], capsys: pytest.CaptureFixture[str]
) -> None:
    from reactor.core.service import Reactor
    from reactor.ops import samples

    samples.write_jpeg(samples.astronaut(), share, "fixed.jpg")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ('fixed.jpg', TRUE)")
        # Permanently failed and backing off for a day: only `failures retry` brings it back.
        await conn.execute(
            "INSERT INTO face_detection_failures (image_path, retry_count, last_error, last_error_type, "
            "permanently_failed, next_retry_after) VALUES ('fixed.jpg', 2, 'was truncated', 'corrupt', TRUE, "
            "now() + interval '1 day')"
        )
    finally:
        await conn.close()
    # A sweep interval of an hour: the sweep cannot be what picks the image up.
    config = make_config(watcher={"enabled": False}, sweep={"interval_seconds": 3600, "poll_seconds": 3600})
    reactor = Reactor(config, dsn)
    stop = asyncio.Event()
    run_task = asyncio.create_task(reactor.run(stop))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 120
    try:
        while not (reactor.listener and reactor.listener.state == "connected" and reactor.detector.state == "ready"):
            assert loop.time() < deadline and not run_task.done(), "reactor did not become ready"
            await asyncio.sleep(0.05)
        assert await run(config, "failures", "retry", "fixed.jpg") == 0
        # (The reactor's own log lines share this test's stdout; the command's lines come last.)
        assert capsys.readouterr().out.splitlines()[-2:] == ["queued: fixed.jpg", "1 queued"]
        conn = await asyncpg.connect(dsn)
        try:
            while (
                count := await conn.fetchval("SELECT face_count FROM face_metadata WHERE image_path = 'fixed.jpg'")
            ) is None:
                assert loop.time() < deadline and not run_task.done(), "retried image was not detected"
                await asyncio.sleep(0.1)
            assert count == 1
            assert await conn.fetchval("SELECT count(*) FROM face_detection_failures") == 0
        finally:
            await conn.close()
    finally:
        stop.set()
        await asyncio.wait_for(run_task, 60)


async def test_list_says_when_each_is_retried(
    dsn: str, make_config: Callable[..., Config], capsys: pytest.CaptureFixture[str]
) -> None:
    await seed(dsn)
    assert await run(make_config(), "failures", "list", "--type", "timeout") == 0
    rows = [re.split(r"\s{2,}", line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == ["c/slow.jpg", "timeout", "tries=1", "due now", "timeout happened"]
    assert rows[1][:3] == ["c/slower.jpg", "timeout", "tries=3"]
    assert rows[1][3].startswith("retry after ")
