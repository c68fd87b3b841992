"""The real detection engine: dlib through face_recognition, run inside the detector child.

Importing this module loads nothing; ``create_engine`` loads every model once (about a
second on a CPU). The cascade of (model, scale) steps comes from ``cascade.plan``. A CUDA
out-of-memory ends the job at once with ``replace_child`` set, because dlib's CUDA state
may be unusable afterwards (dlib issue 1725); the parent resubmits the job to a fresh child,
which starts below the failed step.
"""

from __future__ import annotations

import functools
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from reactor.config import DetectorConfig
from reactor.detector import batching, cascade, gpu, tiles
from reactor.detector.cascade import Box, Step
from reactor.detector.loading import LoadedImage, load_image, prepare_pillow
from reactor.detector.types import (
    DETAIL_ALONE,
    DETAIL_MODEL,
    DETAIL_PIXELS,
    DETAIL_REPLACE_CHILD,
    Detection,
    DetectionFailure,
    DetectionJob,
    Face,
    Outcome,
)
from reactor.failure_types import ErrorType
from reactor.util.identity import fingerprint_of_bytes

# A weak HOG box is checked on a crop this many box-widths wide, resized so that the box is
# about this many pixels: big enough for the CNN's window, small enough to cost ~0.5 s on a CPU.
_VERIFY_CONTEXT = 3.0
_VERIFY_BOX_PX = 100
# A CNN detection confirms a HOG box when they overlap at least this much.
_VERIFY_IOU = 0.3
# A HOG box on the crop is the one scored again when they overlap at least this much.
_RESCORE_IOU = 0.5


@dataclass(frozen=True)
class _Scan:
    """One photo of a batch, decoded and sized, waiting for its CNN call."""

    index: int
    job: DetectionJob
    loaded: LoadedImage
    step: Step
    chosen: cascade.Resolution


@dataclass
class _SharedPhoto:
    """The photo a shared job last decoded in this child, and its scan image."""

    key: tuple[str, int, str]
    loaded: LoadedImage
    images: dict[tuple[int, int], np.ndarray]


