"""The Windows code paths, run by a real Windows CPython under Wine (tests/wine.py): the suite's
platform tests (the paths under the real ntpath, the detector's Windows waits, network drives)
and ``reactor detect``.

tools/wine/setup makes the environment (.ci/run runs it); without it these tests are skipped
with the reason. The detector's faults under Windows: tests/test_windows_wine_detector.py;
``reactor run``: tests/test_windows_wine_run.py (three files, so that pytest-xdist's workers
share them). What Wine cannot show (Ctrl+Break delivery, the embedded database, NSSM) is
listed with the commands that check it on Windows in deploy/windows-service.md.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from reactor.ops import samples
from tests import wine

# Wine starts every Windows process slowly on a loaded machine: more than the suite's 180 s.
pytestmark = [wine.needed(), pytest.mark.timeout(420)]

# The suite's own tests that hold for Windows, run there as they are (each file whole
# unless a test is named). Left out: what needs the embedded PostgreSQL (it cannot start
# under Wine, deploy/windows-service.md) or scikit-image's sample photos (not installed).
PLATFORM_TESTS = (
    "tests/test_paths.py",
    "tests/test_windows_paths.py",
    "tests/test_windows_drives.py",
    "tests/test_detector_waiting.py",
    "tests/test_detector_memory.py",
    "tests/test_detector_lifetime.py::test_job_limit_structure_matches_the_windows_layout",
    "tests/test_aio.py",
    "tests/test_supervision.py",
    "tests/test_queue.py",
    "tests/test_progress.py",
    "tests/test_logs.py",
    # The folder-by-folder scanner against the whole-share diff; not the folder-rename
    # test: a Windows listing has no inode, so there a rename is a deletion and a creation.
    "tests/test_scanner_folders.py::test_the_packed_snapshot_is_a_mapping_that_survives_eviction",
    "tests/test_scanner_folders.py::test_random_changes_are_found_as_the_whole_share_diff_finds_them",
    "tests/test_scanner_folders.py::test_a_folder_that_appears_and_disappears",
    "tests/test_scanner_folders.py::test_the_first_scan_logs_its_progress",
)


@pytest.fixture(scope="module")
def python() -> wine.WindowsPython:
    return wine.windows_python()


def test_the_suites_platform_tests_pass_under_windows(python: wine.WindowsPython, tmp_path: Path) -> None:
    result = python.run(
        python.module(
            "pytest",
            "-p",
            "no:cacheprovider",
            "-n",
            "0",
            "-q",
            "-rs",
            f"--basetemp={wine.windows_path(tmp_path / 'bt')}",
            *PLATFORM_TESTS,
        ),
        timeout=300,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-6000:]
    # The only skips: the three symlink cases of tests/test_paths.py, which Wine cannot
    # resolve, and the Linux-only halves of the drive tests; the network drive N: ran.
    skipped = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert all("symlinks" in line or "Windows always answers" in line for line in skipped), skipped
    assert re.search(r"\d+ passed", out) and "failed" not in out, out[-2000:]


def test_reactor_detect_under_windows(python: wine.WindowsPython, tmp_path: Path) -> None:
    wanted = {"astronaut.jpg", "collage_2x2.jpg", "astronaut.heic", "cat.jpg", "bad/empty.jpg", "bad/notes.jpg"}
    library = samples.build_library(tmp_path, include=lambda name: name in wanted)
    expected: dict[str, object] = {str(k): v for k, v in samples.expected(library).items()}
    expected["bad/gone.jpg"] = "missing"
    names = sorted(expected)
    result = python.run(
        python.module("reactor", "detect", *(wine.windows_path(tmp_path / name) for name in names)), timeout=300
    )
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert result.returncode == 1, result.stderr[-4000:]  # some failed, each typed
    found = {
        name: (line["face_count"] if line["ok"] else line["error_type"])
        for name, line in zip(names, lines, strict=True)
    }
    assert found == {name: (v if isinstance(v, int) else str(v)) for name, v in expected.items()}
    assert all(line["path"] == wine.windows_path(tmp_path / name) for name, line in zip(names, lines, strict=True))
