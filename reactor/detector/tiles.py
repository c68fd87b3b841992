"""One photo shared by idle lanes: the scan image split into parts, the faces merged back.

Pure functions, no dlib: the engine asks which part of the scan image a job scans and
which of the boxes found there it keeps; the parent merges the parts' boxes and deals
them out to be checked and encoded.

The scan image (the one size ``cascade.choose_resolution`` picked, the same as a
one-lane scan) is cut across its longer side into one overlapping *tile* per lane,
plus one *coarse* part: the whole image at a smaller factor. Why both:

- HOG finds a face only with its whole window and a little context around it in view.
  A face no larger than ``tile_face_px`` fits, with that context, inside the overlap, so
  it lies whole in at least one tile, which finds it as the whole scan does (the same
  pixels, the same pyramid, the cells aligned to within one).
- A larger face may straddle a seam and be whole in no tile. The coarse part finds
  those: at a factor that brings a ``tile_face_px`` face to ``COARSE_FACE_PX`` (well above
  HOG's smallest, 68 px), every face from about 0.85 of it up to the image's size is in
  its view. It costs the square of that factor (a tenth to a quarter of the pixels).

A shared photo goes in two steps (reactor.core.tile_sharing): each part locates its faces
(``DetectionJob.part``; boxes in the scan image's pixels, unchecked, unencoded), the boxes
are merged into one per face (``located``), and dealt out again (``split``) to be checked
(a weak box, by the CNN on a crop) and encoded (``DetectionJob.finish``) on the whole scan
image, as one scan does: on a group photo the encodings cost more than the scan.

Each part keeps only the boxes it is the owner of (``keep``), so that a face is found
once: a tile keeps the faces up to ``SIZE_SLACK`` above ``tile_face_px`` that lie whole,
with their context, inside it, and of those found by two tiles, the one whose own half
holds the face's centre; the coarse part keeps the faces from ``SIZE_SLACK`` below
``tile_face_px``. The slack on each rule means a face whose box
comes out a cell different in two parts is found twice rather than lost; ``located``
then keeps one of the two (the owning tile's), and the result is the same faces as one scan.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

from reactor.detector.cascade import Box, iou, scaled_size
from reactor.detector.types import Detection, Face

# A face of tile_face_px in the scan image is this large in the coarse part's image: above
# HOG's 68 px, so one 0.85 times as large (the coarse part's share) is still found.
COARSE_FACE_PX = 96
# The context HOG needs around a face box (its cells, their normalisation blocks): a
# quarter of the box on each side, plus two cells.
CONTEXT_FRACTION = 0.25
CONTEXT_PX = 16
# How far apart two parts' boxes of one face may be: a HOG cell is a tenth of a box, and
# the cell grids of a tile and of the whole image need not line up.
SHIFT_FRACTION = 0.2
SHIFT_PX = 8
# The size rules overlap by this much (a face near tile_face_px belongs to both).
SIZE_SLACK = 0.15
# Boxes of one face found by two parts overlap at least this much.
SAME_FACE_IOU = 0.4
# HOG's cells are 8 px and dlib's pyramid steps by 6/5: a tile that starts at a multiple
# of 8 * 6 * 6 px has its cells where the whole image has them at the first levels, where
# small faces are found (measured on dlib's group photos: every box the same, IoU 1.0;
# tiles at 48 px steps found some faces a pyramid level apart, IoU 0.7).
ALIGN_PX = 288
# Tiles are cut only where each lane then scans at most this share of the image: below
# about 2000x1500 the overlap and the coarse part cost more than a tile saves (measured:
# a 1000x750 scan's tiles took 0.8-0.9 of its whole scan each), and the photo is located
# whole by one lane; its faces are still checked and encoded side by side.
MAX_SHARE = 0.72
# The smallest overlap tried, and its step: a few HOG cells at the scan size.
_MIN_OVERLAP = 128
_OVERLAP_STEP = 32


@dataclass(frozen=True)
class Part:
    """A region of the scan image (left, top, right, bottom) and the factor it is scanned at:
    1.0 for a tile, below 1 for the coarse part (the whole image)."""

    region: tuple[int, int, int, int]
    factor: float
    # The tile's own stretch along the cut axis (start, end): the faces whose centre lies
    # there are its own when another tile sees them too. Empty for the coarse part.
    own: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class Plan:
    size: tuple[int, int]  # the scan image (width, height)
    axis: int  # 0: tiles side by side (cut across the width), 1: stacked
    tile_face_px: int  # the largest face a tile is sure to see whole; 0 when not tiled
    parts: tuple[Part, ...]


def tile_face_px(overlap: int) -> int:
    """The largest face (box side, scan pixels) that lies whole with its context in an overlap."""
    return max(0, math.floor((overlap - 2 * CONTEXT_PX) / (1 + 2 * CONTEXT_FRACTION)))


def coarse_factor(face_px: int) -> float:
    """A level of dlib's image pyramid (steps of 5/6) that brings a ``face_px`` face to at
    least COARSE_FACE_PX: its own pyramid then steps through the whole image's."""
    wanted = min(1.0, COARSE_FACE_PX / max(1, face_px))
    return float((5 / 6) ** math.floor(math.log(wanted) / math.log(5 / 6)))


