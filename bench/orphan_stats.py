"""The regular sweep while orphans are held: it no longer counts the results table (issue 28).

While some orphan is past its grace, every regular sweep reads the orphan stats (the
purge bound is a fraction of the table). Before issue 28's last change the stats were one
scan of the whole table (14.4 s at 10M rows, benchmarks.md section 12, run 2); now the
table is counted only up to OrphanPolicy.count_cap rows (20,001 by default: past it the
bound is orphan_purge_max whatever the size) and the marks are read from the partial
index on orphaned_at.

For each size, on a fresh database: that many results (face_metadata, loaded with
triggers off, no ai_metadata rows needed), of which `--due` are marked orphans past
their grace, more than the purge bound (so they are held, as when an operator has not
confirmed yet). Reported: the old whole-table stats statement (the baseline, timed
here from its text), orphans.stats (what the sweep runs now, with the bound it found,
which must equal the bound of the exact count), and a regular sweep with those orphans
held (median of `--rounds`).

    nice .venv/bin/python -m bench.orphan_stats [--sizes 1000000,10000000] [--due 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable

import asyncpg

from bench import common
from bench.incremental import path_sql
from reactor.store import orphans

# The statement the sweep ran before (sql/orphans.sql orphan_stats_results at 4db24a2).
WHOLE_TABLE_STATS = """
SELECT count(*) AS total,
       count(*) FILTER (WHERE m.orphaned_at IS NOT NULL AND m.model IS NOT NULL) AS marked,
       count(*) FILTER (WHERE m.orphaned_at < now() - make_interval(secs => $1::float8)
                          AND m.model IS NOT NULL
                          AND NOT EXISTS (SELECT 1 FROM ai_metadata a WHERE a.image_path = m.image_path)) AS due,
       min(m.orphaned_at) FILTER (WHERE m.model IS NOT NULL) AS oldest
FROM face_metadata m
"""


async def timed(run: Awaitable[object]) -> float:
    started = time.perf_counter()
    await run
    return time.perf_counter() - started


async def measure(pg: common.Postgres, rows: int, due: int, rounds: int) -> dict[str, object]:
    conn = await asyncpg.connect(pg.dsn)
    pool = await asyncpg.create_pool(pg.dsn, min_size=1, max_size=2)
    try:
        started = time.perf_counter()
        await conn.execute("SET session_replication_role = replica")
        await conn.execute(
            f"INSERT INTO face_metadata (image_path, face_count, model, scale) SELECT {path_sql('i')}, 0, 'hog', 1.0 "
            f"FROM generate_series(0, {rows - 1}) i"
        )
        # A row of ai_metadata so the purge is not skipped as "ai_metadata is empty".
        await conn.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ('elsewhere.jpg', TRUE)")
        await conn.execute(
            "UPDATE face_metadata SET orphaned_at = now() - interval '100 days' WHERE image_path IN "
            "(SELECT image_path FROM face_metadata ORDER BY image_path LIMIT $1)",
            due,
        )
        await conn.execute("SET session_replication_role = DEFAULT")
        await conn.execute("VACUUM ANALYZE face_metadata")
        load_s = time.perf_counter() - started
        policy = orphans.OrphanPolicy()
        exact = await conn.fetchrow(WHOLE_TABLE_STATS, policy.grace_seconds)
        assert exact is not None
        old = [await timed(conn.fetchrow(WHOLE_TABLE_STATS, policy.grace_seconds)) for _ in range(3)]
        new = [await timed(orphans.stats(conn, policy)) for _ in range(rounds)]
        stat = next(s for s in await orphans.stats(conn, policy) if s.table == orphans.RESULTS)
        sweeper = common.sweeper(pool, orphan_policy=policy)
        sweeps = []
        for _ in range(rounds):
            t = time.perf_counter()
            counts = await sweeper.sweep_changes()
            sweeps.append(time.perf_counter() - t)
        return {
            "rows": rows,
            "load_s": round(load_s, 1),
            "due": int(exact["due"]),
            "whole_table_stats_s": round(statistics.median(old), 3),
            "stats_now_s": round(statistics.median(new), 4),
            "bound_now": stat.bound,
            "bound_exact": policy.bound(int(exact["total"])),
            "held": counts.orphans_held,
            "regular_sweep_median_s": round(statistics.median(sweeps), 4),
            "regular_sweep_max_s": round(max(sweeps), 4),
        }
    finally:
        await pool.close()
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--due", type=int, default=2000, help="orphans past their grace (held past 1,000)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    sizes = []
    for rows in (int(n) for n in args.sizes.split(",") if n):
        with common.workdir(args.keep) as work, common.postgres(work) as pg:
            sizes.append(asyncio.run(measure(pg, rows, args.due, args.rounds)))
            print(sizes[-1], flush=True)
    path = common.report("orphan_stats", {"sizes": sizes})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
