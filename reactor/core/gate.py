"""The control channel is not an open door: what a notification may make the reactor do.

Any role that can connect can ``NOTIFY`` any channel; PostgreSQL attaches no sender
identity to the payload, only the notifying backend's pid. So every payload is data to
validate, never to trust:

- ``validate`` accepts only the shapes the reactor sends itself (a known ``type``, a
  ``path`` string PostgreSQL can store, of bounded length, a short request id); anything else (deep nesting,
  wrong types, a huge id) is dropped and logged once per kind of problem.
- Hints (``processed``, ``deleted``, ``bulk``) are honoured from anyone: each is only a
  wake-up, checked against the database before anything happens, coalesced and bounded.
- Requests that *act* (a ``sweep_request`` on the control channel, a ``manual`` hint
  that overrides backoff and the permanent state) are honoured only from allowed roles:
  the reactor's own role and ``database.control_roles``. The sender's role is looked up
  by the notifying backend's pid in ``pg_stat_activity`` (``SenderCheck``); a sender
  that is gone by then, or not allowed, is refused. A refused ``manual`` hint still
  counts as a plain ``processed`` hint, without its override.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from reactor import logs
from reactor.store import notifications
from reactor.store.connections import borrowed
from reactor.store.dbtypes import Pool
from reactor.util import storable
from reactor.util.ratelimit import RateLimiter

log = logs.get("reactor.gate")

# NOTIFY payloads are at most 8000 bytes; replies are kept under this.
MAX_REPLY_BYTES = 7900
MAX_PATH_BYTES = 4096
REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class NoticeKind(StrEnum):
    """The ``type`` of a notification. The ai_metadata trigger sends processed, deleted and
    bulk (sql/triggers/ai_metadata_notify.sql); `reactor failures retry` sends manual and bulk,
    `reactor repair` processed (sql/ops.sql, sql/integrity.sql); `reactor sweep` and a running
    reactor talk sweep_request and sweep_reply on the control channel (reactor.core.control)."""

    PROCESSED = "processed"  # a row became processed (or got this new path): detect it
    DELETED = "deleted"  # a processed row went away: its results may be orphaned
    BULK = "bulk"  # too many rows for one notification each: sweep instead
    MANUAL = "manual"  # a person asked: override backoff and the permanent state
    SWEEP_REQUEST = "sweep_request"
    SWEEP_REPLY = "sweep_reply"


# The kinds honoured on the notify channel; the control channel takes sweep_request only.
HINT_TYPES = frozenset({NoticeKind.PROCESSED, NoticeKind.MANUAL, NoticeKind.DELETED, NoticeKind.BULK})
# Sender lookups in flight at once; past it a privileged request is refused.
MAX_PENDING_CHECKS = 16

_ignored = RateLimiter(300.0, max_keys=100)


@dataclass(frozen=True)
class Notice:
    channel: str
    kind: NoticeKind
    path: str | None = None
    request_id: str | None = None
    pid: int = 0


def ignore(channel: str, problem: str, payload: object) -> None:
    """Drop a payload; logged once per channel and problem every five minutes (then counted)."""
    allowed, suppressed = _ignored.check((channel, problem))
    if allowed:
        log.warning(
            "notification_ignored", channel=channel, problem=problem, payload=repr(payload)[:200], suppressed=suppressed
        )


def validate(channel: str, data: object, *, control_channel: str, pid: int = 0) -> Notice | None:
    """The notice a payload carries, or None (logged) when it is not one the reactor sends."""
    if not isinstance(data, dict):
        ignore(channel, "not_an_object", data)
        return None
    kind = data.get("type")
    if channel == control_channel:
        if kind != NoticeKind.SWEEP_REQUEST:
            return None  # replies and other traffic on the control channel are not for us
        request_id = data.get("id")
        if not isinstance(request_id, str) or not REQUEST_ID.match(request_id):
            ignore(channel, "bad_request_id", data)
            return None
        return Notice(channel, NoticeKind.SWEEP_REQUEST, request_id=request_id, pid=pid)
    if not isinstance(kind, str) or kind not in HINT_TYPES:
        ignore(channel, "unknown_type", data)
        return None
    kind = NoticeKind(kind)
    if kind == NoticeKind.BULK:
        return Notice(channel, kind, pid=pid)
    path = data.get("path")
    if not isinstance(path, str) or not path:
        ignore(channel, "bad_path", data)
        return None
    # A NUL or a lone surrogate would fail the query it reaches (reactor.util.storable).
    unstorable = storable.problem(path, MAX_PATH_BYTES)
    if unstorable is not None:
        ignore(channel, f"bad_path:{unstorable}", data)
        return None
    return Notice(channel, kind, path=path, pid=pid)


class SenderCheck:
    """Whether the backend that sent a notification runs as an allowed role."""

    def __init__(self, pool: Callable[[], Pool | None], roles: Iterable[str]) -> None:
        self._pool = pool
        self.roles = frozenset(roles)
        self._pending = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def when_allowed(self, notice: Notice, allowed: Callable[[], object], refused: Callable[[], object]) -> None:
        """Run ``allowed`` or ``refused`` once the sender's role is known (bounded, never blocking)."""
        if self._pending >= MAX_PENDING_CHECKS:
            ignore(notice.channel, "too_many_requests", notice.kind.value)
            refused()
            return
        self._pending += 1
        task = asyncio.ensure_future(self._check(notice, allowed, refused))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _check(self, notice: Notice, allowed: Callable[[], object], refused: Callable[[], object]) -> None:
        try:
            role = await self.role_of(notice.pid)
        except Exception as exc:  # a database that went away: refuse, the sender may ask again
            role = None
            log.warning("sender_check_failed", error=str(exc) or type(exc).__name__)
        finally:
            self._pending -= 1
        if role is not None and role in self.roles:
            allowed()
            return
        ignore(notice.channel, f"role_not_allowed:{role}", {"type": notice.kind.value, "pid": notice.pid})
        refused()

    async def role_of(self, pid: int) -> str | None:
        pool = self._pool()
        if pool is None or pid <= 0:
            return None
        async with borrowed(pool) as conn:
            return await notifications.backend_role(conn, pid)


def fit_reply(payload: dict[str, Any], encode: Callable[[dict[str, Any]], str]) -> str:
    """The reply, encoded to fit a NOTIFY: long strings in its counts are cut, then dropped."""
    text = encode(payload)
    if len(text.encode()) <= MAX_REPLY_BYTES:
        return text
    counts = dict(payload.get("counts") or {})
    for key, value in counts.items():
        if isinstance(value, str):
            counts[key] = value[:200]
    text = encode({**payload, "counts": counts})
    if len(text.encode()) <= MAX_REPLY_BYTES:
        return text
    return encode({**payload, "counts": {"skipped": "reply too large for NOTIFY; see the reactor's log"}})
