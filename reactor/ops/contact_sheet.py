"""A contact sheet: every image of a small library in one PNG, each face boxed.

Made so that a person sees at once that the boxes are right: each tile is the image
as the detector saw it (EXIF orientation applied), the stored boxes are drawn in
those coordinates scaled to the tile, and an image that failed is a grey tile naming
its failure type.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

TILE = 280
LABEL = 44
PAD = 12
TITLE = 40
COLUMNS = 4
BOX_COLOUR = (0, 230, 64)
FAIL_COLOUR = (200, 40, 40)
BACKGROUND = (250, 250, 250)

Box = tuple[int, int, int, int]  # top, right, bottom, left (dlib order, as stored)


@dataclass(frozen=True)
class SheetItem:
    name: str
    path: Path
    boxes: Sequence[Box] = field(default_factory=tuple)
    failure: str | None = None  # the failure type, when the image has no result
    note: str = ""  # what the image is, e.g. "EXIF orientation 6"
    # Draw only this face, cropped with a margin (`reactor similar --sheet`); the label is the note.
    crop: Box | None = None


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # a Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _open(path: Path) -> Image.Image:
    from pillow_heif import register_heif_opener

    register_heif_opener()
    with Image.open(path) as raw:
        oriented = ImageOps.exif_transpose(raw)
        return oriented.convert("RGB")


def _face_tile(item: SheetItem) -> tuple[Image.Image, int]:
    """The image fitted into the tile with its boxes; returns the tile and boxes drawn."""
    image = _open(item.path)
    if item.crop is not None:
        top, right, bottom, left = item.crop
        margin = max(right - left, bottom - top) // 3
        image = image.crop(
            (
                max(0, left - margin),
                max(0, top - margin),
                min(image.width, right + margin),
                min(image.height, bottom + margin),
            )
        )
    scale = min(TILE / image.width, TILE / image.height)
    thumb = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    tile = Image.new("RGB", (TILE, TILE), BACKGROUND)
    ox, oy = (TILE - thumb.width) // 2, (TILE - thumb.height) // 2
    tile.paste(thumb, (ox, oy))
    draw = ImageDraw.Draw(tile)
    for top, right, bottom, left in item.boxes:
        draw.rectangle(
            (ox + left * scale, oy + top * scale, ox + right * scale, oy + bottom * scale),
            outline=BOX_COLOUR,
            width=3,
        )
    return tile, len(item.boxes)


def _failure_tile(failure: str) -> Image.Image:
    tile = Image.new("RGB", (TILE, TILE), (215, 215, 215))
    draw = ImageDraw.Draw(tile)
    draw.line((20, 20, TILE - 20, TILE - 20), fill=FAIL_COLOUR, width=6)
    draw.line((20, TILE - 20, TILE - 20, 20), fill=FAIL_COLOUR, width=6)
    text = f"failed: {failure}"
    font = _font(22)
    width = draw.textlength(text, font=font)
    draw.rectangle((TILE / 2 - width / 2 - 8, TILE / 2 - 18, TILE / 2 + width / 2 + 8, TILE / 2 + 18), fill="white")
    draw.text((TILE / 2, TILE / 2), text, fill=FAIL_COLOUR, font=font, anchor="mm")
    return tile


def _label(item: SheetItem) -> str:
    if item.crop is not None:
        return item.note
    if item.failure is not None:
        text = f"failed: {item.failure}"
    else:
        count = len(item.boxes)
        text = f"{count} face" + ("" if count == 1 else "s")
    return f"{text} - {item.note}" if item.note else text


def render(items: Sequence[SheetItem], out: Path, title: str) -> int:
    """Write the sheet to `out` (PNG); return the number of face boxes drawn."""
    rows = max(1, -(-len(items) // COLUMNS))
    width = PAD + COLUMNS * (TILE + PAD)
    height = TITLE + PAD + rows * (TILE + LABEL + PAD)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((PAD, TITLE / 2 + 4), title, fill="black", font=_font(20), anchor="lm")
    small, bold = _font(14), _font(15)
    boxes = 0
    for i, item in enumerate(items):
        x = PAD + (i % COLUMNS) * (TILE + PAD)
        y = TITLE + PAD + (i // COLUMNS) * (TILE + LABEL + PAD)
        if item.failure is None:
            tile, drawn = _face_tile(item)
            boxes += drawn
        else:
            tile = _failure_tile(item.failure)
        sheet.paste(tile, (x, y))
        draw.text((x, y + TILE + 4), item.name, fill="black", font=bold)
        colour = FAIL_COLOUR if item.failure is not None else (20, 110, 40)
        draw.text((x, y + TILE + 24), _label(item)[:40], fill=colour, font=small)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, "PNG")
    return boxes
