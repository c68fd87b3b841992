"""Face identity across re-detections: new boxes matched to the old ones by overlap.

Downstream programs attach meaning to a face (a person, a cluster, a confirmed label)
by its ``face_id``. When an image is detected again, each new box is matched to the
old box it overlaps most (intersection over union above ``IOU_THRESHOLD``, best
pairs first, each old face used once): a matched face keeps its id and its row,
with any column other programs added; an old face left unmatched is gone from the
photo and is removed; a new box without a match is a new face with a new id.
Re-detecting an unchanged photo therefore changes no id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reactor.detector.cascade import iou

Box = tuple[int, int, int, int]  # top, right, bottom, left, as stored
# Detections of the same face by different settings overlap far more than this;
# two different faces in one photo almost never do.
IOU_THRESHOLD = 0.4


@dataclass(frozen=True)
class Matching:
    # For each new box, in order: the id of the old face it continues, or None (a new face).
    kept: tuple[int | None, ...]
    # Old faces that matched no new box: removed.
    removed: tuple[int, ...]


def match(old: Sequence[tuple[int, Box]], new: Sequence[Box], threshold: float = IOU_THRESHOLD) -> Matching:
    """Greedy best-first matching of new boxes to old (face_id, box) pairs."""
    pairs = sorted(
        ((iou(box, fresh), j, i) for i, (_, box) in enumerate(old) for j, fresh in enumerate(new)),
        key=lambda p: (-p[0], p[1], p[2]),
    )
    kept: list[int | None] = [None] * len(new)
    used: set[int] = set()
    for overlap, j, i in pairs:
        if overlap <= threshold:
            break
        if kept[j] is None and i not in used:
            kept[j] = old[i][0]
            used.add(i)
    removed = tuple(face_id for i, (face_id, _) in enumerate(old) if i not in used)
    return Matching(tuple(kept), removed)
