"""Event latency: one processed row for a small photo, with the reactor idle.

For each of N events: INSERT one processed ai_metadata row (its own transaction),
then wait for the face_metadata row. Both times are PostgreSQL commit timestamps
(track_commit_timestamp), so no client clock is involved. The reactor's overhead is

    (result commit - ai_metadata commit) - (decode_ms + detect_ms + encode_ms)

i.e. everything that is not detection: NOTIFY delivery, queue, claim, the trip to the
detector child and back, and the result transaction. Baseline, in the same run: the
bare loop on the same photo (its detection time alone). Target: p50 overhead < 20 ms.

    .venv/bin/python -m bench.latency [--events 50]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from pathlib import Path

import asyncpg

from bench import common
from bench.bare import bare_loop
from reactor.config import DetectorConfig
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--settle", type=float, default=0.3, help="idle seconds before each event")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (database, share, log)")
    args = parser.parse_args()
    with common.workdir(args.keep) as work, common.postgres(work) as pg:
        result = asyncio.run(measure(pg, work, args.events, args.settle))
    path = common.report("latency", result)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
