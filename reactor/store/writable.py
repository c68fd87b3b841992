"""Refusing to detect when no outcome could be written (a legacy face_metadata without
the reactor's columns once made every write fail, forever, after each detection).

`reactor run`, `reactor sweep --once` and `reactor demo` check at start, through
`reactor db check`'s own comparison, that every table, column, key, sequence and
privilege the write path needs is there; if not they stop with one line naming what
is missing and the command that fixes it (reactor.store.advice), and detect nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import asyncpg

from reactor.store import advice, catalog, legacy, privileges, schema
from reactor.store.catalog import CheckReport, Finding, SchemaUnusable
from reactor.store.dbtypes import Conn

__all__ = ["SchemaUnusable", "WriteShapes", "blocking", "require_writable", "write_shapes"]

# Problems that make a result or failure write fail: a missing table or column, the
# unique key the upserts need, a sequence, a privilege. A missing trigger or path
# constraint does not (the sweep still finds the work, the application checks paths).
_BLOCKING_KINDS = ("table", "column", "sequence", "privilege")


def blocking(report: CheckReport) -> list[Finding]:
    return [
        f
        for f in report.problems
        if f.kind in _BLOCKING_KINDS or (f.kind == "index" and ("PRIMARY KEY" in f.name or "UNIQUE" in f.name))
    ]


async def require_writable(conn: asyncpg.Connection, channel: str) -> None:
    """Raise SchemaUnusable when no outcome could be written."""
    report = await catalog.check(conn, channel=channel, standalone=False)
    problems = blocking(report)
    if not problems:
        return
    can_apply = not await privileges.missing_init_privileges(conn, standalone=False)
    first = problems[0]
    what = f"{first.kind} {first.name} is {first.status}" + (f" ({first.detail})" if first.detail else "")
    more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
    raise SchemaUnusable(
        f"results cannot be written (role {report.role}, database {report.database}): {what}{more}; "
        f"{advice.for_problems(report.role, problems, can_apply)}, then run `reactor db check`"
    )


@dataclass(frozen=True)
class WriteShapes:
    """What the outcome writes adapt to: the failures table's optional columns, and an
    adopted legacy face_metadata's JSON columns."""

    failure_columns: frozenset[str]
    result_shape: legacy.ResultShape


async def write_shapes(conn: Conn, channel: str) -> WriteShapes:
    """The shapes of the tables the outcomes go to; SchemaUnusable when no outcome could
    be written (checked before anything is detected)."""
    raw = cast(asyncpg.Connection, conn)
    await require_writable(raw, channel)
    return WriteShapes(await schema.failure_columns(raw), await legacy.result_shape(raw))
