"""Throughput: a backlog of phone-camera-sized photos, `reactor run` against a bare loop.

Input: N (default 200) 4000x3000 JPEGs from reactor.samples.phone_sized, each with one
face, cached in --photos so that later runs skip generating them. The reactor processes
them from processed ai_metadata rows (found by its start-up sweep); the baseline is the
bare single-process loop of bench/bare.py on the same files with the same settings.
Rates are steady-state: (N - 1) / (last completion - first completion), so model
loading is left out of both; the reactor's end-to-end time is reported as well.
Target: the reactor at least as fast as the bare loop (ratio >= 1).

    .venv/bin/python -m bench.throughput [--count 200]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import asyncpg

from bench import common
from bench.bare import bare_loop
from reactor import samples
from reactor.config import DetectorConfig

DEFAULT_PHOTOS = Path("/tmp/face-reactor-bench-photos")


def photos(folder: Path, count: int) -> list[Path]:
    existing = sorted(folder.glob("phone_*.jpg"))
    if len(existing) >= count:
        return existing[:count]
    print(f"generating {count} phone-sized photos in {folder} (once)...", flush=True)
    return [s.path for s in samples.phone_sized(folder, count)]


async def reactor_arm(pg: common.Postgres, work: Path, sources: list[Path], within: float) -> dict[str, object]:
    share = common.make_share(work / "share")
    paths = []
    for src in sources:
        rel = f"phone/{src.name}"
        (share / "phone").mkdir(exist_ok=True)
        (share / rel).hardlink_to(src)
        paths.append(rel)
    conn = await asyncpg.connect(pg.dsn)
    try:
        await conn.copy_records_to_table("ai_metadata", records=[(p, True) for p in paths],
                                         columns=["image_path", "is_processed"])
        config = common.write_config(work / "reactor.toml", pg.dsn, share)
        reactor = common.ReactorProcess(config, work / "reactor.log")
        reactor.start()
        try:
            done = await common.wait_done(conn, len(paths), within, reactor, poll=1.0)
            finished = time.time()
            peak = reactor.peak_rss()
        finally:
            reactor.stop()
        times = await common.commit_times(conn)
        faces = await conn.fetchval("SELECT coalesce(sum(face_count), 0) FROM face_metadata")
        decode = await conn.fetchval("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY decode_ms) FROM face_metadata")
    finally:
        await conn.close()
    return {"done": done, "images_per_s": round(common.steady_rate(times), 3),
            "end_to_end_s": round(finished - reactor.started_wall, 1), "faces": faces,
            "decode_ms_p50": round(decode or 0.0, 1), "peak_rss_mib": common.mib(peak)}


def bare_arm(sources: list[Path]) -> dict[str, object]:
    started = time.time()
    times, faces = bare_loop([str(p) for p in sources], DetectorConfig())
    return {"images_per_s": round(common.steady_rate(times), 3), "end_to_end_s": round(times[-1] - started, 1),
            "faces": faces}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="cache folder for the generated photos")
    parser.add_argument("--timeout", type=float, default=3000.0, help="give up on the reactor arm after this long")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (database, share, log)")
    args = parser.parse_args()
    sources = photos(args.photos, args.count)
    with common.workdir(args.keep) as work, common.postgres(work) as pg:
        reactor = asyncio.run(reactor_arm(pg, work, sources, args.timeout))
    bare = bare_arm(sources)
    ratio = float(reactor["images_per_s"]) / float(bare["images_per_s"])  # type: ignore[arg-type]
    result = {"count": len(sources), "size": "4000x3000 JPEG q90", "reactor": reactor, "bare": bare,
              "ratio_reactor_to_bare": round(ratio, 3), "target_ratio": 1.0, "meets_target": ratio >= 1.0}
    path = common.report("throughput", result)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
