"""Detection lanes: one detector child and one detection loop per core (CPU) or GPU (CUDA).

Each lane is a ``DetectionLoop`` bound to its own ``Detector``: it takes one image at a
time from the shared queue, claims it ahead and reads its bytes ahead, detects it in its
own child and hands its outcome to its ``OutcomeWriter``, exactly as a single loop does.
Every lane's loop is built from the one ``LoopSettings`` the service makes. The lanes
share the queue and one ``InFlight`` registry, so no two lanes hold the same path. A
crash, a hang or an out-of-memory replaces that lane's child and fails only that lane's
image.

How many: ``detector.workers`` when it is a number; with "auto", the first child is
started and says whether dlib has CUDA: one lane per GPU if so, else one per core.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from reactor import logs
from reactor.config import DetectorConfig, cpu_cores
from reactor.core.detection_loop import DetectionLoop
from reactor.core.inflight import InFlight
from reactor.core.tile_sharing import TileSharing
from reactor.detector import Detector, DetectorState, DetectorUnavailable
from reactor.util.shareio import ShareIO

log = logs.get("reactor.lanes")

LoopFactory = Callable[[Detector, InFlight], DetectionLoop]


@dataclass
class Lane:
    detector: Detector
    loop: DetectionLoop | None = None

    @property
    def idle(self) -> bool:
        """Its child ready and its loop holding no image (reactor.core.tile_sharing)."""
        return self.loop is not None and self.loop.current is None and self.detector.state is DetectorState.READY


def lanes_for(workers: int | str, cuda: bool, gpus: int, cores: int) -> int:
    """How many children: the configured number, or one per GPU on CUDA, one per core on a CPU."""
    if isinstance(workers, int):
        return max(1, workers)
    return max(1, gpus) if cuda else max(1, cores)


class Lanes:
    def __init__(self, config: DetectorConfig, io: ShareIO | None = None) -> None:
        self.config = config
        # The share's threads, shared by every lane's reads (reactor.util.shareio).
        self.io = io
        self.in_flight = InFlight()
        self.lanes: list[Lane] = [Lane(Detector(config, index=0, io=io))]
        self._make_loop: LoopFactory | None = None
        # One photo shared by idle lanes (detector.share_idle_lanes).
        self.sharing = (
            TileSharing(lambda: self.lanes, self._spare, config.weak_score) if config.share_idle_lanes else None
        )

    def _spare(self) -> int:
        """Lanes waiting for work beyond the photos queued for them."""
        queue = self.lanes[0].loop.queue if self.lanes[0].loop is not None else None
        return queue.waiting - len(queue) if queue is not None else 0

    @property
    def first(self) -> Detector:
        return self.lanes[0].detector

    @property
    def loops(self) -> list[DetectionLoop]:
        return [lane.loop for lane in self.lanes if lane.loop is not None]

    def bind(self, make_loop: LoopFactory) -> DetectionLoop:
        """Give every lane its loop (in the service's _build); returns the first lane's."""
        self._make_loop = make_loop
        for lane in self.lanes:
            lane.loop = self._loop_for(lane.detector, make_loop)
        loop = self.lanes[0].loop
        assert loop is not None
        return loop

    def _loop_for(self, detector: Detector, make_loop: LoopFactory) -> DetectionLoop:
        """A lane's loop, sharing its idle time with the other lanes' photos."""
        loop = make_loop(detector, self.in_flight)
        loop.tiles = self.sharing
        return loop

    async def _count(self) -> int:
        workers = self.config.workers
        if isinstance(workers, int):
            return workers
        try:
            await self.first.start()
        except DetectorUnavailable:
            # The first lane's loop keeps trying with backoff; more lanes would not help.
            return 1
        return lanes_for(workers, self.first.cuda, self.first.gpus, cpu_cores())

    async def _grow(self) -> None:
        count = await self._count()
        gpus = self.first.gpus
        for index in range(len(self.lanes), count):
            # Several GPUs: each child is shown its own device; one GPU or none: all share it.
            device = index % gpus if self.first.cuda and gpus > 1 else None
            lane = Lane(Detector(self.config, index=index, device=device, io=self.io))
            if self._make_loop is not None:
                lane.loop = self._loop_for(lane.detector, self._make_loop)
            self.lanes.append(lane)
        if count > 1:
            log.info("detection_lanes", lanes=count, cuda=self.first.cuda, gpus=gpus, cores=cpu_cores())

    async def run(self, stop: asyncio.Event, *, until_empty: bool = False) -> None:
        """Run every lane until ``stop`` (or an empty queue); each finishes and writes its image."""
        await self._grow()
        async with asyncio.TaskGroup() as group:
            for index, loop in enumerate(self.loops):
                group.create_task(loop.run(stop, until_empty=until_empty), name=f"detection-{index}")

    async def close(self) -> None:
        """Stop every child; each lets its current image finish first."""
        await asyncio.gather(*(lane.detector.close() for lane in self.lanes))

    # ------------------------------------------------------------------ state

    @property
    def processed(self) -> int:
        return sum(loop.writer.processed for loop in self.loops)

    @property
    def db_ok(self) -> bool:
        return all(loop.calls.ok for loop in self.loops)

    @property
    def current(self) -> list[str]:
        return [loop.current for loop in self.loops if loop.current is not None]

    @property
    def restarts(self) -> int:
        return sum(lane.detector.restarts for lane in self.lanes)

    def persisting(self) -> list[asyncio.Task[None]]:
        return [loop.writer.persisting for loop in self.loops if loop.writer.persisting is not None]

    def state(self) -> DetectorState:
        """One word for all children: the worst of them, or busy/ready."""
        states = [lane.detector.state for lane in self.lanes]
        for word in (DetectorState.UNAVAILABLE, DetectorState.STARTING, DetectorState.BUSY, DetectorState.READY):
            if word in states:
                return word
        return states[0]

    def snapshot(self) -> list[dict[str, Any]]:
        """Each child, for the heartbeat (`reactor status`)."""
        out = []
        for index, lane in enumerate(self.lanes):
            loop = lane.loop
            out.append(
                {
                    "child": index,
                    "pid": lane.detector.pid,
                    "state": lane.detector.state,
                    "restarts": lane.detector.restarts,
                    "current_image": loop.current if loop else None,
                    "processed": loop.writer.processed if loop else 0,
                    # Only where batching is on (the CNN on a GPU, or forced).
                    **({"batched": lane.detector.batched} if lane.detector.batch_limit > 1 else {}),
                    # Only once an out-of-memory taught it something (CUDA).
                    **({"gpu_budget": lane.detector.budget.snapshot()} if lane.detector.budget.caps() else {}),
                }
            )
        return out
