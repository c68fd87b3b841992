"""Results that follow their photo to a new path (reactor.core.moved decides which).

Face ids are what downstream programs hang names and crops on, so a photo that is
renamed or moved on the share, and in ai_metadata, must not cost them. The new path
is claimed like any image; before it is detected, the results whose file had the same
size and mtime are read here, and the one that matches its content fingerprint and
whose old path has vanished is moved to the new path in one transaction with the
release of the claim: the same result row, the same face rows, no detection.
"""

from __future__ import annotations

from dataclasses import dataclass

from reactor.store import claims
from reactor.store.claims import Claim
from reactor.store.dbtypes import Conn
from reactor.store.errors import translating
from reactor.store.sql import Queries

Q = Queries("moves.sql")


@dataclass(frozen=True)
class Candidate:
    """A result at another path whose file had the size and mtime of the new one."""

    path: str
    fingerprint: str
    # The old path still has an ai_metadata row: only a file certainly gone makes it vanished.
    registered: bool


@translating
async def candidates(conn: Conn, path: str, size: int, mtime_ns: int | None) -> list[Candidate]:
    rows = await conn.fetch(Q.moved_result_candidates, size, mtime_ns, path)
    return [Candidate(r["image_path"], r["fingerprint"], bool(r["registered"])) for r in rows]


class _NotMoved(Exception):
    """Rolls the transaction back: the claim stays, the image is detected."""


@translating
async def adopt(conn: Conn, src: str, claim: Claim) -> int | None:
    """Move the result of ``src`` to the claimed path and release the claim, in one
    transaction; the number of faces moved, or None when nothing changed (the claim was
    fenced, or the result went or the new path got one meanwhile)."""
    try:
        async with conn.transaction():
            if not await claims.release(conn, claim):
                return None
            faces = await conn.fetchval(Q.move_result, src, claim.path)
            if faces is None:
                raise _NotMoved
            await conn.execute(Q.move_request, src, claim.path)
            await conn.execute(Q.moved_cleanup, src, claim.path)
            return int(faces)
    except _NotMoved:
        return None
