"""Batched CNN: several photos of one size in one CNN call, and a photo at fault still fails alone.

dlib's CNN runs on the CPU here (dlib-bin has no CUDA), so batching is forced with a
number; "auto" is off on a CPU and sized by the pixel budget on a GPU.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from reactor.config import Config, ConfigError, DetectorConfig, load
from reactor.detector import Detection, DetectionFailure, DetectionJob, Detector, cascade, gpu
from reactor.detector import engine as engine_module
from reactor.detector.batching import AUTO_MAX_BATCH, batch_limit, chunks, per_call
from reactor.detector.budget import MemoryBudget
from reactor.detector.cascade import Box, Step
from reactor.detector.engine import DlibEngine
from reactor.detector.types import Outcome
from reactor.failure_types import ErrorType
from reactor.ops import samples
from tests.reactor_support import add_processed, outcomes, wait_until, write_photos
from tests.test_reactor import NO_POLLING, connection, running

ENGINE = "tests.fault_engine"
# The astronaut's face is ~90 px: scanned at its own size (min_face_px at the CNN's 80 px,
# no enlargement past it), the CNN on a CPU takes a second.
SMALLEST = 80


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The astronaut's head and its mirror image: two photos of one size, a face each,
    small enough (256 px) for the CNN on a CPU to take about a second."""
    root = tmp_path_factory.mktemp("batch")
    head = samples.astronaut().crop((100, 20, 356, 276))
    head.save(root / "astronaut.jpg", quality=95)
    ImageOps.mirror(head).save(root / "mirrored.jpg", quality=95)
    return root


class CountingEngine(DlibEngine):
    """The real engine, counting the photos of each batched CNN call."""

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__(config)
        self.batches: list[int] = []

    def _locate_batch(self, images: list[np.ndarray], upsample: int) -> list[list[tuple[Box, float]]]:
        self.batches.append(len(images))
        return super()._locate_batch(images, upsample)


def faces_of(outcome: Outcome) -> list[tuple[int, int, int, int]]:
    assert isinstance(outcome, Detection), outcome
    return [(f.top, f.right, f.bottom, f.left) for f in outcome.faces]


def test_the_cnn_in_a_batch_of_two_finds_the_same_boxes_as_one_at_a_time(photos: Path) -> None:
    engine = CountingEngine(DetectorConfig(min_face_px=SMALLEST, max_enlargement=1.0, model="cnn", batch_size=2))
    jobs = [DetectionJob(str(photos / "astronaut.jpg")), DetectionJob(str(photos / "mirrored.jpg"))]
    alone = [engine.detect(job) for job in jobs]
    assert engine.batches == []
    together = engine.detect_batch([(job, None) for job in jobs])
    assert engine.batches == [2]
    for one, batched in zip(alone, together, strict=True):
        assert isinstance(one, Detection) and isinstance(batched, Detection)
        assert faces_of(batched) == faces_of(one) and len(one.faces) == 1
        assert batched.model == one.model == "cnn"
        assert batched.detect_size == one.detect_size
        assert batched.faces[0].score == pytest.approx(one.faces[0].score, abs=1e-4)
        assert np.allclose(batched.faces[0].encoding, one.faces[0].encoding, atol=1e-4)
    # Two different photos: the batch did not hand one photo's boxes to the other.
    assert faces_of(together[0]) != faces_of(together[1])


def test_photos_of_different_sizes_are_not_scanned_together(photos: Path, tmp_path: Path) -> None:
    with Image.open(photos / "astronaut.jpg") as image:
        image.resize((200, 200)).save(tmp_path / "smaller.jpg", quality=95)
    engine = CountingEngine(DetectorConfig(min_face_px=SMALLEST, max_enlargement=1.0, model="cnn", batch_size=4))
    outcomes = engine.detect_batch(
        [(DetectionJob(str(photos / "astronaut.jpg")), None), (DetectionJob(str(tmp_path / "smaller.jpg")), None)]
    )
    assert engine.batches == []  # two sizes: each photo alone
    assert [len(faces_of(o)) for o in outcomes] == [1, 1]


