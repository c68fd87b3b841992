"""The detection plan: which model at which scale, at which resolution, and box geometry.

Pure functions, no dlib: the engine asks them what to try, the tests check them directly.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# The smallest face box each dlib detector finds in the image it scans: a smaller face is
# only found in an enlarged image (dlib's upsampling doubles width and height; resizing the
# original by the same factor sees the same faces, without resampling the photo twice).
# HOG: measured on real faces boxed by hand (dlib's PASCAL VOC group photos, 43 faces of
# 37-109 px, each photo scanned at factors 1.3 to 2.4; bench.recall --hog-window): none
# under 52 px in the scanned image, 28 % at 52-55, 63 % at 56-59, 74 % at 60-63, 93 % at
# 64-67, every one at 68-75 (docs/benchmarks.md, 11). The pasted astronaut (bench/photos.py)
# gave 60 px: one face, frontal, sharp, which real crowds are not. CNN: the MMOD model's
# window, about 80 px (dlib's documentation).
MODEL_MIN_FACE_PX: dict[str, int] = {"hog": 68, "cnn": 80}

# How far a photo is enlarged at most when the pixel budget has room: dlib's own upsampling
# step. A 500x375 photo scanned at x2 is 0.75 Mpx of HOG's 4.9 Mpx budget, and reaches faces
# of 34 px (68 / 2) instead of only detector.min_face_px; a photo that fills the budget is
# scanned at the budget as before (detector.max_enlargement).
MAX_ENLARGEMENT = 2.0

# HOG scans a pyramid of the image, each level 5/6 of the one above (dlib's pyramid_down<6>),
# so a face is seen at the level sizes only, and its score depends on where its size falls
# between them: a real 45 px face enlarged x4 and scanned at x1.28 scored -0.17, under
# dlib's threshold of 0, and +0.25 a third of a step away (docs/benchmarks.md, 11). A box
# scoring from detector.hog_min_score up to 0 is scored again on a crop at the two other
# thirds of a step, first brought near this size by whole steps (which keep its phase).
HOG_PYRAMID_STEP = 6 / 5
RESCORE_BOX_PX = 100

# What dlib's CUDA code raises when the card is full (cudaMalloc, cuDNN, cuBLAS). It is a
# plain RuntimeError, so the message is all there is to go on.
_CUDA_OOM = re.compile(
    r"out of memory|cudaErrorMemoryAllocation|CUDNN_STATUS_ALLOC_FAILED|CUBLAS_STATUS_ALLOC_FAILED|cudaMalloc",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Step:
    model: str  # "cnn" or "hog"
    scale: float  # cascade scale: a factor on the resolution chosen by choose_resolution


def models_for(model: str, cuda: bool) -> tuple[str, ...]:
    """The models to try in order: CNN then HOG on CUDA, HOG alone on a CPU, or one forced model."""
    if model == "auto":
        return ("cnn", "hog") if cuda else ("hog",)
    return (model,)


def plan(
    models: tuple[str, ...],
    scales: tuple[float, ...],
    last_scale: float | None = None,
    last_model: str | None = None,
) -> list[Step]:
    """Every (model, scale) step to try, starting below the step that last failed.

    ``last_scale``/``last_model`` come from the previous attempt's failure (an out-of-memory
    or a timeout). Without ``last_model`` the failure is taken to be the first model's. When
    nothing below the failed step is left, the smallest step of that model is tried again:
    a retry always does something.
    """
    ordered = sorted(set(scales), reverse=True)
    steps = [Step(m, s) for m in models for s in ordered]
    if last_scale is None:
        return steps
    failed_model = last_model if last_model in models else models[0]
    start = models.index(failed_model) * len(ordered)
    for i in range(start, len(steps)):
        if steps[i].model != failed_model:
            return steps[i:]
        if steps[i].scale < last_scale - 1e-9:
            return steps[i:]
    return [Step(failed_model, ordered[-1])]


def has_step_below(models: tuple[str, ...], scales: tuple[float, ...], scale: float, model: str | None) -> bool:
    """Whether the cascade has a step left after (model, scale) failed, within one attempt."""
    failed = Step(model if model in models else models[0], scale)
    return plan(models, scales, scale, model) != [failed]


@dataclass(frozen=True)
class Resolution:
    """The image the detector scans: one resize of the original, never more pixels than the budget."""

    size: tuple[int, int]  # (width, height) of the detection image
    scale: float  # detection width / original width (above 1 enlarges, below 1 reduces)
    upsample: int  # dlib's own upsampling on top of it: 0, since the resize already did it
    min_face_px: int  # the smallest face, in the original's pixels, that the model can find there


def choose_resolution(
    original: tuple[int, int],
    min_face_px: int,
    max_pixels: int,
    cascade_scale: float = 1.0,
    model: str = "hog",
    max_enlargement: float = MAX_ENLARGEMENT,
) -> Resolution:
    """The largest size within ``max_pixels`` up to ``max_enlargement``, and at least the
    size that brings a ``min_face_px`` face to the ``model``'s smallest where the budget allows.

    One factor for the whole photo: a small photo is enlarged (as far as the cap, or the
    face, needs and the budget allows), a large one reduced to the budget, never both: the
    budget is spent on recall where pixels are cheap. A cascade step below 1.0 lowers the
    result further (out-of-memory, time-out). ``Resolution.min_face_px`` says which smallest
    face the scanned size reaches: below ``min_face_px`` on a small photo, above it where
    the budget cannot reach it.
    """
    width, height = max(1, original[0]), max(1, original[1])
    window = MODEL_MIN_FACE_PX[model]
    wanted = max(window / max(1, min_face_px), max_enlargement)
    fits = math.sqrt(max(1, max_pixels) / (width * height))
    scale = min(wanted, fits) * cascade_scale
    size = scaled_size((width, height), scale)
    # Rounding may add a pixel on each side; the budget is a bound, so take it off again.
    while size[0] * size[1] > max_pixels and min(size) > 1:
        scale *= 1.0 - 1.0 / max(size)
        size = scaled_size((width, height), scale)
    effective = size[0] / width
    # Whole pixels make the factor a hair off (512 * 1.6 = 819.2 -> 819): not a smaller face.
    return Resolution(size, effective, 0, math.ceil(window / effective - 0.05))


def rescore_factors(side: int) -> tuple[float, float]:
    """The resize factors for a crop around a HOG box ``side`` px wide that put it a third
    and two thirds of a pyramid step from where it was scanned; a box over 100 px is first
    brought to 100-120 px by whole steps, so the crop stays small (HOG's window is 80)."""
    steps = math.floor(math.log(side / RESCORE_BOX_PX, HOG_PYRAMID_STEP)) if side > RESCORE_BOX_PX else 0
    base = HOG_PYRAMID_STEP ** (-steps)
    return base * HOG_PYRAMID_STEP ** (1 / 3), base * HOG_PYRAMID_STEP ** (2 / 3)


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


Box = tuple[int, int, int, int]  # (top, right, bottom, left)


def clamp(box: Box, size: tuple[int, int]) -> Box:
    top, right, bottom, left = box
    width, height = size
    return max(0, top), min(width, right), min(height, bottom), max(0, left)


def to_original(box: Box, detected_size: tuple[int, int], original_size: tuple[int, int]) -> Box:
    """Map a box found on the scaled image back to the original oriented image, clamped."""
    sx = original_size[0] / detected_size[0]
    sy = original_size[1] / detected_size[1]
    top, right, bottom, left = box
    return clamp((round(top * sy), round(right * sx), round(bottom * sy), round(left * sx)), original_size)


def iou(a: Box, b: Box) -> float:
    top = max(a[0], b[0])
    right = min(a[1], b[1])
    bottom = min(a[2], b[2])
    left = max(a[3], b[3])
    inter = max(0, right - left) * max(0, bottom - top)
    area_a = max(0, a[1] - a[3]) * max(0, a[2] - a[0])
    area_b = max(0, b[1] - b[3]) * max(0, b[2] - b[0])
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def is_cuda_oom(exc: BaseException) -> bool:
    return isinstance(exc, RuntimeError) and bool(_CUDA_OOM.search(str(exc)))
