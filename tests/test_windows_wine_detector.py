"""The detector's crash, hang and Job object under a real Windows CPython (Wine, tests/wine.py).

The scenarios run in the Windows interpreter (tests/wine_detector.py), together, so that
their waits overlap: the detector waits through ``multiprocessing.connection.wait`` on a
Windows pipe and process handle, and a killed reactor's child is ended by the Job object.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import wine
from tests.reactor_support import write_photos

# Wine starts every Windows process slowly on a loaded machine: more than the suite's 180 s.
pytestmark = [wine.needed(), pytest.mark.timeout(420)]


def test_detector_crash_hang_and_job_object_under_windows(tmp_path: Path) -> None:
    python = wine.windows_python()
    write_photos(tmp_path, ["a.jpg"])
    result = python.run(python.module("tests.wine_detector", wine.windows_path(tmp_path)), timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.splitlines()[-1])
    crash, hang, orphan = report["crash"], report["hang"], report["orphan"]
    good, crashed, after = crash["steps"]
    assert good["ok"] and good["faces"] == 1, crash
    # abort() ends a Windows process with 3: a crash, not an engine that could not load.
    assert crashed["error_type"] == "crash" and "could not load" not in crashed["message"], crash
    # The next photo ran in a new child.
    assert after["ok"] and after["faces"] == 1 and after["pid_after"] not in (None, good["pid_after"]), crash
    assert crash["restarts"] == 1 and crash["state"] == "stopped", crash
    [hung] = hang["steps"]
    assert hung["error_type"] == "timeout", hang
    assert hang["replacement"] not in (None, hang["first"]) and hang["restarts"] == 1, hang
    # TerminateProcess on the stand-in reactor: the Job object ended its hung child.
    assert orphan["child_ended"], f"detector child outlived its killed parent: {orphan}"
    assert orphan["parent_exit"] != 0, orphan
