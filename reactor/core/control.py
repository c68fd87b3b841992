"""The control channel: `reactor sweep` asks a running reactor to sweep, and waits for its counts.

Both directions are NOTIFY payloads on ``database.control_channel``:
``{"type": "sweep_request", "id": ID}`` from the command, and
``{"type": "sweep_reply", "id": ID, "instance_id": ..., "counts": {...}}`` from each
running reactor. Only one instance sweeps at a time (advisory lock); the others
reply with ``counts.skipped``, so the command waits for a reply that swept.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from reactor.core.gate import fit_reply
from reactor.core.instances import gone_after_seconds
from reactor.store.dbtypes import Conn
from reactor.store.sql import Queries
from reactor.util.aio import wait_any

Q = Queries("queries.sql")

SWEEP_REQUEST = "sweep_request"
SWEEP_REPLY = "sweep_reply"


def request_payload(request_id: str) -> str:
    return json.dumps({"type": SWEEP_REQUEST, "id": request_id})


def reply_payload(request_id: str, instance_id: str, counts: dict[str, Any]) -> str:
    """The reply, always within the NOTIFY limit (reactor.core.gate.fit_reply)."""
    return fit_reply({"type": SWEEP_REPLY, "id": request_id, "instance_id": instance_id, "counts": counts}, json.dumps)


async def send(conn: Conn, channel: str, payload: str) -> None:
    await conn.execute(Q.notify, channel, payload)


@dataclass
class SweepReplies:
    request_id: str
    swept: dict[str, Any] | None = None
    skipped: list[dict[str, Any]] = field(default_factory=list)


async def live_instances(conn: Conn, heartbeat_seconds: float) -> list[str]:
    """Instances that are not gone (reactor.core.instances)."""
    rows = await conn.fetch(Q.live_instances, gone_after_seconds(heartbeat_seconds))
    return [r["instance_id"] for r in rows]


async def request_sweep(conn: Conn, channel: str, wait_seconds: float) -> SweepReplies:
    """NOTIFY a sweep request and wait for a reply from the instance that swept."""
    replies = SweepReplies(request_id=uuid.uuid4().hex)
    done = asyncio.Event()

    def on_reply(_c: Any, _pid: int, _channel: str, payload: object) -> None:
        try:
            data = json.loads(str(payload))
        except ValueError:
            return
        if not isinstance(data, dict) or data.get("type") != SWEEP_REPLY or data.get("id") != replies.request_id:
            return
        counts = data.get("counts") or {}
        if counts.get("skipped"):
            replies.skipped.append(data)
        else:
            replies.swept = data
            done.set()

    # LISTEN before sending, so that a fast reply cannot be missed.
    await conn.add_listener(channel, on_reply)
    try:
        await send(conn, channel, request_payload(replies.request_id))
        await wait_any(done, seconds=wait_seconds)
    finally:
        await conn.remove_listener(channel, on_reply)
    return replies
