"""What `reactor status` reads (sql/status.sql): counts of results, failures and pending
rows, the heartbeats of running instances, and the orphan and sweep state of the other
repositories, each read inside ``translated()``.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from reactor.store import changes, orphans
from reactor.store.dbtypes import Conn
from reactor.store.errors import translated
from reactor.store.sql import Queries

Q = Queries("status.sql")


@dataclass(frozen=True)
class ResultCounts:
    images: int
    faces: int
    last_detection: dt.datetime | None
    # Adopted legacy results, those of them with zero faces, and re-detection requests.
    legacy: int
    legacy_zero: int
    redetect_requested: int
    held_deletions: int


@dataclass(frozen=True)
class FailureCount:
    error_type: str
    failures: int
    permanent: int
    due: int


@dataclass(frozen=True)
class Instance:
    instance_id: str
    hostname: str
    pid: int
    started_at: str
    heartbeat_age_seconds: float
    state: dict[str, Any]


def _state(raw: Any) -> dict[str, Any]:
    # asyncpg returns JSONB as text unless a codec is set; accept both.
    value = json.loads(raw) if isinstance(raw, str) else raw
    return value if isinstance(value, dict) else {}


async def result_counts(conn: Conn) -> ResultCounts:
    with translated():
        row = await conn.fetchrow(Q.status_results)
    assert row is not None
    return ResultCounts(
        images=row["images"],
        faces=row["faces"],
        last_detection=row["last_detection"],
        legacy=row["legacy"],
        legacy_zero=row["legacy_zero"],
        redetect_requested=row["redetect_requested"],
        held_deletions=row["held_deletions"],
    )


async def pending(conn: Conn) -> int:
    """Processed upstream, with neither a result nor a failure yet."""
    with translated():
        return int(await conn.fetchval(Q.status_pending))


async def failures_by_type(conn: Conn) -> list[FailureCount]:
    with translated():
        rows = await conn.fetch(Q.status_failures_by_type)
    return [FailureCount(r["error_type"], r["failures"], r["permanent"], r["due"]) for r in rows]


async def live_instances(conn: Conn, gone_after_seconds: float) -> list[Instance]:
    """Instances whose heartbeat is younger than ``gone_after_seconds``, freshest first."""
    with translated():
        rows = await conn.fetch(Q.status_instances, gone_after_seconds)
    return [
        Instance(
            instance_id=r["instance_id"],
            hostname=r["hostname"],
            pid=r["pid"],
            started_at=r["started_at"].isoformat(),
            heartbeat_age_seconds=round(r["age_seconds"], 1),
            state=_state(r["state"]),
        )
        for r in rows
    ]


async def orphan_stats(conn: Conn, policy: orphans.OrphanPolicy) -> list[orphans.TableOrphans]:
    with translated():
        return await orphans.stats(conn, policy)


async def sweep_state(conn: Conn, walk_interval_seconds: float) -> changes.SweepState | None:
    with translated():
        return await changes.read_state(conn, walk_interval_seconds)
