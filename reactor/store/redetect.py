"""Re-detection on demand (sql/redetect.sql, and legacy.sql's legacy-zero request):
durable requests in reactor_redetect, the retry of failures without a result, the
refusals and the pending states a following command reads. Each function runs inside
``translated()``; recording a batch is one transaction.

A selection is paths, a folder prefix, a failure type, a model, or everything (all None).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from reactor.store.dbtypes import Conn, rows_affected
from reactor.store.errors import translated
from reactor.store.sql import Queries

Q = Queries("redetect.sql")
LEGACY = Queries("legacy.sql")
# The batch name of the legacy zero-face requests.
LEGACY_ZERO = "legacy_zero"
# What following reads each second: the pending states counted, not every request.
PENDING_SUMMARY = (
    "SELECT state, count(*)::int AS images, min(image_path) AS example\n"
    f"FROM (\n{Q.pending_states}\n) AS p GROUP BY state ORDER BY state"
)

Refusal = tuple[str, str]  # (path, state)


@dataclass
class Recorded:
    """A batch of requests, recorded."""

    # Requests the batch holds now.
    requested: int = 0
    # The legacy-zero paths newly requested (None for other batches).
    added: set[str] | None = None
    # Requests withdrawn because the sweep would never take them, and named paths
    # without a result: (path, state) each, sorted per kind.
    refused: list[Refusal] = field(default_factory=list)


async def cancel(conn: Conn, paths: Sequence[str] | None, prefix: str | None) -> int:
    """Withdraw the selected requests; the results stay as they are."""
    with translated():
        return rows_affected(await conn.execute(Q.cancel, paths, prefix))


async def retry_missing(conn: Conn, paths: Sequence[str] | None, prefix: str | None, error_type: str | None) -> int:
    """Selected failures without a result are due now (never a blacklisted or invalid path)."""
    with translated():
        return rows_affected(await conn.execute(Q.retry_missing, paths, prefix, error_type))


async def pending_selected(conn: Conn, paths: Sequence[str] | None, prefix: str | None) -> int:
    """Selected processed images with neither result nor failure."""
    with translated():
        return int(await conn.fetchval(Q.pending_selected, paths, prefix))


async def missing_refused(
    conn: Conn, paths: Sequence[str] | None, prefix: str | None, error_type: str | None
) -> list[Refusal]:
    """Selected images ``--missing`` will not retry, with why."""
    with translated():
        return [(r["image_path"], r["state"]) for r in await conn.fetch(Q.missing_refused, paths, prefix, error_type)]


async def record(
    conn: Conn,
    batch: str,
    *,
    never_taken: Sequence[str],
    mode: str | None = None,
    paths: Sequence[str] | None = None,
    prefix: str | None = None,
    error_type: str | None = None,
    model: str | None = None,
    stale: Sequence[str] | None = None,
) -> Recorded:
    """Request the selected results again under ``batch`` in ``mode`` (``batch`` LEGACY_ZERO:
    the legacy zero-face results), then withdraw what the sweep would never take (a
    state of ``never_taken``); named paths without a result are refused too."""
    out = Recorded()
    with translated():
        async with conn.transaction():
            if batch == LEGACY_ZERO:
                out.added = {r["image_path"] for r in await conn.fetch(LEGACY.legacy_zero_request)}
            else:
                await conn.execute(Q.request_results, batch, mode, paths, prefix, error_type, model, stale)
            out.refused = await _withdraw_never_taken(conn, batch, never_taken)
            if paths:
                out.refused += await _without_result(conn, paths, never_taken)
            out.requested = int(await conn.fetchval(LEGACY.redetect_requested, batch))
    return out


async def _without_result(conn: Conn, paths: Sequence[str], never_taken: Sequence[str]) -> list[Refusal]:
    """Named paths with no result to detect again, each with why (a blacklisted image
    has none, for one)."""
    lacking = await conn.fetchval(Q.without_result, list(paths))
    if not lacking:
        return []
    rows = await conn.fetch(Q.pending_states, lacking, None)
    return sorted((r["image_path"], r["state"] if r["state"] in never_taken else "no_result") for r in rows)


async def _withdraw_never_taken(conn: Conn, batch: str, never_taken: Sequence[str]) -> list[Refusal]:
    """Withdraw the batch's requests that the sweep would never take; (path, state) each."""
    rows = [
        (r["image_path"], r["state"])
        for r in await conn.fetch(Q.pending_states, None, batch)
        if r["state"] in never_taken
    ]
    if rows:
        await conn.execute(Q.withdraw, batch, [path for path, _ in rows])
    return sorted(rows)


async def pending_summary(conn: Conn, batch: str) -> dict[str, tuple[int, str]]:
    """The batch's unanswered requests by state: (images, one example path)."""
    with translated():
        rows = await conn.fetch(PENDING_SUMMARY, None, batch)
    return {r["state"]: (r["images"], r["example"]) for r in rows}
