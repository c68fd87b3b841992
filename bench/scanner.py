"""The polling scanner and the watcher's start-up on a 1,000,000-file share: old vs new (issue 28).

The tree is a photo library of empty files on local disk: ``--folders`` albums (2,000)
of ``--per-folder`` photos (500) under 20 year folders, built once with a fast writer
and reused while its marker is there (``--tree``, under /tmp by default). Each arm runs
in its own process, so each peak RSS (``ru_maxrss``) is that arm's alone:

- scan-old / scan-new: the scanner of commit ``--old-ref`` (the whole-share snapshot,
  ``git show REF:reactor/watch/scanner.py``) and the current one (packed per folder):
  first scan (the baseline) and an unchanged rescan (median of ``--repeat``); RSS after
  the first scan and peak;
- startup-new / startup-old (``--arms startup``): the watcher's start-up baseline
  (``Watcher.rescan("")``: the first scan, reading every registered path, registering the
  share, re-queuing changed failures, comparing results' identities) in standalone mode,
  against an embedded PostgreSQL whose ``ai_metadata`` already holds the 1,000,000
  paths; the old arm runs the watcher and scanner of ``--old-ref``.

Usage: timeout 3000 nice .venv/bin/python -m bench.scanner [--folders 2000 --per-folder 500]
       [--tree DIR] [--keep-tree] [--arms scan-old,scan-new,startup]
Writes bench/out/scanner.json. The tree is deleted at the end unless --keep-tree.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OLD_REF = "7f3f7ec"
RESULT = "RESULT "
YEARS = 20


def tree_marker(root: Path, folders: int, per_folder: int) -> Path:
    return root / f".tree-{folders}x{per_folder}"


def build_tree(root: Path, folders: int, per_folder: int) -> tuple[bool, float]:
    """(reused, seconds): empty photos, ``per_folder`` per album, albums under year folders."""
    marker = tree_marker(root, folders, per_folder)
    if marker.exists():
        return True, 0.0
    if root.exists():
        shutil.rmtree(root)
    started = time.perf_counter()
    root.mkdir(parents=True)
    (root / ".reactor-share").write_text("bench share\n")
    flags = os.O_CREAT | os.O_WRONLY
    n = 0
    for f in range(folders):
        album = root / album_of(f, folders)
        album.mkdir(parents=True, exist_ok=True)
        for _ in range(per_folder):
            os.close(os.open(album / f"IMG_{n:07}.JPG", flags, 0o644))
            n += 1
    marker.touch()
    return False, time.perf_counter() - started


def album_of(f: int, folders: int) -> str:
    return f"{2000 + f * YEARS // folders}/album{f:04}"


def fits(root: Path, files: int, folders: int) -> tuple[bool, str]:
    """Whether /tmp (or the tree's file system) has the inodes and a little space for the tree."""
    probe = root.parent
    st = os.statvfs(probe)
    inodes_free = st.f_favail
    bytes_free = st.f_bavail * st.f_frsize
    need_inodes = files + folders + YEARS + 10
    need_bytes = (folders + YEARS) * 64 * 1024  # directory blocks; the files are empty
    why = f"{inodes_free} inodes and {bytes_free // 2**20} MiB free on {probe}; need {need_inodes} inodes"
    return inodes_free > need_inodes * 1.2 and bytes_free > need_bytes * 4, why


def rss_mib() -> float:
    with open(f"/proc/{os.getpid()}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def install_old(ref: str) -> None:
    """Make ``reactor.watch.scanner`` and ``reactor.watch.watcher`` those of ``ref``."""
    for name in ("scanner", "watcher"):
        source = subprocess.run(
            ["git", "show", f"{ref}:reactor/watch/{name}.py"], cwd=REPO, check=True, capture_output=True, text=True
        ).stdout
        module = types.ModuleType(f"reactor.watch.{name}")
        module.__file__ = f"<{ref}:reactor/watch/{name}.py>"
        sys.modules[module.__name__] = module
        exec(compile(source, module.__file__, "exec"), module.__dict__)


# -- the arms (each in its own process) ---------------------------------------------


def arm_scan(tree: Path, repeat: int) -> dict[str, Any]:
    import dataclasses

    from reactor.config import ImagesConfig, WatcherConfig
    from reactor.paths import PathMapper
    from reactor.watch.candidates import Candidates
    from reactor.watch.scanner import Scanner
    from reactor.watch.share import ShareMonitor

    images = dataclasses.replace(ImagesConfig(), root=str(tree))
    watcher = dataclasses.replace(WatcherConfig(), observer="polling")
    candidates = Candidates(images, watcher, PathMapper(str(tree), images.derived_folders))
    scanner = Scanner(candidates, ShareMonitor(images, watcher))
    rss_start = rss_mib()

    async def run() -> dict[str, Any]:
        started = time.perf_counter()
        assert await scanner.scan() is not None
        first = time.perf_counter() - started
        rss_after_first = rss_mib()
        rescans = []
        for _ in range(repeat):
            started = time.perf_counter()
            d = await scanner.scan()
            rescans.append(time.perf_counter() - started)
            assert d is not None and not d, d
        return {
            "files": len(scanner.snapshot),
            "first_scan_s": round(first, 2),
            "rescan_s": round(statistics.median(rescans), 2),
            "rss_start_mib": round(rss_start, 1),
            "rss_after_first_scan_mib": round(rss_after_first, 1),
            "rss_after_rescans_mib": round(rss_mib(), 1),
            **({"packed_bytes": scanner.snapshot.packed_bytes()} if hasattr(scanner.snapshot, "packed_bytes") else {}),
            "peak_rss_mib": round(peak_mib(), 1),
        }

    return asyncio.run(run())


def arm_startup(tree: Path, dsn: str, config_file: Path) -> dict[str, Any]:
    import asyncpg

    from reactor.config import load
    from reactor.paths import PathMapper
    from reactor.watch.file_events import DatabaseSink
    from reactor.watch.share import ShareMonitor
    from reactor.watch.watcher import Watcher

    config = load(config_file, env={})
    rss_start = rss_mib()

    async def run() -> dict[str, Any]:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        assert pool is not None
        queued = 0

        def enqueue(_path: str, _redetect: bool) -> bool:
            nonlocal queued
            queued += 1
            return True

        try:
            sink = DatabaseSink(pool, enqueue, register_files=True)
            share = ShareMonitor(config.images, config.watcher)
            images = config.images
            watcher = Watcher(
                config, PathMapper(images.root, images.derived_folders, images.max_path_length), share, sink
            )
            assert await share.acheck()
            started = time.perf_counter()
            await watcher.rescan("")
            seconds = time.perf_counter() - started
        finally:
            await pool.close()
        return {
            "files": len(watcher.scanner.snapshot),
            "startup_s": round(seconds, 1),
            "queued": queued,
            "rss_start_mib": round(rss_start, 1),
            "rss_after_mib": round(rss_mib(), 1),
            "peak_rss_mib": round(peak_mib(), 1),
        }

    return asyncio.run(run())


def realistic_packed(folders: int, per_folder: int) -> dict[str, Any]:
    """The packed snapshot's bytes per file for camera-like listings, which compress less
    than the bench tree's empty, sequential files: names IMG_nnnn.JPG with gaps, sizes of
    1.5-8 MB, mtimes anywhere in ten years to the nanosecond, inodes near each other."""
    import random

    from reactor.watch.folders import FolderSnapshot

    rng = random.Random(28)
    snap = FolderSnapshot()
    inode = rng.randrange(2**40)
    for f in range(folders):
        numbers = sorted(rng.sample(range(10_000), per_folder))
        entries = {}
        for n in numbers:
            inode += rng.randrange(1, 50)
            sig = (
                rng.randrange(1_500_000, 8_000_000),
                rng.randrange(1_400_000_000, 1_700_000_000) * 10**9 + rng.randrange(10**9),
                inode,
            )
            entries[f"{rng.choice(('IMG', 'DSC', 'PXL'))}_{n:04}.{rng.choice(('JPG', 'jpg', 'HEIC'))}"] = sig
        snap.put_folder(album_of(f, folders), entries)
    return {
        "files": len(snap),
        "packed_bytes": snap.packed_bytes(),
        "bytes_per_file": round(snap.packed_bytes() / len(snap), 1),
    }


def child(args: argparse.Namespace) -> None:
    if args.arm.endswith("-old"):
        install_old(args.old_ref)
    from reactor import logs

    # Log events (the first scan's progress among them) go to stderr, which the parent passes on.
    logs.configure("json", "info", sys.stderr)
    if args.arm.startswith("scan"):
        result = arm_scan(Path(args.tree), args.repeat)
    else:
        result = arm_startup(Path(args.tree), args.dsn, Path(args.config))
    print(RESULT + json.dumps(result), flush=True)


def run_arm(arm: str, args: argparse.Namespace, *extra: str) -> dict[str, Any]:
    profile = os.environ.get("BENCH_PROFILE")  # cProfile each arm into FILE.<arm>
    cmd = [sys.executable, *(["-m", "cProfile", "-o", f"{profile}.{arm}"] if profile else [])]
    cmd += ["-m", "bench.scanner", "--arm", arm, "--tree", str(args.tree), "--repeat", str(args.repeat)]
    cmd += ["--old-ref", args.old_ref, *extra]
    started = time.perf_counter()
    out = subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.PIPE, text=True).stdout
    line = next(x for x in reversed(out.splitlines()) if x.startswith(RESULT))
    result: dict[str, Any] = json.loads(line[len(RESULT) :])
    result["wall_s"] = round(time.perf_counter() - started, 1)
    print(f"{arm:12} {json.dumps(result)}", flush=True)
    return result


def startup_arms(args: argparse.Namespace, out: dict[str, Any]) -> None:
    from bench import common

    with common.workdir() as work, common.postgres(work) as pg:
        # Every photo of the tree already registered, as after an earlier run.
        started = time.perf_counter()
        pg.psql(
            "INSERT INTO ai_metadata (image_path, is_processed) SELECT "
            f"(2000 + (n / {args.per_folder}) * {YEARS} / {args.folders})::text || '/album' || "
            f"lpad((n / {args.per_folder})::text, 4, '0') || '/IMG_' || lpad(n::text, 7, '0') || '.JPG', TRUE "
            f"FROM generate_series(0, {args.folders * args.per_folder - 1}) AS n; TRUNCATE reactor_changes"
        )
        print(f"registered {args.folders * args.per_folder} paths in {time.perf_counter() - started:.1f} s", flush=True)
        config = common.write_config(
            work / "reactor.toml",
            pg.dsn,
            Path(args.tree),
            images={"register_files": "always"},
            watcher={"enabled": True, "observer": "polling"},
            logging={"format": "json", "level": "warning"},
        )
        for arm in ("startup-new", "startup-old"):
            out[arm] = run_arm(arm, args, "--dsn", pg.dsn, "--config", str(config))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--folders", type=int, default=2000)
    parser.add_argument("--per-folder", type=int, default=500)
    parser.add_argument("--tree", default="/tmp/reactor-bench-scanner-share")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--old-ref", default=OLD_REF)
    parser.add_argument("--keep-tree", action="store_true")
    parser.add_argument("--arms", default="scan-old,scan-new,startup", help="which arms to run (comma-separated)")
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        child(args)
        return
    tree = Path(args.tree)
    files = args.folders * args.per_folder
    ok, why = fits(tree, files, args.folders)
    print(("room: " if ok else "NOT ENOUGH ROOM: ") + why, flush=True)
    if not ok:
        raise SystemExit("pass a smaller --folders/--per-folder, or --tree on a file system with room")
    reused, seconds = build_tree(tree, args.folders, args.per_folder)
    print(f"tree: {files} files in {args.folders} folders {'reused' if reused else f'built in {seconds:.1f} s'}")
    out: dict[str, Any] = {
        "files": files,
        "folders": args.folders,
        "per_folder": args.per_folder,
        "old_ref": args.old_ref,
    }
    out["realistic_packed"] = realistic_packed(args.folders, args.per_folder)
    print(f"packed snapshot of camera-like listings: {json.dumps(out['realistic_packed'])}", flush=True)
    try:
        for arm in ("scan-old", "scan-new"):
            if arm in args.arms:
                out[arm] = run_arm(arm, args)
        if "startup" in args.arms:
            startup_arms(args, out)
    finally:
        if not args.keep_tree:
            shutil.rmtree(tree, ignore_errors=True)
    from bench import common

    path = common.save("scanner", out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
