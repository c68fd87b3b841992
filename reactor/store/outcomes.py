"""Persistence of outcomes: a result, or a typed failure with backoff.

A success writes face_metadata, replaces face_detections and deletes the failure
row in one transaction. A failure upserts face_detection_failures and never
touches face_metadata. Both first delete this instance's claim row by its fencing
token: zero rows means another instance took the image over (our lease expired),
so the outcome is discarded instead of overwriting a newer one. A success is one
statement (sql/outcomes.sql record_result) plus the new face rows, so the common
case, a photo with no faces, costs a single round trip.

Every statement runs inside ``store.errors.translated``: the callers see the store's
exceptions (``Fenced``, ``StoreUnavailable``, ``UnwritableSchema``, ``RejectedPath``,
``StatementFailed``), never asyncpg's.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from reactor.config import RetryConfig
from reactor.detector.types import Detection, DetectionFailure, Face
from reactor.failure_types import ErrorType
from reactor.store import claims, face_identity, legacy
from reactor.store.claims import Claim
from reactor.store.dbtypes import Conn
from reactor.store.errors import Fenced, translated
from reactor.store.legacy import NO_LEGACY, ResultShape
from reactor.store.sql import Queries
from reactor.util.backoff import failure_retry

Q = Queries("outcomes.sql")

MAX_ERROR_TEXT = 2000


@dataclass(frozen=True)
class FailureRecord:
    path: str
    error_type: ErrorType
    retry_count: int
    permanently_failed: bool
    next_retry_after: datetime


async def _release_fenced(conn: Conn, claim: Claim | None) -> None:
    if claim is None:
        return
    # Known before the COMMIT is sent: if its reply is lost, ``landed`` asks the server.
    claim.write_xids.append(int(await conn.fetchval(Q.current_xid)))
    if not await claims.release(conn, claim):
        raise Fenced(claim.path)


async def landed(conn: Conn, claim: Claim) -> bool:
    """Whether one of the outcome writes tried under ``claim`` committed, whatever the kind
    of outcome (a result, a failure, an ``incomplete`` that counts no try): the server's own
    record of the transaction, not a guess from the rows it wrote."""
    if not claim.write_xids:
        return False
    with translated(claim.path):
        return bool(await conn.fetchval(Q.writes_committed, claim.write_xids))


# Parameters of record_result before the legacy JSON columns (sql/outcomes.sql).
_FIXED_PARAMS = 20


@functools.cache
def record_result_sql(shape: ResultShape) -> str:
    """sql/outcomes.sql record_result for this face_metadata: on an adopted legacy table
    it also writes the legacy JSON columns, from parameter $21 on."""
    columns = shape.columns()
    first = _FIXED_PARAMS + 1
    fill = {
        "/*legacy_columns*/": "".join(f", {name}" for name, _ in columns),
        "/*legacy_values*/": "".join(f", ${first + i}::text::{type_}" for i, (_, type_) in enumerate(columns)),
        "/*legacy_updates*/": "".join(f", {name} = EXCLUDED.{name}" for name, _ in columns),
    }
    text = str(Q.record_result)
    for marker, value in fill.items():
        text = text.replace(marker, value)
    return text


def _legacy_args(shape: ResultShape, result: Detection) -> tuple[str, ...]:
    if not shape.legacy:
        return ()
    boxes, encodings = legacy.encode(
        [(f.top, f.right, f.bottom, f.left) for f in result.faces], [f.encoding for f in result.faces]
    )
    values = {legacy.BOXES: boxes, legacy.ENCODINGS: encodings}
    return tuple(values[name] for name, _ in shape.columns())


def _face_args(path: str, index: int, face: Face, result: Detection) -> tuple[object, ...]:
    return (
        path,
        index,
        face.top,
        face.right,
        face.bottom,
        face.left,
        face.score,
        list(face.encoding),
        result.model,
        result.scale,
    )


async def _keep_identities(conn: Conn, path: str, result: Detection) -> None:
    """Replace the image's faces, matched faces keeping their rows (reactor.util.identity)."""
    old = [
        (r["face_id"], (r["box_top"], r["box_right"], r["box_bottom"], r["box_left"]))
        for r in await conn.fetch(Q.faces_of_image, path)
    ]
    matching = face_identity.match(old, [(f.top, f.right, f.bottom, f.left) for f in result.faces])
    if matching.removed:
        await conn.execute(Q.delete_faces, list(matching.removed))
    if len(matching.removed) < len(old):
        await conn.execute(Q.shift_face_indexes, path)
    updates, inserts = [], []
    for index, (face, face_id) in enumerate(zip(result.faces, matching.kept, strict=True)):
        if face_id is None:
            inserts.append(_face_args(path, index, face, result))
        else:
            updates.append((face_id, *_face_args(path, index, face, result)[1:]))
    if updates:
        await conn.executemany(Q.update_face, updates)
    if inserts:
        await conn.executemany(Q.insert_face_detection, inserts)


