"""`reactor detect PATH...` as a user runs it: a real process, real photos, JSON lines on stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from reactor.ops import samples

REPO = Path(__file__).resolve().parents[1]


def test_reactor_detect_prints_one_json_line_per_path(tmp_path: Path) -> None:
    made = {
        s.name: s.path
        for s in samples.build_library(tmp_path, include=lambda n: n in ("astronaut.jpg", "cat.jpg", "bad/notes.jpg"))
    }
    paths = [str(made["astronaut.jpg"]), str(made["cat.jpg"]), str(made["bad/notes.jpg"]), str(tmp_path / "gone.jpg")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("REACTOR_")}
    proc = subprocess.run(
        [sys.executable, "-m", "reactor", "--log-format", "json", "detect", "--encodings", *paths],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr  # some paths failed
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["path"] for line in lines] == paths
    astronaut, cat, notes, gone = lines
    assert astronaut["ok"] and astronaut["face_count"] == 1
    [face] = astronaut["faces"]
    assert face["score"] > 0.9 and len(face["encoding"]) == 128
    assert astronaut["original_size"] == [512, 512] and astronaut["model"] == "hog"
    # The size it was scanned at, and the smallest face findable there: what was asked for.
    assert astronaut["detect_size"] == [1024, 1024] and astronaut["upsample"] == 0
    assert astronaut["min_face_px"] == 34 and "note" not in astronaut
    assert cat["ok"] and cat["face_count"] == 0
    assert not notes["ok"] and notes["error_type"] == "unsupported" and notes["permanent"]
    assert notes["advice"]
    assert not gone["ok"] and gone["error_type"] == "missing"
    # Logs go to stderr, so stdout stays machine-readable.
    assert "detector_ready" in proc.stderr


def test_reactor_detect_says_when_the_budget_cannot_reach_min_face_px(tmp_path: Path) -> None:
    [sample] = samples.build_library(tmp_path, include=lambda n: n == "astronaut.jpg")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REACTOR_")}
    env["REACTOR_DETECTOR__MAX_DETECT_PIXELS"] = "160000"  # 400x400: the 512 px photo is reduced
    proc = subprocess.run(
        [sys.executable, "-m", "reactor", "--log-format", "json", "detect", str(sample.path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    [line] = [json.loads(raw) for raw in proc.stdout.splitlines()]
    assert line["ok"] and line["face_count"] == 1
    assert line["detect_size"] == [400, 400] and line["min_face_px"] == 87
    assert "faces under 87 px cannot be found" in line["note"] and "detector.max_detect_pixels" in line["note"]
