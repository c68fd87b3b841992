"""The sweep under a storm: does its work grow with the table?

Two storms in one run, each on a fresh database: 100,000 ai_metadata rows turned to
processed by one UPDATE, on a table of exactly those rows, and on a table that also
holds 900,000 done rows (a result each, interleaved with the storm's paths, as a storm
over a library would be). The reactor runs with bench.fast_engine (no dlib), so the
storm measures the queue, the claims, the writes and the sweep. Reported for each: the
storm's duration and rows/s, the sweeps run (every `sweep_done` event after the UPDATE)
and their total seconds, as a share of the storm. Targets: on 1,000,000 rows the sweeps
take under 10 % of the storm, and rows/s is within 10 % of the 100,000-row storm.

Then the cost of one full sweep cycle (nothing pending: retries, pending, orphans read
through) on 1,000,000 and 3,000,000 done rows, by the Sweeper itself, in this process.

    nice .venv/bin/python -m bench.sweep_storm [--storm 100000] [--cycle-rows 1000000,3000000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import asyncpg

from bench import common
from bench.overhead import tiny_photo


async def _load(conn: asyncpg.Connection, done: list[str], storm: list[str]) -> None:
    await conn.execute("ALTER TABLE ai_metadata DISABLE TRIGGER USER")
    await conn.copy_records_to_table(
        "ai_metadata", records=[(p, True) for p in done], columns=["image_path", "is_processed"]
    )
    await conn.copy_records_to_table(
        "ai_metadata", records=[(p, False) for p in storm], columns=["image_path", "is_processed"]
    )
    await conn.copy_records_to_table(
        "face_metadata",
        records=[(p, 0, "hog", 1.0) for p in done],
        columns=["image_path", "face_count", "model", "scale"],
    )
    await conn.execute("ALTER TABLE ai_metadata ENABLE TRIGGER USER")
    await conn.execute("VACUUM ANALYZE")


def _paths(total: int, storm: int) -> tuple[list[str], list[int]]:
    """Every path of the table, and the indexes of the storm's rows, spread evenly."""
    paths = [f"lib/{i // 1000:04d}/{i:07d}.jpg" for i in range(total)]
    step = total // storm
    return paths, list(range(0, total, step))[:storm]


async def storm_arm(pg: common.Postgres, work: Path, total: int, storm: int, within: float) -> dict[str, object]:
    share = common.make_share(work / "share")
    source = tiny_photo(work / "src")
    paths, chosen = _paths(total, storm)
    storm_paths = []
    for i in chosen:
        target = share / paths[i]
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.hardlink_to(source)
        except OSError:  # past the links one inode takes
            source = tiny_photo(work / f"src{i}")
            target.hardlink_to(source)
        storm_paths.append(paths[i])
    taken = set(chosen)
    done = [p for i, p in enumerate(paths) if i not in taken]
    conn = await asyncpg.connect(pg.dsn)
    try:
        await _load(conn, done, storm_paths)
        config = common.write_config(work / "reactor.toml", pg.dsn, share, detector={"engine": "bench.fast_engine"})
        reactor = common.ReactorProcess(config, work / "reactor.log")
        reactor.start(sample_interval=1.0)
        try:
            await asyncio.to_thread(reactor.wait_event, "sweep_done", 300)
            await asyncio.sleep(2.0)
            before = len(reactor.events("sweep_done"))
            started = time.time()
            await conn.execute("UPDATE ai_metadata SET is_processed = TRUE WHERE NOT is_processed")
            finished = await common.wait_done(conn, total, within, reactor, poll=1.0)
            elapsed = time.time() - started
        finally:
            reactor.stop()
    finally:
        await conn.close()
    sweeps = reactor.events("sweep_done")[before:]
    sweep_s = sum(float(e.get("seconds", 0.0)) for e in sweeps)
    resumed = sum(1 for e in sweeps if e.get("resumed"))
    return {
        "table_rows": total,
        "storm_rows": storm,
        "all_done": finished >= total,
        "storm_s": round(elapsed, 1),
        "rows_per_s": round(storm / elapsed, 1),
        "sweeps": len(sweeps),
        "sweeps_resumed": resumed,
        "sweep_s": round(sweep_s, 1),
        "sweep_share_of_storm": round(sweep_s / elapsed, 3),
        "orphan_passes": sum(1 for e in sweeps if "orphans_skipped" not in e),
    }


async def cycle_cost(pg: common.Postgres, total: int) -> dict[str, object]:
    """One full sweep cycle over ``total`` done rows, nothing pending."""
    paths = [f"lib/{i // 1000:04d}/{i:07d}.jpg" for i in range(total)]
    conn = await asyncpg.connect(pg.dsn)
    try:
        await _load(conn, paths, [])
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(pg.dsn, min_size=1, max_size=2)
    try:
        sweeper = common.sweeper(pool)
        await sweeper.sweep()  # warm the cache, as a running reactor's would be
        started = time.perf_counter()
        counts = await sweeper.sweep()
        seconds = time.perf_counter() - started
    finally:
        await pool.close()
    return {
        "rows": total,
        "cycle_s": round(seconds, 2),
        "orphans": counts.orphans,
        "us_per_row": round(seconds / total * 1e6, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storm", type=int, default=100_000)
    parser.add_argument("--large", type=int, default=1_000_000, help="table rows of the second storm")
    parser.add_argument("--cycle-rows", default="1000000,3000000", help="done rows for the cycle-cost runs")
    parser.add_argument("--timeout", type=float, default=1500.0)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    storms = []
    for total in (args.storm, args.large):
        with common.workdir(args.keep) as work, common.postgres(work) as pg:
            storms.append(asyncio.run(storm_arm(pg, work, total, args.storm, args.timeout)))
            print(storms[-1], flush=True)
    cycles = []
    for total in (int(n) for n in args.cycle_rows.split(",") if n):
        with common.workdir(args.keep) as work, common.postgres(work) as pg:
            cycles.append(asyncio.run(cycle_cost(pg, total)))
            print(cycles[-1], flush=True)
    small, large = storms
    rate = float(large["rows_per_s"]) / float(small["rows_per_s"])  # type: ignore[arg-type]
    result = {
        "small": small,
        "large": large,
        "rows_per_s_large_to_small": round(rate, 3),
        "sweep_share_large": large["sweep_share_of_storm"],
        "cycles": cycles,
        "meets_target": float(large["sweep_share_of_storm"]) < 0.10 and rate >= 0.9,  # type: ignore[arg-type]
    }
    path = common.report("sweep_storm", result)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
