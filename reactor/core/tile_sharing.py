"""One new photo, several idle lanes: its parts detected side by side.

With the reactor idle, one new photo used to wait for one child to scan it whole while
the other children sat idle. When fewer photos are queued than lanes wait for work, the
lane that took the photo borrows the idle ones: the photo's bytes are read once, each
child decodes them and locates the faces in one part of the same scan image (overlapping
tiles and a coarse pass, reactor.detector.tiles); the parts' boxes are merged, one per
face, and dealt out again to be checked (a weak box, by the CNN) and encoded, which on
group photos costs more than the scan; the lanes' faces make one result,
recorded exactly as a one-lane scan's (the same size, scale, ``min_face_px``, file
identity). The same faces as one scan: measured in ``bench/latency.py --tiles``, checked
in tests/test_tiles.py.

Only a photo's first scan is shared (a retry below a failed cascade step runs whole, on
its lane), and only on a CPU (HOG): on CUDA there is one lane per GPU, and the CNN's
window is not what the tiles are sized for. A part that fails on the file or the
child's limits fails the photo as its whole scan would (``SAME_WHOLE``); after any other
failure, or parts that scanned different images (one stepped down the cascade), the
parts are thrown away and the photo is scanned whole, as one lane scans it. A
borrowed lane that gets a photo of its own meanwhile detects it once its part is done.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from typing import Protocol

from reactor import logs
from reactor.detector import Detector, DetectorUnavailable, tiles
from reactor.detector.types import Detection, DetectionFailure, DetectionJob, Outcome
from reactor.failure_types import ErrorType

log = logs.get("reactor.tile_sharing")

# A part's failure that its photo's whole scan would have too: the file (decoded the same
# way by every part) or the child's limits (a hang or a crash on these pixels, which a
# second, whole scan would only repeat). Any other (out of memory, a runtime error) and
# the photo is scanned whole, whose cascade steps down where a part cannot.
SAME_WHOLE = frozenset(
    {
        ErrorType.TIMEOUT,
        ErrorType.CRASH,
        ErrorType.CORRUPT,
        ErrorType.UNSUPPORTED,
        ErrorType.TOO_LARGE,
        ErrorType.INCOMPLETE,
        ErrorType.MISSING,
        ErrorType.UNREADABLE,
        ErrorType.IO_STALL,
    }
)


class SharedLane(Protocol):
    @property
    def detector(self) -> Detector: ...

    @property
    def idle(self) -> bool: ...


class TileSharing:
    """Lends idle lanes' children to the lane that has a photo (reactor.core.lanes)."""

    def __init__(self, lanes: Callable[[], Sequence[SharedLane]], spare: Callable[[], int], weak_score: float) -> None:
        """``spare``: how many lanes wait for work beyond the photos queued for them;
        ``weak_score``: detector.weak_score (a weak box costs a CNN check to finish)."""
        self._lanes = lanes
        self._spare = spare
        self._weak_score = weak_score
        self._lent: set[int] = set()
        # Photos detected in parts, for tests and `reactor status`.
        self.shared = 0

    def _helpers(self, lead: Detector) -> list[Detector]:
        idle = [
            lane.detector
            for lane in self._lanes()
            if lane.detector is not lead and lane.idle and id(lane.detector) not in self._lent
        ]
        return idle[: max(0, self._spare())]

    async def detect(self, job: DetectionJob, lead: object) -> Outcome | None:
        """The photo's outcome, detected in parts by ``lead`` and idle lanes; None where it is
        not shared (no lane to spare, a retry, CUDA): ``lead`` then detects it alone."""
        if job.last_scale is not None or job.part is not None:
            return None
        mine = next((lane.detector for lane in self._lanes() if lane.detector is lead), None)
        if mine is None or mine.cuda or id(mine) in self._lent:
            return None
        helpers = self._helpers(mine)
        if not helpers:
            return None
        borrowed = [mine, *helpers]
        self._lent.update(id(d) for d in borrowed)
        try:
            data = await mine.read_bytes(job)
            if data is None:
                return None  # streamed or changed: the lane reads and detects it alone
            if isinstance(data, DetectionFailure):
                return data
            return await self._in_parts(job, data, borrowed)
        finally:
            self._lent.difference_update(id(d) for d in borrowed)

    async def _in_parts(self, job: DetectionJob, data: bytes, borrowed: list[Detector]) -> Outcome:
        lanes = len(borrowed)
        # First every part's boxes (the tiles, then the coarse part: tiles.plan), merged
        # into one box per face; then those boxes checked and encoded, shared out again.
        parts = await _each(borrowed, [dataclasses.replace(job, part=(i, lanes)) for i in range(lanes + 1)], data)
        failed = _failure(parts)
        if failed is not None:
            return failed
        found = tiles.located([p for p in parts if isinstance(p, Detection)]) if _all_detected(parts) else None
        finished: list[Outcome | None] = []
        if found is not None:
            shares = [share for share in tiles.split(found.faces, lanes, self._weak_score) if share]
            jobs = [dataclasses.replace(job, finish=tiles.boxes_of(share)) for share in shares]
            finished = await _each(borrowed, jobs, data)
            failed = _failure(finished)
            if failed is not None:
                return failed
        merged = (
            tiles.combine(found, [f for f in finished if isinstance(f, Detection)])
            if found is not None and _all_detected(finished)
            else None
        )
        if merged is None:
            # A part ran out of memory or stepped down the cascade, or the lanes went: the
            # photo is scanned whole, as one lane does it (the cascade's replacements too).
            log.info("image_parts_discarded", path=job.local_path, lanes=lanes)
            return await borrowed[0].detect_part(job, data, whole=True)
        self.shared += 1
        log.debug("image_shared", path=job.local_path, lanes=lanes, faces=merged.face_count)
        return merged


async def _each(borrowed: list[Detector], jobs: list[DetectionJob], data: bytes) -> list[Outcome | None]:
    """Every job's outcome, the lanes taking the next job as each is free; None for a job no
    lane could run (every child unavailable)."""
    todo = list(range(len(jobs)))
    done: dict[int, Outcome] = {}

    async def work(detector: Detector) -> None:
        while todo:
            index = todo.pop(0)
            try:
                done[index] = await detector.detect_part(jobs[index], data)
            except DetectorUnavailable:
                todo.insert(0, index)  # another lane takes it
                return

    await asyncio.gather(*(work(detector) for detector in borrowed))
    return [done.get(index) for index in range(len(jobs))]


def _failure(outcomes: list[Outcome | None]) -> DetectionFailure | None:
    """The first failure the photo's whole scan would have had too (``SAME_WHOLE``)."""
    return next((o for o in outcomes if isinstance(o, DetectionFailure) and o.error_type in SAME_WHOLE), None)


def _all_detected(outcomes: list[Outcome | None]) -> bool:
    return all(isinstance(o, Detection) for o in outcomes)
