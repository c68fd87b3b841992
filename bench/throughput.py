"""Throughput: phone photos with 1-7 faces, `reactor run` at its defaults against the
legacy worker's settings, in one run, on the same files.

Input: N (default 40) 4000x3000 JPEGs from bench.photos (group photos made at 1600x1200
with faces 40-120 px wide, enlarged 2.5x: faces 100-300 px), cached in --photos. The
reactor arm is `reactor run` with the default detector settings (a pixel budget per
model, one detector child per core) finding them through its start-up sweep; the
baseline is bench/bare.py's legacy_loop: HOG at 1280 px, upsample 1, one process.
Rates are steady-state, (N - 1) / (last completion - first completion), so model loading
is left out of both. Each arm reports its time per stage, the busy share of every core
(the whole machine's, other users included, with the load average) and its own CPU
seconds per image; recall and false positives are counted against the pasted faces.
Target: ratio >= 1.5 with recall 1.00 and no false positive.

    nice .venv/bin/python -m bench.throughput [--count 40]
"""

from __future__ import annotations

import argparse
import asyncio
import pickle
import resource
import time
from pathlib import Path

import asyncpg

from bench import common, photos
from bench.bare import legacy_loop
from bench.cpu import CoreUsage, process_seconds
from reactor.detector.cascade import Box

DEFAULT_PHOTOS = Path("/tmp/face-reactor-bench-groups")
TARGET_RATIO = 1.5


def phone_photos(folder: Path, count: int) -> list[photos.Photo]:
    """The cached set, or a new one (the truth is kept beside the files)."""
    index = folder / f"truth_{count}.pickle"
    if index.is_file():
        cached: list[photos.Photo] = pickle.loads(index.read_bytes())
        if all(p.path.is_file() for p in cached):
            return cached
    print(f"generating {count} phone-sized group photos in {folder} (once)...", flush=True)
    made = photos.build(folder, count, seed=1600, face_px=(40, 120), faces=(1, 7))["enlarged"]
    index.write_bytes(pickle.dumps(made))
    return made


async def reactor_arm(pg: common.Postgres, work: Path, sources: list[photos.Photo], within: float) -> dict[str, object]:
    share = common.make_share(work / "share")
    (share / "phone").mkdir(exist_ok=True)
    truth: dict[str, tuple[Box, ...]] = {}
    for photo in sources:
        rel = f"phone/{photo.path.name}"
        (share / rel).hardlink_to(photo.path)
        truth[rel] = photo.faces
    conn = await asyncpg.connect(pg.dsn)
    try:
        await conn.copy_records_to_table(
            "ai_metadata", records=[(p, True) for p in truth], columns=["image_path", "is_processed"]
        )
        config = common.write_config(work / "reactor.toml", pg.dsn, share)
        reactor = common.ReactorProcess(config, work / "reactor.log")
        usage = CoreUsage().start()
        reactor.start()
        try:
            done = await common.wait_done(conn, len(truth), within, reactor, poll=0.5)
            assert reactor.proc is not None
            cpu_seconds = process_seconds(reactor.proc.pid)
            cores = usage.stop()
            finished = time.time()
            peak = reactor.peak_rss()
        finally:
            reactor.stop()
        times = await common.commit_times(conn)
        stages = await conn.fetchrow(
            "SELECT avg(decode_ms) AS decode, avg(detect_ms) AS detect, avg(encode_ms) AS encode, "
            "min(detect_width) || 'x' || min(detect_height) AS size, max(min_face_px) AS min_face "
            "FROM face_metadata"
        )
        rows = await conn.fetch("SELECT image_path, box_top, box_right, box_bottom, box_left FROM face_detections")
        failures = await conn.fetchval("SELECT count(*) FROM face_detection_failures")
    finally:
        await conn.close()
    found: dict[str, list[Box]] = {path: [] for path in truth}
    for r in rows:
        found[r["image_path"]].append((r["box_top"], r["box_right"], r["box_bottom"], r["box_left"]))
    score = photos.Score()
    for path, boxes in truth.items():
        score.add(boxes, found[path])
    lanes = reactor.events("detection_lanes")
    assert stages is not None
    return {
        "done": done,
        "failures": failures,
        "images_per_s": round(common.steady_rate(times), 3),
        "end_to_end_s": round(finished - reactor.started_wall, 1),
        "children": lanes[0]["lanes"] if lanes else 1,
        "detect_size": stages["size"],
        "smallest_face_px": stages["min_face"],
        "ms_per_image": {k: round(float(stages[k] or 0.0), 1) for k in ("decode", "detect", "encode")},
        "cpu_s_per_image": round(cpu_seconds / max(1, len(truth)), 2),
        **cores,
        "peak_rss_mib": common.mib(peak),
        **score.as_dict(),
    }


def legacy_arm(sources: list[photos.Photo]) -> dict[str, object]:
    started = time.time()
    before = resource.getrusage(resource.RUSAGE_SELF)
    usage = CoreUsage().start()
    times, boxes, stages = legacy_loop([str(p.path) for p in sources])
    cores = usage.stop()
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    score = photos.Score()
    for photo, found in zip(sources, boxes, strict=True):
        score.add(photo.faces, found)
    return {
        "images_per_s": round(common.steady_rate(times), 3),
        "end_to_end_s": round(times[-1] - started, 1),
        "detect_size": "1280x960, upsample 1",
        "smallest_face_px": 125,
        "ms_per_image": stages.as_ms_per_image(),
        "cpu_s_per_image": round(cpu / max(1, len(sources)), 2),
        **cores,
        **score.as_dict(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="cache folder for the generated photos")
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up on the reactor arm after this long")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (database, share, log)")
    args = parser.parse_args()
    sources = phone_photos(args.photos, args.count)
    with common.workdir(args.keep) as work, common.postgres(work) as pg:
        reactor = asyncio.run(reactor_arm(pg, work, sources, args.timeout))
    legacy = legacy_arm(sources)
    ratio = float(reactor["images_per_s"]) / float(legacy["images_per_s"])  # type: ignore[arg-type]
    faces = sum(len(p.faces) for p in sources)
    goal = ratio >= TARGET_RATIO and reactor["recall"] == 1.0 and reactor["false_positives"] == 0
    result = {
        "count": len(sources),
        "faces": faces,
        "size": "4000x3000 JPEG q90, 1-7 faces of 100-300 px",
        "reactor": reactor,
        "legacy": legacy,
        "ratio_reactor_to_legacy": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "meets_goal": goal,
    }
    path = common.report("throughput", result)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
