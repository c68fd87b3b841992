import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.measure import label

from reactor.ops.contact_sheet import BOX_COLOUR
from reactor.ops.demo import DATABASE_DIR, FOLDER_MARKER, prepare_folder

ROOT = Path(__file__).resolve().parent.parent


def count_boxes(png: Path) -> int:
    """Face boxes actually drawn in the PNG: connected outlines in the box colour."""
    pixels = np.asarray(Image.open(png).convert("RGB"))
    mask = np.all(pixels == np.array(BOX_COLOUR, dtype=np.uint8), axis=-1)
    return int(label(mask, connectivity=2).max())


def test_demo_completes_with_a_contact_sheet(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REACTOR_")}
    env["PYTHONPATH"] = str(ROOT)
    # Run where no config.toml is found: the demo needs nothing but its defaults.
    proc = subprocess.run(
        [sys.executable, "-m", "reactor", "demo", "--out", str(out), "--timeout", "150"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 7 and summary["done"] == 7
    assert summary["results"] == {
        "astronaut.jpg": 1,
        "collage_2x2.jpg": 4,
        "astronaut_exif6.jpg": 1,
        "astronaut.heic": 1,
        "cat.jpg": 0,
        "coffee.jpg": 0,
    }
    assert summary["failures"] == {"bad/truncated.jpg": "corrupt"}
    assert summary["faces"] == 7 and summary["boxes_drawn"] == 7 and summary["as_expected"] is True
    sheet = out / "contact_sheet.png"
    assert Path(summary["contact_sheet"]) == sheet
    assert count_boxes(sheet) == 7
    assert "collage_2x2.jpg      4 faces          as expected" in proc.stdout
    assert "bad/truncated.jpg    failed: corrupt  as expected" in proc.stdout
    assert f"contact sheet: {sheet} (7 faces boxed)" in proc.stdout


def test_demo_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "keep.jpg").write_bytes(b"not mine")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REACTOR_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-m", "reactor", "demo", "--out", str(precious)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"reactor: {precious} exists and was not made by `reactor demo`; pass --out with a new folder"
    )
    assert (precious / "keep.jpg").read_bytes() == b"not mine"


def test_a_new_run_replaces_its_own_folder_but_keeps_the_database(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    prepare_folder(out)
    (out / "library").mkdir()
    (out / "library" / "old.jpg").write_bytes(b"x")
    (out / "contact_sheet.png").write_bytes(b"x")
    (out / DATABASE_DIR).mkdir()
    (out / DATABASE_DIR / "PG_VERSION").write_text("16\n")
    prepare_folder(out)
    assert sorted(p.name for p in out.iterdir()) == [FOLDER_MARKER, DATABASE_DIR]
    assert (out / DATABASE_DIR / "PG_VERSION").read_text() == "16\n"
