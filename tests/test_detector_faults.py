"""Supervision: out-of-memory, crashes, hangs and start-up failures never take the reactor down.

Faults come from tests/fault_engine.py (selected by detector.engine), keyed by file name.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from reactor.config import DetectorConfig
from reactor.detector import Detection, DetectionFailure, DetectionJob, Detector, DetectorUnavailable
from reactor.detector.budget import SAFETY, MemoryBudget
from reactor.failure_types import ErrorType
from reactor.ops import samples
from tests import fault_engine

pytestmark = pytest.mark.asyncio(loop_scope="module")

ENGINE = "tests.fault_engine"
ASTRONAUT_FACE = (76, 265, 166, 175)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faults")
    samples.build_library(root, include=lambda name: name in ("astronaut.jpg", "cat.jpg"))
    return root


def copy(photos: Path, source: str, name: str) -> str:
    target = photos / name
    shutil.copyfile(photos / source, target)
    return str(target)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def detector() -> AsyncIterator[Detector]:
    d = Detector(DetectorConfig(engine=ENGINE, timeout_seconds=90))
    await d.start()
    yield d
    await d.close()


def write_side_file(path: str, faults: str) -> None:
    Path(path + ".fault").write_text(faults, encoding="utf-8")


def box_of(outcome: Detection) -> tuple[int, int, int, int]:
    [face] = outcome.faces
    return face.top, face.right, face.bottom, face.left


async def test_cuda_oom_at_full_scale_falls_back_in_a_fresh_child(detector: Detector, photos: Path) -> None:
    path = copy(photos, "astronaut.jpg", "astronaut__oom_at_1.0__.jpg")
    restarts, pid = detector.restarts, detector.pid
    outcome = await detector.detect(DetectionJob(local_path=path))
    assert isinstance(outcome, Detection), outcome
    assert outcome.cascade_scale == 0.75 and round(outcome.scale, 2) == 1.5  # 0.75 of the chosen x2
    assert all(abs(a - b) <= 12 for a, b in zip(box_of(outcome), ASTRONAUT_FACE, strict=True))
    # dlib issue 1725: the child that ran out of CUDA memory is not trusted again.
    assert detector.restarts == restarts + 1
    assert detector.pid != pid
    assert detector.state == "ready"


async def test_host_oom_falls_back_in_the_same_child(detector: Detector, photos: Path) -> None:
    path = copy(photos, "astronaut.jpg", "astronaut__hostoom_at_1.0__.jpg")
    restarts = detector.restarts
    outcome = await detector.detect(DetectionJob(local_path=path))
    assert isinstance(outcome, Detection), outcome
    assert outcome.cascade_scale == 0.75
    assert detector.restarts == restarts


async def test_crash_fails_that_image_only(detector: Detector, photos: Path) -> None:
    crashing = copy(photos, "astronaut.jpg", "astronaut__crash__.jpg")
    restarts, pid = detector.restarts, detector.pid
    outcome = await detector.detect(DetectionJob(local_path=crashing))
    assert isinstance(outcome, DetectionFailure)
    assert outcome.error_type is ErrorType.CRASH
    assert "SIGABRT" in outcome.message
    assert outcome.scale == 1.0  # a retry would start below it
    # The next image is detected normally, by a new child.
    after = await detector.detect(DetectionJob(local_path=str(photos / "astronaut.jpg")))
    assert isinstance(after, Detection) and after.face_count == 1
    assert detector.restarts == restarts + 1 and detector.pid != pid


async def test_segfault_is_a_crash(detector: Detector, photos: Path) -> None:
    outcome = await detector.detect(DetectionJob(local_path=copy(photos, "cat.jpg", "cat__segv__.jpg")))
    assert isinstance(outcome, DetectionFailure)
    assert outcome.error_type is ErrorType.CRASH
    assert "SIGSEGV" in outcome.message
    after = await detector.detect(DetectionJob(local_path=str(photos / "cat.jpg")))
    assert isinstance(after, Detection) and after.face_count == 0


async def test_side_file_selects_the_fault(detector: Detector, photos: Path) -> None:
    path = copy(photos, "cat.jpg", "plain_name.jpg")
    write_side_file(path, "__raise__")
    pid = detector.pid
    outcome = await detector.detect(DetectionJob(local_path=path))
    assert isinstance(outcome, DetectionFailure)
    assert outcome.error_type is ErrorType.RUNTIME
    assert "injected engine error" in outcome.message
    assert detector.pid == pid  # an exception inside the engine does not cost the child


async def test_oom_at_every_scale_is_an_oom_failure(photos: Path) -> None:
    path = copy(photos, "cat.jpg", "cat__oom_at_1.0____oom_at_0.5__.jpg")
    detector = Detector(DetectorConfig(engine=ENGINE, scales=(1.0, 0.5)))
    await detector.start()
    try:
        outcome = await detector.detect(DetectionJob(local_path=path))
        assert isinstance(outcome, DetectionFailure)
        assert outcome.error_type is ErrorType.OOM
        assert outcome.scale == 0.5
        # The last child ran out of CUDA memory too: the next image gets a fresh one.
        after = await detector.detect(DetectionJob(local_path=str(photos / "cat.jpg")))
        assert isinstance(after, Detection)
        assert detector.restarts == 2
    finally:
        await detector.close()


async def test_hang_reaches_the_timeout_and_the_child_is_replaced(photos: Path) -> None:
    detector = Detector(DetectorConfig(engine=ENGINE, timeout_seconds=4))
    await detector.start()
    try:
        pid = detector.pid
        outcome = await detector.detect(DetectionJob(local_path=copy(photos, "cat.jpg", "cat__hang__.jpg")))
        assert isinstance(outcome, DetectionFailure)
        assert outcome.error_type is ErrorType.TIMEOUT
        assert outcome.scale == 1.0
        after = await detector.detect(DetectionJob(local_path=str(photos / "cat.jpg")))
        assert isinstance(after, Detection)
        assert detector.restarts == 1 and detector.pid != pid
    finally:
        await detector.close()
    assert detector.state == "stopped"


async def test_cancelled_detection_discards_the_busy_child(detector: Detector, photos: Path) -> None:
    hang = copy(photos, "cat.jpg", "cat__hang__.jpg")
    task = asyncio.create_task(detector.detect(DetectionJob(local_path=hang)))
    # The parent reads the file (timed) before the job goes to the child.
    for _ in range(500):
        if detector.job_in_child:
            break
        await asyncio.sleep(0.01)
    assert detector.state == "busy" and detector.job_in_child
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert detector.pid is None
    # Its late answer can never be taken for the next job's.
    after = await detector.detect(DetectionJob(local_path=str(photos / "cat.jpg")))
    assert isinstance(after, Detection) and after.face_count == 0


async def test_children_dying_at_start_make_the_detector_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = tmp_path / "startup-crashes"
    counter.write_text("6")
    monkeypatch.setenv(fault_engine.STARTUP_CRASHES_ENV, str(counter))
    detector = Detector(DetectorConfig(engine=ENGINE, max_start_failures=3))
    with pytest.raises(DetectorUnavailable, match="3 times in a row"):
        await detector.start()
    assert detector.state == "unavailable"
    assert counter.read_text() == "3"
    with pytest.raises(DetectorUnavailable):
        await detector.detect(DetectionJob(local_path=str(tmp_path / "any.jpg")))
    assert counter.read_text() == "0"  # detect() tried to start a child again, and failed again
    await detector.close()


async def test_a_few_start_failures_in_a_row_are_survived(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = tmp_path / "startup-crashes"
    counter.write_text("2")
    monkeypatch.setenv(fault_engine.STARTUP_CRASHES_ENV, str(counter))
    detector = Detector(DetectorConfig(engine=ENGINE, max_start_failures=3))
    await detector.start()
    try:
        assert detector.state == "ready" and counter.read_text() == "0"
    finally:
        await detector.close()


async def test_ctrl_c_is_left_to_the_parent(detector: Detector, photos: Path) -> None:
    pid = detector.pid
    assert pid is not None
    os.kill(pid, signal.SIGINT)
    outcome = await detector.detect(DetectionJob(local_path=str(photos / "cat.jpg")))
    assert isinstance(outcome, Detection)
    assert detector.pid == pid


async def test_a_child_killed_while_idle_is_not_blamed_on_the_next_image(detector: Detector, photos: Path) -> None:
    pid, restarts = detector.pid, detector.restarts
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # what the kernel's OOM killer does
    await asyncio.wait_for(asyncio.to_thread(wait_for_exit, pid), 10)
    outcome = await detector.detect(DetectionJob(local_path=str(photos / "cat.jpg")))
    assert isinstance(outcome, Detection)
    assert detector.pid != pid and detector.restarts == restarts + 1


def wait_for_exit(pid: int) -> None:
    """Block until the child has exited, without reaping it (the detector does that).

    The test process is the child's parent, so waitid(WNOWAIT) sees it; /proc would show the
    main thread as a zombie while dlib's other threads are still exiting.
    """
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        time.sleep(0.01)


async def test_a_cancelled_start_leaves_no_child() -> None:
    before = {p.pid for p in multiprocessing.active_children()}
    detector = Detector(DetectorConfig(engine=ENGINE))
    task = asyncio.create_task(detector.start())
    for _ in range(100):
        if detector.state == "starting":
            break
        await asyncio.sleep(0)
    assert detector.state == "starting"  # the child is spawned and loading its models
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert {p.pid for p in multiprocessing.active_children()} <= before


async def test_the_learned_budget_starts_the_next_image_below_the_size_that_ran_out(photos: Path) -> None:
    # A detector of its own: the module's shared one has learned from other tests.
    detector = Detector(DetectorConfig(engine=ENGINE, timeout_seconds=90))
    await detector.start()
    try:
        await _learned_budget(detector, photos)
    finally:
        await detector.close()


async def _learned_budget(detector: Detector, photos: Path) -> None:
    # An out-of-memory at the full size: the child is replaced, the image succeeds one
    # step lower, and the parent remembers both sizes (reactor.detector.budget).
    failing = copy(photos, "astronaut.jpg", "astronaut__oom_at_1.0__.jpg")
    first = await detector.detect(DetectionJob(local_path=failing))
    assert isinstance(first, Detection) and first.detect_size is not None
    learned = detector.budget.snapshot()["hog"]
    ran_out = learned["smallest_oom_pixels"]
    assert ran_out is not None and learned["largest_ok_pixels"] == first.detect_size[0] * first.detect_size[1]
    assert first.detect_size[0] * first.detect_size[1] < ran_out
    restarts = detector.restarts
    # The next image of that size starts below the size that ran out, in the new child:
    # no second out-of-memory, no restart, and the budget survived the first restart.
    after = await detector.detect(DetectionJob(local_path=str(photos / "astronaut.jpg")))
    assert isinstance(after, Detection) and after.detect_size is not None
    assert after.cascade_scale == 1.0  # the first step, already within the learned cap
    assert after.detect_size[0] * after.detect_size[1] < ran_out
    assert detector.restarts == restarts


async def test_the_budget_rules() -> None:
    budget = MemoryBudget()
    assert budget.cap("cnn", 4_000_000) == 4_000_000  # nothing learned: as configured
    budget.succeeded("cnn", 1_000_000)
    assert budget.caps() == {}  # a success alone caps nothing
    budget.ran_out("cnn", 2_000_000)
    assert budget.cap("cnn", 4_000_000) == int(2_000_000 * SAFETY)
    assert budget.cap("hog", 4_000_000) == 4_000_000  # per model
    budget.succeeded("cnn", 1_900_000)  # a larger success raises the known-good size
    assert budget.cap("cnn", 4_000_000) == 1_900_000
    budget.ran_out("cnn", 1_500_000)  # fragmentation: what fitted before does not now
    assert budget.cap("cnn", 4_000_000) == int(1_500_000 * SAFETY)
    assert budget.cap("cnn", 100) == 100  # never above what the image wants
