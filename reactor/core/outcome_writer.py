"""The outcome writer: a detection lane's outcomes into the store, and what they report.

A result or a failure is written under its claim; the write is shielded and retried
across database restarts, so a shutdown or a broken connection never loses an outcome.
After a lost commit reply, whether an earlier try landed is asked of the server
(``outcomes.landed``); a write fenced by another instance is dropped. A write that no
retry can mend (the schema or the role's privileges) blocks every lane's writes
(``WriteBlock``): detection stops rather than detect images whose results are lost. Any
other refusal of the database turns the outcome into a runtime failure, once.

At most one write is in flight per lane (``hand_over`` waits for the previous one), and
``flush`` waits for it. Failures for images that were never claimed (an invalid path, a
stalled folder, an unexpected error) are written here too, and so is every outcome's
log line and metric.
"""

from __future__ import annotations

import asyncio
import os

from reactor import logs
from reactor.core import metrics
from reactor.core.inflight import InFlight
from reactor.core.loop_settings import LoopSettings, LoopStopped, StoreCalls
from reactor.core.queue import Priority
from reactor.detector.settings import MODELS, settings_fingerprint
from reactor.detector.types import Detection, DetectionFailure, Outcome
from reactor.failure_types import ErrorType
from reactor.paths import InvalidPath, recordable
from reactor.store import claims, outcomes
from reactor.store.claims import Claim
from reactor.store.dbtypes import Conn
from reactor.store.errors import Fenced, StatementFailed, StoreError, StoreUnavailable, UnwritableSchema
from reactor.util.ratelimit import RateLimiter
from reactor.util.shareio import IoStall

log = logs.get("reactor.detection_loop")


