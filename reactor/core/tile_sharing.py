"""One new photo, several idle lanes: its parts detected side by side.

With the reactor idle, one new photo used to wait for one child to scan it whole while
the other children sat idle. When fewer photos are queued than lanes wait for work, the
lane that took the photo borrows the idle ones: the photo's bytes are read once, each
child decodes them and scans one part of the same scan image (overlapping tiles and a
coarse pass, reactor.detector.tiles), and the parts' faces are merged into one result,
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

    def __init__(self, lanes: Callable[[], Sequence[SharedLane]], spare: Callable[[], int]) -> None:
        """``spare``: how many lanes wait for work beyond the photos queued for them."""
        self._lanes = lanes
        self._spare = spare
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
        todo = list(range(lanes + 1))  # the tiles, then the coarse part (tiles.plan)
        done: dict[int, Outcome] = {}

        async def work(detector: Detector) -> None:
            while todo:
                index = todo.pop(0)
                try:
                    done[index] = await detector.detect_part(dataclasses.replace(job, part=(index, lanes)), data)
                except DetectorUnavailable:
                    todo.insert(0, index)  # another lane takes it
                    return

        await asyncio.gather(*(work(detector) for detector in borrowed))
        parts = [done.get(index) for index in range(lanes + 1)]
        failed = next((p for p in parts if isinstance(p, DetectionFailure)), None)
        if failed is not None and failed.error_type in SAME_WHOLE:
            return failed
        found = [p for p in parts if isinstance(p, Detection)]
        merged = tiles.merge(found) if len(found) == len(parts) else None
        if merged is None:
            # A part ran out of memory or stepped down the cascade, or the lanes went: the
            # photo is scanned whole, as one lane does it (the cascade's replacements too).
            log.info("image_parts_discarded", path=job.local_path, parts=len(found), lanes=lanes)
            return await borrowed[0].detect_part(job, data, whole=True)
        self.shared += 1
        log.debug("image_shared", path=job.local_path, lanes=lanes, faces=merged.face_count)
        return merged
