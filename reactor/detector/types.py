"""What crosses the boundary between the reactor and the detector child.

Plain frozen dataclasses of builtins, so they pickle through the pipe. This module
imports neither dlib nor face_recognition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from reactor.failure_types import ErrorType


class DetectorState(StrEnum):
    """Where a detector child stands; the words `reactor status` and /healthz show."""

    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    BUSY = "busy"
    UNAVAILABLE = "unavailable"  # children keep dying at start-up: DetectorUnavailable


@dataclass(frozen=True)
class DetectionJob:
    local_path: str
    # 1 for the first try; retries carry the failure row's retry_count + 1.
    attempt: int = 1
    # The scale that last failed (oom/timeout); the cascade starts below it. This is a
    # cascade scale (detector.scales), i.e. DetectionFailure.scale of the failed attempt.
    last_scale: float | None = None
    # The model that failed at last_scale ("cnn"/"hog"); None means the first model tried.
    last_model: str | None = None
    # Pixel caps per model learned from out-of-memory errors (reactor.detector.budget):
    # the detection size never goes above them, whatever detector.*max_detect_pixels says.
    max_detect_pixels: tuple[tuple[str, int], ...] = ()
    # A photo shared by idle lanes (reactor.detector.tiles), in two steps. ``part``
    # (index, lanes): locate the faces in that part of the scan image only, and return
    # their boxes in the scan image's pixels, neither checked nor encoded. ``finish``: the
    # boxes (top, right, bottom, left, score; scan image pixels) merged from every part,
    # or this lane's share of them, to check and encode, as one scan does after locating.
    part: tuple[int, int] | None = None
    finish: tuple[tuple[int, int, int, int, float], ...] | None = None
    # The file's size and mtime as the reactor looked at it on its way in (the one look,
    # reactor.paths.look_in_share): the read checks its bytes against them and the child
    # records them, instead of each looking at the file again. None: not looked at.
    seen_size: int | None = None
    seen_mtime_ns: int | None = None


@dataclass(frozen=True)
class Face:
    # (top, right, bottom, left) in the original, EXIF-oriented image's pixels.
    top: int
    right: int
    bottom: int
    left: int
    score: float
    encoding: tuple[float, ...]  # 128 floats


@dataclass(frozen=True)
class Detection:
    faces: tuple[Face, ...]
    model: str  # "hog" or "cnn" (the model that produced the boxes)
    scale: float  # detection width / original width: the one resize applied to the original
    original_size: tuple[int, int]  # (width, height), oriented
    decode_ms: float
    detect_ms: float
    encode_ms: float
    file_size_bytes: int | None = None
    # The file as it was read (reactor.util.identity): a result keeps it, so that the same
    # file appearing at another path on a network share is known as a move.
    file_mtime_ns: int | None = None
    fingerprint: str | None = None
    # The cascade step that succeeded (an entry of detector.scales, a factor on the chosen size).
    cascade_scale: float = 1.0
    # dlib upsampling used (each one doubles width and height).
    upsample: int = 0
    # Weak HOG boxes that the CNN check on a crop did not confirm.
    rejected_weak: int = 0
    # (width, height) of the image the model scanned, and the smallest face (in the
    # original's pixels) it can find there: above detector.min_face_px when the pixel
    # budget could not reach it on this photo.
    detect_size: tuple[int, int] | None = None
    min_face_px: int | None = None

    @property
    def face_count(self) -> int:
        return len(self.faces)


@dataclass(frozen=True)
class DetectionFailure:
    error_type: ErrorType
    message: str
    # The cascade scale (an entry of detector.scales) being tried when it failed, if any;
    # a retry passes it back as DetectionJob.last_scale.
    scale: float | None = None
    original_size: tuple[int, int] | None = None
    file_size_bytes: int | None = None
    details: dict[str, str] = field(default_factory=dict)
    # The file's mtime when it failed: a permanent failure is tried again once it changes.
    file_mtime_ns: int | None = None


Outcome = Detection | DetectionFailure

# DetectionFailure.details keys the engine sets for the parent.
DETAIL_MODEL = "model"
# The pixels (width x height) of the detection image that ran out of memory.
DETAIL_PIXELS = "pixels"
# "1" when the child must not run anything else (CUDA state after an out-of-memory, dlib
# issue 1725): the parent replaces it and resubmits the job below the failed step.
DETAIL_REPLACE_CHILD = "replace_child"
# "1" when the photo failed as part of a batch (reactor.detector.batching), not on its
# own: the parent detects it again alone, so that only a photo at fault fails.
DETAIL_ALONE = "alone"


class Engine(Protocol):
    """What the detector child runs; the module named by detector.engine builds it with
    ``create_engine(config: DetectorConfig) -> Engine``."""

    @property
    def cuda(self) -> bool: ...

    def detect(self, job: DetectionJob) -> Outcome: ...


# An engine may also define ``detect_prefetched(job, data: bytes) -> Outcome``; the child
# calls it when the parent read the file ahead (see prefetch.py), else plain ``detect``.
# And ``detect_batch([(job, data | None), ...]) -> [Outcome, ...]`` for several photos at
# once (reactor.detector.batching); without it the child detects them one by one.
