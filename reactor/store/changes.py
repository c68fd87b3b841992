"""The change log and the sweep's state: what the regular sweep reads instead of ai_metadata.

The ai_metadata trigger appends the path of every row that became processed or went
away to ``reactor_changes`` (a TRUNCATE as one row with a NULL path). The regular
sweep reads the log oldest first, queues what is pending among those paths, marks
those whose row is gone, and deletes exactly the rows it read: its cost follows the
changes, not the table. ``reactor_sweep_state`` keeps the highest change read (the
watermark) and the full walk's position, so a restart or another instance taking
the sweep's lock continues where the last one stopped. The log is a list of hints:
the full walk (the whole table, in keyset chunks, daily by default) remains the truth.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from reactor.store import relations
from reactor.store.dbtypes import Conn
from reactor.store.errors import translating
from reactor.store.sql import Queries

Q = Queries("changes.sql")


@dataclass(frozen=True)
class Change:
    seq: int
    # None: ai_metadata was truncated.
    path: str | None


@dataclass(frozen=True)
class SweepState:
    watermark: int
    walk_phase: str | None
    walk_after: str
    walk_rows: int
    walk_started_at: datetime | None
    walk_finished_at: datetime | None
    walk_requested_at: datetime | None
    walk_due: bool
    # Changes not read yet, and when the oldest of them was made.
    backlog: int
    oldest_change: datetime | None

    def as_dict(self) -> dict[str, object]:
        def iso(t: datetime | None) -> str | None:
            return t.isoformat() if t else None

        return {
            "watermark": self.watermark,
            "changes_waiting": self.backlog,
            "oldest_change": iso(self.oldest_change),
            "walk": {
                "under_way": self.walk_phase is not None,
                "phase": self.walk_phase,
                "after": self.walk_after or None,
                "rows": self.walk_rows,
                "started_at": iso(self.walk_started_at),
                "finished_at": iso(self.walk_finished_at),
                "requested_at": iso(self.walk_requested_at),
                "due": self.walk_due,
            },
        }


@translating
async def custom_plans(conn: Conn) -> None:
    """Plan each of this session's statements for its own parameters (see changes.sql)."""
    await conn.execute(Q.custom_plans)


@translating
async def ensure_state(conn: Conn) -> None:
    """Create the state's row on first use (the sweep's role writes it)."""
    await conn.execute(Q.ensure_state)


@translating
async def state(conn: Conn, walk_interval_seconds: float) -> SweepState:
    """The sweep's state, without the log's size (backlog 0): the sweep reads it before every
    chunk of the walk, and counting a log that holds a storm would cost seconds each time.
    Creating the row first also proves the table is there (its absence raises)."""
    await ensure_state(conn)
    row = await conn.fetchrow(Q.state, walk_interval_seconds, False)
    assert row is not None
    return _state_of(row)


@translating
async def read_state(conn: Conn, walk_interval_seconds: float, *, backlog: bool = True) -> SweepState | None:
    """The state, read only (`reactor status`); None before any sweep ran on schema 5."""
    if not await relations.exists(conn, "reactor_sweep_state"):
        return None
    row = await conn.fetchrow(Q.state, walk_interval_seconds, backlog)
    return None if row is None else _state_of(row)


def _state_of(row: asyncpg.Record) -> SweepState:
    return SweepState(
        row["watermark"],
        row["walk_phase"],
        row["walk_after"],
        row["walk_rows"],
        row["walk_started_at"],
        row["walk_finished_at"],
        row["walk_requested_at"],
        bool(row["walk_due"]),
        int(row["backlog"] or 0),
        row["oldest_change"],
    )


@translating
async def page(conn: Conn, limit: int) -> list[Change]:
    return [Change(r["seq"], r["image_path"]) for r in await conn.fetch(Q.change_page, limit)]


def share_of(path: str, count: int) -> int:
    """Which of `count` instances owns `path`: the first 32 bits of its md5, modulo the
    count (changes.sql share_page computes the same in SQL). Stable across processes and
    machines, unlike hash()."""
    return int(hashlib.md5(path.encode(), usedforsecurity=False).hexdigest()[:8], 16) % count


