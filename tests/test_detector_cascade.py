"""The detection plan and box geometry, without dlib."""

from __future__ import annotations

import math
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


BUDGET = DetectorConfig().max_detect_pixels


def test_a_small_photo_is_scanned_at_twice_its_size() -> None:
    # 500x375 at x2 is 0.75 Mpx of a 4.9 Mpx budget: the budget goes to recall, so faces
    # down to 34 px (HOG's 68 / 2) are reachable, not just min_face_px (issue 26).
    chosen = cascade.choose_resolution((500, 375), min_face_px=40, max_pixels=BUDGET)
    assert chosen.size == (1000, 750) and chosen.scale == 2.0
    assert chosen.upsample == 0 and chosen.min_face_px == 34
    cnn = cascade.choose_resolution((500, 375), min_face_px=40, max_pixels=BUDGET, model="cnn")
    assert cnn.size == (1000, 750) and cnn.min_face_px == 40
    # A smaller min_face_px than the cap reaches still enlarges as far as it needs.
    tiny = cascade.choose_resolution((500, 375), min_face_px=20, max_pixels=BUDGET)
    assert tiny.size == (1700, 1275) and tiny.min_face_px == 20
    # max_enlargement 1.0: only as far as min_face_px needs (68 / 40 = 1.7).
    needed = cascade.choose_resolution((500, 375), min_face_px=40, max_pixels=BUDGET, max_enlargement=1.0)
    assert needed.size == (850, 638) and needed.min_face_px == 40


def test_a_photo_between_is_scanned_at_what_the_budget_holds() -> None:
    chosen = cascade.choose_resolution((1600, 1200), min_face_px=40, max_pixels=BUDGET)
    assert chosen.size == (2560, 1920) and chosen.scale == 1.6
    assert chosen.min_face_px == 43  # 68 / 1.6: x2 would be 7.7 Mpx
    # A cascade step lowers it from there.
    lower = cascade.choose_resolution((1600, 1200), min_face_px=40, max_pixels=BUDGET, cascade_scale=0.5)
    assert lower.size == (1280, 960) and lower.min_face_px == 85


def test_a_phone_photo_is_reduced_to_the_budget_and_says_which_face_it_can_find() -> None:
    chosen = cascade.choose_resolution((4000, 3000), min_face_px=40, max_pixels=BUDGET)
    assert chosen.size == (2560, 1920) and chosen.scale == 0.64
    assert chosen.upsample == 0
    assert chosen.min_face_px == 107  # the budget cannot reach 40 px here: 68 / 0.64
    # The cap changes nothing where the budget is full.
    assert cascade.choose_resolution((4000, 3000), 40, BUDGET, max_enlargement=1.0) == chosen


def test_never_above_the_budget_never_both_reduced_and_enlarged() -> None:
    for original in ((500, 375), (4000, 3000), (3000, 4000), (4032, 3024), (12000, 9000), (1, 1), (7, 20001)):
        for budget in (1_000, 99_999, 1_000_000, BUDGET, 50_000_000):
            for min_face in (20, 40, 80, 200):
                for step, model in ((1.0, "hog"), (0.75, "cnn"), (0.33, "hog"), (1.0, "cnn")):
                    chosen = cascade.choose_resolution(original, min_face, budget, step, model)
                    window = cascade.MODEL_MIN_FACE_PX[model]
                    width, height = chosen.size
                    assert width * height <= budget or min(chosen.size) == 1, (original, budget, chosen)
                    # One factor: enlarged means no upsampling on top, and never a reduction
                    # followed by an enlargement (the old bound-then-upsample).
                    assert chosen.upsample == 0
                    assert (width >= original[0]) == (height >= original[1]) or min(chosen.size) == 1
                    # The smallest face reported is the one the scanned size really reaches.
                    assert chosen.min_face_px * chosen.scale >= window * 0.99
                    # And where the budget has room for min_face, it is reached.
                    needed = original[0] * original[1] * (window / min_face) ** 2
                    if step == 1.0 and budget >= needed * 1.05 and min(original) > 10:
                        assert chosen.min_face_px <= min_face, (original, budget, chosen)
                    # And where it has room for twice the photo, the photo is scanned at x2 at least.
                    doubled = original[0] * original[1] * cascade.MAX_ENLARGEMENT**2
                    if step == 1.0 and budget >= doubled * 1.05 and min(original) > 10:
                        assert chosen.scale >= cascade.MAX_ENLARGEMENT * 0.99, (original, budget, chosen)


def test_a_box_under_dlibs_threshold_is_rescored_at_the_other_thirds_of_a_pyramid_step() -> None:
    step = cascade.HOG_PYRAMID_STEP
    for side in (60, 80, 100, 119, 120, 180, 230, 1000):
        first, second = cascade.rescore_factors(side)
        # A third and two thirds of a step from where the box was found, by whole steps
        # otherwise: its phase in HOG's pyramid moves, nothing else.
        phase = math.log(first, step) % 1.0
        assert math.isclose(phase, 1 / 3, abs_tol=1e-9), (side, first)
        assert math.isclose(second / first, step ** (1 / 3))
        # Brought to 100-120 px before the shift, never made smaller than it is below 100.
        before_shift = side * first / step ** (1 / 3)
        assert 100 <= before_shift < 120 if side >= 100 else math.isclose(before_shift, side), (side, before_shift)


def test_box_mapping() -> None:
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
