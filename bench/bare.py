"""Baselines in one process, without the reactor: no database, no queue, no child process.

``bare_loop(paths, config)``: the reactor's own settings done by hand: open, EXIF
orientation, RGB, one resize to the size ``cascade.choose_resolution`` picks (from
detector.min_face_px and detector.max_detect_pixels), HOG, face_encodings. What a
one-off script with the reactor's settings would do (overhead and latency benchmarks).

``legacy_loop(paths)``: the legacy worker's settings (seeds/001, ``preprocess_image``
and ``detect_faces_progressive`` on a CPU): open, RGB, LANCZOS resize so that the
longest side is at most 1280 px, ``face_locations`` HOG with its default upsampling
(1), ``face_encodings`` on the reduced image, boxes scaled back with int(). The
throughput benchmark's baseline.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from reactor.config import DetectorConfig
from reactor.detector import cascade
from reactor.detector.cascade import Box

LEGACY_MAX_DIMENSION = 1280
LEGACY_UPSAMPLE = 1


def load_models() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import face_recognition
    return face_recognition


@dataclass
class Stages:
    """Seconds spent per stage, summed over the images."""

    decode: float = 0.0
    detect: float = 0.0
    encode: float = 0.0
    per_image: list[float] = field(default_factory=list)

    def as_ms_per_image(self) -> dict[str, float]:
        n = max(1, len(self.per_image))
        return {
            "decode": round(self.decode / n * 1000, 1),
            "detect": round(self.detect / n * 1000, 1),
            "encode": round(self.encode / n * 1000, 1),
        }


def detect_one(fr: Any, path: str, config: DetectorConfig) -> int:
    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    chosen = cascade.choose_resolution(image.size, config.min_face_px, config.max_detect_pixels)
    if chosen.size != image.size:
        image = image.resize(chosen.size, Image.Resampling.BILINEAR)
    pixels = np.asarray(image)
    boxes = fr.face_locations(pixels, number_of_times_to_upsample=chosen.upsample, model="hog")
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


def legacy_detect(fr: Any, path: str, stages: Stages) -> list[Box]:
    """One image with the legacy worker's settings; boxes in the original's pixels."""
    started = time.perf_counter()
    with Image.open(path) as img:
        original = img.size
        rgb = img.convert("RGB") if img.mode != "RGB" else img.copy()
    scale = min(1.0, LEGACY_MAX_DIMENSION / max(original))
    if scale < 1.0:
        rgb = rgb.resize((int(original[0] * scale), int(original[1] * scale)), Image.Resampling.LANCZOS)
    pixels = np.array(rgb)
    decoded = time.perf_counter()
    found = fr.face_locations(pixels, number_of_times_to_upsample=LEGACY_UPSAMPLE, model="hog")
    detected = time.perf_counter()
    fr.face_encodings(pixels, found)
    encoded = time.perf_counter()
    stages.decode += decoded - started
    stages.detect += detected - decoded
    stages.encode += encoded - detected
    stages.per_image.append(encoded - started)
    inverse = 1.0 / scale
    return [(int(t * inverse), int(r * inverse), int(b * inverse), int(left * inverse)) for t, r, b, left in found]


def legacy_loop(paths: Sequence[str]) -> tuple[list[float], list[list[Box]], Stages]:
    """Completion time (epoch seconds) of each image, its boxes, and the time per stage."""
    fr = load_models()
    stages = Stages()
    times: list[float] = []
    boxes: list[list[Box]] = []
    for path in paths:
        boxes.append(legacy_detect(fr, path, stages))
        times.append(time.time())
    return times, boxes, stages
