"""The detection loop: one image at a time, from the queue to a claimed, detected image.

For each entry: validate the path, claim it, wait for the share, detect, then hand the
outcome to the lane's writer (reactor.core.outcome_writer), which persists it. Both are
built from one ``LoopSettings`` (reactor.core.loop_settings).

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

A stop that comes while a store call waits for the database raises ``LoopStopped``,
caught at the top of ``run``; the loop and the writer see the store's exceptions only.
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

from reactor import logs
from reactor.core import metrics
from reactor.core.inflight import InFlight
from reactor.core.loop_settings import LoopSettings, LoopStopped, StoreCalls
from reactor.core.moved import MoveFinder, RunDb
from reactor.core.outcome_writer import OutcomeWriter
from reactor.core.queue import Entry, Priority
from reactor.core.tile_sharing import TileSharing
from reactor.detector import DetectorState, DetectorUnavailable
from reactor.detector.types import DetectionFailure, DetectionJob, Outcome
from reactor.failure_types import ErrorType
from reactor.paths import InvalidPath, recordable
from reactor.store import claims
from reactor.store.claims import Claim, Skip
from reactor.store.dbtypes import Conn
from reactor.store.errors import RejectedPath, StoreError, StoreUnavailable
from reactor.util.aio import completed, first_of, sleep_or_stop
from reactor.util.backoff import Backoff
from reactor.util.shareio import IoStall

log = logs.get("reactor.detection_loop")
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
    def __init__(self, settings: LoopSettings, detector: DetectorLike, in_flight: InFlight | None = None) -> None:
        self.settings = settings
        self.queue = settings.queue
        self.share = settings.share
        self.mapper = settings.mapper
        self.detector = detector
        self.current_claim: Claim | None = None
        # Claims taken and not yet written or given back: the one being detected, the one being written.
        self.in_flight = in_flight if in_flight is not None else InFlight()
        # The lane's way to the database (its health: ``calls.ok``), shared with its writer.
        self.calls = StoreCalls(settings.pool, settings.config.database.reconnect_max_seconds)
        self.writer = OutcomeWriter(settings, self.in_flight, self.calls)
        self.moves = MoveFinder(settings.mapper, lambda: settings.share.online, settings.share.io)
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
        except LoopStopped:
            pass  # stopped while a store call waited for the database: nothing was half written
        finally:
            await self._abandon(ahead)
            await self.writer.flush()

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
        with contextlib.suppress(asyncio.CancelledError, LoopStopped):
            ready = await ahead
            if ready is not None:
                self.in_flight.pop(ready.claim.path, None)
                await self._give_back(ready.claim, ready.entry)

    async def _wait_ready(self, stop: asyncio.Event) -> bool:
        """Share online and detector usable; False if stopped while waiting (or for good,
        once writes are blocked: the service stays up and unhealthy until restarted)."""
        if self.settings.blocked.reason is not None:
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
        except LoopStopped:
            raise
        except Exception as exc:
            await self._contain(entry.path, exc, stop)
            return None

    async def _contain(self, path: str, exc: Exception, stop: asyncio.Event) -> None:
        """No input can stop detection: whatever one entry raises ends as its recorded failure."""
        log.error(
            "image_unexpected_error", path=recordable(path)[:300], error=f"{type(exc).__name__}: {exc}", exc_info=exc
        )
        await self.writer.record_unclaimed(
            path, DetectionFailure(ErrorType.RUNTIME, f"{type(exc).__name__}: {exc}"[:1000]), stop
        )

    async def _prepare(self, entry: Entry, stop: asyncio.Event, *, read_ahead: bool = False) -> Ready | None:
        """Validate and claim the image; None if it is invalid (recorded) or needs no detection."""
        manual = entry.priority is Priority.MANUAL
        try:
            # Resolving touches the share, on its own threads and with its deadline: a folder
            # that hangs must not hold the loop's next image (reactor.util.shareio).
            folder = os.path.dirname(self.mapper.os_path(entry.path))
            local, seen = await self.share.io.call(folder, self.mapper.look_in_share, entry.path)
        except InvalidPath as exc:
            await self.writer.record_invalid(entry.path, exc, manual, stop)
            return None
        except IoStall as exc:
            await self.share.acheck()  # offline (probe_hung) if the whole share hangs: detection pauses
            stall = DetectionFailure(ErrorType.IO_STALL, f"resolving the path on the share: {exc}")
            await self.writer.record_unclaimed(entry.path, stall, stop)
            return None
        if read_ahead:
            # Its bytes are read while the current image is detected. That detection took
            # its own read-ahead when it started, before this thread hop returned.
            self.detector.prefetch(str(local), *_size_and_mtime(seen))
        if entry.path in self.in_flight:
            # Its previous outcome is still being written: a claim now would take
            # over that claim's token and fence the write.
            await self.writer.flush()
        try:
            result = await self._claim(entry, manual, stop)
        except RejectedPath as exc:
            # The schema's path rule (reactor_valid_image_path) is stricter than the
            # configured images.derived_folders: the path can be neither claimed nor done.
            rejected = InvalidPath(entry.path, "schema_rule", str(exc.rejection))
            await self.writer.record_invalid(entry.path, rejected, manual, stop)
            return None
        if isinstance(result, Skip):
            log.debug("image_skipped", path=entry.path, reason=result)
            return None
        try:
            if await self._moved_here(result, entry, str(local), stop, seen):
                return None
        except LoopStopped:
            # Stopped during the move check: the claim goes back, as one taken ahead does.
            self.in_flight.pop(result.path, None)
            await self._give_back(result, entry)
            raise
        return Ready(entry, result, str(local), seen)

    async def _claim(self, entry: Entry, manual: bool, stop: asyncio.Event) -> Claim | Skip:
        """Claim the image, registered in ``in_flight``, or the reason it is not claimed."""
        # The same path is never claimed while another lane holds or is taking it (reactor.core.inflight).
        await self.in_flight.reserve(entry.path)
        try:
            result = await self.calls.run(
                stop,
                lambda conn: claims.claim(
                    conn,
                    entry.path,
                    self.settings.instance_id,
                    self.settings.config.service.lease_seconds,
                    manual=manual,
                    redetect=entry.redetect,
                    file_event=entry.priority is Priority.FILE_EVENT,
                ),
            )
            if isinstance(result, Claim):
                self.in_flight[result.path] = result
            return result
        finally:
            self.in_flight.unreserve(entry.path)

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
                await self.writer.persist(claim, missing)
            return True
        except StoreError as exc:
            log.warning("move_check_failed", path=claim.path, error=str(exc), effect="detected instead")
            return False
        if moved is None:
            return False
        self.in_flight.pop(claim.path, None)
        self.writer.moved()
        return True

    def _runner(self, stop: asyncio.Event) -> RunDb:
        async def run(op: Callable[[Conn], Awaitable[T]]) -> T:
            return await self.calls.run(stop, op)

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
            await self.writer.hand_over(written)
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
            isinstance(outcome, DetectionFailure) and outcome.error_type.file_access and not await self.share.acheck()
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
        with contextlib.suppress(StoreUnavailable):  # the lease expires on its own
            await self.calls.once(lambda conn: claims.release(conn, claim), claim.path)
        self.queue.put(entry.path, entry.priority, redetect=entry.redetect)


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
