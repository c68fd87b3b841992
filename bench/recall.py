"""Recall: does the reactor at its defaults still find every small face, and nothing else?

Photos the project has never seen, with known faces (bench.photos): 1600x1200 photos
with 1-7 faces 40-60 px wide (``native``), the same photos enlarged to 4000x3000 (faces
100-150 px, ``enlarged``: the smallest the default budget reaches there), and face-free
photos at both sizes (``empty``, false positives). With ``--annotated``, also real photos
with faces boxed by hand (bench.annotated: dlib's ``examples/faces`` from dlib 19.5.0's
sdist on PyPI, fetched once and cached, or the folder given as ``--annotated DIR``; 9
PASCAL VOC photos, 43 faces of 37-109 px) at their size (``real_native``) and enlarged four
times (``real_x4``). The reactor's detector runs in its child process with the default
configuration, and beside it (same files, same run) with ``hog_min_score = 0.0`` (dlib's
own HOG threshold: the defaults at 7f3f7ec, ``dlib_threshold``) and with that and
``max_enlargement = 1.0`` as well, which enlarges a photo only as far as ``min_face_px``
needs (the defaults before issue 26 in effect: x1.7 now, x1.6 then, ``min_face_only``);
the legacy worker's settings (bench/bare.py) run on the same files too. Target: recall
1.00 and no false positive for the reactor on every set.

Phone-photo throughput: the first ``--phone`` enlarged photos (4000x3000) detected by each
configuration's child and by the legacy worker's settings (in this process), in turns,
photo by photo, in the same run: images/s of each, and the ratios of the defaults to the
others. Enlarging small photos and checking HOG's boxes down to ``hog_min_score`` must
cost a phone-photo backlog nothing.

    nice .venv/bin/python -m bench.recall [--count 12 --empty 8 --phone 6 --annotated [DIR]]

``--hog-window`` measures instead what ``reactor.detector.cascade.MODEL_MIN_FACE_PX["hog"]``
rests on: the share of faces of each box width that HOG finds in the image it scans, with
no upsampling: the pasted astronaut at set widths (24 faces per width) and, with
``--annotated``, the real faces, each photo scanned at factors 1.3 to 2.4 (by 4 px bins of
the face's width in the scanned image).

    nice .venv/bin/python -m bench.recall --hog-window [--annotated [DIR]]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench import annotated, common, photos
from bench.bare import Stages, legacy_detect, load_models
from reactor.config import DetectorConfig
from reactor.detector import Detection, DetectionJob, Detector
from reactor.detector.cascade import iou

# The defaults; dlib's own HOG threshold (the defaults at 7f3f7ec); and that, enlarging only
# as far as min_face_px needs (the defaults before issue 26).
LEGACY = "legacy"
CONFIGS = {
    "reactor": DetectorConfig(),
    "dlib_threshold": DetectorConfig(hog_min_score=0.0),
    "min_face_only": DetectorConfig(max_enlargement=1.0, hog_min_score=0.0),
}
# The configurations timed on phone photos beside the legacy worker's settings.
PHONE_CONFIGS = ("reactor", "dlib_threshold")


async def reactor_scores(sets: dict[str, list[photos.Photo]], config: DetectorConfig) -> dict[str, dict[str, object]]:
    detector = Detector(config)
    await detector.start()
    out: dict[str, dict[str, object]] = {}
    try:
        for name, items in sets.items():
            score = photos.Score()
            sizes: set[tuple[int, int] | None] = set()
            smallest: set[int | None] = set()
            for photo in items:
                outcome = await detector.detect(DetectionJob(local_path=str(photo.path)))
                assert isinstance(outcome, Detection), outcome
                score.add(photo.faces, [(f.top, f.right, f.bottom, f.left) for f in outcome.faces])
                sizes.add(outcome.detect_size)
                smallest.add(outcome.min_face_px)
            out[name] = score.as_dict() | {
                "min_face_px": sorted(s for s in smallest if s is not None),
                "detect_sizes": len(sizes),
            }
    finally:
        await detector.close()
    return out


async def phone_rates(items: list[photos.Photo], configs: dict[str, DetectorConfig]) -> dict[str, object]:
    """Images/s of one child per configuration, and of the legacy worker's settings in this
    process, on the same phone photos, taking turns photo by photo (the order reversed each
    time) so that a change in load hits each alike."""
    detectors = {name: Detector(config) for name, config in configs.items()}
    fr = load_models()
    names = [*configs, LEGACY]
    seconds = dict.fromkeys(names, 0.0)
    sizes: dict[str, set[str]] = {name: set() for name in configs}

    async def one(name: str, path: str) -> None:
        started = time.perf_counter()
        if name == LEGACY:
            legacy_detect(fr, path, Stages())
        else:
            outcome = await detectors[name].detect(DetectionJob(local_path=path))
            assert isinstance(outcome, Detection), outcome
            sizes[name].add("x".join(map(str, outcome.detect_size or ())))
        seconds[name] += time.perf_counter() - started

    try:
        for detector in detectors.values():
            await detector.start()
            await detector.detect(DetectionJob(local_path=str(items[0].path)))  # warm: models, caches
        legacy_detect(fr, str(items[0].path), Stages())
        for i, photo in enumerate(items):
            for name in names if i % 2 == 0 else reversed(names):
                await one(name, str(photo.path))
    finally:
        for detector in detectors.values():
            await detector.close()
    rates = {name: round(len(items) / s, 3) for name, s in seconds.items()}
    first = names[0]
    return {
        "photos": len(items),
        "images_per_s": rates,
        "ratio_of_defaults_to": {name: round(rates[first] / rates[name], 3) for name in names[1:]},
        "detect_sizes": {name: sorted(found) for name, found in sizes.items()},
    }


def legacy_scores(sets: dict[str, list[photos.Photo]]) -> dict[str, dict[str, object]]:
    fr = load_models()
    out: dict[str, dict[str, object]] = {}
    for name, items in sets.items():
        score = photos.Score()
        for photo in items:
            score.add(photo.faces, legacy_detect(fr, str(photo.path), Stages()))
        out[name] = score.as_dict()
    return out


def hog_window(widths: tuple[int, ...] = (45, 50, 55, 60, 64, 70, 80)) -> dict[int, float]:
    """Box width -> share of faces HOG finds at that width, scanning the photo as it is."""
    fr = load_models()
    backgrounds = photos._backgrounds()
    found: dict[int, float] = {}
    for width in widths:
        hits = total = 0
        for seed in range(6):
            image, boxes = photos.group_photo(random.Random(seed * 100 + width), (1200, 900), [width] * 4, backgrounds)
            rects = fr.face_locations(np.asarray(image), number_of_times_to_upsample=0, model="hog")
            for box in boxes:
                total += 1
                hits += any(iou(box, r) >= photos.MATCH_IOU for r in rects)
        found[width] = round(hits / total, 3)
    return found


def hog_window_real(items: list[photos.Photo], factors: tuple[float, ...]) -> dict[str, object]:
    """Real faces: each photo scanned at each factor (no upsampling); found share by the
    face's width in the scanned image, in 4 px bins."""
    fr = load_models()
    bins: dict[int, list[int]] = {}
    for factor in factors:
        for photo in items:
            with Image.open(photo.path) as image:
                rgb = image.convert("RGB")
            size = (round(rgb.width * factor), round(rgb.height * factor))
            scanned = np.asarray(rgb.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))
            rects = fr.face_locations(scanned, number_of_times_to_upsample=0, model="hog")
            for box in photo.faces:
                moved = photos._scaled(box, factor)
                width = moved[1] - moved[3]
                hit = any(iou(moved, r) >= photos.MATCH_IOU for r in rects)
                counts = bins.setdefault(width // 4 * 4, [0, 0])
                counts[0] += hit
                counts[1] += 1
    return {
        f"{w}-{w + 3}": f"{hits}/{total} ({hits / total:.2f})" for w, (hits, total) in sorted(bins.items()) if w < 112
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=12, help="native photos (each also enlarged)")
    parser.add_argument("--empty", type=int, default=8, help="face-free photos")
    parser.add_argument("--phone", type=int, default=6, help="phone photos timed with both configurations")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument(
        "--annotated",
        nargs="?",
        const="",
        metavar="DIR",
        help="real photos with faces boxed by hand: dlib's examples/faces from dlib 19.5.0's sdist "
        "(fetched once, cached), or the folder DIR with imglab XML boxes",
    )
    parser.add_argument("--hog-window", action="store_true", help="measure HOG's smallest face instead")
    args = parser.parse_args()
    if args.annotated is None:
        real = []
    else:
        real = annotated.load(Path(args.annotated) if args.annotated else annotated.fetch())
    if args.hog_window:
        result: dict[str, object] = {"pasted_found_share_by_box_px": hog_window()}
        if real:
            factors = tuple(round(1.3 + 0.1 * i, 1) for i in range(12))
            result["real_found_by_scanned_box_px"] = hog_window_real(real, factors)
            result["real_faces"] = sum(len(p.faces) for p in real)
        common.report("hog_window", result)
        return
    with tempfile.TemporaryDirectory(prefix="reactor-recall-") as tmp:
        sets = photos.build(Path(tmp), args.count, seed=args.seed, face_px=(40, 60), empty=args.empty)
        if real:
            sets["real_native"] = real
            sets["real_x4"] = annotated.enlarged(real, Path(tmp) / "real_x4", 4)
        scores = {name: asyncio.run(reactor_scores(sets, config)) for name, config in CONFIGS.items()}
        legacy = legacy_scores(sets)
        timed = {name: CONFIGS[name] for name in PHONE_CONFIGS}
        phone = asyncio.run(phone_rates(sets["enlarged"][: args.phone], timed)) if args.phone else None
    goal = all(s["recall"] == 1.0 and s["false_positives"] == 0 for s in scores["reactor"].values())
    common.report(
        "recall",
        {
            "photos": {k: len(v) for k, v in sets.items()},
            **scores,
            "legacy": legacy,
            "phone_throughput": phone,
            "meets_goal": goal,
        },
    )


if __name__ == "__main__":
    main()
