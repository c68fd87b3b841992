"""What crosses the boundary between the reactor and the detector child.

Plain frozen dataclasses of builtins, so they pickle through the pipe. This module
imports neither dlib nor face_recognition.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reactor.errors import ErrorType


@dataclass(frozen=True)
class DetectionJob:
    local_path: str
    # 1 for the first try; retries carry the failure row's retry_count + 1.
    attempt: int = 1
    # The scale that last failed (oom/timeout); the cascade starts below it.
    last_scale: float | None = None


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
    scale: float  # scale applied to the original image, max_dimension included
    original_size: tuple[int, int]  # (width, height), oriented
    decode_ms: float
    detect_ms: float
    encode_ms: float
    file_size_bytes: int | None = None

    @property
    def face_count(self) -> int:
        return len(self.faces)


@dataclass(frozen=True)
class DetectionFailure:
    error_type: ErrorType
    message: str
    # The scale being tried when it failed, if any.
    scale: float | None = None
    original_size: tuple[int, int] | None = None
    file_size_bytes: int | None = None
    details: dict[str, str] = field(default_factory=dict)


Outcome = Detection | DetectionFailure
