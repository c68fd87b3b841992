"""A detector engine for tests/test_file_looks.py: the real reading path
(reactor.detector.loading), no dlib, and every look at the photo by path that the child
makes (``os.stat``, ``os.lstat``, ``open``) written to the file named by ``LOG``."""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Callable
from typing import Any

from reactor.config import DetectorConfig
from reactor.detector.loading import load_image, prepare_pillow
from reactor.detector.types import Detection, DetectionFailure, DetectionJob, Outcome

LOG = "REACTOR_TEST_LOOKS_FILE"
NAME = "REACTOR_TEST_LOOKS_NAME"


def counters(name: str, note: Callable[[str], None]) -> dict[tuple[Any, str], Callable[..., Any]]:
    """Wrappers of ``os.stat``, ``os.lstat`` and ``open`` that note each call on a path
    ending in ``name`` ("stat" for either look, "open"): (module, attribute) -> wrapper."""
    real_stat, real_lstat, real_open = os.stat, os.lstat, builtins.open

    def mine(path: Any) -> bool:
        return isinstance(path, str | os.PathLike) and os.fspath(path).endswith(name)

    def stat(path: Any, *args: Any, **kwargs: Any) -> Any:
        if mine(path):
            note("stat")
        return real_stat(path, *args, **kwargs)

    def lstat(path: Any, *args: Any, **kwargs: Any) -> Any:
        if mine(path):
            note("stat")
        return real_lstat(path, *args, **kwargs)

    def opened(path: Any, *args: Any, **kwargs: Any) -> Any:
        if mine(path):
            note("open")
        return real_open(path, *args, **kwargs)

    return {(os, "stat"): stat, (os, "lstat"): lstat, (builtins, "open"): opened}


class LookingEngine:
    cuda = False

    def __init__(self, config: DetectorConfig) -> None:
        prepare_pillow()
        self.config = config

    def detect(self, job: DetectionJob) -> Outcome:
        return self.detect_prefetched(job, None)

    def detect_prefetched(self, job: DetectionJob, data: bytes | None) -> Outcome:
        loaded = load_image(job.local_path, max, self.config.max_pixels, time.perf_counter(), data, job.seen_mtime_ns)
        if isinstance(loaded, DetectionFailure):
            return loaded
        return Detection(
            faces=(),
            model="hog",
            scale=1.0,
            original_size=loaded.original_size,
            decode_ms=loaded.decode_ms,
            detect_ms=0.0,
            encode_ms=0.0,
            file_size_bytes=loaded.file_size_bytes,
            file_mtime_ns=loaded.file_mtime_ns,
            fingerprint=loaded.fingerprint,
            detect_size=loaded.original_size,
            min_face_px=self.config.min_face_px,
        )


def create_engine(config: DetectorConfig) -> LookingEngine:
    name, log = os.environ.get(NAME), os.environ.get(LOG)
    if name and log:

        def note(kind: str) -> None:
            with builtins.open(log, "a") as fh:  # not the counted open: another path anyway
                fh.write(kind + "\n")

        for (module, attribute), wrapper in counters(name, note).items():
            setattr(module, attribute, wrapper)
    return LookingEngine(config)
