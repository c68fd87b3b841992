"""Group photos with known faces, for the throughput and recall benchmarks.

Faces are the astronaut's (scikit-image's sample photo), cut with some context around
the box HOG gives it in the 512 px original, flipped or darkened at random, and pasted
at chosen sizes onto backgrounds made from scikit-image's face-free photos. The ground
truth is the pasted box, so recall and false positives can be counted without a human:

- ``native``: 1600x1200 photos with small faces (40-60 px wide by default);
- ``enlarged``: the same photos resized to 4000x3000, as a phone camera would take them;
- ``empty``: photos with no face at all (false positives).

Everything is seeded: the same arguments give the same pixels.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageEnhance

from reactor.detector.cascade import Box, iou
from reactor.ops import samples

# The astronaut's face as HOG frames it in the 512x512 photo (top, right, bottom, left).
_FACE = (76, 265, 166, 175)
# The cut keeps this much context around the box (as a multiple of its side).
_CONTEXT = 2.0
NATIVE = (1600, 1200)
PHONE = (4000, 3000)
# A found box is the true face when they overlap at least this much.
MATCH_IOU = 0.3


@dataclass(frozen=True)
class Photo:
    path: Path
    faces: tuple[Box, ...]  # ground truth, (top, right, bottom, left) in the photo's pixels


def _face_cut() -> tuple[Image.Image, int, int]:
    """The cut, the side of the face box in it and the box's offset inside it."""
    top, right, bottom, left = _FACE
    side = right - left
    half = round(side * _CONTEXT / 2)
    cx, cy = (left + right) // 2, (top + bottom) // 2
    cut = samples.astronaut().crop((cx - half, cy - half, cx + half, cy + half))
    return cut, side, half - side // 2


def _backgrounds() -> list[Image.Image]:
    from skimage import data

    names = ("coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
    out = []
    for name in names:
        array = getattr(data, name)()
        out.append(Image.fromarray(array).convert("RGB"))
    return out


def _background(images: list[Image.Image], rng: random.Random, size: tuple[int, int]) -> Image.Image:
    base = images[rng.randrange(len(images))]
    w, h = base.size
    # A random crop of at least half the photo, stretched to the size.
    cw, ch = rng.randint(w // 2, w), rng.randint(h // 2, h)
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    return base.crop((x, y, x + cw, y + ch)).resize(size, Image.Resampling.BICUBIC)


def _overlaps(a: Box, b: Box) -> bool:
    return a[3] < b[1] and b[3] < a[1] and a[0] < b[2] and b[0] < a[2]


def group_photo(
    rng: random.Random, size: tuple[int, int], face_sizes: list[int], backgrounds: list[Image.Image]
) -> tuple[Image.Image, tuple[Box, ...]]:
    """A photo of ``size`` with one face per entry of ``face_sizes`` (box widths in px)."""
    cut, side, offset = _face_cut()
    canvas = _background(backgrounds, rng, size)
    cuts: list[Box] = []
    boxes: list[Box] = []
    for target in face_sizes:
        factor = target / side
        face = cut.resize((round(cut.width * factor), round(cut.height * factor)), Image.Resampling.LANCZOS)
        if rng.random() < 0.5:
            face = face.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        face = ImageEnhance.Brightness(face).enhance(rng.uniform(0.8, 1.15))
        for _ in range(500):
            x, y = rng.randint(0, size[0] - face.width), rng.randint(0, size[1] - face.height)
            spread = (y, x + face.width, y + face.height, x)
            # Cuts never overlap: each face keeps its context.
            if not any(_overlaps(spread, other) for other in cuts):
                break
        else:
            continue
        canvas.paste(face, (x, y))
        cuts.append(spread)
        inner = round(offset * factor)
        boxes.append((y + inner, x + inner + target, y + inner + target, x + inner))
    return canvas, tuple(boxes)


def _scaled(box: Box, factor: float) -> Box:
    return (round(box[0] * factor), round(box[1] * factor), round(box[2] * factor), round(box[3] * factor))


def build(
    folder: Path,
    count: int,
    *,
    seed: int = 16,
    face_px: tuple[int, int] = (40, 60),
    faces: tuple[int, int] = (1, 7),
    phone: bool = True,
    empty: int = 0,
) -> dict[str, list[Photo]]:
    """``count`` native photos (and their phone-sized copies) and ``empty`` face-free ones."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    backgrounds = _backgrounds()
    out: dict[str, list[Photo]] = {"native": [], "enlarged": [], "empty": []}
    factor = PHONE[0] / NATIVE[0]
    for i in range(count):
        sizes = [rng.randint(*face_px) for _ in range(rng.randint(*faces))]
        image, boxes = group_photo(rng, NATIVE, sizes, backgrounds)
        native = samples.write_jpeg(image, folder, f"native_{i:03d}.jpg", quality=92)
        out["native"].append(Photo(native, boxes))
        if phone:
            big = image.resize(PHONE, Image.Resampling.BICUBIC)
            path = samples.write_jpeg(big, folder, f"phone_{i:03d}.jpg", quality=90)
            out["enlarged"].append(Photo(path, tuple(_scaled(b, factor) for b in boxes)))
    for i in range(empty):
        size = NATIVE if i % 2 == 0 else PHONE
        image = _background(backgrounds, rng, size)
        out["empty"].append(Photo(samples.write_jpeg(image, folder, f"empty_{i:03d}.jpg", quality=90), ()))
    return out


@dataclass
class Score:
    faces: int = 0
    found: int = 0
    false_positives: int = 0
    smallest_found_px: int | None = None
    missed_px: list[int] | None = None

    def add(self, truth: tuple[Box, ...], found: list[Box]) -> None:
        unmatched = list(found)
        for box in truth:
            self.faces += 1
            match = max(unmatched, key=lambda f: iou(f, box), default=None)
            if match is not None and iou(match, box) >= MATCH_IOU:
                unmatched.remove(match)
                self.found += 1
                width = box[1] - box[3]
                self.smallest_found_px = min(self.smallest_found_px or width, width)
            else:
                self.missed_px = [*(self.missed_px or []), box[1] - box[3]]
        self.false_positives += len(unmatched)

    def as_dict(self) -> dict[str, object]:
        recall = self.found / self.faces if self.faces else 1.0
        return {
            "faces": self.faces,
            "found": self.found,
            "recall": round(recall, 3),
            "false_positives": self.false_positives,
            "smallest_found_px": self.smallest_found_px,
            "missed_px": sorted(self.missed_px or []),
        }
