"""What `reactor repair --apply` writes (sql/integrity.sql's repair_* blocks), in the one
transaction ``locked()`` opens: timestamped backup tables filled with the rows about to
go, the deletions, the validation of path constraints, and the re-queue notifications.

Each function runs inside ``translated()``; ``locked()`` turns a lock that other
sessions held past the timeout (or a deadlock) into ``TablesBusy``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg

from reactor.store import relations
from reactor.store.constraints import PATH_CONSTRAINTS
from reactor.store.dbtypes import Conn, rows_affected
from reactor.store.errors import StoreError, translated
from reactor.store.relations import BACKUP_PREFIX
from reactor.store.sql import Queries, fill_identifiers

Q = Queries("integrity.sql")

# source table -> (backup table, rows copied)
Backups = dict[str, tuple[str, int]]

_BUSY = (asyncpg.LockNotAvailableError, asyncpg.DeadlockDetectedError)


class TablesBusy(StoreError):
    """Other sessions held the reactor's tables past the lock timeout, or a deadlock was
    broken: the transaction rolled back, nothing changed. The message names the error."""


@contextlib.asynccontextmanager
async def locked(conn: Conn, lock_timeout: str) -> AsyncIterator[None]:
    """One transaction holding repair's lock on the reactor's tables (a running reactor's
    writes wait, at most ``lock_timeout``); everything inside commits or nothing does."""
    try:
        with translated():
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = '{lock_timeout}'")
                await conn.execute(Q.repair_lock)
                yield
    except StoreError as exc:
        if isinstance(exc.__cause__, _BUSY):
            raise TablesBusy(type(exc.__cause__).__name__) from exc
        raise


async def _backup_table(conn: Conn, backups: Backups, source: str, stamp: str) -> str:
    if source in backups:
        return backups[source][0]
    name = f"{BACKUP_PREFIX}{stamp}_{source}"
    suffix = 1
    while await relations.exists_named(conn, name):
        suffix += 1
        name = f"{BACKUP_PREFIX}{stamp}_{suffix}_{source}"
    await conn.execute(fill_identifiers(Q.repair_create_backup, backup=name, source=source))
    backups[source] = (name, 0)
    return name


async def copy(conn: Conn, backups: Backups, source: str, stamp: str, block: str, *args: Any) -> None:
    """Copy rows of ``source`` with the integrity.sql ``block`` (repair_backup_rows,
    repair_backup_orphan_faces, repair_backup_claims) into its backup table for this
    ``stamp``, created on first use; ``backups`` counts what each table received."""
    with translated():
        name = await _backup_table(conn, backups, source, stamp)
        copied = rows_affected(
            await conn.execute(fill_identifiers(getattr(Q, block), backup=name, source=source), *args)
        )
    backups[source] = (name, backups[source][1] + copied)


async def _delete(conn: Conn, query: str, *args: Any) -> int:
    with translated():
        return rows_affected(await conn.execute(query, *args))


async def delete_claims(conn: Conn, paths: Sequence[str], tokens: Sequence[int]) -> int:
    """Only the exact claims named (path and fencing token)."""
    return await _delete(conn, Q.repair_delete_claims, list(paths), list(tokens))


async def delete_failures(conn: Conn, paths: Sequence[str]) -> int:
    return await _delete(conn, Q.repair_delete_failures, list(paths))


async def delete_orphan_faces(conn: Conn, paths: Sequence[str]) -> int:
    return await _delete(conn, Q.repair_delete_orphan_faces, list(paths))


async def delete_results(conn: Conn, paths: Sequence[str]) -> int:
    """Results (their face rows go by ON DELETE CASCADE)."""
    return await _delete(conn, Q.repair_delete_results, list(paths))


async def validate_constraints(conn: Conn) -> tuple[list[str], list[str]]:
    """Validate the path constraints still NOT VALID, each in a savepoint: (validated, still not valid)."""
    validated: list[str] = []
    refused: list[str] = []
    with translated():
        for row in await conn.fetch(Q.repair_unvalidated_constraints, list(PATH_CONSTRAINTS)):
            try:
                # A savepoint: rows this repair does not judge (none today) must not undo it.
                async with conn.transaction():
                    await conn.execute(
                        fill_identifiers(
                            Q.repair_validate_constraint, source=row["table_name"], constraint=row["constraint_name"]
                        )
                    )
            except asyncpg.CheckViolationError:
                refused.append(row["constraint_name"])
                continue
            validated.append(row["constraint_name"])
    return validated, refused


async def requeue(conn: Conn, channel: str, paths: Sequence[str]) -> int:
    """The ai_metadata trigger's payload on ``channel`` for those of ``paths`` that are
    processed and have no result, delivered at commit; notifications sent."""
    with translated():
        sent = await conn.fetchval(Q.repair_requeue, channel, list(paths))
    return int(sent or 0)
