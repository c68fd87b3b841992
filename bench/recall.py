"""Recall: does the reactor at its defaults still find every small face, and nothing else?

Photos the project has never seen, with known faces (bench.photos): 1600x1200 photos
with 1-7 faces 40-60 px wide (``native``), the same photos enlarged to 4000x3000 (faces
100-150 px, ``enlarged``: the smallest the default budget reaches there), and face-free
photos at both sizes (``empty``, false positives). The reactor's detector runs in its
child process with the default configuration; the legacy worker's settings (bench/bare.py)
run on the same files for comparison. Target: recall 1.00 and no false positive for the
reactor on every set.

    nice .venv/bin/python -m bench.recall [--count 12 --empty 8]

``--hog-window`` measures instead what ``reactor.detector.cascade.MODEL_MIN_FACE_PX["hog"]``
rests on: the share of faces of each box width that HOG finds in the image it scans, with
no resizing and no upsampling (24 faces per width).

    nice .venv/bin/python -m bench.recall --hog-window
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
from pathlib import Path

import numpy as np

from bench import common, photos
from bench.bare import Stages, legacy_detect, load_models
from reactor.config import DetectorConfig
from reactor.detector import Detection, DetectionJob, Detector
from reactor.detector.cascade import iou


async def reactor_scores(sets: dict[str, list[photos.Photo]]) -> dict[str, dict[str, object]]:
    detector = Detector(DetectorConfig())
    await detector.start()
    out: dict[str, dict[str, object]] = {}
    try:
        for name, items in sets.items():
            score = photos.Score()
            for photo in items:
                outcome = await detector.detect(DetectionJob(local_path=str(photo.path)))
                assert isinstance(outcome, Detection), outcome
                score.add(photo.faces, [(f.top, f.right, f.bottom, f.left) for f in outcome.faces])
            out[name] = score.as_dict()
    finally:
        await detector.close()
    return out


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=12, help="native photos (each also enlarged)")
    parser.add_argument("--empty", type=int, default=8, help="face-free photos")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--hog-window", action="store_true", help="measure HOG's smallest face instead")
    args = parser.parse_args()
    if args.hog_window:
        common.report("hog_window", {"found_share_by_box_px": hog_window()})
        return
    with tempfile.TemporaryDirectory(prefix="reactor-recall-") as tmp:
        sets = photos.build(Path(tmp), args.count, seed=args.seed, face_px=(40, 60), empty=args.empty)
        reactor = asyncio.run(reactor_scores(sets))
        legacy = legacy_scores(sets)
    goal = all(s["recall"] == 1.0 and s["false_positives"] == 0 for s in reactor.values())
    common.report(
        "recall",
        {"photos": {k: len(v) for k, v in sets.items()}, "reactor": reactor, "legacy": legacy, "meets_goal": goal},
    )


if __name__ == "__main__":
    main()