class DlibEngine:
    """Finds faces in one image at a time; the override point for tests is ``detect_step``."""

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self._shared: _SharedPhoto | None = None
        with warnings.catch_warnings():
            # face_recognition_models imports pkg_resources, which warns on import.
            warnings.simplefilter("ignore")
            import dlib
            import face_recognition.api as fr
        prepare_pillow()
        self._fr: Any = fr
        self._gpus = _cuda_devices(dlib) if getattr(dlib, "DLIB_USE_CUDA", False) else 0
        self._cuda = self._gpus > 0
        self.models = cascade.models_for(config.model, self._cuda)
        # Decided before the first CNN call, which is when cuDNN picks its algorithms; asked
        # after the models are loaded, so the free memory is what the scans can use.
        card = _card() if self._cuda else None
        self.gpu_memory_mb = card.total_mib if card is not None else None
        # The pixels one CNN call may scan on this card, and what its learned budget is kept under.
        self.card_pixels = gpu.cnn_pixels(card) if card is not None else None
        self.card = gpu.card_key(card) if card is not None else None
        self.smallest_algorithms = _prefers_smallest(config, self.gpu_memory_mb)
        if self.smallest_algorithms:
            dlib.set_dnn_prefer_smallest_algorithms()
        # The first call of each detector sets up its buffers (and cuDNN on a GPU): done here,
        # so it counts against the start-up timeout, not against the first photo's.
        blank = np.zeros((100, 100, 3), dtype=np.uint8)
        fr.face_detector(blank, 0)
        fr.cnn_face_detector(blank, 0)

    @property
    def cuda(self) -> bool:
        return self._cuda

    @property
    def gpus(self) -> int:
        return self._gpus

    def detect(self, job: DetectionJob) -> Outcome:
        return self.detect_prefetched(job, None)

    def detect_prefetched(self, job: DetectionJob, data: bytes | None) -> Outcome:
        """``data``: the file's bytes when the parent read them ahead; None reads the file."""
        clock = time.perf_counter()
        shared = (job.part is not None or job.finish is not None) and data is not None
        key = (job.local_path, len(data), fingerprint_of_bytes(data)) if shared and data is not None else None
        if key is not None and self._shared is not None and self._shared.key == key:
            return self._detect_loaded(job, self._shared.loaded)
        self._shared = None
        loaded = load_image(
            job.local_path,
            lambda size: self._draft_dimension(size, job),
            self.config.max_pixels,
            clock,
            data,
            job.seen_mtime_ns,
        )
        if isinstance(loaded, DetectionFailure):
            return loaded
        if key is not None:
            # The same photo's next part, or its faces to finish, come to this child next:
            # decoded and sized once (reactor.core.tile_sharing).
            self._shared = _SharedPhoto(key, loaded, {})
        return self._detect_loaded(job, loaded)

    def _scan_image(self, loaded: LoadedImage, size: tuple[int, int]) -> np.ndarray:
        """The photo resized to the scan size, once per shared photo."""
        shared = self._shared
        if shared is None or shared.loaded is not loaded:
            return _resized(loaded.pixels, size)
        if size not in shared.images:
            shared.images.clear()
            shared.images[size] = _resized(loaded.pixels, size)
        return shared.images[size]

    def _detect_loaded(self, job: DetectionJob, loaded: LoadedImage) -> Outcome:
        """The cascade on one decoded photo: each (model, scale) step until one succeeds."""
        steps = cascade.plan(self.models, self.config.scales, job.last_scale, job.last_model)
        host_oom: Step | None = None
        for step in steps:
            try:
                return self.detect_step(job, loaded, step)
            except MemoryError:
                # Host memory: this process is still sound, so the next, smaller step runs here.
                host_oom = step
                continue
            except RuntimeError as exc:
                if cascade.is_cuda_oom(exc):
                    width, height = self.resolution(loaded.original_size, step, job).size
                    return self._failure(
                        loaded,
                        ErrorType.OOM,
                        f"CUDA out of memory ({step.model} at scale {step.scale}, {width}x{height}): {exc}",
                        step,
                        replace_child=True,
                        pixels=width * height,
                    )
                return self._failure(loaded, ErrorType.RUNTIME, f"{type(exc).__name__}: {exc}", step)
        last = host_oom or steps[-1]
        return self._failure(loaded, ErrorType.OOM, "out of memory at every scale", last)

    def resolution(
        self, original_size: tuple[int, int], step: Step, job: DetectionJob | None = None
    ) -> cascade.Resolution:
        budget = self.config.cnn_max_detect_pixels if step.model == "cnn" else self.config.max_detect_pixels
        if step.model == "cnn" and self.card_pixels is not None:
            budget = min(budget, self.card_pixels)  # a card smaller than the premise: stay within it
        config = self.config
        chosen = cascade.choose_resolution(
            original_size, config.min_face_px, budget, step.scale, step.model, config.max_enlargement
        )
        # What the GPU was learned to hold (the parent's budget) caps the size of any step;
        # a step already below it (a retry under a failed one) keeps its own size.
        cap = dict(job.max_detect_pixels).get(step.model) if job is not None else None
        if cap is not None and chosen.size[0] * chosen.size[1] > cap:
            chosen = cascade.choose_resolution(
                original_size, config.min_face_px, cap, 1.0, step.model, config.max_enlargement
            )
        return chosen

    def _draft_dimension(self, original_size: tuple[int, int], job: DetectionJob | None = None) -> int:
        """The largest side any step may scan: libjpeg need not decode more than that."""
        top = max(self.config.scales)
        return max(max(self.resolution(original_size, Step(m, top), job).size) for m in self.models)

    def detect_batch(self, items: Sequence[tuple[DetectionJob, bytes | None]]) -> list[Outcome]:
        """Several photos: those whose first step is the CNN at one detection size are
        scanned together, ``batching.per_call`` at a time; the others one by one."""
        outcomes: dict[int, Outcome] = {}
        groups: dict[tuple[tuple[int, int], int], list[_Scan]] = {}
        for index, (job, data) in enumerate(items):
            clock = time.perf_counter()
            loaded = load_image(
                job.local_path,
                functools.partial(self._draft_dimension, job=job),
                self.config.max_pixels,
                clock,
                data,
                job.seen_mtime_ns,
            )
            if isinstance(loaded, DetectionFailure):
                outcomes[index] = loaded
                continue
            step = cascade.plan(self.models, self.config.scales, job.last_scale, job.last_model)[0]
            if step.model != "cnn":
                outcomes[index] = self._detect_loaded(job, loaded)
                continue
            chosen = self.resolution(loaded.original_size, step, job)
            groups.setdefault((chosen.size, chosen.upsample), []).append(_Scan(index, job, loaded, step, chosen))
        for (size, upsample), scans in groups.items():
            cap = dict(scans[0].job.max_detect_pixels).get("cnn")
            each = batching.per_call(self.config, self._cuda, size[0] * size[1], cap, self.card_pixels)
            for chunk in batching.chunks(scans, each):
                if len(chunk) == 1:
                    outcomes[chunk[0].index] = self._detect_loaded(chunk[0].job, chunk[0].loaded)
                else:
                    outcomes.update(self._detect_together(chunk, upsample))
        return [outcomes[i] for i in range(len(items))]

    def _detect_together(self, chunk: list[_Scan], upsample: int) -> dict[int, Outcome]:
        started = time.perf_counter()
        images = [_resized(scan.loaded.pixels, scan.chosen.size) for scan in chunk]
        pixels = sum(scan.chosen.size[0] * scan.chosen.size[1] for scan in chunk)
        try:
            found = self._locate_batch(images, upsample)
        except (MemoryError, RuntimeError) as exc:
            # Not any one photo's fault: each is detected again on its own.
            cuda_oom = isinstance(exc, RuntimeError) and cascade.is_cuda_oom(exc)
            kind = ErrorType.OOM if cuda_oom or isinstance(exc, MemoryError) else ErrorType.RUNTIME
            message = f"a batch of {len(chunk)} ({pixels} pixels) failed: {type(exc).__name__}: {exc}"
            return {
                scan.index: self._failure(
                    scan.loaded, kind, message, scan.step, replace_child=cuda_oom, pixels=pixels, alone=True
                )
                for scan in chunk
            }
        each_ms = (time.perf_counter() - started) * 1000.0 / len(chunk)
        return {
            scan.index: self._finish(scan.loaded, scan.step, scan.chosen, image, candidates, each_ms)
            for scan, image, candidates in zip(chunk, images, found, strict=True)
        }

    def detect_step(self, job: DetectionJob, loaded: LoadedImage, step: Step) -> Detection:
        """One model at one scale; raises MemoryError or dlib's RuntimeError on out-of-memory."""
        started = time.perf_counter()
        chosen = self.resolution(loaded.original_size, step, job)
        # Resampled once, from the decoded original (or libjpeg's reduced decode of it).
        image = self._scan_image(loaded, chosen.size)
        if job.finish is not None:
            candidates = [((t, r, b, left), score) for t, r, b, left, score in job.finish]
        elif job.part is not None:
            located = self._locate_part(step.model, image, chosen.upsample, job.part)
            ms = (time.perf_counter() - started) * 1000.0
            return self._located(loaded, step, chosen, located, ms)
        else:
            candidates = self._locate(step.model, image, chosen.upsample)
        return self._finish(loaded, step, chosen, image, candidates, (time.perf_counter() - started) * 1000.0)

    def _finish(
        self,
        loaded: LoadedImage,
        step: Step,
        chosen: cascade.Resolution,
        image: np.ndarray,
        candidates: list[tuple[Box, float]],
        detect_ms: float,
    ) -> Detection:
        """The result from the model's boxes: weak HOG boxes checked, faces encoded."""
        started = time.perf_counter()
        size = chosen.size
        boxes: list[tuple[Box, float]] = []
        rejected = 0
        for box, score in candidates:
            if step.model == "hog" and score < 0.0:
                rescored = self._rescored(image, box)  # under dlib's threshold: at other pyramid phases
                if rescored is None:
                    continue
                score = rescored
            if step.model == "hog" and score < self.config.weak_score and not self._confirmed(image, box):
                rejected += 1
                continue
            boxes.append((cascade.clamp(box, size), score))
        detected = time.perf_counter()
        detect_ms += (detected - started) * 1000.0
        encodings = self._encodings(image, [b for b, _ in boxes])
        encoded = time.perf_counter()
        faces = tuple(
            Face(
                *cascade.to_original(box, size, loaded.original_size),
                score=float(score),
                encoding=tuple(float(x) for x in enc),
            )
            for (box, score), enc in zip(boxes, encodings, strict=True)
        )
        return _detection(loaded, step, chosen, faces, detect_ms, (encoded - detected) * 1000.0, rejected)

    def _located(
        self,
        loaded: LoadedImage,
        step: Step,
        chosen: cascade.Resolution,
        boxes: list[tuple[Box, float]],
        detect_ms: float,
    ) -> Detection:
        """A part's boxes, in the scan image's pixels and without encodings: the parent
        merges every part's, then has them checked and encoded (``DetectionJob.finish``)."""
        faces = tuple(Face(*cascade.clamp(box, chosen.size), score=score, encoding=()) for box, score in boxes)
        return _detection(loaded, step, chosen, faces, detect_ms, 0.0, 0)

    def _encodings(self, image: np.ndarray, boxes: list[Box]) -> list[Any]:
        if not boxes:
            return []
        encodings: list[Any] = self._fr.face_encodings(image, boxes, num_jitters=self.config.encode_jitters)
        return encodings

    def _locate(
        self, model: str, image: np.ndarray, upsample: int, hog_min_score: float | None = None
    ) -> list[tuple[Box, float]]:
        if model == "cnn":
            found = self._fr.cnn_face_detector(image, upsample)
            return [(_css(d.rect), float(d.confidence)) for d in found]
        threshold = self.config.hog_min_score if hog_min_score is None else hog_min_score
        rects, scores, _ = self._fr.face_detector.run(image, upsample, threshold)
        return [(_css(r), float(s)) for r, s in zip(rects, scores, strict=True)]

    def _locate_part(
        self, model: str, image: np.ndarray, upsample: int, part: tuple[int, int]
    ) -> list[tuple[Box, float]]:
        """The boxes this part of the scan image owns (reactor.detector.tiles), in the scan
        image's coordinates: the weak-box check and the encodings then run on the whole scan
        image, as in one scan."""
        index, lanes = part
        layout = tiles.plan((image.shape[1], image.shape[0]), lanes)
        if index >= len(layout.parts):
            return []  # too small to share: the first part scans it whole
        region = layout.parts[index]
        left, top, right, bottom = region.region
        view = np.ascontiguousarray(image[top:bottom, left:right])
        if region.factor < 1.0:
            view = _resized(view, tiles.part_image_size(region))
        found = [(tiles.to_scan(box, region), score) for box, score in self._locate(model, view, upsample)]
        return tiles.keep(layout, index, found)

    def _locate_batch(self, images: list[np.ndarray], upsample: int) -> list[list[tuple[Box, float]]]:
        found = self._fr.cnn_face_detector(images, upsample, batch_size=len(images))
        return [[(_css(d.rect), float(d.confidence)) for d in dets] for dets in found]

    def _confirmed(self, image: np.ndarray, box: Box) -> bool:
        """Run the CNN on a crop around a weak HOG box: the shoulder patch test."""
        side = max(box[1] - box[3], box[2] - box[0], 1)
        cropped = _crop(image, box, _VERIFY_BOX_PX / side)
        if cropped is None:
            return False
        crop, in_crop = cropped
        return any(cascade.iou(in_crop, found) >= _VERIFY_IOU for found, _ in self._locate("cnn", crop, 0))

    def _rescored(self, image: np.ndarray, box: Box) -> float | None:
        """HOG's best score for a box it scored under 0, on a crop around it at the two other
        thirds of a pyramid step (cascade.rescore_factors); None when still under 0 there."""
        best: float | None = None
        for factor in cascade.rescore_factors(max(box[1] - box[3], box[2] - box[0], 1)):
            cropped = _crop(image, box, factor)
            if cropped is None:
                return None
            crop, in_crop = cropped
            for found, score in self._locate("hog", crop, 0, 0.0):
                if cascade.iou(in_crop, found) >= _RESCORE_IOU and (best is None or score > best):
                    best = score
        return best

    def _failure(
        self,
        loaded: LoadedImage,
        kind: ErrorType,
        message: str,
        step: Step,
        replace_child: bool = False,
        pixels: int | None = None,
        alone: bool = False,
    ) -> DetectionFailure:
        details = {DETAIL_MODEL: step.model}
        if replace_child:
            details[DETAIL_REPLACE_CHILD] = "1"
        if alone:
            details[DETAIL_ALONE] = "1"
        if pixels is not None:
            details[DETAIL_PIXELS] = str(pixels)
        return DetectionFailure(
            kind,
            message,
            scale=step.scale,
            original_size=loaded.original_size,
            file_size_bytes=loaded.file_size_bytes,
            details=details,
            file_mtime_ns=loaded.file_mtime_ns,
        )