@translating
async def share_page(conn: Conn, limit: int, count: int, rank: int, overdue_seconds: float) -> list[Change]:
    """The oldest changes of share `rank` of `count`; when fewer than `limit`, then the
    oldest of any share unread for `overdue_seconds` (their instance is busy or gone)."""
    if count <= 1:
        return await page(conn, limit)
    read = [Change(r["seq"], r["image_path"]) for r in await conn.fetch(Q.share_page, limit, count, rank)]
    if len(read) < limit:
        seen = {c.seq for c in read}
        for r in await conn.fetch(Q.overdue_page, limit - len(read), overdue_seconds):
            if r["seq"] not in seen:
                read.append(Change(r["seq"], r["image_path"]))
    return read


@translating
async def hand_back(conn: Conn, paths: list[str]) -> None:
    """Put queued paths back into the log (an instance that stops with work queued)."""
    if paths:
        await conn.execute(Q.hand_back, paths)


@translating
async def take_gone_instances(
    conn: Conn, gone_after_seconds: float, instance_id: str, started_at: datetime
) -> list[str]:
    """The instances gone without a clean stop (an earlier process of `instance_id` among
    them), their rows deleted as they are taken."""
    rows = await conn.fetch(Q.take_gone_instances, gone_after_seconds, instance_id, started_at)
    return [r["instance_id"] for r in rows]


@translating
async def consume(conn: Conn, read: list[Change]) -> None:
    """Delete the changes read and move the watermark past them."""
    await conn.execute(Q.consume_changes, [c.seq for c in read])


@translating
async def pending_among(conn: Conn, paths: list[str], instance_id: str) -> list[str]:
    """Those of `paths` that are processed and have no outcome (nor another instance's live claim)."""
    return [r["image_path"] for r in await conn.fetch(Q.pending_among, paths, instance_id)]


@translating
async def redetect_page(conn: Conn, after: str, limit: int) -> list[str]:
    return [r["image_path"] for r in await conn.fetch(Q.redetect_page, after, limit)]


@translating
async def expired_claim_page(conn: Conn, after: str, limit: int) -> list[str]:
    return [r["image_path"] for r in await conn.fetch(Q.expired_claim_page, after, limit)]


@translating
async def walk_window(conn: Conn, after: str, rows: int) -> tuple[str | None, bool]:
    """The upper end of the walk's next window of `rows` processed rows (None past the
    end), and whether it is the last window."""
    row = await conn.fetchrow(Q.walk_window, after, rows)
    assert row is not None
    return row["upper"], row["rows"] < rows


@translating
async def table_window(conn: Conn, table: str, after: str, rows: int) -> tuple[str | None, bool]:
    """walk_window for the orphan pass over face_metadata or face_detection_failures."""
    query = {"face_metadata": Q.results_window, "face_detection_failures": Q.failures_window}[table]
    row = await conn.fetchrow(query, after, rows)
    assert row is not None
    return row["upper"], row["rows"] < rows


@translating
async def request_walk(conn: Conn) -> None:
    await conn.execute(Q.request_walk)


@translating
async def save_walk(conn: Conn, phase: str, after: str, rows: int) -> None:
    await conn.execute(Q.save_walk, phase, after, rows)


@translating
async def start_walk(conn: Conn) -> None:
    await conn.execute(Q.start_walk)


@translating
async def finish_walk(conn: Conn, rows: int) -> None:
    await conn.execute(Q.finish_walk, rows)


@translating
async def any_due(conn: Conn, tables: list[str], grace_seconds: float) -> bool:
    """Whether any orphan is past its grace (partial indexes): if none, there is nothing to purge."""
    queries = {"face_metadata": Q.any_due_results, "face_detection_failures": Q.any_due_failures}
    for table in tables:
        if await conn.fetchval(queries[table], grace_seconds):
            return True
    return False
