"""The polling scanner on a 50,000-file tree: time per scan and memory, against a bare walk.

The polling observer (network shares, or watcher.observer = "polling") walks the whole
share every watcher.scan_interval_seconds and diffs the walk against its snapshot. This
measures, in one run on one tree of empty files:

- baseline: a bare recursive os.scandir walk that stats every file and keeps nothing;
- scanner: Scanner.scan() as the watcher runs it (ignored folders skipped, candidates
  filtered, snapshot diffed), for the first scan, an unchanged rescan, and a rescan
  after 1 % of the files changed;
- memory: the snapshot's size (tracemalloc, in a separate pass so timings are clean)
  and the process's peak RSS.

Usage: .venv/bin/python -m bench.scan_bench [--files 50000] [--repeat 5]
Writes bench/out/scan.json. Nothing here is asserted by the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import resource
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

from reactor.config import ImagesConfig, WatcherConfig
from reactor.paths import PathMapper
from reactor.watch.candidates import Candidates
from reactor.watch.scanner import Scanner
from reactor.watch.share import ShareMonitor

OUT = Path(__file__).resolve().parent / "out"
PER_FOLDER = 100


def build_tree(root: Path, files: int) -> None:
    """``files`` empty photos in folders of 100, plus ignored folders a NAS would add."""
    (root / ".reactor-share").write_text("marker\n")
    for i in range(files):
        folder = root / f"{2000 + i // 10_000}" / f"album{i // PER_FOLDER:04}"
        if i % PER_FOLDER == 0:
            folder.mkdir(parents=True)
            (folder / "@eaDir").mkdir()
            (folder / "@eaDir" / "SYNOPHOTO_THUMB_M.jpg").touch()
            (folder / "face_crops").mkdir()
            (folder / "face_crops" / "crop.jpg").touch()
        (folder / f"IMG_{i:06}.JPG").touch()


def bare_walk(root: str) -> int:
    """The least a scan must do: list every folder and stat every file."""
    count = 0
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    entry.stat(follow_symlinks=False)
                    count += 1
    return count


def timed(fn: object, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()  # type: ignore[operator]
        if asyncio.iscoroutine(result):
            asyncio.run(result)
        out.append(time.perf_counter() - started)
    return out


def touch_some(root: Path, every: int) -> int:
    changed = 0
    for folder in sorted(root.glob("*/album*")):
        for photo in sorted(folder.glob("*.JPG"))[::every]:
            photo.write_bytes(b"changed")
            changed += 1
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scan-bench-") as tmp:
        root = Path(tmp) / "share"
        root.mkdir()
        started = time.perf_counter()
        build_tree(root, args.files)
        print(f"tree: {args.files} photos built in {time.perf_counter() - started:.1f} s under {root}")

        images = dataclasses.replace(ImagesConfig(), root=str(root))
        watcher = dataclasses.replace(WatcherConfig(), observer="polling")
        candidates = Candidates(images, watcher, PathMapper(str(root), images.derived_folders))

        def fresh() -> Scanner:
            return Scanner(candidates, ShareMonitor(images, watcher))

        bare_walk(str(root))  # warm the dentry cache for both sides alike
        bare = timed(lambda: bare_walk(str(root)), args.repeat)
        first = timed(lambda: fresh().scan(), args.repeat)
        scanner = fresh()
        asyncio.run(scanner.scan())
        assert len(scanner.snapshot) == args.files, len(scanner.snapshot)
        steady = timed(lambda: scanner.scan(), args.repeat)
        changed = touch_some(root, every=PER_FOLDER)
        diff = asyncio.run(scanner.scan())
        assert diff is not None and len(diff.modified) == changed
        with_changes = timed(lambda: scanner.scan(), args.repeat)  # pending until applied: still reported

        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        measured = fresh()
        asyncio.run(measured.scan())
        snapshot_bytes = tracemalloc.get_traced_memory()[0] - before
        walk_peak = tracemalloc.get_traced_memory()[1] - before
        tracemalloc.stop()

    med = statistics.median
    report = {
        "files": args.files,
        "folders": args.files // PER_FOLDER,
        "repeat": args.repeat,
        "bare_walk_seconds": round(med(bare), 4),
        "first_scan_seconds": round(med(first), 4),
        "steady_scan_seconds": round(med(steady), 4),
        "scan_with_changes_seconds": round(med(with_changes), 4),
        "changed_files": changed,
        "ratio_steady_to_bare": round(med(steady) / med(bare), 2),
        "ratio_first_to_bare": round(med(first) / med(bare), 2),
        "snapshot_bytes": snapshot_bytes,
        "snapshot_bytes_per_file": round(snapshot_bytes / args.files, 1),
        "scan_peak_traced_bytes": walk_peak,
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "scan.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"bare os.scandir walk      {report['bare_walk_seconds']:.3f} s per walk (baseline)")
    print(f"scanner, first scan       {report['first_scan_seconds']:.3f} s  ({report['ratio_first_to_bare']}x)")
    print(f"scanner, unchanged share  {report['steady_scan_seconds']:.3f} s  ({report['ratio_steady_to_bare']}x)")
    print(f"scanner, {changed} changed     {report['scan_with_changes_seconds']:.3f} s")
    print(
        f"snapshot                  {snapshot_bytes / 2**20:.1f} MiB ({report['snapshot_bytes_per_file']} B/file),"
        f" scan peak {walk_peak / 2**20:.1f} MiB traced, max RSS {report['max_rss_mib']} MiB"
    )
    print(f"wrote {OUT / 'scan.json'}")


if __name__ == "__main__":
    main()
