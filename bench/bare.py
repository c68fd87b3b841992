"""The baseline: a bare detection loop in one process, with the reactor's settings.

Open, apply EXIF orientation, convert to RGB, resize so the longest side is at most
detector.max_dimension, face_locations (HOG, with the upsampling the reactor's cascade
chooses for that size and detector.min_face_px), face_encodings. No draft decoding,
no database, no queue, no child process: what a one-off script would do.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from reactor.config import DetectorConfig
from reactor.detector import cascade


def load_models() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import face_recognition
    return face_recognition


def detect_one(fr: Any, path: str, config: DetectorConfig) -> int:
    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    scale = cascade.bound_scale(image.size, config.max_dimension)
    if scale < 1.0:
        image = image.resize(cascade.scaled_size(image.size, scale), Image.Resampling.BILINEAR)
    upsample = cascade.choose_upsample(scale, config.min_face_px, config.max_upsample)
    pixels = np.asarray(image)
    boxes = fr.face_locations(pixels, number_of_times_to_upsample=upsample, model="hog")
    fr.face_encodings(pixels, boxes, num_jitters=config.encode_jitters)
    return len(boxes)


def bare_loop(paths: Sequence[str], config: DetectorConfig) -> tuple[list[float], int]:
    """Completion time (epoch seconds) of each image, and the faces found in all."""
    fr = load_models()
    times = []
    faces = 0
    for path in paths:
        faces += detect_one(fr, path, config)
        times.append(time.time())
    return times, faces
