"""Bench-only detector engine: no decoding, no dlib; an instant zero-face result.

Selected with ``detector.engine = "bench.fast_engine"`` so that the storm and scale
benchmarks measure the reactor (queue, claims, persistence, sweep, memory) rather than
dlib. It still looks at the file: a missing file is a ``missing`` failure, as from the
real engine, so the reactor's share rules are exercised unchanged.
"""

from __future__ import annotations

import os
import time

from reactor.config import DetectorConfig
from reactor.detector.types import Detection, DetectionFailure, DetectionJob, Outcome
from reactor.failure_types import ErrorType


class FastEngine:
    def __init__(self, config: DetectorConfig) -> None:
        self.config = config

    @property
    def cuda(self) -> bool:
        return False

    def detect_prefetched(self, job: DetectionJob, data: bytes | None) -> Outcome:
        """The parent read the file ahead (reactor/detector prefetch): nothing left to read."""
        if data is None:
            return self.detect(job)
        return Detection(
            faces=(),
            model="hog",
            scale=1.0,
            original_size=(1, 1),
            decode_ms=0.0,
            detect_ms=0.0,
            encode_ms=0.0,
            file_size_bytes=len(data),
        )

    def detect(self, job: DetectionJob) -> Outcome:
        started = time.perf_counter()
        try:
            size = os.stat(job.local_path).st_size
        except FileNotFoundError:
            return DetectionFailure(ErrorType.MISSING, f"file not found: {job.local_path}")
        ms = (time.perf_counter() - started) * 1000.0
        return Detection(
            faces=(),
            model="hog",
            scale=1.0,
            original_size=(1, 1),
            decode_ms=ms,
            detect_ms=0.0,
            encode_ms=0.0,
            file_size_bytes=size,
        )


def create_engine(config: DetectorConfig) -> FastEngine:
    return FastEngine(config)
