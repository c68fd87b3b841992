"""Orphans are held, not deleted: the deletion rules for results and failure rows.

A result is the most expensive thing the reactor owns, and an absence is not a
deletion: an upstream pipeline truncates and refills ai_metadata, a subtree of the
share errors for a while, a `deleted` hint names a file that comes back. So a row
whose ai_metadata row is gone is *marked* (``orphaned_at``), and:

- a row whose ai_metadata row comes back is un-marked (nothing is detected again:
  a marked result still counts as done for the claim and the sweep);
- a marked row is purged only after ``sweep.orphan_grace_hours``, only while the
  share is online and ai_metadata is not empty, and only if it is still orphaned
  (the purge re-checks the anti-join in its own statement);
- the sweeps purge at most ``orphan_purge_max`` rows of a table, and at most
  ``orphan_purge_max_fraction`` of it once more than ``orphan_purge_min`` are due,
  in any window of ``orphan_purge_window_hours``: the statement that deletes counts
  the rows due plus those the sweeps purged in the window (reactor_orphan_purges)
  and records what it deletes, so orphans marked in batches at different times
  cannot drain a table one batch per sweep. Past the bound a sweep purges nothing:
  the rows are *held*, logged once, shown by ``reactor status`` and ``reactor
  repair``, and released by ``reactor repair --purge-orphans --apply`` (after a
  backup), by restoring the rows upstream, or by the window moving on.

Only results the reactor wrote are orphans. A legacy result (``model IS NULL``,
reactor.store.legacy) is another program's data: it is never marked nor purged,
whatever ai_metadata says (a mark an earlier version left on one is cleared).
`reactor audit` reports those whose path left ai_metadata (``legacy_orphans``) and
``reactor repair --legacy-orphans --apply`` removes them after a backup.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from reactor import logs
from reactor.config import SweepConfig
from reactor.store.dbtypes import Conn, rows_affected
from reactor.store.errors import translating
from reactor.store.sql import Queries

Q = Queries("orphans.sql")
log = logs.get("reactor.orphans")

RESULTS = "face_metadata"
FAILURES = "face_detection_failures"
RELEASE_HINT = "restore the ai_metadata rows, or confirm with `reactor repair --purge-orphans --apply`"


@dataclass(frozen=True)
class OrphanPolicy:
    grace_seconds: float = 72 * 3600.0
    purge_max: int = 1000
    purge_max_fraction: float = 0.05
    purge_min: int = 20
    window_seconds: float = 24 * 3600.0

    @classmethod
    def from_config(cls, sweep: SweepConfig) -> OrphanPolicy:
        return cls(
            sweep.orphan_grace_hours * 3600.0,
            sweep.orphan_purge_max,
            sweep.orphan_purge_max_fraction,
            sweep.orphan_purge_min,
            sweep.orphan_purge_window_hours * 3600.0,
        )

    def bound(self, total: int) -> int:
        """The most rows of a table of `total` rows that the sweeps may purge in one window."""
        fraction = int(total * self.purge_max_fraction)
        return min(self.purge_max, max(self.purge_min, fraction))

    @property
    def count_cap(self) -> int:
        """A table size from which on the bound is purge_max whatever the size: counting
        a table stops there (exact, not an estimate: the bound decides a deletion)."""
        if self.purge_max_fraction <= 0:
            return 0
        return math.ceil(self.purge_max / self.purge_max_fraction) + 1


@dataclass(frozen=True)
class TableOrphans:
    table: str
    # Rows counted up to OrphanPolicy.count_cap (past it the bound is the same).
    total: int
    marked: int
    due: int
    bound: int
    oldest: datetime | None
    # Purged by the sweeps in the current window: what is left of the bound is bound - spent.
    spent: int = 0

    @property
    def held(self) -> bool:
        return self.due > 0 and self.due + self.spent > self.bound

    def held_text(self) -> str:
        spent = f" with {self.spent} purged in the window" if self.spent else ""
        return f"{self.due} due{spent} > bound {self.bound}"

    def as_dict(self) -> dict[str, object]:
        return {
            "table": self.table,
            "marked": self.marked,
            "due": self.due,
            "bound": self.bound,
            "purged_in_window": self.spent,
            "held": self.held,
            "oldest": self.oldest.isoformat() if self.oldest else None,
        }


# table -> (page of unmarked orphans, mark, un-mark returned, stats, due page, purge, bounded purge)
_QUERIES = {
    RESULTS: (
        Q.orphan_results,
        Q.mark_orphan_results,
        Q.unmark_returned_results,
        Q.orphan_stats_results,
        Q.due_orphan_results,
        Q.purge_orphan_results,
        Q.purge_orphan_results_bounded,
    ),
    FAILURES: (
        Q.orphan_failures,
        Q.mark_orphan_failures,
        Q.unmark_returned_failures,
        Q.orphan_stats_failures,
        Q.due_orphan_failures,
        Q.purge_orphan_failures,
        Q.purge_orphan_failures_bounded,
    ),
}


@translating
async def tables_with_marks(conn: Conn) -> list[str]:
    """The tables that carry orphaned_at; a legacy failures table may lack it (its orphans are kept)."""
    present = {r["table_name"] for r in await conn.fetch(Q.orphan_columns)}
    return [t for t in (RESULTS, FAILURES) if t in present]


@translating
async def stats(conn: Conn, policy: OrphanPolicy) -> list[TableOrphans]:
    out = []
    for table in await tables_with_marks(conn):
        row = await conn.fetchrow(_QUERIES[table][3], policy.grace_seconds, policy.window_seconds, policy.count_cap)
        assert row is not None
        out.append(
            TableOrphans(
                table,
                row["total"],
                row["marked"],
                row["due"],
                policy.bound(row["total"]),
                row["oldest"],
                int(row["spent"]),
            )
        )
    return out


@translating
async def restore(conn: Conn, table: str) -> int:
    """Un-mark rows whose ai_metadata row came back."""
    return rows_affected(await conn.execute(_QUERIES[table][2]))


@translating
async def unmark_legacy(conn: Conn) -> int:
    """Clear the marks an earlier version left on legacy results: they are never purged."""
    return rows_affected(await conn.execute(Q.unmark_legacy_results))


@translating
async def mark_window(
    conn: Conn, table: str, after: str, upper: str, page_size: int, found: list[str] | None = None
) -> int:
    """Mark every unmarked orphan of `table` after `after` up to `upper` (a window of the
    sweep's walk); with `found`, only list them (dry run)."""
    select, mark = _QUERIES[table][0], _QUERIES[table][1]
    marked = 0
    while True:
        paths = [r["image_path"] for r in await conn.fetch(select, after, page_size, upper)]
        if found is not None:
            found.extend(paths)
            marked += len(paths)
        elif paths:
            marked += rows_affected(await conn.execute(mark, paths))
        if len(paths) < page_size:
            return marked
        after = paths[-1]


@translating
async def due_paths(conn: Conn, table: str, policy: OrphanPolicy, page_size: int) -> list[str]:
    """Every orphan of `table` past its grace period, in path order (for dry runs and the repair)."""
    out: list[str] = []
    after = ""
    while True:
        rows = await conn.fetch(_QUERIES[table][4], policy.grace_seconds, after, page_size)
        out.extend(r["image_path"] for r in rows)
        if len(rows) < page_size:
            return out
        after = out[-1]


# The purge history is kept this many windows, for an operator to read.
HISTORY_WINDOWS = 10


@translating
async def purge_within_bound(conn: Conn, table: str, policy: OrphanPolicy, bound: int) -> int:
    """The sweep's purge: every orphan of `table` past its grace, if they and what the
    sweeps purged in the window fit in `bound`; else none (0: they are held)."""
    purged = await conn.fetchval(_QUERIES[table][6], policy.grace_seconds, bound, policy.window_seconds)
    await conn.execute(Q.forget_old_purges, policy.window_seconds * HISTORY_WINDOWS)
    return int(purged or 0)


@translating
async def purge_paths(conn: Conn, table: str, policy: OrphanPolicy, paths: list[str], page_size: int) -> int:
    """Delete those of `paths` that are still orphans past their grace (the statement re-checks)."""
    purged = 0
    for i in range(0, len(paths), page_size):
        purged += rows_affected(await conn.execute(_QUERIES[table][5], policy.grace_seconds, paths[i : i + page_size]))
    return purged


@translating
async def mark_hint(conn: Conn, path: str) -> int:
    """A `deleted` hint for one path: mark it, if its ai_metadata row is really gone."""
    return await mark_listed(conn, [path])


@translating
async def mark_listed(conn: Conn, paths: list[str]) -> int:
    """Mark those of `paths` whose ai_metadata row is really gone (the change log's, a hint's)."""
    marked = 0
    for table in await tables_with_marks(conn):
        marked += rows_affected(await conn.execute(_QUERIES[table][1], paths))
    return marked


@translating
async def mark_gone(conn: Conn, paths: list[str], prefixes: list[str]) -> int:
    """Files (or folders) the standalone watcher saw deleted: marked, the grace applies as to any orphan."""
    marked = 0
    tables = await tables_with_marks(conn)
    if RESULTS in tables:
        marked += rows_affected(await conn.execute(Q.mark_gone_results, paths, prefixes))
    if FAILURES in tables:
        await conn.execute(Q.mark_gone_failures, paths, prefixes)
    return marked
