"""The control channel is not an open door (issue 13): payloads are validated, requests
that act are honoured only from allowed roles, replies fit a NOTIFY, hints are bounded."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from reactor.config import Config
from reactor.core import control, gate
from reactor.core.listener import parse_payload
from reactor.core.scheduler import MAX_ORPHAN_HINTS, MAX_REQUESTS, SweepScheduler
from tests.reactor_support import add_processed, wait_until, write_photos
from tests.test_reactor import HOG, NO_POLLING, running

CONTROL = "face_reactor_control"


def test_payloads_that_are_not_what_they_should_be_are_dropped() -> None:
    assert parse_payload("[" * 100_000 + "]" * 100_000) is None  # deeper than the parser goes
    assert parse_payload("x" * 9000) is None
    assert parse_payload('{"type": 1}') is None

    def check(data: object, channel: str = "face_reactor") -> gate.Notice | None:
        return gate.validate(channel, data, control_channel=CONTROL, pid=7)

    assert check({"type": "sweep_request", "id": "x" * 7870}, CONTROL) is None
    assert check({"type": "sweep_request", "id": {"nested": [1, 2]}}, CONTROL) is None
    assert check({"type": "sweep_reply", "id": "ab"}, CONTROL) is None  # not for us
    assert check({"type": "sweep_request", "id": "0123abcd"}, CONTROL) == gate.Notice(
        CONTROL, gate.NoticeKind.SWEEP_REQUEST, request_id="0123abcd", pid=7
    )
    assert check({"type": "processed", "path": ["a.jpg"]}) is None
    assert check({"type": "processed", "path": "a" * 5000}) is None
    assert check({"type": "rm -rf", "path": "a.jpg"}) is None
    assert check({"type": "manual", "path": "a.jpg"}) == gate.Notice(
        "face_reactor", gate.NoticeKind.MANUAL, path="a.jpg", pid=7
    )


SQL = Path(__file__).resolve().parent.parent / "sql"


def _sent_kinds(text: str) -> set[str]:
    """The notification types a SQL file sends: json_build_object('type', 'X', ...) literals,
    and the trigger's rows of (type, path) built as 'X' AS type or a UNION arm SELECT 'X', p."""
    found = set(re.findall(r"json_build_object\('type', '(\w+)'", text))
    found |= set(re.findall(r"'(\w+)' AS type\b", text))
    found |= set(re.findall(r"SELECT '(\w+)', p\b", text))
    return found


def test_notice_kinds_match_what_the_sql_sends() -> None:
    trigger = _sent_kinds((SQL / "triggers" / "ai_metadata_notify.sql").read_text())
    assert trigger == {gate.NoticeKind.PROCESSED, gate.NoticeKind.DELETED, gate.NoticeKind.BULK}
    assert trigger <= gate.HINT_TYPES
    by_commands = set().union(*(_sent_kinds(f.read_text()) for f in SQL.glob("*.sql")))
    assert by_commands == {gate.NoticeKind.PROCESSED, gate.NoticeKind.MANUAL, gate.NoticeKind.BULK}
    assert trigger | by_commands == gate.HINT_TYPES
    # Every kind is honoured on one channel at most: the hints on the notify channel, a sweep
    # request on the control channel; a reply is for the waiting command, never for a reactor.
    where = {kind: "face_reactor" for kind in gate.HINT_TYPES} | {gate.NoticeKind.SWEEP_REQUEST: CONTROL}
    for kind in gate.NoticeKind:
        payload = {"type": kind.value, "path": "a.jpg", "id": "0123abcd"}
        honoured = [ch for ch in ("face_reactor", CONTROL) if gate.validate(ch, payload, control_channel=CONTROL)]
        assert honoured == ([where[kind]] if kind in where else []), kind


def test_a_reply_always_fits_a_notify() -> None:
    huge = {"queued": 3, "skipped": "sweep failed: " + "x" * 20_000, "orphans_held": "y" * 20_000}
    payload = control.reply_payload("id1", "vm:1", huge)
    assert len(payload.encode()) <= gate.MAX_REPLY_BYTES
    assert json.loads(payload)["counts"]["queued"] == 3


