"""The detection plan and box geometry, without dlib."""

from __future__ import annotations

from pathlib import Path

from reactor.config import DetectorConfig
from reactor.detector import cascade
from reactor.detector.cascade import Step

SCALES = (1.0, 0.75, 0.5, 0.33, 0.25)


def test_models_for() -> None:
    assert cascade.models_for("auto", cuda=True) == ("cnn", "hog")
    assert cascade.models_for("auto", cuda=False) == ("hog",)
    assert cascade.models_for("cnn", cuda=False) == ("cnn",)
    assert cascade.models_for("hog", cuda=True) == ("hog",)


def test_plan_starts_below_the_failed_step() -> None:
    assert [s.scale for s in cascade.plan(("hog",), SCALES)] == [1.0, 0.75, 0.5, 0.33, 0.25]
    assert [s.scale for s in cascade.plan(("hog",), SCALES, last_scale=1.0)] == [0.75, 0.5, 0.33, 0.25]
    assert [s.scale for s in cascade.plan(("hog",), SCALES, last_scale=0.6)] == [0.5, 0.33, 0.25]
    # CNN out of memory at 0.5 on a CUDA card: smaller CNN steps, then HOG from the top.
    steps = cascade.plan(("cnn", "hog"), (1.0, 0.5, 0.25), last_scale=0.5, last_model="cnn")
    assert steps == [Step("cnn", 0.25), Step("hog", 1.0), Step("hog", 0.5), Step("hog", 0.25)]
    steps = cascade.plan(("cnn", "hog"), (1.0, 0.5), last_scale=0.5, last_model="cnn")
    assert steps == [Step("hog", 1.0), Step("hog", 0.5)]


def test_plan_never_returns_nothing() -> None:
    assert cascade.plan(("hog",), SCALES, last_scale=0.25) == [Step("hog", 0.25)]
    assert cascade.plan(("cnn", "hog"), (1.0, 0.5), last_scale=0.5, last_model="hog") == [Step("hog", 0.5)]


def test_upsample_follows_the_applied_scale() -> None:
    # A 40 px face must reach HOG's ~80 px window: once at full size, twice at half size.
    assert cascade.choose_upsample(1.0, min_face_px=40, max_upsample=2) == 1
    assert cascade.choose_upsample(0.5, min_face_px=40, max_upsample=2) == 2
    assert cascade.choose_upsample(0.32, min_face_px=40, max_upsample=2) == 2  # capped
    assert cascade.choose_upsample(0.32, min_face_px=40, max_upsample=3) == 3
    assert cascade.choose_upsample(2.0, min_face_px=40, max_upsample=2) == 0


def test_bound_and_box_mapping() -> None:
    assert cascade.bound_scale((512, 512), 1280) == 1.0
    assert cascade.bound_scale((4000, 3000), 1280) == 0.32
    assert cascade.scaled_size((4000, 3000), 0.32) == (1280, 960)
    box = cascade.to_original((100, 300, 200, 200), (1280, 960), (4000, 3000))
    assert box == (312, 938, 625, 625)
    # Boxes that stick out of the image are clamped to it.
    assert cascade.to_original((-5, 1300, 970, -3), (1280, 960), (4000, 3000)) == (0, 4000, 3000, 0)


def test_iou_and_cuda_oom() -> None:
    assert cascade.iou((0, 10, 10, 0), (0, 10, 10, 0)) == 1.0
    assert cascade.iou((0, 10, 10, 0), (20, 30, 30, 20)) == 0.0
    assert 0.3 < cascade.iou((0, 10, 10, 0), (0, 12, 10, 2)) < 0.8
    assert cascade.is_cuda_oom(RuntimeError("Error while calling cudaMalloc(...) reason: out of memory"))
    assert cascade.is_cuda_oom(RuntimeError("CUDNN_STATUS_ALLOC_FAILED"))
    assert not cascade.is_cuda_oom(RuntimeError("Unsupported image type"))
    assert not cascade.is_cuda_oom(MemoryError())


def test_has_step_below() -> None:
    assert cascade.has_step_below(("hog",), SCALES, 1.0, "hog")
    assert not cascade.has_step_below(("hog",), SCALES, 0.25, "hog")
    assert cascade.has_step_below(("cnn", "hog"), (1.0, 0.5), 0.5, "cnn")  # HOG is left
    assert not cascade.has_step_below(("cnn", "hog"), (1.0, 0.5), 0.5, "hog")


def test_production_code_cannot_reach_the_fault_engine() -> None:
    package = Path(__file__).resolve().parents[1] / "reactor"
    for source in package.rglob("*.py"):
        text = source.read_text(encoding="utf-8")
        assert "import tests" not in text and "from tests" not in text, source
    assert DetectorConfig().engine == "reactor.detector.engine"
