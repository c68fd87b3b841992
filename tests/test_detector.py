"""The real detector on real photos: one child process for the whole module."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from PIL import Image

from reactor.config import DetectorConfig
from reactor.detector import Detection, DetectionFailure, DetectionJob, Detector, Outcome
from reactor.failure_types import ErrorType
from reactor.ops import samples
from tests.reactor_support import phone_sized

pytestmark = pytest.mark.asyncio(loop_scope="module")

# The astronaut's face as HOG frames it in the upright 512x512 photo (top, right, bottom, left),
# and the shoulder patch that HOG also reports at 1024 px with a score of about 0.16.
ASTRONAUT_FACE = (76, 265, 166, 175)
SHOULDER_PATCH = (335, 215, 425, 126)
TOLERANCE_PX = 8


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> dict[str, samples.Sample]:
    return {s.name: s for s in samples.build_library(tmp_path_factory.mktemp("photos"))}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def detector() -> AsyncIterator[Detector]:
    d = Detector(DetectorConfig())
    await d.start()
    yield d
    await d.close()


async def detect(detector: Detector, path: Path) -> Outcome:
    return await detector.detect(DetectionJob(local_path=str(path)))


def boxes(outcome: Outcome) -> list[tuple[int, int, int, int]]:
    assert isinstance(outcome, Detection), outcome
    return [(f.top, f.right, f.bottom, f.left) for f in outcome.faces]


def near(a: tuple[int, ...], b: tuple[int, ...], tolerance: int = TOLERANCE_PX) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


async def test_astronaut_has_exactly_one_face_not_the_shoulder_patch(
    detector: Detector, library: dict[str, samples.Sample]
) -> None:
    outcome = await detect(detector, library["astronaut.jpg"].path)
    assert isinstance(outcome, Detection)
    [face] = outcome.faces
    assert near((face.top, face.right, face.bottom, face.left), ASTRONAUT_FACE)
    assert face.score > 0.9
    assert len(face.encoding) == 128
    # The 512 px photo is enlarged once, to x2 (the budget has room): faces down to 34 px.
    assert outcome.upsample == 0 and outcome.detect_size == (1024, 1024) and outcome.min_face_px == 34
    assert not any(near(b, SHOULDER_PATCH, 30) for b in boxes(outcome))
    assert (outcome.model, round(outcome.scale, 2), outcome.original_size) == ("hog", 2.0, (512, 512))
    assert outcome.file_size_bytes == library["astronaut.jpg"].path.stat().st_size
    assert outcome.decode_ms >= 0 and outcome.detect_ms > 0 and outcome.encode_ms > 0
    assert detector.state == "ready" and not detector.cuda


async def test_collage_has_four_faces(detector: Detector, library: dict[str, samples.Sample]) -> None:
    found = sorted(boxes(await detect(detector, library["collage_2x2.jpg"].path)))
    t, r, b, left = ASTRONAUT_FACE
    expected = sorted((t + dy, r + dx, b + dy, left + dx) for dy in (0, 512) for dx in (0, 512))
    assert len(found) == 4
    assert all(near(f, e, 12) for f, e in zip(found, expected, strict=True))


async def test_exif_orientation_is_applied(
    detector: Detector, library: dict[str, samples.Sample], tmp_path: Path
) -> None:
    upright = boxes(await detect(detector, library["astronaut.jpg"].path))
    rotated = await detect(detector, library["astronaut_exif6.jpg"].path)
    assert isinstance(rotated, Detection) and rotated.original_size == (512, 512)
    assert len(upright) == 1 and len(rotated.faces) == 1
    # The box is in the oriented frame: the same place as in the upright photo.
    assert near(boxes(rotated)[0], upright[0])
    # The same stored pixels without the tag: a sideways face that HOG cannot see,
    # the bug this guards against (face_recognition issue 553).
    with Image.open(library["astronaut_exif6.jpg"].path) as im:
        im.load()
        sideways = im.copy()
    sideways.save(tmp_path / "sideways.jpg", quality=92)
    assert boxes(await detect(detector, tmp_path / "sideways.jpg")) == []


@pytest.mark.parametrize(
    "name", ["astronaut.heic", "astronaut_16bit.png", "astronaut_cmyk.jpg", "astronaut_rgba.png", "astronaut.png"]
)
async def test_formats_and_modes_give_one_face(
    detector: Detector, library: dict[str, samples.Sample], name: str
) -> None:
    found = boxes(await detect(detector, library[name].path))
    assert len(found) == 1
    assert near(found[0], ASTRONAUT_FACE)


@pytest.mark.parametrize("name", ["cat.jpg", "coffee.jpg"])
async def test_no_face_is_a_success(detector: Detector, library: dict[str, samples.Sample], name: str) -> None:
    outcome = await detect(detector, library[name].path)
    assert isinstance(outcome, Detection)
    assert outcome.face_count == 0


async def test_small_face_in_a_large_photo_within_the_budget(detector: Detector, tmp_path: Path) -> None:
    # A face about 50 px wide in a 1600x1200 photo: the photo is enlarged once to 2560x1920
    # (the pixel budget: faces down to 43 px reach HOG's 68 px), and the box is mapped back.
    face = samples.astronaut().resize((260, 260), Image.Resampling.LANCZOS)
    canvas = samples.coffee().resize((1600, 1200), Image.Resampling.BILINEAR)
    canvas.paste(face, (700, 500))
    path = samples.write_jpeg(canvas, tmp_path, "small_face.jpg")
    outcome = await detect(detector, path)
    assert isinstance(outcome, Detection)
    assert outcome.scale == 1.6 and outcome.detect_size == (2560, 1920) and outcome.upsample == 0
    assert outcome.original_size == (1600, 1200) and outcome.min_face_px == 43
    [box] = boxes(outcome)
    assert near(box, (537, 838, 589, 787), 12)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tuned() -> AsyncIterator[Detector]:
    """Smaller faces wanted (32 px), a smaller budget (1.2 Mpx)."""
    d = Detector(DetectorConfig(min_face_px=32, max_detect_pixels=1_200_000))
    await d.start()
    yield d
    await d.close()


async def test_a_budget_too_small_says_which_face_it_can_find(tuned: Detector, tmp_path: Path) -> None:
    # A phone-sized photo: 4000x3000 enlarged to bring 32 px faces to HOG's 68 px would be
    # 54 Mpx; a budget of 1.2 Mpx allows 1264x948, where the smallest face is 216 px.
    [photo] = phone_sized(tmp_path, 1)
    outcome = await detect(tuned, photo.path)
    assert isinstance(outcome, Detection) and outcome.face_count == 1
    assert outcome.detect_size == (1264, 948) and outcome.min_face_px == 216
    assert outcome.detect_size[0] * outcome.detect_size[1] <= 1_200_000


async def test_the_cnn_check_drops_the_weak_shoulder_patch(
    detector: Detector, library: dict[str, samples.Sample]
) -> None:
    # At 1024 px (the default x2 of a 512 px photo) HOG also reports the shoulder patch,
    # weakly; the CNN run on a crop around it finds no face there, so it is dropped.
    outcome = await detect(detector, library["astronaut.jpg"].path)
    assert isinstance(outcome, Detection) and outcome.detect_size == (1024, 1024)
    assert outcome.rejected_weak == 1
    [face] = outcome.faces
    assert near((face.top, face.right, face.bottom, face.left), ASTRONAUT_FACE, 12)
    assert not any(near(b, SHOULDER_PATCH, 30) for b in boxes(outcome))


BAD_FILES = [
    ("bad/empty.jpg", ErrorType.CORRUPT),
    # Cut short looks like a copy in progress; reactor.store.outcomes makes it corrupt once it
    # is found again unchanged.
    ("bad/truncated.jpg", ErrorType.INCOMPLETE),
    ("bad/notes.jpg", ErrorType.UNSUPPORTED),
    ("bad/bomb.png", ErrorType.TOO_LARGE),
]


@pytest.mark.parametrize(("name", "error_type"), BAD_FILES)
async def test_bad_files_give_typed_failures(
    detector: Detector, library: dict[str, samples.Sample], name: str, error_type: ErrorType
) -> None:
    pid = detector.pid
    outcome = await detect(detector, library[name].path)
    assert isinstance(outcome, DetectionFailure)
    assert outcome.error_type is error_type, outcome.message
    assert outcome.message
    assert detector.pid == pid  # a bad file is not a reason to replace the child
    if error_type is ErrorType.TOO_LARGE:
        assert outcome.original_size == (20000, 20000)


async def test_missing_file(detector: Detector, tmp_path: Path) -> None:
    outcome = await detect(detector, tmp_path / "gone.jpg")
    assert isinstance(outcome, DetectionFailure)
    assert outcome.error_type is ErrorType.MISSING


async def test_directory_in_place_of_the_file_is_unreadable(detector: Detector, tmp_path: Path) -> None:
    (tmp_path / "album.jpg").mkdir()
    outcome = await detect(detector, tmp_path / "album.jpg")
    assert isinstance(outcome, DetectionFailure)
    assert outcome.error_type is ErrorType.UNREADABLE


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode; the directory case covers EISDIR")
async def test_file_without_read_permission_is_unreadable(
    detector: Detector, library: dict[str, samples.Sample], tmp_path: Path
) -> None:
    locked = tmp_path / "locked.jpg"
    locked.write_bytes(library["astronaut.jpg"].path.read_bytes())
    locked.chmod(0)
    outcome = await detect(detector, locked)
    assert isinstance(outcome, DetectionFailure)
    assert outcome.error_type is ErrorType.UNREADABLE


async def test_retry_starts_below_the_failed_scale(detector: Detector, library: dict[str, samples.Sample]) -> None:
    job = DetectionJob(local_path=str(library["astronaut.jpg"].path), attempt=2, last_scale=1.0)
    outcome = await detector.detect(job)
    assert isinstance(outcome, Detection)
    assert outcome.cascade_scale == 0.75 and outcome.detect_size == (768, 768)
    assert outcome.min_face_px == 46
    [box] = boxes(outcome)
    assert near(box, ASTRONAUT_FACE, 12)  # still in the original photo's pixels


async def test_prefetched_bytes_are_used(detector: Detector, library: dict[str, samples.Sample]) -> None:
    hits = detector.prefetch_hits
    detector.prefetch(str(library["collage_2x2.jpg"].path))
    outcome = await detect(detector, library["collage_2x2.jpg"].path)
    assert isinstance(outcome, Detection) and outcome.face_count == 4
    assert detector.prefetch_hits == hits + 1


async def test_prefetch_of_another_path_is_ignored(detector: Detector, library: dict[str, samples.Sample]) -> None:
    hits = detector.prefetch_hits
    detector.prefetch(str(library["collage_2x2.jpg"].path))
    outcome = await detect(detector, library["cat.jpg"].path)
    assert isinstance(outcome, Detection) and outcome.face_count == 0
    assert detector.prefetch_hits == hits


async def test_forced_cnn_model(tmp_path: Path) -> None:
    # The CUDA path's model, run on the CPU on a small photo to keep it to a few seconds.
    photo = samples.write_jpeg(samples.astronaut().resize((256, 256), Image.Resampling.LANCZOS), tmp_path, "small.jpg")
    cnn = Detector(DetectorConfig(model="cnn"))
    await cnn.start()
    try:
        outcome = await cnn.detect(DetectionJob(local_path=str(photo)))
    finally:
        await cnn.close()
    assert isinstance(outcome, Detection)
    assert outcome.model == "cnn" and outcome.rejected_weak == 0
    [face] = outcome.faces
    half = tuple(v // 2 for v in ASTRONAUT_FACE)
    assert near((face.top, face.right, face.bottom, face.left), half, 10)
    assert face.score > 0 and len(face.encoding) == 128
