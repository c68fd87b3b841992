"""Test-only detector engine: the real dlib engine, plus faults chosen by the file name.

Selected with ``detector.engine = "tests.fault_engine"`` in a test's configuration; nothing
in the ``reactor`` package can import it, so production can never switch a fault on.

Faults, by a marker anywhere in the image's file name (or in a side file ``<image>.fault``):

    __crash__          os.abort() while detecting (SIGABRT, like a failed dlib assertion)
    __segv__           a real segmentation fault (SIGSEGV)
    __hang__           never answers (the per-image timeout must fire); first writes its pid to
                       ``<image>.hanging``, so a test knows the child is deaf to its pipe
    __raise__          an unexpected Python exception inside the engine
    __slow_S__         sleeps S seconds, then detects as usual (an image that keeps a child busy)
    __oom_at_S__       the error dlib raises on a CUDA out-of-memory, at cascade scale S (e.g. 1.0)
    __hostoom_at_S__   MemoryError at cascade scale S
    __batchoom__       the CUDA out-of-memory error from any CNN call that scans this image
                       together with others (a batch); alone it detects as usual
    __rss_N__          holds N MB resident for up to a minute, without RLIMIT_AS (lifted to the
                       hard limit, as a CUDA child has none): the parent must replace it

In a batch (``detect_batch``) each image's faults apply as they would alone: one
``__crash__`` image kills the child in the middle of the batch.

Start-up faults, for the supervision tests, come from the environment the child inherits:

    REACTOR_TEST_STARTUP_CRASHES=/path/file   the file holds N; each new child decrements it
                                              and aborts while N > 0
    REACTOR_TEST_PARENT_ENVIRON=/path/file    each new child tries to read its parent's
                                              /proc/<ppid>/environ and writes what it got
                                              there ("denied", or the variables' names)
    REACTOR_TEST_CARD="name, free, total"     the child says it runs on this CUDA card (an
                                              nvidia-smi row, MiB), as a CUDA child would
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from reactor.config import DetectorConfig
from reactor.detector import gpu
from reactor.detector.cascade import Box, Step
from reactor.detector.engine import DlibEngine
from reactor.detector.loading import LoadedImage
from reactor.detector.types import Detection, DetectionJob, Outcome

STARTUP_CRASHES_ENV = "REACTOR_TEST_STARTUP_CRASHES"
CARD_ENV = "REACTOR_TEST_CARD"

# The message dlib's CUDA code raises (dlib/cuda/cuda_data_ptr.cpp), copied so that the
# engine's classification is exercised exactly as on a real card.
CUDA_OOM_MESSAGE = (
    "Error while calling cudaMalloc(&data, new_size*sizeof(float)) in file "
    "/dlib/cuda/cuda_data_ptr.cpp:28. code: 2, reason: out of memory"
)

PARENT_ENVIRON_ENV = "REACTOR_TEST_PARENT_ENVIRON"

_SLOW = re.compile(r"__slow_(?P<seconds>[0-9.]+?)__")
_RSS = re.compile(r"__rss_(?P<mb>[0-9]+)__")
_AT_SCALE = re.compile(r"__(?P<kind>oom|hostoom)_at_(?P<scale>[0-9.]+?)__")


def faults_for(path: str) -> str:
    """The fault markers that apply to ``path``: its name plus its side file, if any."""
    markers = os.path.basename(path)
    side = Path(path + ".fault")
    if side.is_file():
        markers += " " + side.read_text(encoding="utf-8")
    return markers


class FaultEngine(DlibEngine):
    def __init__(self, config: DetectorConfig) -> None:
        super().__init__(config)
        self._batch_oom = False
        if os.environ.get(CARD_ENV):
            name, free, total = (part.strip() for part in os.environ[CARD_ENV].split(","))
            card = gpu.Gpu(name, int(free), int(total))
            self.card, self.card_pixels = gpu.card_key(card), gpu.cnn_pixels(card)

    def detect_prefetched(self, job: DetectionJob, data: bytes | None) -> Outcome:
        _process_faults(job)
        return super().detect_prefetched(job, data)

    def detect_batch(self, items: Sequence[tuple[DetectionJob, bytes | None]]) -> list[Outcome]:
        for job, _ in items:
            _process_faults(job)
        self._batch_oom = any("__batchoom__" in faults_for(job.local_path) for job, _ in items)
        return super().detect_batch(items)

    def _locate_batch(self, images: list[np.ndarray], upsample: int) -> list[list[tuple[Box, float]]]:
        if self._batch_oom:
            raise RuntimeError(CUDA_OOM_MESSAGE)
        return super()._locate_batch(images, upsample)

    def detect_step(self, job: DetectionJob, loaded: LoadedImage, step: Step) -> Detection:
        for match in _AT_SCALE.finditer(faults_for(job.local_path)):
            if abs(float(match["scale"]) - step.scale) < 1e-9:
                if match["kind"] == "oom":
                    raise RuntimeError(CUDA_OOM_MESSAGE)
                raise MemoryError("injected host out-of-memory")
        return super().detect_step(job, loaded, step)


def _process_faults(job: DetectionJob) -> None:
    """The faults that strike the whole process while it works on ``job``."""
    markers = faults_for(job.local_path)
    if "__crash__" in markers:
        os.abort()
    if "__segv__" in markers:
        ctypes.string_at(0)
    if "__hang__" in markers:
        Path(job.local_path + ".hanging").write_text(str(os.getpid()), encoding="utf-8")
        while True:
            time.sleep(3600)
    if "__raise__" in markers:
        raise ValueError("injected engine error")
    for slow in _SLOW.finditer(markers):
        time.sleep(float(slow["seconds"]))
    for rss in _RSS.finditer(markers):
        _hold_resident(int(rss["mb"]))


def _hold_resident(mb: int) -> None:
    if sys.platform != "win32":
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
    held = bytearray(mb * 1024 * 1024)
    for offset in range(0, len(held), 4096):  # touched: resident, not only reserved
        held[offset] = 1
    time.sleep(60)


def _probe_parent_environ() -> None:
    out = os.environ.get(PARENT_ENVIRON_ENV)
    if not out:
        return
    try:
        raw = Path(f"/proc/{os.getppid()}/environ").read_bytes()
    except PermissionError:
        Path(out).write_text("denied", encoding="utf-8")
        return
    names = [entry.split(b"=", 1)[0].decode(errors="replace") for entry in raw.split(b"\0") if entry]
    Path(out).write_text(" ".join(names) + (" s3cret" if b"s3cret" in raw else ""), encoding="utf-8")


def _startup_fault() -> None:
    counter = os.environ.get(STARTUP_CRASHES_ENV)
    if not counter:
        return
    path = Path(counter)
    left = int(path.read_text(encoding="utf-8").strip() or "0")
    if left > 0:
        path.write_text(str(left - 1), encoding="utf-8")
        os.abort()


def create_engine(config: DetectorConfig) -> FaultEngine:
    if sys.platform != "win32":
        import resource

        # Injected aborts and segfaults must not leave core files in the working tree.
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _startup_fault()
    _probe_parent_environ()
    return FaultEngine(config)