def _crop(image: np.ndarray, box: Box, factor: float) -> tuple[np.ndarray, Box] | None:
    """A crop _VERIFY_CONTEXT box-widths wide around ``box``, resized by ``factor``, and the
    box in it; None when the box is outside the image."""
    top, right, bottom, left = box
    margin = round(max(right - left, bottom - top, 1) * (_VERIFY_CONTEXT - 1) / 2)
    height, width = image.shape[:2]
    y0, y1 = max(0, top - margin), min(height, bottom + margin)
    x0, x1 = max(0, left - margin), min(width, right + margin)
    if y1 <= y0 or x1 <= x0:
        return None
    crop = _resized(image[y0:y1, x0:x1], cascade.scaled_size((x1 - x0, y1 - y0), factor))
    in_crop: Box = (
        round((top - y0) * factor),
        round((right - x0) * factor),
        round((bottom - y0) * factor),
        round((left - x0) * factor),
    )
    return crop, in_crop


def _css(rect: Any) -> Box:
    return int(rect.top()), int(rect.right()), int(rect.bottom()), int(rect.left())


def _resized(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (pixels.shape[1], pixels.shape[0]) == size:
        return np.ascontiguousarray(pixels)
    image = Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def _cuda_devices(dlib: Any) -> int:
    try:
        return int(dlib.cuda.get_num_devices())
    except Exception:  # a CUDA build on a machine whose driver is missing or broken
        return 0


def _card() -> gpu.Gpu | None:
    """The card this child uses (the first it is shown; not told: the smallest), from nvidia-smi."""
    try:
        cards = gpu.query()
    except gpu.GpuQueryFailed:
        return None
    if not cards:
        return None
    shown = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    if shown.isdigit() and int(shown) < len(cards):
        return cards[int(shown)]
    return min(cards, key=lambda c: c.total_mib or 0)


def _card_memory_mb() -> int | None:
    """The memory of the card this child uses, from nvidia-smi."""
    card = _card()
    return card.total_mib if card is not None else None


def _prefers_smallest(config: DetectorConfig, memory_mb: int | None) -> bool:
    """dlib's smallest cuDNN algorithms on a card below the configured size (dlib issue 1126)."""
    threshold = config.prefer_smallest_algorithms_below_mb
    return threshold > 0 and memory_mb is not None and memory_mb < threshold


def create_engine(config: DetectorConfig) -> DlibEngine:
    return DlibEngine(config)


def _detection(
    loaded: LoadedImage,
    step: Step,
    chosen: cascade.Resolution,
    faces: tuple[Face, ...],
    detect_ms: float,
    encode_ms: float,
    rejected: int,
) -> Detection:
    """A scan's result: its faces, and what was scanned, how and at what cost."""
    return Detection(
        faces=faces,
        model=step.model,
        scale=chosen.scale,
        original_size=loaded.original_size,
        decode_ms=loaded.decode_ms,
        detect_ms=detect_ms,
        encode_ms=encode_ms,
        file_size_bytes=loaded.file_size_bytes,
        file_mtime_ns=loaded.file_mtime_ns,
        fingerprint=loaded.fingerprint,
        cascade_scale=step.scale,
        upsample=chosen.upsample,
        rejected_weak=rejected,
        detect_size=chosen.size,
        min_face_px=chosen.min_face_px,
    )
