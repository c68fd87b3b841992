"""The control channel: `reactor sweep` asks a running reactor to sweep, and waits for its counts.

The request is a NOTIFY on ``database.control_channel``:
``{"type": "sweep_request", "id": ID}`` (honoured only from allowed roles,
reactor.core.gate). The reply is not: anyone who can connect may LISTEN, read the id
and NOTIFY an answer, so each running reactor writes its reply
``{"type": "sweep_reply", "id": ID, "instance_id": ..., "counts": {...}}`` as a row of
``reactor_control_replies``, which only the reactor's role may write, and then sends
``{"type": "sweep_reply", "id": ID}`` only to wake the command. The command believes
the rows alone (and reads them once a second besides, should a wake-up be lost). Only
one instance sweeps at a time (advisory lock); the others reply with
``counts.skipped``, so the command waits for a reply that swept.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from reactor.core.gate import NoticeKind, fit_reply
from reactor.core.instances import gone_after_seconds
from reactor.store import control_replies, instances, notifications
from reactor.store.dbtypes import Conn
from reactor.util.aio import wait_any

# The command reads the replies this often besides on a wake-up (a NOTIFY may be lost).
REREAD_SECONDS = 1.0


def request_payload(request_id: str) -> str:
    return json.dumps({"type": NoticeKind.SWEEP_REQUEST, "id": request_id})


def reply_payload(request_id: str, instance_id: str, counts: dict[str, Any]) -> str:
    """The reply, always within the NOTIFY limit (reactor.core.gate.fit_reply)."""
    return fit_reply(
        {"type": NoticeKind.SWEEP_REPLY, "id": request_id, "instance_id": instance_id, "counts": counts}, json.dumps
    )


async def send(conn: Conn, channel: str, payload: str) -> None:
    await notifications.notify(conn, channel, payload)


async def reply(conn: Conn, channel: str, request_id: str, instance_id: str, counts: dict[str, Any]) -> None:
    """Write the reply where only the reactor may write, then wake the command."""
    payload = reply_payload(request_id, instance_id, counts)
    await control_replies.write(conn, request_id, instance_id, not counts.get("skipped"), payload)
    await send(conn, channel, json.dumps({"type": NoticeKind.SWEEP_REPLY, "id": request_id}))


@dataclass
class SweepReplies:
    request_id: str
    swept: dict[str, Any] | None = None
    skipped: list[dict[str, Any]] = field(default_factory=list)


async def live_instances(conn: Conn, heartbeat_seconds: float) -> list[str]:
    """Instances that are not gone (reactor.core.instances)."""
    return await instances.live(conn, gone_after_seconds(heartbeat_seconds))


async def request_sweep(conn: Conn, channel: str, wait_seconds: float) -> SweepReplies:
    """NOTIFY a sweep request and wait for a reply from the instance that swept.

    A notification only wakes this wait: what counts is read from reactor_control_replies.
    """
    replies = SweepReplies(request_id=uuid.uuid4().hex)
    wake = asyncio.Event()
    # LISTEN before sending, so that a fast reply cannot be missed.
    async with notifications.listening(conn, channel, wake.set):
        await send(conn, channel, request_payload(replies.request_id))
        deadline = time.monotonic() + wait_seconds
        while not await _read_replies(conn, replies):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            await wait_any(wake, seconds=min(left, REREAD_SECONDS))
            wake.clear()
    return replies


async def _read_replies(conn: Conn, replies: SweepReplies) -> bool:
    """The replies written so far; True once one instance swept."""
    replies.skipped = []
    for row in await control_replies.read(conn, replies.request_id):
        data = json.loads(row.reply)
        if row.swept:
            replies.swept = data
            return True
        replies.skipped.append(data)
    return False
