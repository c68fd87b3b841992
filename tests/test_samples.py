"""The sample library: each file really is what its name promises."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pillow_heif
import pytest
from PIL import Image

from reactor.failure_types import ErrorType
from reactor.ops import samples
from tests.reactor_support import phone_sized


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> dict[str, samples.Sample]:
    root = tmp_path_factory.mktemp("library")
    return {s.name: s for s in samples.build_library(root)}


def test_every_sample_is_written_with_an_expectation(library: dict[str, samples.Sample]) -> None:
    assert {"astronaut.jpg", "collage_2x2.jpg", "cat.jpg", "bad/bomb.png"} <= set(library)
    for sample in library.values():
        assert sample.path.is_file()
        assert (sample.faces is None) != (sample.failure is None), sample.name
    expected = samples.expected(list(library.values()))
    assert expected["collage_2x2.jpg"] == 4
    assert expected["cat.jpg"] == 0
    assert expected["bad/notes.jpg"] is ErrorType.UNSUPPORTED


def test_formats_and_modes(library: dict[str, samples.Sample]) -> None:
    with Image.open(library["astronaut_16bit.png"].path) as im:
        assert im.mode == "I;16"
    with Image.open(library["astronaut_cmyk.jpg"].path) as im:
        assert (im.format, im.mode) == ("JPEG", "CMYK")
    with Image.open(library["astronaut_palette.png"].path) as im:
        assert im.mode == "P"
    with Image.open(library["collage_2x2.jpg"].path) as im:
        assert im.size == (1024, 1024)
    assert pillow_heif.is_supported(str(library["astronaut.heic"].path))
    heif = pillow_heif.open_heif(str(library["astronaut.heic"].path))
    assert heif.size == (512, 512)


def test_exif_rotated_copy_stores_sideways_pixels(library: dict[str, samples.Sample]) -> None:
    with Image.open(library["astronaut_exif6.jpg"].path) as im:
        assert im.getexif().get(0x0112) == 6
        im.load()
        stored = im.copy()
    upright = samples.astronaut()
    # Rotating the stored pixels clockwise (what orientation 6 asks a viewer to do) gives the upright photo.
    restored = stored.transpose(Image.Transpose.ROTATE_270)
    assert restored.size == upright.size
    difference = np.abs(np.asarray(restored, dtype=np.int16) - np.asarray(upright, dtype=np.int16))
    assert difference.mean() < 8  # JPEG noise only


def test_bad_files(library: dict[str, samples.Sample]) -> None:
    assert library["bad/empty.jpg"].path.stat().st_size == 0
    truncated = library["bad/truncated.jpg"].path.read_bytes()
    assert truncated.startswith(b"\xff\xd8") and not truncated.endswith(b"\xff\xd9")
    assert library["bad/notes.jpg"].path.read_bytes().startswith(b"This is")
    bomb = library["bad/bomb.png"].path
    assert bomb.stat().st_size < 200_000
    header = bomb.read_bytes()[:33]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", header[16:24]) == (20000, 20000)


def test_phone_sized(tmp_path: Path) -> None:
    made = phone_sized(tmp_path, count=2, size=(1600, 1200))
    assert [s.faces for s in made] == [1, 1]
    assert made[0].path.read_bytes() != made[1].path.read_bytes()
    with Image.open(made[0].path) as im:
        assert (im.format, im.size) == ("JPEG", (1600, 1200))


def test_build_library_filter(tmp_path: Path) -> None:
    made = samples.build_library(tmp_path, include=lambda name: name.startswith("bad/"))
    assert {s.failure for s in made} == {ErrorType.CORRUPT, ErrorType.UNSUPPORTED, ErrorType.TOO_LARGE}
    assert not (tmp_path / "astronaut.jpg").exists()
