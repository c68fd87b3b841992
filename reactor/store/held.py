"""Deletions held for the operator: a confirmed mass vanish is a decision, not a loop.

When more than watcher.vanish_fraction of the share vanishes, the watcher first takes
it for an outage (reactor.watch.share). Seen again on a later scan with the share online,
the vanish is confirmed, and then the files are *held*: one row each in
reactor_held_deletions, one ``deletions_held`` log line, and nothing deleted. The share
stays online for the files that are there. `reactor status`, `/healthz` (degraded) and
`reactor audit` show the held files until a person decides:

- ``reactor deletions --apply`` backs up their rows (face_metadata, face_detections,
  failures, registrations) into timestamped ``reactor_backup_*`` tables and deletes
  them, in one transaction, for the files still missing on the online share;
- a held file that reappears is released by the watcher, its result intact.

A held path that validation rejects (``a\\b.jpg``, a derived folder) is never opened:
``--apply`` reports it and skips it (it stays held), and applies the others.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg

from reactor import logs
from reactor.paths import InvalidPath, PathMapper, gone_states
from reactor.store.dbtypes import Conn, rows_affected
from reactor.store.errors import translated
from reactor.store.relations import BACKUP_PREFIX
from reactor.store.sql import Queries, fill_identifiers

Q = Queries("held.sql")
# The backup tables and their filling are `reactor repair`'s (sql/integrity.sql).
BACKUP = Queries("integrity.sql")
log = logs.get("reactor.held")

# Tables whose rows for a held path are backed up, then deleted (children first).
BACKED_UP = ("face_detections", "reactor_file_identity", "face_metadata", "face_detection_failures")


@dataclass
class ApplyResult:
    deleted: list[str] = field(default_factory=list)
    # Held files that are on the share again: released, their results kept.
    released: list[str] = field(default_factory=list)
    # source table -> (backup table, rows copied)
    backups: dict[str, tuple[str, int]] = field(default_factory=dict)
    # Held files that could not be looked at (an I/O error, an unreachable folder): still held.
    undecided: list[str] = field(default_factory=list)
    # Held paths that validation rejects (path -> reason): never opened, still held.
    rejected: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "deleted": len(self.deleted),
            "released": self.released,
            "undecided": self.undecided,
            "rejected": self.rejected,
            "backups": {s: {"table": t, "rows": n} for s, (t, n) in self.backups.items()},
        }


async def hold(conn: Conn, paths: Sequence[str], reason: str) -> int:
    """Hold these deletions; returns how many were not held already."""
    if not paths:
        return 0
    with translated():
        rows = await conn.fetch(Q.hold_deletions, list(paths), reason)
    return len(rows)


async def release(conn: Conn, paths: Sequence[str]) -> list[str]:
    """These files are on the share again: their deletion is no longer pending."""
    if not paths:
        return []
    with translated():
        return [r["image_path"] for r in await conn.fetch(Q.release_deletions, list(paths))]


async def count(conn: Conn) -> int:
    with translated():
        return int(await conn.fetchval(Q.held_count))


async def listed(conn: Conn, limit: int) -> list[asyncpg.Record]:
    with translated():
        return list(await conn.fetch(Q.held_list, limit))


async def apply(conn: Conn, mapper: PathMapper, *, standalone: bool) -> ApplyResult:
    """Back up and delete the held files still missing on the share (online, checked by
    the caller); release the others. One transaction: all of it or nothing."""
    result = ApplyResult()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d_%H%M%S")
    # The statements raise the store's errors, the look at the files in between its own:
    # the transaction is opened and closed by hand so that the look stays outside.
    transaction = conn.transaction()
    with translated():
        await transaction.start()
    try:
        await _apply(conn, mapper, standalone, stamp, result)
    except BaseException:
        with translated():
            await transaction.rollback()
        raise
    with translated():
        await transaction.commit()
    if result.deleted:
        log.info(
            "held_deletions_applied",
            deleted=len(result.deleted),
            released=len(result.released),
            undecided=len(result.undecided),
            rejected=len(result.rejected),
            backups={s: t for s, (t, _) in result.backups.items()},
        )
    return result


async def _apply(conn: Conn, mapper: PathMapper, standalone: bool, stamp: str, result: ApplyResult) -> None:
    """apply's work inside its transaction; fills ``result``."""
    with translated():
        locked = await conn.fetch(Q.held_all_locked)
    paths = []
    for r in locked:
        try:
            mapper.to_local(r["image_path"])
        except InvalidPath as exc:
            result.rejected[r["image_path"]] = exc.reason
            continue
        paths.append(r["image_path"])
    if result.rejected:
        log.warning("held_deletions_rejected", paths=sorted(result.rejected)[:20], count=len(result.rejected))
    # Gone only where "not found" is certain for every Unicode form of the name: an
    # error or an unreachable folder is not a deletion.
    states = await asyncio.to_thread(gone_states, paths, mapper.to_local)
    present = [p for p in paths if states[p] is False]
    result.undecided = [p for p in paths if states[p] is None]
    result.released = await release(conn, sorted(present))
    gone = [p for p in paths if states[p] is True]
    if not gone:
        return
    tables = [*BACKED_UP, *(("ai_metadata",) if standalone else ())]
    with translated():
        for table in tables:
            backup = f"{BACKUP_PREFIX}{stamp}_held_{table}"[:63]
            await conn.execute(fill_identifiers(BACKUP.repair_create_backup, backup=backup, source=table))
            status = await conn.execute(
                fill_identifiers(BACKUP.repair_backup_rows, backup=backup, source=table), gone, "held deletion applied"
            )
            result.backups[table] = (backup, rows_affected(status))
        for table in tables:
            await conn.execute(fill_identifiers(Q.held_delete, source=table), gone)
        await conn.execute(Q.release_deletions, gone)
    result.deleted = gone
