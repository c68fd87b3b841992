"""The detection loop: one image at a time, from the queue to a recorded outcome.

For each entry: validate the path, claim it, wait for the share, detect, then
persist the outcome. The write is shielded and retried across database restarts,
so a shutdown or a broken connection never loses an outcome; if it still cannot
be written, the claim expires and the sweep brings the image back.

Three images overlap: while one is detected, the next is claimed and its bytes
read ahead, and the previous one's outcome is written. A loop runs one detection
at a time; at most one write is in flight (the next write waits for it) and the
loop waits for it before it returns, so a shutdown drains it; a claim taken ahead
and not detected is given back. Every claim from its claim to its write is in
``in_flight``, whose leases the service's lease loop renews.

Several loops (one per detector child, see reactor.core.lanes) may share one queue and
one ``in_flight``: each takes one image at a time, and a path held by one is never
claimed by another until its outcome is written.

A detector that batches (``batch_limit`` above 1: the CNN on a GPU, see
reactor.detector.batching) is given up to that many claimed images at once, taken from
what the queue holds at that moment; their outcomes are written one after the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import asyncpg

from reactor import logs
from reactor.config import Config
from reactor.core import metrics
from reactor.core.inflight import InFlight
from reactor.core.moved import MoveFinder, RunDb
from reactor.core.queue import Entry, ImageQueue, Priority
from reactor.core.tile_sharing import TileSharing
from reactor.detector import DetectorState, DetectorUnavailable
from reactor.detector.settings import settings_fingerprint
from reactor.detector.types import Detection, DetectionFailure, DetectionJob, Outcome
from reactor.failure_types import FILE_ACCESS, ErrorType
from reactor.paths import InvalidPath, PathMapper, recordable
from reactor.store import claims, db, outcomes
from reactor.store.claims import Claim
from reactor.store.constraints import path_rejection
from reactor.store.dbtypes import Conn
from reactor.store.legacy import NO_LEGACY, ResultShape
from reactor.store.sql import Queries
from reactor.util.aio import completed, first_of, sleep_or_stop
from reactor.util.backoff import Backoff
from reactor.util.ratelimit import RateLimiter
from reactor.util.shareio import IoStall, ShareIO

log = logs.get("reactor.detection_loop")
# Write errors that no retry mends: the schema or the role's privileges are wrong.
SCHEMA_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.UndefinedColumnError,
    asyncpg.UndefinedTableError,
    asyncpg.InsufficientPrivilegeError,
    asyncpg.NotNullViolationError,
    asyncpg.UndefinedFunctionError,
    asyncpg.DatatypeMismatchError,
)
Q = Queries("queries.sql")
T = TypeVar("T")


class DetectorLike(Protocol):
    @property
    def state(self) -> DetectorState: ...
    async def start(self) -> None: ...
    async def detect(self, job: DetectionJob) -> Outcome: ...
    async def detect_many(self, jobs: Sequence[DetectionJob]) -> list[Outcome]: ...
    def prefetch(self, local_path: str, size: int | None = None, mtime_ns: int | None = None) -> None: ...
    @property
    def batch_limit(self) -> int: ...


class ShareLike(Protocol):
    online: bool
    # File-system calls on the share (reactor.util.shareio).
    io: ShareIO

    async def acheck(self) -> bool: ...
    async def wait_online(self) -> None: ...


@dataclass
class WriteBlock:
    """Set when a write failed in a way no retry can mend (a missing column or privilege),
    shared by every detection lane: detection stops until the schema is fixed and the
    reactor restarted, so no image is detected for a write that cannot succeed."""

    reason: str | None = None


class DetectorGone(Exception):
    """The detector stopped being usable in the middle of an image."""


@dataclass(frozen=True)
class Ready:
    """An image claimed by this instance, to be detected next."""

    entry: Entry
    claim: Claim
    local: str
    # The one look at the file on its way in (reactor.paths.look_in_share).
    seen: os.stat_result | OSError | None = None


class DetectionLoop:
    def __init__(
        self,
        config: Config,
        pool: asyncpg.Pool,
        queue: ImageQueue,
        detector: DetectorLike,
        share: ShareLike,
        mapper: PathMapper,
        instance_id: str,
        failure_columns: frozenset[str],
        result_shape: ResultShape = NO_LEGACY,
        in_flight: InFlight | None = None,
        blocked: WriteBlock | None = None,
        incomplete_delay: float | None = None,
    ) -> None:
        self.config = config
        self.pool = pool
        self.queue = queue
        self.detector = detector
        self.share = share
        self.mapper = mapper
        self.instance_id = instance_id
        self.failure_columns = failure_columns
        self.result_shape = result_shape
        self.blocked = blocked if blocked is not None else WriteBlock()
        # A file still being written is tried again after the share's stability window
        # (reactor.watch.mounts.stability_window): by then a network client's cache is fresh.
        self.incomplete_delay = config.watcher.stability_seconds if incomplete_delay is None else incomplete_delay
        self.current_claim: Claim | None = None
        # Claims taken and not yet written or given back: the one being detected, the one being written.
        self.in_flight = in_flight if in_flight is not None else InFlight()
        self.processed = 0
        self.db_ok = True
        self.persisting: asyncio.Task[None] | None = None
        self._limiter = RateLimiter(config.logging.rate_limit_seconds)
        self.moves = MoveFinder(mapper, lambda: share.online, share.io)
        # Idle lanes that detect parts of this loop's photo (set by reactor.core.lanes).
        self.tiles: TileSharing | None = None

    @property
    def current(self) -> str | None:
        return self.current_claim.path if self.current_claim else None

    async def run(self, stop: asyncio.Event, *, until_empty: bool = False) -> None:
        """Work until ``stop``; with ``until_empty`` also return once the queue is empty.

        While one image is detected, the next one is taken from the queue and claimed
        (``ahead``). Returns only after the last outcome is written (or fenced); a
        claim taken ahead and not detected is given back."""
        ahead: asyncio.Task[Ready | None] | None = None
        try:
            while not stop.is_set():
                if not await self._wait_ready(stop):
                    break
                if ahead is not None:
                    claiming, ahead = ahead, None
                    ready = await claiming
                else:
                    if until_empty and len(self.queue) == 0:
                        break
                    entry = self.queue.get_nowait() or await first_of(self.queue.get_entry(), stop)
                    if entry is None:
                        break
                    if stop.is_set():
                        # Taken in the same turn as the stop: leave it for the next run.
                        self.queue.put(entry.path, entry.priority, redetect=entry.redetect)
                        break
                    ready = await self._prepare_contained(entry, stop)
                if ready is not None:
                    batch = [ready, *await self._batch_more(stop)]
                    ahead = self._claim_ahead(stop)
                    try:
                        await self._detect_and_write(batch)
                    except Exception as exc:
                        for each in batch:
                            await self._contain(each.entry.path, exc, stop)
        finally:
            await self._abandon(ahead)
            await self.flush()

    async def _batch_more(self, stop: asyncio.Event) -> list[Ready]:
        """More claimed images for the detector's batch, from what the queue holds now
        (never waiting for more to arrive, never taking what an idle lane waits for)."""
        more: list[Ready] = []
        while len(more) + 1 < self.detector.batch_limit and not stop.is_set():
            entry = self._take_next()
            if entry is None:
                break
            ready = await self._prepare_contained(entry, stop)
            if ready is not None:
                more.append(ready)
        return more

    def _take_next(self) -> Entry | None:
        """The next entry, if this loop may take it now (it never waits for one)."""
        upcoming = self.queue.peek()
        if upcoming is None or upcoming in self.in_flight:
            # The same image again: it is claimed once its write is done (see _prepare).
            return None
        if self.queue.waiting:
            # Another lane is idle: the next image is its to detect now, not ours to hold.
            return None
        return self.queue.get_nowait()

    def _claim_ahead(self, stop: asyncio.Event) -> asyncio.Task[Ready | None] | None:
        """Take the next entry and claim it now, so that its claim overlaps this detection."""
        entry = self._take_next()
        if entry is None:
            return None
        return asyncio.ensure_future(self._prepare_contained(entry, stop, read_ahead=True))

    async def _abandon(self, ahead: asyncio.Task[Ready | None] | None) -> None:
        """Give back a claim taken ahead that will not be detected in this run."""
        if ahead is None:
            return
        # A claim cancelled before it was registered is never renewed: it expires, or
        # goes with this instance's claims at shutdown. A registered one is released now.
        ahead.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            ready = await ahead
            if ready is not None:
                self.in_flight.pop(ready.claim.path, None)
                await self._give_back(ready.claim, ready.entry)

    async def flush(self) -> None:
        """Wait until the outcome being written is written (shielded: a cancel leaves the write running)."""
        task = self.persisting
        if task is None:
            return
        try:
            await asyncio.shield(task)  # re-raises once what the write raised
        finally:
            if task.done() and self.persisting is task:
                self.persisting = None

    async def _wait_ready(self, stop: asyncio.Event) -> bool:
        """Share online and detector usable; False if stopped while waiting (or for good,
        once writes are blocked: the service stays up and unhealthy until restarted)."""
        if self.blocked.reason is not None:
            await stop.wait()
            return False
        if not self.share.online:
            log.info("detection_paused", reason="share offline")
            if not await completed(self.share.wait_online(), stop):
                return False
            log.info("detection_resumed")
        backoff = Backoff(cap=300.0, first=5.0)
        while self.detector.state in (DetectorState.STOPPED, DetectorState.UNAVAILABLE):
            try:
                await self.detector.start()
            except DetectorUnavailable as exc:
                if backoff.attempt == 0:
                    log.error(
                        "detector_unavailable",
                        error=str(exc),
                        advice="run `reactor doctor`; detection resumes when the detector starts",
                    )
                if await sleep_or_stop(stop, backoff.next_delay()):
                    return False
        return True

    async def _prepare_contained(self, entry: Entry, stop: asyncio.Event, *, read_ahead: bool = False) -> Ready | None:
        try:
            return await self._prepare(entry, stop, read_ahead=read_ahead)
        except Exception as exc:
            await self._contain(entry.path, exc, stop)
            return None

    async def _contain(self, path: str, exc: Exception, stop: asyncio.Event) -> None:
        """No input can stop detection: whatever one entry raises ends as its recorded failure."""
        log.error(
            "image_unexpected_error", path=recordable(path)[:300], error=f"{type(exc).__name__}: {exc}", exc_info=exc
        )
        await self._record_unclaimed(
            path, DetectionFailure(ErrorType.RUNTIME, f"{type(exc).__name__}: {exc}"[:1000]), stop
        )

    async def _record_unclaimed(self, path: str, failure: DetectionFailure, stop: asyncio.Event) -> None:
        """A failure for an image that was never claimed (or whose claim is in doubt)."""

        async def write(conn: Conn) -> outcomes.FailureRecord:
            return await outcomes.record_failure(
                conn, recordable(path), failure, self.config.retry, self.failure_columns
            )

        try:
            record = await self._db(stop, write)
        except Exception as again:  # the path itself may be what the database refuses
            log.error("failure_unrecordable", path=recordable(path)[:300], error=str(again))
            return
        if record is not None:
            self._failed(record, failure)

    async def _prepare(self, entry: Entry, stop: asyncio.Event, *, read_ahead: bool = False) -> Ready | None:
        """Validate and claim the image; None if it is invalid (recorded) or needs no detection."""
        manual = entry.priority is Priority.MANUAL
        try:
            # Resolving touches the share, on its own threads and with its deadline: a folder
            # that hangs must not hold the loop's next image (reactor.util.shareio).
            folder = os.path.dirname(self.mapper.os_path(entry.path))
            local, seen = await self.share.io.call(folder, self.mapper.look_in_share, entry.path)
        except InvalidPath as exc:
            await self._record_invalid(entry.path, exc, manual, stop)
            return None
        except IoStall as exc:
            await self.share.acheck()  # offline (probe_hung) if the whole share hangs: detection pauses
            stall = DetectionFailure(ErrorType.IO_STALL, f"resolving the path on the share: {exc}")
            await self._record_unclaimed(entry.path, stall, stop)
            return None
        if read_ahead:
            # Its bytes are read while the current image is detected. That detection took
            # its own read-ahead when it started, before this thread hop returned.
            self.detector.prefetch(str(local), *_size_and_mtime(seen))
        if entry.path in self.in_flight:
            # Its previous outcome is still being written: a claim now would take
            # over that claim's token and fence the write.
            await self.flush()
        # The same for a claim another lane holds or is taking (see reactor.core.inflight).
        await self.in_flight.reserve(entry.path)
        try:
            result = await self._db(
                stop,
                lambda conn: claims.claim(
                    conn,
                    entry.path,
                    self.instance_id,
                    self.config.service.lease_seconds,
                    manual=manual,
                    redetect=entry.redetect,
                    file_event=entry.priority is Priority.FILE_EVENT,
                ),
            )
            if isinstance(result, Claim):
                self.in_flight[result.path] = result
        except asyncpg.CheckViolationError as exc:
            rejection = path_rejection(exc, entry.path)
            if rejection is None:
                raise
            # The schema's path rule (reactor_valid_image_path) is stricter than the
            # configured images.derived_folders: the path can be neither claimed nor done.
            rejected = InvalidPath(entry.path, "schema_rule", str(rejection))
            await self._record_invalid(entry.path, rejected, manual, stop)
            return None
        finally:
            self.in_flight.unreserve(entry.path)
        if result is None:
            return None
        if isinstance(result, str):
            log.debug("image_skipped", path=entry.path, reason=result)
            return None
        if await self._moved_here(result, entry, str(local), stop, seen):
            return None
        return Ready(entry, result, str(local), seen)

    async def _moved_here(
        self, claim: Claim, entry: Entry, local: str, stop: asyncio.Event, seen: os.stat_result | OSError
    ) -> bool:
        """A photo that moved takes its result and face ids along instead of being detected
        (reactor.core.moved); True when its claim went with the move, or the file was not
        there: then it is recorded missing on that same look. Were it handed to the detector,
        a file arriving a moment later (the upstream's rows came first) would be detected as
        a new photo before its move is seen; its file event brings it back instead."""
        try:
            moved = await self.moves.adopt(claim, local, self._runner(stop), seen)
        except FileNotFoundError:
            missing = DetectionFailure(ErrorType.MISSING, f"file not found: {local}")
            if await self._must_wait(missing):
                await self._give_back(claim, entry)
                self.in_flight.pop(claim.path, None)
            else:
                await self._persist(claim, missing)
            return True
        except asyncpg.PostgresError as exc:
            log.warning("move_check_failed", path=claim.path, error=str(exc), effect="detected instead")
            return False
        if moved is None:
            return False
        self.in_flight.pop(claim.path, None)
        metrics.IMAGES_PROCESSED.labels("moved").inc()
        self.processed += 1
        return True

    def _runner(self, stop: asyncio.Event) -> RunDb:
        async def run(op: Callable[[Conn], Awaitable[T]]) -> T | None:
            return await self._db(stop, op)

        return run

    async def _detect_and_write(self, batch: list[Ready]) -> None:
        """Detect the claimed images (one, or a batch) and hand their outcomes to the writer."""
        self.current_claim = batch[0].claim
        handed_over: set[str] = set()
        try:
            outcomes = await self._detect(batch)
            written: list[tuple[Claim, Outcome]] = []
            for ready, outcome in zip(batch, outcomes, strict=True):
                if await self._must_wait(outcome):
                    await self._give_back(ready.claim, ready.entry)
                else:
                    written.append((ready.claim, outcome))
            # One write in flight at a time: the previous images', which had these
            # images' whole detection to finish.
            await self.flush()
            if written:
                self.persisting = asyncio.ensure_future(self._persist_all(written))
                handed_over = {claim.path for claim, _ in written}
        except DetectorGone:
            for ready in batch:
                await self._give_back(ready.claim, ready.entry)
        finally:
            self.current_claim = None
            for ready in batch:
                if ready.claim.path not in handed_over:
                    # Given back, or abandoned by an error: its lease must not be renewed.
                    self.in_flight.pop(ready.claim.path, None)

    async def _must_wait(self, outcome: Outcome) -> bool:
        # "File not found" (or an I/O error) is believed only while the share is online:
        # an unmounted share looks like a library whose every photo was deleted. The
        # share is looked at again now, not when its monitor last checked.
        return (
            isinstance(outcome, DetectionFailure)
            and outcome.error_type in FILE_ACCESS
            and not await self.share.acheck()
        )

    async def _detect(self, batch: list[Ready]) -> list[Outcome]:
        jobs = [_job(r) for r in batch]
        started = time.monotonic()
        try:
            sharing = self.tiles if len(jobs) == 1 else None
            shared = await sharing.detect(jobs[0], self.detector) if sharing is not None else None
            if shared is not None:
                outcomes = [shared]
            elif len(jobs) == 1:
                outcomes = [await self.detector.detect(jobs[0])]
            else:
                outcomes = await self.detector.detect_many(jobs)
        except DetectorUnavailable as exc:
            log.error("detector_lost", path=batch[0].claim.path, images=len(batch), error=str(exc))
            raise DetectorGone(str(exc)) from None
        each = (time.monotonic() - started) / len(jobs)
        for _ in jobs:
            metrics.DETECTION_SECONDS.observe(each)
        return outcomes

    async def _give_back(self, claim: Claim, entry: Entry) -> None:
        """Release the claim and queue the image again for later."""
        try:
            async with self.pool.acquire() as conn:
                await claims.release(conn, claim)
        except db.TRANSIENT_DB_ERRORS:
            pass  # the lease expires on its own
        self.queue.put(entry.path, entry.priority, redetect=entry.redetect)

    async def _persist_all(self, written: list[tuple[Claim, Outcome]]) -> None:
        """Write each outcome in turn; if one write raises, the claims after it are let go
        (their leases expire and the sweep brings the images back)."""
        for index, (claim, outcome) in enumerate(written):
            try:
                await self._persist(claim, outcome)
            except BaseException:
                for later, _ in written[index + 1 :]:
                    self.in_flight.pop(later.path, None)
                raise

    async def _persist(self, claim: Claim, outcome: Outcome) -> None:
        """Write the outcome, retrying across connection loss until it is written or fenced."""
        try:
            await self._write(claim, outcome)
        finally:
            self.in_flight.pop(claim.path, None)

    async def _write(self, claim: Claim, outcome: Outcome) -> None:
        tries = 0

        async def write(conn: Conn) -> outcomes.FailureRecord | None:
            nonlocal tries
            tries += 1
            if isinstance(outcome, Detection):
                settings = settings_fingerprint(self.config.detector, outcome.model)
                await outcomes.record_success(
                    conn, claim, outcome, self.instance_id, shape=self.result_shape, settings=settings
                )
                return None
            return await outcomes.record_failure(
                conn, claim.path, outcome, self.config.retry, self.failure_columns, claim, self.incomplete_delay
            )

        while True:
            try:
                # No stop: a shutdown waits for the write (across connection loss), never drops it.
                record = await self._db(None, write)
                if isinstance(outcome, Detection):
                    self._detected(claim, outcome)
                elif record is not None:
                    self._failed(record, outcome)
                    if record.error_type is ErrorType.MISSING:
                        await self._arrived_meanwhile(claim.path)
                self.processed += 1
                return
            except outcomes.Fenced:
                # After a lost connection we do not know whether the earlier try committed.
                if tries > 1 and await self._landed(claim):
                    # Our own earlier commit released the claim; its reply was lost.
                    log.info("outcome_written", path=claim.path, token=claim.token, reply="lost")
                    self.processed += 1
                    return
                metrics.IMAGES_PROCESSED.labels("fenced").inc()
                log.warning("result_fenced", path=claim.path, token=claim.token)
                return
            except SCHEMA_ERRORS as exc:
                self._block_writes(claim, exc)
                return
            except asyncpg.PostgresError as exc:
                # Not a connection problem: retrying the same write would fail the same way
                # for ever. The image gets a failure (with backoff) instead of a loop.
                log.error("persist_failed", path=claim.path, error=str(exc), effect="recorded as a runtime failure")
                if isinstance(outcome, DetectionFailure) and outcome.error_type is ErrorType.RUNTIME:
                    return  # that was already the failure; the lease expires, the sweep decides
                outcome = DetectionFailure(ErrorType.RUNTIME, f"the outcome could not be written: {exc}"[:1000])

    async def _arrived_meanwhile(self, path: str) -> None:
        """A file that arrived while it was found missing (a folder moved in just as its
        upstream rows were tried) sent its file event before the failure was written, so
        that event found nothing to take past the backoff: look once more, now."""
        try:
            local = self.mapper.os_path(path)
            here = await self.share.io.call(os.path.dirname(local), os.path.exists, local)
        except (InvalidPath, IoStall):
            return
        if here:
            log.info("image_arrived", path=path, effect="tried again")
            self.queue.put(path, Priority.FILE_EVENT)

    async def _landed(self, claim: Claim) -> bool:
        try:
            async with self.pool.acquire() as conn:
                return await outcomes.landed(conn, claim)
        except db.TRANSIENT_DB_ERRORS:
            return False

    def _block_writes(self, claim: Claim, exc: BaseException) -> None:
        """No outcome can be written until the schema or the role's privileges are fixed:
        stop detecting (``_wait_ready``) rather than detect images whose results are lost."""
        if self.blocked.reason is None:
            self.blocked.reason = (
                f"writing results failed: {exc}; run `reactor db check` and do what it advises, "
                "then restart the reactor"
            )
            log.error(
                "results_unwritable",
                path=claim.path,
                error=str(exc),
                effect="detection stopped",
                advice="run `reactor db check` and do what it advises, then restart the reactor",
            )

    async def _record_invalid(self, path: str, exc: InvalidPath, manual: bool, stop: asyncio.Event) -> None:
        failure = DetectionFailure(ErrorType.INVALID_PATH, str(exc), details={"reason": exc.reason})
        path = recordable(path)  # a name that is not UTF-8 is recorded with its bytes escaped

        async def write(conn: Conn) -> outcomes.FailureRecord | None:
            state = await claims.read_state(conn, path)
            if state.skip_reason(manual=manual) is not None:
                return None
            return await outcomes.record_failure(conn, path, failure, self.config.retry, self.failure_columns)

        try:
            record = await self._db(stop, write)
        except asyncpg.ProgramLimitExceededError:
            # A path too long even for the unique index cannot be recorded at all.
            log.error("invalid_path_unrecordable", path=path[:200], reason=exc.reason)
            return
        if record is not None:
            self._failed(record, failure)

    async def _db(self, stop: asyncio.Event | None, op: Callable[[Conn], Awaitable[T]]) -> T | None:
        """Run ``op`` on a pooled connection, retrying while the database is away; None if
        ``stop`` is set first (without ``stop``: until it ran). Other errors propagate."""
        backoff = Backoff(cap=self.config.database.reconnect_max_seconds)
        while stop is None or not stop.is_set():
            try:
                async with self.pool.acquire() as conn:
                    result = await op(conn)
                self._db_state(True)
                return result
            except db.TRANSIENT_DB_ERRORS as exc:
                self._db_state(False, exc)
                if stop is None:
                    await asyncio.sleep(backoff.next_delay())
                elif await sleep_or_stop(stop, backoff.next_delay()):
                    break
        return None

    def _db_state(self, ok: bool, exc: BaseException | None = None) -> None:
        if ok != self.db_ok:
            if ok:
                log.info("database_available")
            else:
                log.warning("database_unavailable", error=str(exc) or type(exc).__name__)
        self.db_ok = ok

    def _detected(self, claim: Claim, result: Detection) -> None:
        metrics.IMAGES_PROCESSED.labels("detected").inc()
        metrics.FACES_FOUND.inc(result.face_count)
        metrics.LAST_SUCCESS.set_to_current_time()
        log.info(
            "image_detected",
            path=claim.path,
            faces=result.face_count,
            model=result.model,
            scale=result.scale,
            ms=round(result.decode_ms + result.detect_ms + result.encode_ms, 1),
            instance=self.instance_id,
        )

    def _failed(self, record: outcomes.FailureRecord, failure: DetectionFailure) -> None:
        metrics.IMAGES_PROCESSED.labels("failed").inc()
        metrics.FAILURES.labels(record.error_type.value).inc()
        if record.error_type is ErrorType.INCOMPLETE:
            # Not a failure of the image: look again once the window has passed (the
            # sweep would too, but only at its interval). A small margin absorbs the
            # difference between this clock and the database's.
            log.info("image_incomplete", path=record.path, error=failure.message, retry_in=self.incomplete_delay)
            asyncio.get_running_loop().call_later(
                self.incomplete_delay + 0.5, self.queue.put, record.path, Priority.RETRY
            )
            return
        if record.permanently_failed:
            log.warning(
                "permanently_failed",
                path=record.path,
                type=record.error_type.value,
                tries=record.retry_count,
                error=failure.message,
                instance=self.instance_id,
            )
            return
        allowed, suppressed = self._limiter.check((record.error_type, failure.message))
        if not allowed:
            return
        log.warning(
            "image_failed",
            path=record.path,
            type=record.error_type.value,
            error=failure.message,
            tries=record.retry_count,
            suppressed=suppressed,
            instance=self.instance_id,
        )
        log.info(
            "retry_scheduled",
            path=record.path,
            type=record.error_type.value,
            tries=record.retry_count,
            next_retry_after=record.next_retry_after.isoformat(),
        )


def _job(ready: Ready) -> DetectionJob:
    size, mtime_ns = _size_and_mtime(ready.seen)
    claim = ready.claim
    return DetectionJob(
        local_path=ready.local,
        attempt=claim.attempt,
        last_scale=claim.last_scale,
        seen_size=size,
        seen_mtime_ns=mtime_ns,
    )


def _size_and_mtime(seen: os.stat_result | OSError | None) -> tuple[int | None, int | None]:
    """What the read and the child take from the look on the way in: a regular file's size
    and mtime, else nothing (the read looks for itself, the child reports what is wrong)."""
    if isinstance(seen, os.stat_result) and stat.S_ISREG(seen.st_mode):
        return seen.st_size, seen.st_mtime_ns
    return None, None
