"""Managing recorded failures by hand: list, retry, forget, blacklist.

The reactor retries failures by itself, with backoff. These operations are for a
person who fixed a file (retry), removed it for good (forget), or wants an image
never examined again (blacklist). Retried images are announced on the reactor's
NOTIFY channel, so a running reactor queues them at once; without one, the next
sweep or `reactor sweep --once` finds them, because the database is the truth.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg

from reactor.store.sql import Queries

Q = Queries("ops.sql")

# Beyond this many retried paths, one NOTIFY per path would flood the reactor's
# bounded queue; one "bulk" hint (the trigger's format) makes it sweep instead, and
# the sweep finds them because they are due now.
NOTIFY_LIMIT = 1000


@dataclass(frozen=True)
class FailureRow:
    image_path: str
    error_type: str
    retry_count: int
    permanent: bool
    next_retry_after: dt.datetime | None
    last_failure_at: dt.datetime | None
    last_error: str

    def as_json(self) -> dict[str, object]:
        return {
            "image_path": self.image_path,
            "error_type": self.error_type,
            "retry_count": self.retry_count,
            "permanent": self.permanent,
            "next_retry_after": iso(self.next_retry_after),
            "last_failure_at": iso(self.last_failure_at),
            "last_error": self.last_error,
        }


@dataclass
class Changed:
    """The outcome of a retry, forget or blacklist: which paths were changed, which unknown."""

    done: list[str] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)
    notified: int = 0


def iso(value: dt.datetime | None) -> str | None:
    """ISO time; asyncpg reads PostgreSQL's 'infinity' as datetime.max."""
    if value is None:
        return None
    if value.year == dt.MAXYEAR:
        return "never"
    return value.isoformat(timespec="seconds")


async def list_failures(conn: asyncpg.Connection, error_type: str | None, permanent_only: bool) -> list[FailureRow]:
    rows = await conn.fetch(Q.failures_list, error_type, permanent_only)
    return [
        FailureRow(
            image_path=r["image_path"],
            error_type=r["error_type"],
            retry_count=r["retry_count"],
            permanent=r["permanent"],
            next_retry_after=r["next_retry_after"],
            last_failure_at=r["last_failure_at"],
            last_error=r["last_error"],
        )
        for r in rows
    ]


def _split(requested: Sequence[str], changed: Sequence[str]) -> Changed:
    hit = set(changed)
    unique = list(dict.fromkeys(requested))
    return Changed(done=[p for p in unique if p in hit], not_found=[p for p in unique if p not in hit])


async def _notify(conn: asyncpg.Connection, channel: str, paths: Sequence[str]) -> int:
    if not paths:
        return 0
    if len(paths) > NOTIFY_LIMIT:
        await conn.execute(Q.notify_bulk, channel, len(paths))
        return 1
    await conn.execute(Q.notify_retry, channel, list(paths))
    return len(paths)


async def retry(
    conn: asyncpg.Connection,
    channel: str,
    *,
    paths: Sequence[str] = (),
    error_type: str | None = None,
    everything: bool = False,
) -> Changed:
    """Make failures due now and not permanent; notify a running reactor."""
    # The NOTIFY is sent in the same transaction, so it arrives only after the rows are due.
    async with conn.transaction():
        if everything:
            rows = await conn.fetch(Q.failures_retry_all)
            result = Changed(done=sorted(r["image_path"] for r in rows))
        elif error_type is not None:
            rows = await conn.fetch(Q.failures_retry_type, error_type)
            result = Changed(done=sorted(r["image_path"] for r in rows))
        else:
            rows = await conn.fetch(Q.failures_retry_paths, list(paths))
            result = _split(paths, [r["image_path"] for r in rows])
        result.notified = await _notify(conn, channel, result.done)
    return result


async def forget(conn: asyncpg.Connection, paths: Sequence[str]) -> Changed:
    """Delete failure rows. The sweep queues the image again if it is still processed upstream."""
    rows = await conn.fetch(Q.failures_forget, list(paths))
    result = _split(paths, [r["image_path"] for r in rows])
    return result


async def blacklist(conn: asyncpg.Connection, paths: Sequence[str], reason: str) -> Changed:
    """Mark paths permanently failed (type `blacklisted`), dropping any results they had."""
    unique = list(dict.fromkeys(paths))
    async with conn.transaction():
        await conn.execute(Q.blacklist_fence_claims, unique)
        await conn.fetch(Q.blacklist_drop_results, unique)
        rows = await conn.fetch(Q.blacklist_upsert, unique, reason)
    result = _split(unique, [r["image_path"] for r in rows])
    return result