def test_a_missing_photo_in_a_batch_fails_alone(photos: Path, tmp_path: Path) -> None:
    engine = CountingEngine(DetectorConfig(min_face_px=SMALLEST, max_enlargement=1.0, model="cnn", batch_size=3))
    outcomes = engine.detect_batch(
        [
            (DetectionJob(str(photos / "astronaut.jpg")), None),
            (DetectionJob(str(tmp_path / "gone.jpg")), None),
            (DetectionJob(str(photos / "mirrored.jpg")), None),
        ]
    )
    assert engine.batches == [2]
    assert isinstance(outcomes[1], DetectionFailure) and outcomes[1].error_type is ErrorType.MISSING
    assert [len(faces_of(outcomes[i])) for i in (0, 2)] == [1, 1]


def copy(photos: Path, name: str, target: Path) -> str:
    path = target / name
    path.write_bytes((photos / "astronaut.jpg").read_bytes())
    return str(path)


async def test_a_crash_in_a_batch_fails_only_the_crashing_photo(photos: Path, tmp_path: Path) -> None:
    detector = Detector(
        DetectorConfig(
            engine=ENGINE, min_face_px=SMALLEST, max_enlargement=1.0, model="cnn", batch_size=3, timeout_seconds=90
        )
    )
    await detector.start()
    try:
        assert detector.batch_limit == 3
        paths = [copy(photos, name, tmp_path) for name in ("a.jpg", "b__crash__.jpg", "c.jpg")]
        found = await detector.detect_many([DetectionJob(p) for p in paths])
        assert isinstance(found[1], DetectionFailure) and found[1].error_type is ErrorType.CRASH
        assert [len(faces_of(found[i])) for i in (0, 2)] == [1, 1]
        assert detector.batched == 0  # the batch crashed: each photo's outcome is its own
        # Once for the batch, once for the crashing photo alone.
        assert detector.restarts == 2
    finally:
        await detector.close()


async def test_an_out_of_memory_in_a_batch_detects_each_photo_alone_and_teaches_the_budget(
    photos: Path, tmp_path: Path
) -> None:
    detector = Detector(
        DetectorConfig(
            engine=ENGINE, min_face_px=SMALLEST, max_enlargement=1.0, model="cnn", batch_size=2, timeout_seconds=90
        )
    )
    await detector.start()
    try:
        paths = [copy(photos, name, tmp_path) for name in ("a__batchoom__.jpg", "b.jpg")]
        found = await detector.detect_many([DetectionJob(p) for p in paths])
        assert [len(faces_of(o)) for o in found] == [1, 1]
        assert detector.restarts == 1  # the CUDA state after an out-of-memory is not trusted
        sizes = [o.detect_size for o in found if isinstance(o, Detection) and o.detect_size is not None]
        batch_pixels = sum(w * h for w, h in sizes)
        assert detector.budget.snapshot()["cnn"]["smallest_oom_pixels"] == batch_pixels
    finally:
        await detector.close()


async def test_the_reactor_detects_in_batches_and_one_crashing_photo_fails_alone(
    make_config: Callable[..., Config], dsn: str, share: Path
) -> None:
    config = make_config(
        detector={
            "model": "cnn",
            "min_face_px": SMALLEST,
            "max_enlargement": 1.0,
            "engine": ENGINE,
            "workers": 1,
            "batch_size": 3,
            "timeout_seconds": 90.0,
        },
        sweep=NO_POLLING,
    )
    good = [f"ok/{i}.jpg" for i in range(4)]
    paths = write_photos(share, ["bad/__crash__.jpg", *good])
    async with running(config, dsn) as reactor, connection(dsn) as conn:
        await add_processed(conn, paths)

        async def all_recorded() -> bool:
            return len(await outcomes(conn)) == len(paths)

        await wait_until(all_recorded, 120, "an outcome for every image")
        found = await outcomes(conn)
        assert found.pop("bad/__crash__.jpg") == ["failure:crash"]
        assert found == {p: ["result"] for p in good}
        assert reactor.lanes.first.batch_limit == 3
        [lane] = reactor.lanes.snapshot()
        assert lane["batched"] >= 2  # the queue held several images: they went in batches