def plan(size: tuple[int, int], lanes: int) -> Plan:
    """The parts of a scan image of ``size`` for ``lanes`` lanes: ``lanes`` tiles and the coarse
    part, sized so that every lane has about as many pixels to scan (the first tile is the
    narrower by the coarse part, which the first lane to finish takes). One part, the whole
    image at 1.0, where cutting it would not be faster (``MAX_SHARE``)."""
    width, height = size
    whole = Plan(size, 0, 0, (Part((0, 0, width, height), 1.0),))
    if lanes < 2:
        return whole
    axis = 0 if width >= height else 1
    long, short = (width, height) if axis == 0 else (height, width)
    best: tuple[float, int] | None = None
    for overlap in range(_MIN_OVERLAP, long // 2 + 1, _OVERLAP_STEP):
        face = tile_face_px(overlap)
        # A face cannot be larger than the short side: no coarse part needed then.
        coarse = 0.0 if face >= short else coarse_factor(face) ** 2 * long
        each = (long + (lanes - 1) * overlap + coarse) / lanes
        first = each - coarse - overlap / 2
        if first < overlap / 2:
            continue
        if best is None or each < best[0]:
            best = (each, overlap)
    if best is None or best[0] > MAX_SHARE * long:
        return whole
    each, overlap = best
    face = tile_face_px(overlap)
    # The tiles' own stretches: the first narrower by the coarse part's share.
    coarse = 0.0 if face >= short else coarse_factor(face) ** 2 * long
    half = overlap // 2
    cuts = [0]
    for index in range(1, lanes):
        ideal = each - coarse - overlap / 2 + (index - 1) * (each - overlap)
        # Each later tile starts at a multiple of ALIGN_PX: its HOG cells and dlib's pyramid
        # then line up with the whole image's, and it finds a face with the box and score
        # one scan gives (a tile that started elsewhere found some a pyramid level apart).
        start = max(ALIGN_PX, round((ideal - half) / ALIGN_PX) * ALIGN_PX)
        cuts.append(max(cuts[-1] + 1, start + half))
    cuts.append(long)
    if cuts[-2] >= long:
        return whole
    parts = []
    for index in range(lanes):
        start = max(0, cuts[index] - half)
        end = min(long, cuts[index + 1] + half)
        region = (start, 0, end, short) if axis == 0 else (0, start, short, end)
        parts.append(Part(region, 1.0, (cuts[index], cuts[index + 1])))
    if face < short:
        parts.append(Part((0, 0, width, height), coarse_factor(face)))
    return Plan(size, axis, face, tuple(parts))


def part_image_size(part: Part) -> tuple[int, int]:
    left, top, right, bottom = part.region
    return scaled_size((right - left, bottom - top), part.factor)


def _side(box: Box) -> int:
    top, right, bottom, left = box
    return max(right - left, bottom - top)


def _span(box: Box, axis: int) -> tuple[int, int]:
    top, right, bottom, left = box
    return (left, right) if axis == 0 else (top, bottom)


def _whole_in(part: Part, box: Box, axis: int, long: int, context: float) -> bool:
    """The box and ``context`` around it lie inside the tile along the cut axis (an edge of
    the image is no seam: HOG sees the same border there as in the whole scan)."""
    low, high = _span(box, axis)
    start, end = (part.region[0], part.region[2]) if axis == 0 else (part.region[1], part.region[3])
    return (start == 0 or low - context >= start) and (end == long or high + context <= end)


def _distance(part: Part, box: Box, axis: int) -> float:
    low, high = _span(box, axis)
    centre = (low + high) / 2
    start, end = part.own
    return max(0.0, start - centre, centre - end)


def keep(layout: Plan, index: int, boxes: Sequence[tuple[Box, float]]) -> list[tuple[Box, float]]:
    """Of the boxes part ``index`` found (in scan-image coordinates), those it owns."""
    part = layout.parts[index]
    face = layout.tile_face_px
    if face == 0:
        return list(boxes)  # not tiled: the whole scan
    if part.factor < 1.0:
        return [(box, score) for box, score in boxes if _side(box) >= (1 - SIZE_SLACK) * face]
    long = layout.size[layout.axis]
    tiles = [p for p in layout.parts if p.factor == 1.0]
    kept = []
    for box, score in boxes:
        side = _side(box)
        context = CONTEXT_FRACTION * side + CONTEXT_PX
        shift = SHIFT_FRACTION * side + SHIFT_PX
        if side > (1 + SIZE_SLACK) * face or not _whole_in(part, box, layout.axis, long, context):
            continue
        mine = _distance(part, box, layout.axis)
        # Another tile that surely sees it whole too, and whose own half surely holds it.
        if any(
            other is not part
            and _whole_in(other, box, layout.axis, long, context + shift)
            and _distance(other, box, layout.axis) + shift < mine
            for other in tiles
        ):
            continue
        kept.append((box, score))
    return kept


def to_scan(box: Box, part: Part) -> Box:
    """A box found in the part's image, in the scan image's coordinates."""
    top, right, bottom, left = box
    x0, y0 = part.region[0], part.region[1]
    f = part.factor
    return (round(top / f) + y0, round(right / f) + x0, round(bottom / f) + y0, round(left / f) + x0)


def face_box(face: Face) -> Box:
    return face.top, face.right, face.bottom, face.left


def distinct(faces: Sequence[tuple[Face, float]]) -> tuple[Face, ...]:
    """One face per group of boxes that overlap (``SAME_FACE_IOU``): the one of lowest rank
    (``rank``), then the best scored; by score, as dlib reports one scan's."""
    chosen: list[Face] = []
    for face, _ in sorted(faces, key=lambda item: (item[1], -item[0].score)):
        if all(iou(face_box(face), face_box(other)) < SAME_FACE_IOU for other in chosen):
            chosen.append(face)
    return tuple(sorted(chosen, key=lambda f: -f.score))


def rank(layout: Plan, index: int, face: Face) -> float:
    """Which part's box of a face found twice is kept: that of the tile whose own stretch
    holds its centre (0), else the nearest tile's (its distance), the coarse part's last
    (it sees the face smaller than the whole scan does)."""
    part = layout.parts[index] if index < len(layout.parts) else None
    if part is None or part.factor < 1.0:
        return math.inf
    return _distance(part, face_box(face), layout.axis)


def _same_scan(outcomes: Sequence[Detection]) -> bool:
    first = outcomes[0]
    return first.detect_size is not None and all(
        (p.model, p.cascade_scale, p.detect_size, p.fingerprint)
        == (first.model, first.cascade_scale, first.detect_size, first.fingerprint)
        for p in outcomes
    )


def located(parts: Sequence[Detection]) -> Detection | None:
    """The parts' boxes (scan image pixels, not yet checked nor encoded) as one scan locates
    them: one box per face. None when the parts did not scan the same image (one stepped
    down the cascade): the photo is then scanned whole."""
    if not parts or not _same_scan(parts):
        return None
    first = parts[0]
    assert first.detect_size is not None
    layout = plan(first.detect_size, len(parts) - 1)
    found = [(face, rank(layout, index, face)) for index, p in enumerate(parts) for face in p.faces]
    return dataclasses.replace(
        first,
        faces=distinct(found),
        # The time the photo took: its parts ran side by side.
        decode_ms=max(p.decode_ms for p in parts),
        detect_ms=max(p.detect_ms for p in parts),
    )


# A weak HOG box is checked by the CNN on a crop before it is encoded: about 0.5 s on a
# CPU, where an encoding takes 0.1-0.2 s.
WEAK_COST = 4.0


def split(faces: Sequence[Face], lanes: int, weak_score: float) -> list[tuple[Face, ...]]:
    """The located boxes dealt to ``lanes`` lanes to check and encode, heaviest first, each to
    the lane with the least so far: a photo's encodings, not only its scan, run side by side."""
    shares: list[list[Face]] = [[] for _ in range(lanes)]
    loads = [0.0] * lanes

    def cost(face: Face) -> float:
        return WEAK_COST if face.score < weak_score else 1.0

    for face in sorted(faces, key=lambda f: (-cost(f), -f.score)):
        lane = loads.index(min(loads))
        shares[lane].append(face)
        loads[lane] += cost(face)
    return [tuple(share) for share in shares]


def boxes_of(faces: Sequence[Face]) -> tuple[tuple[int, int, int, int, float], ...]:
    return tuple((f.top, f.right, f.bottom, f.left, f.score) for f in faces)


def combine(found: Detection, finished: Sequence[Detection]) -> Detection | None:
    """One scan's result from the located boxes and each lane's checked and encoded share
    of them; None when a lane scanned another image (it stepped down the cascade)."""
    if finished and not _same_scan([found, *finished]):
        return None
    faces = sorted((face for d in finished for face in d.faces), key=lambda f: -f.score)
    return dataclasses.replace(
        found,
        faces=tuple(faces),
        decode_ms=max([found.decode_ms, *(d.decode_ms for d in finished)]),
        detect_ms=found.detect_ms + max((d.detect_ms for d in finished), default=0.0),
        encode_ms=max((d.encode_ms for d in finished), default=0.0),
        rejected_weak=sum(d.rejected_weak for d in finished),
    )
