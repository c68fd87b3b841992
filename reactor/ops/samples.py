"""Sample photos for tests, the demo and the benchmarks, made without a network.

Everything is built from the photos scikit-image ships inside its wheel (the astronaut,
the cat "chelsea", the coffee cup), re-encoded into the formats and failure cases a real
library contains: EXIF-rotated phone shots, HEIC, 16-bit PNG, CMYK JPEG, truncated files,
empty files, text with an image extension and a decompression bomb.

``build_library(root)`` writes the whole set and says what the detector must report for
each file: a face count, or a failure type.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from reactor.failure_types import ErrorType

# EXIF tag 0x0112: 6 means "rotate 90 degrees clockwise to display".
_ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class Sample:
    """One file of the sample library and what detecting it must give."""

    name: str  # path relative to the library root, forward slashes
    path: Path
    faces: int | None  # expected face count on success; None when a failure is expected
    failure: ErrorType | None = None
    note: str = ""


def _skimage_rgb(name: str) -> Image.Image:
    # Imported lazily: scikit-image is slow to import and only needed when writing samples.
    from skimage import data

    array = getattr(data, name)()
    return Image.fromarray(np.asarray(array, dtype=np.uint8)).convert("RGB")


def astronaut() -> Image.Image:
    """The 512x512 astronaut: one face of about 100 px."""
    return _skimage_rgb("astronaut")


def cat() -> Image.Image:
    """The cat photo (chelsea): no human face."""
    return _skimage_rgb("chelsea")


def coffee() -> Image.Image:
    """The coffee cup: no face at all."""
    return _skimage_rgb("coffee")


def collage(image: Image.Image | None = None) -> Image.Image:
    """A 2x2 grid of the astronaut: four faces."""
    tile = image or astronaut()
    w, h = tile.size
    grid = Image.new("RGB", (2 * w, 2 * h))
    for i in range(4):
        grid.paste(tile, ((i % 2) * w, (i // 2) * h))
    return grid


def _target(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def write_jpeg(image: Image.Image, folder: Path, name: str, quality: int = 92) -> Path:
    path = _target(folder, name)
    image.save(path, format="JPEG", quality=quality)
    return path


def write_png(image: Image.Image, folder: Path, name: str) -> Path:
    path = _target(folder, name)
    image.save(path, format="PNG")
    return path


def write_exif_rotated(image: Image.Image, folder: Path, name: str = "astronaut_exif6.jpg") -> Path:
    """Store the pixels turned 90 degrees counter-clockwise, tagged orientation 6.

    A viewer honouring EXIF shows ``image`` upright, exactly like a phone held sideways:
    the oriented frame equals the original, the stored frame does not.
    """
    path = _target(folder, name)
    stored = image.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[_ORIENTATION_TAG] = 6
    stored.save(path, format="JPEG", quality=92, exif=exif.tobytes())
    return path


def write_heic(image: Image.Image, folder: Path, name: str = "astronaut.heic") -> Path:
    import pillow_heif

    path = _target(folder, name)
    pillow_heif.from_pillow(image).save(str(path), quality=90)
    return path


def write_png16(image: Image.Image, folder: Path, name: str = "astronaut_16bit.png") -> Path:
    """A 16-bit greyscale PNG (Pillow mode I;16), as scanners and RAW converters write."""
    path = _target(folder, name)
    grey = np.asarray(image.convert("L"), dtype=np.uint16) * 257
    Image.fromarray(grey).save(path, format="PNG")  # uint16 2-D arrays become mode I;16
    return path


def write_cmyk_jpeg(image: Image.Image, folder: Path, name: str = "astronaut_cmyk.jpg") -> Path:
    path = _target(folder, name)
    image.convert("CMYK").save(path, format="JPEG", quality=92)
    return path


def write_truncated_jpeg(image: Image.Image, folder: Path, name: str = "truncated.jpg") -> Path:
    """A JPEG cut in half, like an interrupted copy."""
    path = write_jpeg(image, folder, name)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_empty(folder: Path, name: str = "empty.jpg") -> Path:
    path = _target(folder, name)
    path.write_bytes(b"")
    return path


def write_text_as_jpeg(folder: Path, name: str = "notes.jpg") -> Path:
    path = _target(folder, name)
    path.write_text("This is a shopping list, not a photo.\nmilk\neggs\n", encoding="utf-8")
    return path


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def write_decompression_bomb(folder: Path, name: str = "bomb.png", side: int = 20000) -> Path:
    """A valid 1-bit PNG of side x side pixels that is tiny on disk.

    Written by hand, row by row, because Pillow keeps mode "1" at one byte per pixel and
    would need side*side bytes of memory to build it.
    """
    path = _target(folder, name)
    row = b"\x00" + b"\x00" * ((side + 7) // 8)  # filter byte "none", then all-black pixels
    compressor = zlib.compressobj(9)
    body = bytearray()
    for _ in range(side):
        body += compressor.compress(row)
    body += compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1 bit, greyscale
    with path.open("wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.write(_png_chunk(b"IHDR", header))
        fh.write(_png_chunk(b"IDAT", bytes(body)))
        fh.write(_png_chunk(b"IEND", b""))
    return path


# name -> (writer, expected faces, expected failure, note)
_Writer = Callable[[Path, str], Path]


def _library_plan() -> list[tuple[str, _Writer, int | None, ErrorType | None, str]]:
    face = astronaut()
    return [
        ("astronaut.png", lambda d, n: write_png(face, d, n), 1, None, "PNG, one face"),
        ("astronaut.jpg", lambda d, n: write_jpeg(face, d, n), 1, None, "JPEG, one face"),
        ("collage_2x2.jpg", lambda d, n: write_jpeg(collage(face), d, n), 4, None, "2x2 collage, four faces"),
        ("astronaut_exif6.jpg", lambda d, n: write_exif_rotated(face, d, n), 1, None, "EXIF orientation 6"),
        ("astronaut.heic", lambda d, n: write_heic(face, d, n), 1, None, "HEIC"),
        ("astronaut_16bit.png", lambda d, n: write_png16(face, d, n), 1, None, "16-bit greyscale PNG"),
        ("astronaut_cmyk.jpg", lambda d, n: write_cmyk_jpeg(face, d, n), 1, None, "CMYK JPEG"),
        ("astronaut_rgba.png", lambda d, n: write_png(face.convert("RGBA"), d, n), 1, None, "RGBA PNG"),
        (
            "astronaut_palette.png",
            lambda d, n: write_png(face.convert("P", palette=Image.Palette.ADAPTIVE), d, n),
            1,
            None,
            "palette PNG",
        ),
        ("cat.jpg", lambda d, n: write_jpeg(cat(), d, n), 0, None, "a cat: zero faces is a success"),
        ("coffee.jpg", lambda d, n: write_jpeg(coffee(), d, n), 0, None, "a coffee cup: zero faces"),
        ("bad/truncated.jpg", lambda d, n: write_truncated_jpeg(face, d, n), None, ErrorType.CORRUPT, "cut in half"),
        ("bad/empty.jpg", write_empty, None, ErrorType.CORRUPT, "zero bytes"),
        ("bad/notes.jpg", write_text_as_jpeg, None, ErrorType.UNSUPPORTED, "a text file named .jpg"),
        ("bad/bomb.png", write_decompression_bomb, None, ErrorType.TOO_LARGE, "20000x20000 decompression bomb"),
    ]


def build_library(root: Path, include: Callable[[str], bool] | None = None) -> list[Sample]:
    """Write the sample library under ``root`` and return each file with its expected outcome.

    ``include`` filters by relative name (for a test that needs only a few files).
    """
    samples = []
    for name, writer, faces, failure, note in _library_plan():
        if include is not None and not include(name):
            continue
        target = root / name
        path = writer(target.parent, target.name)
        samples.append(Sample(name, path, faces=faces, failure=failure, note=note))
    return samples


def expected(samples: list[Sample]) -> dict[str, int | ErrorType]:
    """name -> expected face count or failure type, for summaries and assertions."""
    result: dict[str, int | ErrorType] = {}
    for s in samples:
        if s.failure is not None:
            result[s.name] = s.failure
        elif s.faces is not None:
            result[s.name] = s.faces
    return result
