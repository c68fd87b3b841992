"""Pipeline overhead: thousands of tiny face-less photos through the whole reactor.

Detection costs almost nothing on a 48x48 photo, so images/s through `reactor run`
(sweep -> queue -> claim -> detector child -> persist) measures the reactor itself.
Baseline, in the same run: the bare loop (bench/bare.py) on a slice of the same photos.
Target: at least 200 images/s.

    .venv/bin/python -m bench.overhead [--count 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import asyncpg
from PIL import Image

from bench import common
from bench.bare import bare_loop
from reactor.config import DetectorConfig

TARGET = 200.0


def tiny_photo(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.jpg"
    # A soft gradient: a real JPEG with nothing face-like in it.
    image = Image.linear_gradient("L").resize((48, 48)).convert("RGB")
    image.save(path, quality=90)
    return path


async def load_backlog(dsn: str, paths: list[str]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.copy_records_to_table(
            "ai_metadata", records=[(p, True) for p in paths], columns=["image_path", "is_processed"]
        )
    finally:
        await conn.close()


async def measure(pg: common.Postgres, work: Path, count: int, within: float) -> dict[str, object]:
    share = common.make_share(work / "share")
    paths = common.link_copies(tiny_photo(work / "src"), share, count)
    await load_backlog(pg.dsn, paths)
    config = common.write_config(work / "reactor.toml", pg.dsn, share)
    reactor = common.ReactorProcess(config, work / "reactor.log")
    reactor.start()
    conn = await asyncpg.connect(pg.dsn)
    try:
        done = await common.wait_done(conn, count, within, reactor)
        finished = time.time()
        times = await common.commit_times(conn)
        failures = await conn.fetchval("SELECT count(*) FROM face_detection_failures")
    finally:
        await conn.close()
        peak = reactor.peak_rss()
        reactor.stop()
    rate = common.steady_rate(times)
    baseline_n = min(count, 500)
    bare_times, _ = await asyncio.to_thread(bare_loop, [str(share / p) for p in paths[:baseline_n]], DetectorConfig())
    bare_rate = common.steady_rate(bare_times)
    return {
        "count": count,
        "done": done,
        "failures": failures,
        "reactor_images_per_s": round(rate, 1),
        "reactor_end_to_end_s": round(finished - reactor.started_wall, 1),
        "bare_images_per_s": round(bare_rate, 1),
        "bare_count": baseline_n,
        "ratio_reactor_to_bare": round(rate / bare_rate, 3) if bare_rate else None,
        "target_images_per_s": TARGET,
        "meets_target": rate >= TARGET,
        "reactor_peak_rss_mib": common.mib(peak),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--timeout", type=float, default=540.0, help="give up waiting after this many seconds")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (database, share, log)")
    args = parser.parse_args()
    with common.workdir(args.keep) as work, common.postgres(work) as pg:
        result = asyncio.run(measure(pg, work, args.count, args.timeout))
    path = common.report("overhead", result)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