async def record_success(
    conn: Conn,
    claim: Claim,
    result: Detection,
    instance_id: str,
    *,
    shape: ResultShape = NO_LEGACY,
    settings: str | None = None,
) -> None:
    """Write the result in one transaction; Fenced if the claim was taken over.

    An image detected again keeps the ids of the faces still there (reactor.util.identity),
    unless its re-detection asked for new ones. ``shape`` names the legacy JSON
    columns of an adopted face_metadata, which the same statement fills
    (reactor.store.legacy); ``settings`` is the detector settings' fingerprint."""
    width, height = result.original_size
    # Only an image that had a result can have face rows (they cascade with it).
    match_faces = claim.state.done and claim.keep_face_ids
    detect_width, detect_height = result.detect_size or (None, None)
    args = (
        claim.path,
        claim.token,
        result.face_count,
        result.model,
        result.scale,
        width,
        height,
        result.decode_ms,
        result.detect_ms,
        result.encode_ms,
        instance_id,
        not match_faces,
        settings,
        detect_width,
        detect_height,
        result.upsample,
        result.min_face_px,
        result.file_size_bytes if result.fingerprint else None,
        result.file_mtime_ns,
        result.fingerprint,
        *_legacy_args(shape, result),
    )
    with translated(claim.path):
        await _write_result(conn, claim, result, record_result_sql(shape), args, match_faces)


async def _write_result(
    conn: Conn, claim: Claim, result: Detection, statement: str, args: tuple[object, ...], match_faces: bool
) -> None:
    if not result.faces and not match_faces:
        # A single statement is a transaction of its own.
        if not await conn.fetchval(statement, *args):
            raise Fenced(claim.path)
        return
    async with conn.transaction():
        if not await conn.fetchval(statement, *args):
            raise Fenced(claim.path)
        if match_faces:
            await _keep_identities(conn, claim.path, result)
        else:
            await conn.executemany(
                Q.insert_face_detection, [_face_args(claim.path, i, f, result) for i, f in enumerate(result.faces)]
            )


# The one list of blocks that name an optional column of face_detection_failures, with
# the columns each needs: they run only where the table has them. Every other block
# reads optional columns through to_jsonb(f), so it runs on any shape of the table;
# tests/test_sql_blocks.py prepares every block against the legacy production shape
# (seeds/000: no file_size_bytes, original_width, original_height) and holds the rest to it.
# The failure writes (record_failure, record_incomplete) name an optional column only
# where the table has it (failure_write_sql), so they run on any shape as they stand.
OPTIONAL_FAILURE_BLOCKS: dict[str, frozenset[str]] = {
    "failure_previous_file": frozenset({"file_size_bytes", "file_mtime_ns"}),
}

# The optional columns a failure write fills, each with how an existing row takes it:
# a value the failure does not know (NULL) keeps the row's, except the mtime, which is
# always the one of this try (None: the file could not be stat'ed).
FAILURE_WRITE_COLUMNS: dict[str, str] = {
    "original_width": "coalesce(EXCLUDED.original_width, f.original_width)",
    "original_height": "coalesce(EXCLUDED.original_height, f.original_height)",
    "file_size_bytes": "coalesce(EXCLUDED.file_size_bytes, f.file_size_bytes)",
    "file_mtime_ns": "EXCLUDED.file_mtime_ns",
    "last_attempted_scale": "coalesce(EXCLUDED.last_attempted_scale, f.last_attempted_scale)",
}
# Parameters of each failure write before its optional columns (sql/outcomes.sql).
FAILURE_FIXED_PARAMS = {"record_failure": 6, "record_incomplete": 4}


def _runs(block: str, columns: frozenset[str]) -> bool:
    return OPTIONAL_FAILURE_BLOCKS[block] <= columns


