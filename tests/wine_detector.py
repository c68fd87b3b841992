"""The detector's Windows branches, run by the Windows interpreter for tests/test_windows_wine_detector.py.

    python -m tests.wine_detector FOLDER

Three scenarios at once, so that their waits overlap; one JSON line with each's report:

- ``crash``: a photo that aborts the child, then a good photo in a new child;
- ``hang``: a photo the engine never answers, past detector.timeout_seconds: the child is
  replaced;
- ``orphan``: a stand-in reactor (tests/orphan_parent.py) is killed by TerminateProcess
  while its child hangs in the engine: the Job object must end the child.

FOLDER holds ``a.jpg`` (one face); the faults come from tests/fault_engine.py by file name.
On Windows the detector waits through ``multiprocessing.connection.wait`` on a Windows
pipe and process handle, and binds each child to the reactor with a Job object
(reactor/detector/lifetime.py).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from reactor.config import DetectorConfig
from reactor.detector import Detection, DetectionJob, Detector, Outcome

ENGINE = "tests.fault_engine"
# Far above a detection of a 256 px photo under Wine (about 2 to 5 s on a loaded machine).
TIMEOUT_SECONDS = 60.0
# Only the hanging photo ever runs under this one.
HANG_TIMEOUT_SECONDS = 5.0


def summary(outcome: Outcome) -> dict[str, Any]:
    if isinstance(outcome, Detection):
        return {"ok": True, "faces": len(outcome.faces)}
    return {"ok": False, "error_type": str(outcome.error_type), "message": outcome.message}


async def detect_in_turn(detector: Detector, folder: Path, names: list[str]) -> list[dict[str, Any]]:
    steps = []
    for name in names:
        pid = detector.pid
        outcome = await detector.detect(DetectionJob(local_path=str(folder / name)))
        steps.append({"name": name, "pid_before": pid, "pid_after": detector.pid, **summary(outcome)})
    return steps


async def crash(folder: Path) -> dict[str, Any]:
    shutil.copyfile(folder / "a.jpg", folder / "a__crash__.jpg")
    detector = Detector(DetectorConfig(engine=ENGINE, timeout_seconds=TIMEOUT_SECONDS))
    await detector.start()
    try:
        steps = await detect_in_turn(detector, folder, ["a.jpg", "a__crash__.jpg", "a.jpg"])
    finally:
        await detector.close()
    return {"steps": steps, "restarts": detector.restarts, "state": str(detector.state)}


async def hang(folder: Path) -> dict[str, Any]:
    shutil.copyfile(folder / "a.jpg", folder / "a__hang__.jpg")
    detector = Detector(DetectorConfig(engine=ENGINE, timeout_seconds=HANG_TIMEOUT_SECONDS))
    await detector.start()
    try:
        first = detector.pid
        steps = await detect_in_turn(detector, folder, ["a__hang__.jpg"])
        await detector.start()  # the replacement, as the next photo would start it
        replacement = detector.pid
    finally:
        await detector.close()
    return {"steps": steps, "first": first, "replacement": replacement, "restarts": detector.restarts}


def orphan(folder: Path) -> dict[str, Any]:
    if sys.platform != "win32":
        raise SystemExit("the orphan scenario waits on Windows process handles")
    import _winapi

    from tests.wine import BOOT

    photo = folder / "orphan__hang__.jpg"
    shutil.copyfile(folder / "a.jpg", photo)
    boot = BOOT.format(repo=str(Path(__file__).resolve().parent.parent), module="tests.orphan_parent")
    parent = subprocess.Popen([sys.executable, "-c", boot, str(photo)], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    try:
        child = int(next(line for line in parent.stdout if line.startswith("child="))[len("child=") :])
        # Opened before the parent dies, so that the pid cannot be reused meanwhile.
        synchronize = 0x00100000
        handle = _winapi.OpenProcess(synchronize, False, child)
        try:
            # In the engine the child no longer reads its pipe: only the Job object can end it.
            hanging = Path(f"{photo}.hanging")
            deadline = time.monotonic() + 120
            while not (hanging.exists() and hanging.read_text(encoding="utf-8") == str(child)):
                if time.monotonic() > deadline:
                    raise SystemExit(f"{hanging} never read {child}")
                time.sleep(0.05)
            parent.kill()  # TerminateProcess: no clean-up runs in the parent
            parent.wait(30)
            ended = _winapi.WaitForSingleObject(handle, 30_000) == _winapi.WAIT_OBJECT_0
            if not ended:  # never leave a hung child behind a failed test
                subprocess.run(["taskkill", "/F", "/PID", str(child)], check=False, capture_output=True)
        finally:
            _winapi.CloseHandle(handle)
    finally:
        parent.kill()
        parent.wait(30)
        parent.stdout.close()
    return {"child": child, "parent_exit": parent.returncode, "child_ended": ended}


async def scenarios(folder: Path) -> dict[str, Any]:
    crashed, hung, orphaned = await asyncio.gather(crash(folder), hang(folder), asyncio.to_thread(orphan, folder))
    return {"crash": crashed, "hang": hung, "orphan": orphaned}


def main() -> None:
    print(json.dumps(asyncio.run(scenarios(Path(sys.argv[1])))), flush=True)


if __name__ == "__main__":
    main()
