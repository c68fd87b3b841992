"""Real faces boxed by hand: every small face the pixels allow is found (issue 26).

Two PASCAL VOC group photos of about 500x375 with 14 faces of 37-45 px, boxed by people
(dlib's examples/faces, read from the folder named by REACTOR_ANNOTATED_FACES: no package
on the registries ships them, and the project commits no copy; without it the tests skip
and say so). Scanned only as far as detector.min_face_px
needs (x1.6 before issue 26, x1.7 now with HOG's measured 68 px), a 37 px face reaches
59-63 px, under what HOG sees on real faces, and some are missed (the defaults before
issue 26 found 10 of the 14, every miss a 37 px face); at the default x2 they reach 74 px
and every one is found, with nothing else.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from bench import annotated, photos
from reactor.config import DetectorConfig
from reactor.detector import Detection, DetectionJob, Detector

FOLDER = os.environ.get(annotated.ENV, "")
pytestmark = pytest.mark.skipif(
    not (FOLDER and Path(FOLDER, "training.xml").is_file()),
    reason=f"no hand-annotated faces: set {annotated.ENV} to a copy of dlib's examples/faces",
)


async def score(detector: Detector) -> tuple[photos.Score, set[int | None]]:
    found = photos.Score()
    smallest: set[int | None] = set()
    small = [p for p in annotated.load(Path(FOLDER)) if p.path.name in annotated.SMALL_FACES]
    assert len(small) == len(annotated.SMALL_FACES)
    for photo in small:
        outcome = await detector.detect(DetectionJob(local_path=str(photo.path)))
        assert isinstance(outcome, Detection), outcome
        found.add(photo.faces, [(f.top, f.right, f.bottom, f.left) for f in outcome.faces])
        smallest.add(outcome.min_face_px)
    return found, smallest


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def detector() -> AsyncIterator[Detector]:
    d = Detector(DetectorConfig())
    await d.start()
    yield d
    await d.close()


async def test_every_small_real_face_is_found_at_the_defaults(detector: Detector) -> None:
    found, smallest = await score(detector)
    assert (found.faces, found.found, found.false_positives) == (14, 14, 0), found.as_dict()
    assert found.smallest_found_px == 37
    # Both photos are scanned at x2, and each result says faces down to 34 px were reachable.
    assert smallest == {34}


async def test_scanned_only_as_far_as_min_face_px_needs_small_real_faces_are_missed() -> None:
    # What the defaults did before issue 26, in effect: enlarge only for min_face_px.
    d = Detector(DetectorConfig(max_enlargement=1.0))
    await d.start()
    try:
        found, smallest = await score(d)
    finally:
        await d.close()
    assert found.found < found.faces == 14 and found.false_positives == 0, found.as_dict()
    assert 37 in (found.missed_px or []), found.as_dict()
    assert smallest == {40}