@functools.cache
def failure_write_sql(block: str, columns: frozenset[str]) -> str:
    """sql/outcomes.sql ``block`` (record_failure or record_incomplete) writing, in the same
    statement, the optional columns of FAILURE_WRITE_COLUMNS that the table has."""
    present = [name for name in FAILURE_WRITE_COLUMNS if name in columns]
    first = FAILURE_FIXED_PARAMS[block] + 1
    fill = {
        "/*optional_columns*/": "".join(f", {name}" for name in present),
        "/*optional_values*/": "".join(f", ${first + i}" for i in range(len(present))),
        "/*optional_updates*/": "".join(f", {name} = {FAILURE_WRITE_COLUMNS[name]}" for name in present),
    }
    text = str(getattr(Q, block))
    for marker, value in fill.items():
        text = text.replace(marker, value)
    return text


def _failure_write_args(failure: DetectionFailure, columns: frozenset[str]) -> tuple[object, ...]:
    width, height = failure.original_size or (None, None)
    values: dict[str, object] = {
        "original_width": width,
        "original_height": height,
        "file_size_bytes": failure.file_size_bytes,
        "file_mtime_ns": failure.file_mtime_ns,
        "last_attempted_scale": failure.scale,
    }
    return tuple(values[name] for name in FAILURE_WRITE_COLUMNS if name in columns)


async def record_failure(
    conn: Conn,
    path: str,
    failure: DetectionFailure,
    retry: RetryConfig,
    columns: frozenset[str],
    claim: Claim | None = None,
    incomplete_delay: float = 15.0,
) -> FailureRecord:
    """Upsert the failure row with its next try; Fenced if the claim was taken over.

    ``columns`` are the failures table's columns: optional ones that a legacy table
    lacks are simply not written. The next try follows the retry policy
    (reactor.util.backoff). A type that is ``settling`` (a file still being written) is
    retried after ``incomplete_delay`` seconds without counting a try, unless it is found
    exactly as it was at its last try: then it is what its type ``unchanged_becomes``.
    """
    with translated(path):
        async with conn.transaction():
            await _release_fenced(conn, claim)
            failure = await _settled(conn, path, failure, columns)
            row = await _write_failure(conn, path, failure, retry, columns, incomplete_delay)
    return FailureRecord(
        path=path,
        error_type=failure.error_type,
        retry_count=int(row["retry_count"]),
        permanently_failed=bool(row["permanently_failed"]),
        next_retry_after=row["next_retry_after"],
    )


async def _settled(conn: Conn, path: str, failure: DetectionFailure, columns: frozenset[str]) -> DetectionFailure:
    """The failure as recorded: a file cut short that stopped changing is no longer settling."""
    becomes = failure.error_type.unchanged_becomes
    if becomes is None or not await _unchanged_since(conn, path, failure, becomes, columns):
        return failure
    return dataclasses.replace(
        failure,
        error_type=becomes,
        message=f"cut short and unchanged since the last try: {failure.message}"[:MAX_ERROR_TEXT],
    )


async def _write_failure(
    conn: Conn,
    path: str,
    failure: DetectionFailure,
    retry: RetryConfig,
    columns: frozenset[str],
    incomplete_delay: float,
) -> asyncpg.Record:
    message = (failure.message or failure.error_type.value)[:MAX_ERROR_TEXT]
    optional = _failure_write_args(failure, columns)
    if failure.error_type.settling:
        row = await conn.fetchrow(
            failure_write_sql("record_incomplete", columns),
            path,
            message,
            failure.error_type.value,
            incomplete_delay,
            *optional,
        )
    else:
        policy = failure_retry(retry, failure.error_type)
        row = await conn.fetchrow(
            failure_write_sql("record_failure", columns),
            path,
            message,
            failure.error_type.value,
            list(policy.delays),
            policy.jitter,
            policy.tries,
            *optional,
        )
    assert row is not None
    return row


async def _unchanged_since(
    conn: Conn, path: str, failure: DetectionFailure, becomes: ErrorType, columns: frozenset[str]
) -> bool:
    """The file is exactly as at its last try, which found it as this one did (settling,
    or already what that becomes for that reason): not a copy in progress."""
    previous = await conn.fetchrow(Q.failure_previous, path)
    if previous is None or previous["last_error_type"] not in (failure.error_type.value, becomes.value):
        return False
    # The message names the size, the mtime and the content's fingerprint (loading.py):
    # through SMB a copy in progress keeps its final size and a frozen mtime, and only
    # its bytes tell that it moved on.
    same_message = str(previous["last_error"] or "").endswith(failure.message[:MAX_ERROR_TEXT])
    if _runs("failure_previous_file", columns):
        was = await conn.fetchrow(Q.failure_previous_file, path)
        assert was is not None
        same_file = (was["file_size_bytes"], was["file_mtime_ns"]) == (failure.file_size_bytes, failure.file_mtime_ns)
        return same_file and same_message
    return same_message