def test_pending_requests_and_hints_are_bounded(make_config: Callable[..., Config]) -> None:
    scheduler = SweepScheduler(make_config(), "me")
    for i in range(1000):
        scheduler.request(f"id{i % 50}")
        scheduler.request(f"fresh{i}")
    assert len(scheduler._requests) == MAX_REQUESTS
    for i in range(MAX_ORPHAN_HINTS + 500):
        scheduler.deleted(f"gone/{i}.jpg")
    assert len(scheduler._orphan_hints) == MAX_ORPHAN_HINTS


def _forge_replies(intruder: asyncpg.Connection) -> Callable[..., None]:
    """A listener that answers each sweep request at once, as if it had swept."""

    sent: set[asyncio.Future[str]] = set()

    def forge(_c: object, _pid: int, _channel: str, payload: object) -> None:
        data = json.loads(str(payload))
        if isinstance(data, dict) and data.get("type") == "sweep_request":
            reply = {"type": "sweep_reply", "id": data["id"], "instance_id": "forger", "counts": {"queued": 999}}
            task = asyncio.ensure_future(intruder.execute("SELECT pg_notify($1, $2)", CONTROL, json.dumps(reply)))
            sent.add(task)
            task.add_done_callback(sent.discard)

    return forge


async def test_a_forged_reply_is_not_believed(dsn: str, intruder: asyncpg.Connection) -> None:
    """No reactor runs: the only answer is the intruder's, on the channel and as a row it may not write."""
    forged = _forge_replies(intruder)
    await intruder.add_listener(CONTROL, forged)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await intruder.execute(
            "INSERT INTO reactor_control_replies (request_id, instance_id, swept, reply) VALUES ('x', 'f', TRUE, '{}')"
        )
    conn = await asyncpg.connect(dsn)
    try:
        replies = await control.request_sweep(conn, CONTROL, 3)
    finally:
        await conn.close()
        await intruder.remove_listener(CONTROL, forged)
    assert replies.swept is None and replies.skipped == []


async def test_requests_from_other_roles_are_refused_and_detection_goes_on(
    make_config: Callable[..., Config],
    dsn: str,
    share: Path,
    intruder: asyncpg.Connection,
) -> None:
    config = make_config(detector=HOG, sweep=NO_POLLING)
    conn = await asyncpg.connect(dsn)
    try:
        async with running(config, dsn) as reactor:
            assert reactor.sweeper is not None
            sweeps = reactor.sweeper.completed
            await add_processed(conn, ["perm.jpg"])
            await conn.execute(
                "INSERT INTO face_detection_failures (image_path, retry_count, last_error_type, "
                "permanently_failed) VALUES ('perm.jpg', 5, 'corrupt', TRUE)"
            )
            # A 7,900-byte request, deep nesting, and well-formed requests from a role not allowed.
            await intruder.execute(
                "SELECT pg_notify($1, $2)", CONTROL, json.dumps({"type": "sweep_request", "id": "x" * 7860})
            )
            await intruder.execute("SELECT pg_notify($1, $2)", CONTROL, "[" * 3900 + "]" * 3900)
            await intruder.execute("SELECT pg_notify($1, $2)", CONTROL, control.request_payload("intruder1"))
            await intruder.execute(
                "SELECT pg_notify('face_reactor', $1)", json.dumps({"type": "manual", "path": "perm.jpg"})
            )
            (next_path,) = write_photos(share, ["next.jpg"])
            await add_processed(conn, [next_path])

            async def detected() -> bool:
                return bool(await conn.fetchval("SELECT count(*) FROM face_metadata WHERE image_path = $1", next_path))

            await wait_until(detected, 90, "the next image to be detected")
            row = await conn.fetchrow("SELECT retry_count, permanently_failed FROM face_detection_failures")
            assert row is not None and tuple(row) == (5, True)  # the refused manual hint overrode nothing
            # The reactor's own role is allowed: `reactor sweep` gets its answer, and only
            # the reactor's: the intruder answers every request first, and is not believed.
            forged = _forge_replies(intruder)
            await intruder.add_listener(CONTROL, forged)
            replies = await control.request_sweep(conn, CONTROL, 30)
            await intruder.remove_listener(CONTROL, forged)
            assert replies.swept is not None and replies.swept["instance_id"] == reactor.instance_id
            assert replies.swept["counts"].get("queued") != 999
            # Exactly that one sweep ran: none of the intruder's requests (sent long before) did.
            assert reactor.sweeper.completed == sweeps + 1
    finally:
        await conn.close()
