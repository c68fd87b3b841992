"""Bench-only detector engine that stands in for a GPU box: a fixed time per image.

``bench.fast_engine`` answers at once, so several instances on one small machine only
divide its CPU between them. Separate GPU machines are bound by detection instead:
each image costs the card a fixed time while the host's CPU idles. This engine sleeps
``BENCH_DETECT_MS`` milliseconds (default 30) per image and otherwise answers like the
fast engine (zero faces), so the instances benchmark measures how the work is split
between instances and what that costs PostgreSQL, not how the reactors share two cores.

With ``BENCH_DETECT_LOG=FILE`` each detection appends its path to FILE (one line, one
write to a file opened for appending), so a benchmark counts the images detected more
than once across instances.
"""

from __future__ import annotations

import os
import time

from bench.fast_engine import FastEngine
from reactor.config import DetectorConfig
from reactor.detector.types import DetectionJob, Outcome


class GpuEngine(FastEngine):
    def __init__(self, config: DetectorConfig) -> None:
        super().__init__(config)
        self.seconds = float(os.environ.get("BENCH_DETECT_MS", "30")) / 1000.0
        self.record = os.environ.get("BENCH_DETECT_LOG")

    def detect_prefetched(self, job: DetectionJob, data: bytes | None) -> Outcome:
        outcome = super().detect_prefetched(job, data)
        self._spend(job)
        return outcome

    def detect(self, job: DetectionJob) -> Outcome:
        outcome = super().detect(job)
        self._spend(job)
        return outcome

    def _spend(self, job: DetectionJob) -> None:
        time.sleep(self.seconds)
        if self.record:
            with open(self.record, "a", encoding="utf-8") as f:
                f.write(f"{job.local_path}\n")


def create_engine(config: DetectorConfig) -> GpuEngine:
    return GpuEngine(config)
