"""Claims: an instance leases an image in Postgres before detecting it.

A claim is a row in ``reactor_claims`` with a lease and a fencing token from a
sequence. Claiming and checking that the image still needs work happen in one
transaction, so an instance that finished the image a moment ago is seen. The
heartbeat renews this instance's leases every lease/3; a crashed instance's
claims expire after ``service.lease_seconds`` and are taken over with a new token.
A result is written only if the claim row still carries the writer's token
(see reactor.store.outcomes), so a late instance can never overwrite a newer result.
Statements run inside ``store.errors.translated``: callers see the store's exceptions
(a path the claims table refuses is ``RejectedPath``), never asyncpg's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import asyncpg

from reactor.failure_types import ErrorType
from reactor.store.dbtypes import Conn, rows_affected
from reactor.store.errors import translated
from reactor.store.sql import Queries

Q = Queries("claims.sql")


class Skip(StrEnum):
    """Why an image is not claimed now (the `image_skipped` log line's reason)."""

    CLAIMED_ELSEWHERE = "claimed_elsewhere"
    NOT_PROCESSED = "not_processed"
    BLACKLISTED = "blacklisted"
    DONE = "done"
    PERMANENTLY_FAILED = "permanently_failed"
    BACKING_OFF = "backing_off"


class RedetectMode(StrEnum):
    """How `reactor redetect` asked for a result again (reactor_redetect.mode)."""

    # The faces found again keep their ids by box overlap (reactor.util.identity).
    REFRESH = "refresh"
    # Every face gets a new id.
    RESET = "reset"


@dataclass(frozen=True)
class ImageState:
    done: bool
    processed: bool
    has_failure: bool
    retry_count: int
    permanently_failed: bool
    backing_off: bool
    last_scale: float | None
    last_error_type: str | None
    # `reactor redetect` asked for this image again: a result does not make it done.
    redetect_requested: bool = False
    # A RedetectMode value; None: refresh.
    redetect_mode: str | None = None

    @classmethod
    def from_record(cls, row: asyncpg.Record) -> ImageState:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__})

    @property
    def error_type(self) -> ErrorType | None:
        """The type of the last failure, if this version knows it."""
        return ErrorType.parse(self.last_error_type)

    def skip_reason(self, *, manual: bool = False, redetect: bool = False, file_event: bool = False) -> Skip | None:
        """Why this image needs no detection now, or None if it does.

        A manual request overrides backoff and the permanent state; a changed file
        (redetect) also overrides an existing result, and so does a re-detection
        request, which otherwise waits out its failures' backoff like any image. A file
        event overrides them for a failure about reaching the file (missing, unreadable,
        io_stall): the file is back. Nothing overrides the blacklist, which only
        `reactor failures retry PATH` takes back in the database.
        """
        if not self.processed:
            return Skip.NOT_PROCESSED
        if self.last_error_type == ErrorType.BLACKLISTED and self.permanently_failed:
            return Skip.BLACKLISTED
        if self.done and not (redetect or self.redetect_requested):
            return Skip.DONE
        if manual or redetect:
            return None
        if file_event and self.error_type is not None and self.error_type.file_access:
            return None
        if self.permanently_failed:
            return Skip.PERMANENTLY_FAILED
        if self.backing_off:
            return Skip.BACKING_OFF
        return None


@dataclass(frozen=True)
class Claim:
    path: str
    token: int
    state: ImageState
    # The transaction ids of the outcome writes tried under this claim (reactor.store.outcomes):
    # after a lost commit reply, whether one of them committed says if the outcome landed.
    write_xids: list[int] = field(default_factory=list, compare=False)

    @property
    def attempt(self) -> int:
        return self.state.retry_count + 1

    @property
    def keep_face_ids(self) -> bool:
        """Whether the faces found again keep their ids (``reactor.util.identity``): always,
        unless a `reactor redetect --reset` asked for new ones."""
        return self.state.redetect_mode != RedetectMode.RESET

    @property
    def last_scale(self) -> float | None:
        # Only a resource failure says the next try should start at a smaller scale.
        error_type = self.state.error_type
        if error_type is not None and error_type.scales_down:
            return self.state.last_scale
        return None


async def read_state(conn: Conn, path: str) -> ImageState:
    with translated(path):
        row = await conn.fetchrow(Q.image_state, path)
    assert row is not None
    return ImageState.from_record(row)


async def _claim_in_tx(
    conn: Conn, path: str, instance_id: str, lease_seconds: float, *, manual: bool, redetect: bool, file_event: bool
) -> Claim | Skip:
    async with conn.transaction():
        token = await conn.fetchval(Q.claim_image, path, instance_id, lease_seconds)
        if token is None:
            return Skip.CLAIMED_ELSEWHERE
        state = await read_state(conn, path)
        reason = state.skip_reason(manual=manual, redetect=redetect, file_event=file_event)
        if reason is not None:
            # Roll the claim back: nobody ever sees it.
            raise _NotEligible(reason)
        return Claim(path, int(token), state)


class _NotEligible(Exception):
    def __init__(self, reason: Skip) -> None:
        super().__init__(reason)
        self.reason = reason


async def claim(
    conn: Conn,
    path: str,
    instance_id: str,
    lease_seconds: float,
    *,
    manual: bool = False,
    redetect: bool = False,
    file_event: bool = False,
) -> Claim | Skip:
    """A Claim, or the reason the image is not claimed; RejectedPath if the claims table
    refuses the path itself (its path rule is stricter than the configuration's)."""
    try:
        with translated(path):
            return await _claim_in_tx(
                conn, path, instance_id, lease_seconds, manual=manual, redetect=redetect, file_event=file_event
            )
    except _NotEligible as exc:
        return exc.reason


async def renew(conn: Conn, claim_: Claim, lease_seconds: float) -> bool:
    """Extend the lease of the claim in flight; False if it was taken over."""
    with translated(claim_.path):
        return rows_affected(await conn.execute(Q.renew_claim, claim_.path, claim_.token, lease_seconds)) == 1


async def release(conn: Conn, claim_: Claim) -> bool:
    with translated(claim_.path):
        return await conn.fetchval(Q.release_claim, claim_.path, claim_.token) is not None


async def release_instance(conn: Conn, instance_id: str, tokens: Sequence[int]) -> int:
    """Release the claims of ``instance_id`` that carry one of ``tokens`` (drawn by this process)."""
    if not tokens:
        return 0
    with translated():
        return rows_affected(await conn.execute(Q.release_instance_claims, instance_id, list(tokens)))


async def purge_stale(conn: Conn, older_than_seconds: float) -> int:
    with translated():
        return rows_affected(await conn.execute(Q.purge_stale_claims, older_than_seconds))
