"""Event latency: one processed row for a small photo, with the reactor idle.

For each of N events: INSERT one processed ai_metadata row (its own transaction),
then wait for the face_metadata row. Both times are PostgreSQL commit timestamps
(track_commit_timestamp), so no client clock is involved. The reactor's overhead is

    (result commit - ai_metadata commit) - (decode_ms + detect_ms + encode_ms)

i.e. everything that is not detection: NOTIFY delivery, queue, claim, the trip to the
detector child and back, and the result transaction. Baseline, in the same run: the
bare loop on the same photo (its detection time alone). Target: p50 overhead < 20 ms.

    .venv/bin/python -m bench.latency [--events 50]

``--shared FOLDER`` measures instead one new photo shared by the idle lanes (issue 26:
detector.share_idle_lanes, reactor.core.tile_sharing) beside the same photo on one lane:
two detector children, the reactor idle before each photo, the same photos in the same
run (FOLDER: dlib's hand-annotated ``examples/faces``, as bench.recall --annotated; the
astronaut is added), each mode started afresh, in alternating order per round. Per mode:
commit-to-result latency (median, and per photo), recall on the hand-drawn boxes and
how many boxes of one mode the other has (IoU > 0.9 and > 0.5); the ratios are printed.

    .venv/bin/python -m bench.latency --shared /tmp/dlib-faces/examples/faces [--rounds 2] [--enlarge 4]

``--enlarge 4``: the same photos four times wider and higher (bicubic, bench.annotated), as
a camera with more pixels takes them: scanned at the pixel budget (2560x1920), where the
scan is cut into tiles; at their own size (scanned at 1000x750) a photo is located by one
lane and only its faces are checked and encoded side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import time
from pathlib import Path

import asyncpg

from bench import annotated, common, photos
from bench.bare import bare_loop
from reactor.config import DetectorConfig
from reactor.detector.cascade import Box, iou
from reactor.ops import samples

TARGET_P50_MS = 20.0


async def one_event(conn: asyncpg.Connection, path: str, within: float) -> dict[str, float]:
    inserted = await conn.fetchval(
        "INSERT INTO ai_metadata (image_path, is_processed) VALUES ($1, TRUE) RETURNING id", path
    )
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        row = await conn.fetchrow(
            "SELECT extract(epoch FROM pg_xact_commit_timestamp(m.xmin))::float8 AS done,"
            " extract(epoch FROM pg_xact_commit_timestamp(a.xmin))::float8 AS committed,"
            " m.decode_ms + m.detect_ms + m.encode_ms AS detection_ms, m.face_count"
            " FROM face_metadata m JOIN ai_metadata a ON a.image_path = m.image_path WHERE a.id = $1",
            inserted,
        )
        if row is not None:
            total_ms = (row["done"] - row["committed"]) * 1000.0
            return {
                "total_ms": total_ms,
                "detection_ms": row["detection_ms"],
                "overhead_ms": total_ms - row["detection_ms"],
                "faces": row["face_count"],
            }
        await asyncio.sleep(0.005)
    raise TimeoutError(f"no result for {path} within {within} s")


async def measure(pg: common.Postgres, work: Path, events: int, settle: float) -> dict[str, object]:
    share = common.make_share(work / "share")
    photo = samples.write_jpeg(samples.astronaut(), work / "src", "astronaut.jpg")
    # The first event warms the detector child up and is reported apart.
    warmup, *paths = common.link_copies(photo, share, events + 1, folder="events")
    config = common.write_config(work / "reactor.toml", pg.dsn, share)
    reactor = common.ReactorProcess(config, work / "reactor.log")
    reactor.start()
    conn = await asyncpg.connect(pg.dsn)
    results = []
    try:
        # Idle means: listening, the start-up sweep done, and the detector child ready.
        await asyncio.to_thread(reactor.wait_event, "sweep_done", 120)
        warm = await one_event(conn, warmup, 180)
        for path in paths:
            await asyncio.sleep(settle)
            results.append(await one_event(conn, path, 60))
    finally:
        await conn.close()
        reactor.stop()
    overhead = [r["overhead_ms"] for r in results]
    total = [r["total_ms"] for r in results]
    detection = [r["detection_ms"] for r in results]
    bare_times, _ = await asyncio.to_thread(bare_loop, [str(share / p) for p in paths[:20]], DetectorConfig())
    bare_ms = [(b - a) * 1000.0 for a, b in itertools.pairwise(bare_times)]
    p50 = common.percentile(overhead, 50)
    return {
        "events": len(results),
        "first_event_total_ms": round(warm["total_ms"], 1),
        "overhead_p50_ms": round(p50, 1),
        "overhead_p95_ms": round(common.percentile(overhead, 95), 1),
        "total_p50_ms": round(common.percentile(total, 50), 1),
        "total_p95_ms": round(common.percentile(total, 95), 1),
        "reactor_detection_p50_ms": round(common.percentile(detection, 50), 1),
        "bare_detection_p50_ms": round(common.percentile(bare_ms, 50), 1),
        "ratio_total_to_bare_p50": round(common.percentile(total, 50) / common.percentile(bare_ms, 50), 3),
        "target_overhead_p50_ms": TARGET_P50_MS,
        "meets_target": p50 < TARGET_P50_MS,
        "faces_per_event": sorted({r["faces"] for r in results}),
    }


# The astronaut's face as HOG frames it in the 512x512 photo (bench.photos).
_ASTRONAUT_FACE: Box = (76, 265, 166, 175)
MODES = {"one_lane": False, "shared": True}


async def _one_photo(conn: asyncpg.Connection, path: str) -> tuple[float, list[Box]]:
    done = await one_event(conn, path, 300)
    rows = await conn.fetch(
        "SELECT box_top, box_right, box_bottom, box_left FROM face_detections WHERE image_path = $1"
        " ORDER BY face_index",
        path,
    )
    return done["total_ms"], [(r[0], r[1], r[2], r[3]) for r in rows]


async def _run_mode(
    pg: common.Postgres, work: Path, share: Path, mode: str, items: list[photos.Photo], tag: str, settle: float
) -> dict[str, tuple[float, list[Box]]]:
    """Each photo committed with the reactor idle; its latency and the boxes recorded."""
    folder = share / tag
    folder.mkdir(parents=True, exist_ok=True)
    for photo in items:
        os.link(photo.path, folder / photo.path.name)
    detector = {"model": "hog", "workers": 2, "share_idle_lanes": MODES[mode]}
    config = common.write_config(work / f"{tag}.toml", pg.dsn, share, detector=detector)
    reactor = common.ReactorProcess(config, work / f"{tag}.log")
    reactor.start()
    conn = await asyncpg.connect(pg.dsn)
    out: dict[str, tuple[float, list[Box]]] = {}
    try:
        await asyncio.to_thread(reactor.wait_event, "sweep_done", 180)
        # Both children up and warm: the first photo of each lane starts them.
        await asyncio.to_thread(reactor.wait_event, "detector_ready", 180, 2)
        await one_event(conn, f"{tag}/{items[0].path.name}", 300)
        for photo in items[1:] + items[:1]:
            await asyncio.sleep(settle)
            rel = f"{tag}/{photo.path.name}"
            if photo is items[0]:  # its first commit warmed the children up
                rel = f"{tag}/again_{photo.path.name}"
                os.link(photo.path, share / rel)
            out[photo.path.name] = await _one_photo(conn, rel)
    finally:
        await conn.close()
        reactor.stop()
    return out


def _recall(items: list[photos.Photo], found: dict[str, tuple[float, list[Box]]]) -> float:
    hits = total = 0
    for photo in items:
        boxes = found[photo.path.name][1]
        total += len(photo.faces)
        hits += sum(any(iou(face, box) >= photos.MATCH_IOU for box in boxes) for face in photo.faces)
    return hits / max(1, total)


async def measure_shared(
    pg: common.Postgres, work: Path, folder: Path, rounds: int, settle: float, factor: int = 1
) -> dict[str, object]:
    share = common.make_share(work / "share")
    astronaut = samples.write_jpeg(samples.astronaut(), work / "src", "astronaut.jpg")
    items = [photos.Photo(astronaut, (_ASTRONAUT_FACE,)), *annotated.load(folder)]
    if factor > 1:
        # As a camera with more pixels would take them: scanned at the pixel budget, in tiles.
        items = annotated.enlarged(items, work / "enlarged", factor)
    runs: dict[str, list[dict[str, tuple[float, list[Box]]]]] = {mode: [] for mode in MODES}
    for number in range(rounds):
        order = list(MODES) if number % 2 == 0 else list(reversed(MODES))
        for mode in order:
            runs[mode].append(await _run_mode(pg, work, share, mode, items, f"{mode}{number}", settle))
    result: dict[str, object] = {
        "photos": len(items),
        "enlarged": factor,
        "faces": sum(len(p.faces) for p in items),
        "rounds": rounds,
    }
    medians = {}
    for mode, found in runs.items():
        latencies = [ms for run in found for ms, _ in run.values()]
        medians[mode] = common.percentile(latencies, 50)
        result[f"{mode}_p50_ms"] = round(medians[mode], 1)
        result[f"{mode}_p95_ms"] = round(common.percentile(latencies, 95), 1)
        result[f"{mode}_recall"] = round(min(_recall(items, run) for run in found), 3)
        result[f"{mode}_boxes"] = sum(len(boxes) for _, boxes in found[0].values())
    per_photo = {}
    for photo in items:
        name = photo.path.name
        one = [run[name][0] for run in runs["one_lane"]]
        shared = [run[name][0] for run in runs["shared"]]
        per_photo[name] = {"one_lane_ms": round(min(one)), "shared_ms": round(min(shared))}
    result["per_photo_best_ms"] = per_photo
    whole = [box for run in runs["one_lane"][:1] for _, boxes in run.values() for box in boxes]
    pairs = [
        max((iou(a, b) for b in runs["shared"][0][name][1]), default=0.0)
        for name, (_, boxes) in runs["one_lane"][0].items()
        for a in boxes
    ]
    result["one_lane_boxes_matched_iou_0_9"] = f"{sum(p > 0.9 for p in pairs)}/{len(whole)}"
    result["one_lane_boxes_matched_iou_0_5"] = f"{sum(p > 0.5 for p in pairs)}/{len(whole)}"
    result["ratio_shared_to_one_lane_p50"] = round(medians["shared"] / medians["one_lane"], 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--settle", type=float, default=0.3, help="idle seconds before each event")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (database, share, log)")
    parser.add_argument("--shared", type=Path, help="one photo shared by idle lanes vs one lane (annotated folder)")
    parser.add_argument("--rounds", type=int, default=2, help="with --shared: rounds of both modes")
    parser.add_argument("--enlarge", type=int, default=1, help="with --shared: the photos this many times larger")
    args = parser.parse_args()
    with common.workdir(args.keep) as work, common.postgres(work) as pg:
        if args.shared is not None:
            result = asyncio.run(
                measure_shared(pg, work, args.shared, args.rounds, max(args.settle, 1.0), args.enlarge)
            )
            path = common.report(f"latency_shared_x{args.enlarge}" if args.enlarge > 1 else "latency_shared", result)
            print(f"saved {path}")
            return
        result = asyncio.run(measure(pg, work, args.events, args.settle))
    path = common.report("latency", result)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