class OutcomeWriter:
    def __init__(self, settings: LoopSettings, in_flight: InFlight, calls: StoreCalls) -> None:
        self.settings = settings
        self.in_flight = in_flight
        self.calls = calls
        self.processed = 0
        self.persisting: asyncio.Task[None] | None = None
        self._limiter = RateLimiter(settings.config.logging.rate_limit_seconds)
        # Each result's settings fingerprint, per model: the configuration never changes
        # while the reactor runs, so it is hashed once, not at every write.
        self._fingerprints = {model: settings_fingerprint(settings.config.detector, model) for model in MODELS}

    # ------------------------------------------------------------------ claimed images

    async def hand_over(self, written: list[tuple[Claim, Outcome]]) -> None:
        """Start writing these outcomes (if any), once the previous write is done: one in flight."""
        await self.flush()
        if written:
            self.persisting = asyncio.ensure_future(self._persist_all(written))

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

    async def _persist_all(self, written: list[tuple[Claim, Outcome]]) -> None:
        """Write each outcome in turn; if one write raises, the claims after it are let go
        (their leases expire and the sweep brings the images back)."""
        for index, (claim, outcome) in enumerate(written):
            try:
                await self.persist(claim, outcome)
            except BaseException:
                for later, _ in written[index + 1 :]:
                    self.in_flight.pop(later.path, None)
                raise

    async def persist(self, claim: Claim, outcome: Outcome) -> None:
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
            return await self._store(conn, claim, outcome)

        while True:
            try:
                # No stop: a shutdown waits for the write (across connection loss), never drops it.
                record = await self.calls.run(None, write)
                await self._written(claim, outcome, record)
                return
            except Fenced:
                # After a lost connection we do not know whether the earlier try committed.
                if tries > 1 and await self._landed(claim):
                    # Our own earlier commit released the claim; its reply was lost.
                    log.info("outcome_written", path=claim.path, token=claim.token, reply="lost")
                    self.processed += 1
                    return
                metrics.IMAGES_PROCESSED.labels("fenced").inc()
                log.warning("result_fenced", path=claim.path, token=claim.token)
                return
            except UnwritableSchema as exc:
                self._block_writes(claim, exc)
                return
            except StoreError as exc:
                # Not a connection problem: retrying the same write would fail the same way
                # for ever. The image gets a failure (with backoff) instead of a loop.
                log.error("persist_failed", path=claim.path, error=str(exc), effect="recorded as a runtime failure")
                if isinstance(outcome, DetectionFailure) and outcome.error_type is ErrorType.RUNTIME:
                    return  # that was already the failure; the lease expires, the sweep decides
                outcome = DetectionFailure(ErrorType.RUNTIME, f"the outcome could not be written: {exc}"[:1000])

    def _fingerprint(self, model: str) -> str:
        found = self._fingerprints.get(model)
        return found if found is not None else settings_fingerprint(self.settings.config.detector, model)

    async def _store(self, conn: Conn, claim: Claim, outcome: Outcome) -> outcomes.FailureRecord | None:
        config = self.settings.config
        if isinstance(outcome, Detection):
            await outcomes.record_success(
                conn,
                claim,
                outcome,
                self.settings.instance_id,
                shape=self.settings.result_shape,
                settings=self._fingerprint(outcome.model),
            )
            return None
        return await outcomes.record_failure(
            conn,
            claim.path,
            outcome,
            config.retry,
            self.settings.failure_columns,
            claim,
            self.settings.incomplete_delay,
        )

    async def _written(self, claim: Claim, outcome: Outcome, record: outcomes.FailureRecord | None) -> None:
        if isinstance(outcome, Detection):
            self._detected(claim, outcome)
        elif record is not None:
            self._failed(record, outcome)
            if record.error_type.may_be_arriving:
                await self._arrived_meanwhile(claim.path)
        self.processed += 1

    async def _arrived_meanwhile(self, path: str) -> None:
        """A file that arrived while it was found missing (a folder moved in just as its
        upstream rows were tried) sent its file event before the failure was written, so
        that event found nothing to take past the backoff: look once more, now."""
        share = self.settings.share
        try:
            local = self.settings.mapper.os_path(path)
            here = await share.io.call(os.path.dirname(local), os.path.exists, local)
        except (InvalidPath, IoStall):
            return
        if here:
            log.info("image_arrived", path=path, effect="tried again")
            self.settings.queue.put(path, Priority.FILE_EVENT)

    async def _landed(self, claim: Claim) -> bool:
        try:
            return await self.calls.once(lambda conn: outcomes.landed(conn, claim), claim.path)
        except StoreUnavailable:
            return False

    def _block_writes(self, claim: Claim, exc: BaseException) -> None:
        """No outcome can be written until the schema or the role's privileges are fixed:
        stop detecting (the loop waits on ``blocked``) rather than detect images whose results are lost."""
        blocked = self.settings.blocked
        if blocked.reason is None:
            blocked.reason = (
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

    def moved(self) -> None:
        """A claimed photo's result moved to it (reactor.core.moved): nothing to write."""
        metrics.IMAGES_PROCESSED.labels("moved").inc()
        self.processed += 1

    # ------------------------------------------------------------------ unclaimed images

    async def record_unclaimed(self, path: str, failure: DetectionFailure, stop: asyncio.Event) -> None:
        """A failure for an image that was never claimed (or whose claim is in doubt)."""

        async def write(conn: Conn) -> outcomes.FailureRecord:
            return await outcomes.record_failure(
                conn, recordable(path), failure, self.settings.config.retry, self.settings.failure_columns
            )

        try:
            record = await self.calls.run(stop, write)
        except LoopStopped:
            raise
        except Exception as again:  # the path itself may be what the database refuses
            log.error("failure_unrecordable", path=recordable(path)[:300], error=str(again))
            return
        self._failed(record, failure)

    async def record_invalid(self, path: str, exc: InvalidPath, manual: bool, stop: asyncio.Event) -> None:
        failure = DetectionFailure(ErrorType.INVALID_PATH, str(exc), details={"reason": exc.reason})
        path = recordable(path)  # a name that is not UTF-8 is recorded with its bytes escaped

        async def write(conn: Conn) -> outcomes.FailureRecord | None:
            state = await claims.read_state(conn, path)
            if state.skip_reason(manual=manual) is not None:
                return None
            return await outcomes.record_failure(
                conn, path, failure, self.settings.config.retry, self.settings.failure_columns
            )

        try:
            record = await self.calls.run(stop, write)
        except StatementFailed:
            # A path too long even for the unique index cannot be recorded at all.
            log.error("invalid_path_unrecordable", path=path[:200], reason=exc.reason)
            return
        if record is not None:
            self._failed(record, failure)

    # ------------------------------------------------------------------ reports

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
            instance=self.settings.instance_id,
        )

    def _failed(self, record: outcomes.FailureRecord, failure: DetectionFailure) -> None:
        metrics.IMAGES_PROCESSED.labels("failed").inc()
        metrics.FAILURES.labels(record.error_type.value).inc()
        if record.error_type.settling:
            # Not a failure of the image: look again once the window has passed (the
            # sweep would too, but only at its interval). A small margin absorbs the
            # difference between this clock and the database's.
            delay = self.settings.incomplete_delay
            log.info("image_incomplete", path=record.path, error=failure.message, retry_in=delay)
            asyncio.get_running_loop().call_later(delay + 0.5, self.settings.queue.put, record.path, Priority.RETRY)
            return
        about = {"path": record.path, "type": record.error_type.value, "tries": record.retry_count}
        if record.permanently_failed:
            log.warning("permanently_failed", **about, error=failure.message, instance=self.settings.instance_id)
            return
        allowed, suppressed = self._limiter.check((record.error_type, failure.message))
        if not allowed:
            return
        log.warning(
            "image_failed", **about, error=failure.message, suppressed=suppressed, instance=self.settings.instance_id
        )
        log.info("retry_scheduled", **about, next_retry_after=record.next_retry_after.isoformat())
