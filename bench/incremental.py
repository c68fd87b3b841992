"""The incremental sweep: a regular sweep costs what changed, not the table (issue 28).

For each table size (1,000,000 and 10,000,000 by default), on a fresh database: that
many processed ai_metadata rows, each with a result, loaded with triggers off. Then:

- the full walk (Sweeper.sweep in chunks of `--chunk-pages` pages, no pause), as the
  background job runs it: its total time, its longest chunk (how long it holds the
  sweep's lock at a time), its rows, and the bench process's RSS. It is also the
  baseline: before the change log, every regular sweep was such a cycle.
- `--rounds` regular sweeps (Sweeper.sweep_changes), each after a trickle of
  `--changes` changes through the trigger: 70 % new processed rows (pending: queued),
  30 % deleted rows with a result (marked as orphans, inside their grace). Reported:
  the median and the slowest sweep, and the ratio of the median to the full walk.

Targets: the regular sweep under 1 s at every size, and its median at the largest
size within 1.5x of the smallest's (the same cost at 1M and 10M).

    nice .venv/bin/python -m bench.incremental [--sizes 1000000,10000000] [--changes 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import time

import asyncpg
import psutil

from bench import common
from reactor.core.sweep import Sweeper

TARGET_SWEEP_S = 1.0
TARGET_SIZE_RATIO = 1.5


def path_sql(expr: str) -> str:
    return f"'lib/' || lpad(({expr} / 1000)::text, 5, '0') || '/' || lpad({expr}::text, 8, '0') || '.jpg'"


async def load(conn: asyncpg.Connection, rows: int) -> float:
    started = time.perf_counter()
    await conn.execute("SET session_replication_role = replica")  # a bulk load: no trigger
    await conn.execute(
        f"INSERT INTO ai_metadata (image_path, is_processed) SELECT {path_sql('i')}, TRUE "
        f"FROM generate_series(0, {rows - 1}) i"
    )
    await conn.execute(
        f"INSERT INTO face_metadata (image_path, face_count, model, scale) SELECT {path_sql('i')}, 0, 'hog', 1.0 "
        f"FROM generate_series(0, {rows - 1}) i"
    )
    await conn.execute("SET session_replication_role = DEFAULT")
    await conn.execute("VACUUM ANALYZE ai_metadata")
    await conn.execute("VACUUM ANALYZE face_metadata")
    return time.perf_counter() - started


def rss_mib() -> float:
    return common.mib(psutil.Process().memory_info().rss)


async def full_walk(sweeper: Sweeper, chunk_pages: int) -> dict[str, object]:
    rss_before = rss_mib()
    chunks: list[float] = []
    rows = orphans = 0
    started = time.perf_counter()
    while True:
        t = time.perf_counter()
        counts = await sweeper.sweep(pages=chunk_pages)
        chunks.append(time.perf_counter() - t)
        rows += counts.retries + counts.pending
        orphans += counts.orphans
        while sweeper.queue.get_nowait() is not None:
            pass
        if not counts.paused and not counts.deferred:
            break
    total = time.perf_counter() - started
    return {
        "walk_s": round(total, 2),
        "chunks": len(chunks),
        "longest_chunk_s": round(max(chunks), 3),
        "pending_found": rows,
        "orphans_marked": orphans,
        "rss_before_mib": rss_before,
        "rss_after_mib": rss_mib(),
    }


async def trickle(conn: asyncpg.Connection, rows: int, changes: int, round_no: int) -> None:
    """`changes` changes through the trigger: new processed rows, and deleted done rows."""
    new = changes * 7 // 10
    gone = changes - new
    await conn.execute(
        f"INSERT INTO ai_metadata (image_path, is_processed) "
        f"SELECT 'new/{round_no:03d}/' || i || '.jpg', TRUE FROM generate_series(1, {new}) i"
    )
    # Spread over the table, a different stretch each round.
    step = max(1, rows // gone)
    await conn.execute(
        f"DELETE FROM ai_metadata WHERE image_path IN "
        f"(SELECT {path_sql('i')} FROM generate_series({round_no}, {rows - 1}, {step}) i LIMIT {gone})"
    )


async def measure(pg: common.Postgres, rows: int, args: argparse.Namespace) -> dict[str, object]:
    conn = await asyncpg.connect(pg.dsn)
    pool = await asyncpg.create_pool(pg.dsn, min_size=1, max_size=2)
    try:
        load_s = await load(conn, rows)
        print(f"{rows}: loaded in {load_s:.0f} s", flush=True)
        sweeper = common.sweeper(pool)
        walk = await full_walk(sweeper, args.chunk_pages)
        print(f"{rows}: walk {walk}", flush=True)
        await sweeper.sweep_changes()  # the log is empty: warm its statements
        seconds: list[float] = []
        queued = marked = 0
        for r in range(args.rounds):
            await trickle(conn, rows, args.changes, r)
            counts = await sweeper.sweep_changes()
            seconds.append(counts.seconds)
            queued += counts.queued
            marked += counts.orphans
            while sweeper.queue.get_nowait() is not None:
                pass
        median = statistics.median(seconds)
        return {
            "rows": rows,
            "load_s": round(load_s, 1),
            **walk,
            "regular_median_s": round(median, 3),
            "regular_max_s": round(max(seconds), 3),
            "regular_rounds": len(seconds),
            "changes_per_round": args.changes,
            "queued": queued,
            "orphans_marked_by_log": marked,
            "regular_to_walk": round(median / float(walk["walk_s"]), 5),  # type: ignore[arg-type]
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
    finally:
        await pool.close()
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,10000000", help="table rows, comma-separated")
    parser.add_argument("--changes", type=int, default=1000, help="changes before each regular sweep")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--chunk-pages", type=int, default=10)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    sizes = []
    for rows in (int(n) for n in args.sizes.split(",") if n):
        with common.workdir(args.keep) as work, common.postgres(work) as pg:
            sizes.append(asyncio.run(measure(pg, rows, args)))
            print(sizes[-1], flush=True)
    small, large = sizes[0], sizes[-1]
    ratio = float(large["regular_median_s"]) / max(float(small["regular_median_s"]), 1e-6)  # type: ignore[arg-type]
    result = {
        "sizes": sizes,
        "regular_largest_to_smallest": round(ratio, 2),
        "meets_target": all(float(s["regular_max_s"]) < TARGET_SWEEP_S for s in sizes)  # type: ignore[arg-type]
        and ratio <= TARGET_SIZE_RATIO,
    }
    path = common.report("incremental", result)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
