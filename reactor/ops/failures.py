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

from reactor.store import failures_admin
from reactor.store.dbtypes import Conn

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


async def list_failures(conn: Conn, error_type: str | None, permanent_only: bool) -> list[FailureRow]:
    return [FailureRow(**row) for row in await failures_admin.listed(conn, error_type, permanent_only)]


def _split(requested: Sequence[str], changed: Sequence[str]) -> Changed:
    hit = set(changed)
    unique = list(dict.fromkeys(requested))
    return Changed(done=[p for p in unique if p in hit], not_found=[p for p in unique if p not in hit])


async def retry(
    conn: Conn,
    channel: str,
    *,
    paths: Sequence[str] = (),
    error_type: str | None = None,
    everything: bool = False,
) -> Changed:
    """Make failures due now and not permanent; notify a running reactor."""
    done, notified = await failures_admin.retry(
        conn, channel, paths=paths, error_type=error_type, everything=everything, notify_limit=NOTIFY_LIMIT
    )
    result = Changed(done=done) if everything or error_type is not None else _split(paths, done)
    result.notified = notified
    return result


async def forget(conn: Conn, paths: Sequence[str]) -> Changed:
    """Delete failure rows. The sweep queues the image again if it is still processed upstream."""
    return _split(paths, await failures_admin.forget(conn, paths))


async def blacklist(conn: Conn, paths: Sequence[str], reason: str) -> Changed:
    """Mark paths permanently failed (type `blacklisted`), dropping any results they had."""
    unique = list(dict.fromkeys(paths))
    return _split(unique, await failures_admin.blacklist(conn, unique, reason))