def test_batch_rules() -> None:
    cpu, forced = DetectorConfig(), DetectorConfig(batch_size=4)
    assert batch_limit(cpu, cuda=False) == 1  # off on a CPU unless forced
    assert batch_limit(cpu, cuda=True) == AUTO_MAX_BATCH
    assert batch_limit(forced, cuda=False) == 4
    budget = cpu.cnn_max_detect_pixels
    # auto on a GPU: as many photos of that size as the pixel budget holds, within the maximum
    assert per_call(cpu, True, budget // 3, None) == 3
    assert per_call(cpu, True, budget * 2, None) == 1
    assert per_call(cpu, True, 10, None) == AUTO_MAX_BATCH
    # the learned GPU budget lowers it; the configured one still bounds it
    assert per_call(cpu, True, budget // 4, budget // 2) == 2
    assert per_call(cpu, True, budget // 4, budget * 10) == 4
    assert per_call(cpu, False, 10, None) == 1
    assert per_call(forced, False, budget * 2, None) == 4
    assert chunks([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]


@pytest.mark.parametrize("value", ["0", "65", "-2"])
def test_batch_size_outside_one_to_64_is_a_configuration_error(value: str) -> None:
    with pytest.raises(ConfigError, match=r"\[detector\] batch_size: expected \"auto\" or 1 to 64"):
        load(None, env={"REACTOR_DETECTOR__BATCH_SIZE": value})
    assert load(None, env={"REACTOR_DETECTOR__BATCH_SIZE": "8"}).detector.batch_size == 8
    assert load(None, env={}).detector.batch_size == "auto"


def _nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: Sequence[str]) -> None:
    """nvidia-smi is outside the boundary under test: a script on PATH prints its CSV."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nvidia-smi"
    body = "".join(f"printf '%s\\n' '{row}'\n" for row in rows)
    script.write_text(f"#!/bin/sh\n{body}")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.skipif(os.name == "nt", reason="the stand-in nvidia-smi is a shell script")
def test_small_cards_get_the_smallest_algorithms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _nvidia_smi(tmp_path, monkeypatch, ["NVIDIA GeForce GTX 1650, 3900, 4096", "NVIDIA A100, 80000, 81920"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert engine_module._card_memory_mb() == 81920  # the card this child is shown
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert engine_module._card_memory_mb() == 4096
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert engine_module._card_memory_mb() == 4096  # not told: the smallest card
    default = DetectorConfig()
    assert engine_module._prefers_smallest(default, 4096)
    assert not engine_module._prefers_smallest(default, 81920)
    assert not engine_module._prefers_smallest(default, None)  # unknown: dlib's own choice
    assert not engine_module._prefers_smallest(DetectorConfig(prefer_smallest_algorithms_below_mb=0), 4096)
    assert engine_module._prefers_smallest(DetectorConfig(prefer_smallest_algorithms_below_mb=100_000), 81920)


# A phone photo as the CNN scans it at the default budget: 2309x1732, 4 Mpx.
PHONE_CNN = cascade.choose_resolution((4000, 3000), 40, DetectorConfig().cnn_max_detect_pixels, model="cnn").size
PHONE_PIXELS = PHONE_CNN[0] * PHONE_CNN[1]
# nvidia-smi rows (name, free MiB, total MiB) as the child sees its card, models loaded.
CARDS = {
    "4 GB": "NVIDIA GeForce GTX 1650, 3700, 4096",
    "11 GB": "NVIDIA GeForce RTX 2080 Ti, 10900, 11264",
    "80 GB": "NVIDIA A100-SXM4-80GB, 80500, 81920",
}


@pytest.mark.skipif(os.name == "nt", reason="the stand-in nvidia-smi is a shell script")
@pytest.mark.parametrize(("card", "phone_photos_per_call"), [("4 GB", 1), ("11 GB", 3), ("80 GB", AUTO_MAX_BATCH)])
def test_the_cnn_budget_comes_from_the_card(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, card: str, phone_photos_per_call: int
) -> None:
    _nvidia_smi(tmp_path, monkeypatch, [CARDS[card]])
    found = engine_module._card()
    assert found is not None and found.name == CARDS[card].split(",")[0]
    pixels = gpu.cnn_pixels(found)
    assert pixels is not None
    auto = DetectorConfig()
    # A 4 GB card keeps one phone photo per call, as the 4 Mpx premise says; larger cards batch.
    assert per_call(auto, True, PHONE_PIXELS, None, pixels) == phone_photos_per_call
    # What the card was learned to hold still caps it, and a number still forces its count.
    assert per_call(auto, True, PHONE_PIXELS, 2 * PHONE_PIXELS, pixels) == min(2, phone_photos_per_call)
    assert per_call(DetectorConfig(batch_size=2), True, PHONE_PIXELS, None, pixels) == 2
    # No card known: the configured budget, one phone photo.
    assert per_call(auto, True, PHONE_PIXELS, None, None) == 1


def test_a_card_with_less_free_memory_than_the_budget_scans_smaller() -> None:
    engine = CountingEngine(DetectorConfig(model="cnn"))
    phone = Step("cnn", 1.0)
    assert engine.card_pixels is None and engine.resolution((4000, 3000), phone).size == PHONE_CNN
    small = gpu.cnn_pixels(gpu.Gpu("a 2 GB card", 1800, 2048))
    assert small is not None
    engine.card_pixels = small
    chosen = engine.resolution((4000, 3000), phone)
    assert chosen.size[0] * chosen.size[1] <= small < PHONE_PIXELS


def test_the_learned_budget_is_kept_per_card(tmp_path: Path) -> None:
    path = str(tmp_path / "state" / "gpu-budget.json")
    small = gpu.card_key(gpu.Gpu("NVIDIA GeForce GTX 1650", 3700, 4096))
    first = MemoryBudget(path)
    first.use_card(small)
    first.succeeded("cnn", 3_000_000)
    first.ran_out("cnn", 6_000_000)
    learned = first.caps()
    assert learned == {"cnn": 5_100_000}
    # A restart on the same card starts from it; another card starts afresh.
    again = MemoryBudget(path)
    again.use_card(small)
    assert again.caps() == learned
    other = MemoryBudget(path)
    other.use_card(gpu.card_key(gpu.Gpu("NVIDIA A100-SXM4-80GB", 80500, 81920)))
    assert other.caps() == {}
    other.ran_out("cnn", 90_000_000)
    kept = json.loads(Path(path).read_text())
    assert set(kept) == {small, "NVIDIA A100-SXM4-80GB 81920 MiB"}
    # No card (a CPU-only dlib) or no file: nothing is kept; an unreadable file starts afresh.
    cpu = MemoryBudget(path)
    cpu.use_card(None)
    assert cpu.caps() == {}
    for unreadable in ("{not json", json.dumps([1]), json.dumps({small: [1]}), json.dumps({small: {"cnn": "x"}})):
        Path(path).write_text(unreadable)
        broken = MemoryBudget(path)
        broken.use_card(small)
        assert broken.caps() == {}


async def test_a_restarted_detector_starts_from_what_its_card_was_learned_to_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The child says it runs on a 4 GB card (tests/fault_engine.py); the reactor ran out of
    # memory on it before, and kept what it learned.
    monkeypatch.setenv("REACTOR_TEST_CARD", CARDS["4 GB"])
    path = tmp_path / "gpu-budget.json"
    key = "NVIDIA GeForce GTX 1650 4096 MiB"
    path.write_text(json.dumps({key: {"cnn": {"largest_ok_pixels": 2_000_000, "smallest_oom_pixels": 3_000_000}}}))
    detector = Detector(DetectorConfig(engine=ENGINE, gpu_budget_file=str(path)))
    assert detector.budget.caps() == {}
    await detector.start()
    try:
        assert detector.budget.caps() == {"cnn": 2_550_000}
        assert (detector.card, detector.card_pixels) == (key, 4_051_764)
    finally:
        await detector.close()
