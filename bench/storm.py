"""Storm: one bulk UPDATE turns 100,000 ai_metadata rows to processed at once.

The trigger sends one "bulk" hint instead of 100,000 notifications; the reactor's sweep
pages through the rows (keyset pages, waiting for room in the bounded queue) and a fast
detector (bench.fast_engine: no decoding, zero faces) works them off. Reported: the
reactor's RSS over time (every second, with the rows done so far), the time until all
rows are done, and the UPDATE's own time. Baseline, in the same run: the idle reactor's
RSS just before the UPDATE; RSS should stay flat, not grow with the number of rows.

    .venv/bin/python -m bench.storm [--rows 100000] [--timeout 600]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import asyncpg

from bench import common
from bench.overhead import tiny_photo


async def measure(pg: common.Postgres, work: Path, rows: int, within: float) -> dict[str, object]:
    share = common.make_share(work / "share")
    paths = common.link_copies(tiny_photo(work / "src"), share, rows, folder="storm")
    conn = await asyncpg.connect(pg.dsn)
    try:
        await conn.copy_records_to_table(
            "ai_metadata", records=[(p, False) for p in paths], columns=["image_path", "is_processed"]
        )
        await conn.execute("VACUUM ANALYZE ai_metadata")
        config = common.write_config(work / "reactor.toml", pg.dsn, share, detector={"engine": "bench.fast_engine"})
        reactor = common.ReactorProcess(config, work / "reactor.log")
        reactor.start(sample_interval=1.0)
        assert reactor.sampler is not None
        timeline: list[dict[str, float]] = []
        try:
            await asyncio.to_thread(reactor.wait_event, "sweep_done", 120)
            await asyncio.sleep(2.0)  # let the detector child start and the reactor settle
            idle = reactor.sampler.samples[-1][1]
            started = time.time()
            await conn.execute("UPDATE ai_metadata SET is_processed = TRUE WHERE NOT is_processed")
            update_s = time.time() - started
            done = 0
            deadline = time.monotonic() + within
            while time.monotonic() < deadline and done < rows:
                await asyncio.sleep(1.0)
                if not reactor.alive():
                    raise RuntimeError(f"reactor exited; see {reactor.log_file}")
                done = await conn.fetchval(
                    "SELECT (SELECT count(*) FROM face_metadata) + (SELECT count(*) FROM face_detection_failures)"
                )
                _, main_rss, child_rss = reactor.sampler.samples[-1]
                timeline.append(
                    {
                        "t": round(time.time() - started, 1),
                        "done": done,
                        "rss_mib": common.mib(main_rss),
                        "child_rss_mib": common.mib(child_rss),
                    }
                )
            elapsed = time.time() - started
            peak = reactor.peak_rss()
        finally:
            reactor.stop()
        bulk_hints = len(reactor.events("sweep_done"))
    finally:
        await conn.close()
    storm_rss = [p["rss_mib"] for p in timeline]

    def rss_at(fraction: float) -> float | None:
        for point in timeline:
            if point["done"] >= fraction * rows:
                return point["rss_mib"]
        return None

    return {
        "rows": rows,
        "done": done,
        "all_done": done >= rows,
        "seconds_until_all_done": round(elapsed, 1) if done >= rows else None,
        "seconds_measured": round(elapsed, 1),
        "rows_per_s": round(done / elapsed, 1) if elapsed else None,
        "update_statement_s": round(update_s, 2),
        "sweeps": bulk_hints,
        "idle_rss_mib": common.mib(idle),
        "storm_max_rss_mib": max(storm_rss, default=None),
        "rss_at_10pct_mib": rss_at(0.1),
        "rss_at_50pct_mib": rss_at(0.5),
        "rss_at_90pct_mib": rss_at(0.9),
        "peak_hwm_mib": common.mib(peak),
        "ratio_storm_max_to_idle": round(max(storm_rss) / common.mib(idle), 3) if storm_rss and idle else None,
        "timeline": timeline[:: max(1, len(timeline) // 60)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=600.0, help="stop measuring after this many seconds")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (database, share, log)")
    args = parser.parse_args()
    with common.workdir(args.keep) as work, common.postgres(work) as pg:
        result = asyncio.run(measure(pg, work, args.rows, args.timeout))
    path = common.report("storm", result, skip=("timeline",))
    for point in result["timeline"]:  # type: ignore[attr-defined]
        print(
            f"  t={point['t']:>7}s done={point['done']:>7} rss={point['rss_mib']} MiB "
            f"child={point['child_rss_mib']} MiB"
        )
    print(f"saved {path}")


if __name__ == "__main__":
    main()
