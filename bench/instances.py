"""Instances that add up: one storm worked by 1, 2 and 4 reactors on one database (issue 28).

Per arm, a fresh database: `--rows` tiny photos (hard links to one JPEG) with their
ai_metadata rows unprocessed, loaded with triggers off; k `reactor run` processes (one
detector child each) start and finish their start-up sweep and see each other's
heartbeats; then one UPDATE turns every row to processed (a storm: one `bulk` hint, the
rows in the change log), or statements of `--batch` rows (a notification per row).
Reported per arm: the storm's duration and rows/s (first to last commit of a result),
results per instance, claim attempts (the claim token sequence advances on every attempt,
won or lost: rows x instances means every instance tried every image), images detected
more than once (the engine's record of its detections) and results written twice (fenced
writes in the logs), and the CPU seconds the PostgreSQL server spent (every server
process, from /proc). Ratios against the 1-instance arm of the same run.

The engine: `--detect-ms N` (the default, 30) uses bench.gpu_engine, a stand-in for a
GPU machine that spends a fixed N ms per image, so that throughput is bound by detection
as on separate GPU machines and not by this machine's two cores; `--detect-ms 0` uses
bench.fast_engine (instant), which measures the reactors and PostgreSQL sharing the CPU.

Target (issue 28): 4 instances at least 3x one instance's rows/s, nothing written twice.

    nice .venv/bin/python -m bench.instances [--rows 2000] [--instances 1,2,4] [--batch 500] [--detect-ms 30]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import asyncpg
import psutil

from bench import common
from bench.overhead import tiny_photo


def server_cpu(pgdata: Path) -> float:
    """CPU seconds of the PostgreSQL server and every backend so far."""
    postmaster = psutil.Process(int((pgdata / "postmaster.pid").read_text().split()[0]))
    total = 0.0
    for proc in [postmaster, *postmaster.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


async def storm(conn: asyncpg.Connection, batch: int) -> None:
    """Every row to processed: one statement (batch 0: a `bulk` hint, the rows reach the
    instances through the sweep), or statements of `batch` rows (a notification per row,
    which every instance receives)."""
    if not batch:
        await conn.execute("UPDATE ai_metadata SET is_processed = TRUE")
        return
    while rows := await conn.fetch(
        "UPDATE ai_metadata SET is_processed = TRUE WHERE image_path IN "
        "(SELECT image_path FROM ai_metadata WHERE NOT is_processed ORDER BY image_path LIMIT $1) RETURNING 1",
        batch,
    ):
        del rows


async def wait_heartbeats(conn: asyncpg.Connection, instances: int, within: float) -> None:
    """Until every instance has a heartbeat row (each then knows its share of the work)."""
    deadline = time.monotonic() + within
    while await conn.fetchval("SELECT count(*) FROM reactor_instances") < instances:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {instances} heartbeats within {within} s")
        await asyncio.sleep(0.2)


async def arm(
    pg: common.Postgres, work: Path, rows: int, instances: int, within: float, batch: int, detect_ms: float
) -> dict[str, object]:
    share = common.make_share(work / "share")
    paths = common.link_copies(tiny_photo(work / "src"), share, rows)
    conn = await asyncpg.connect(pg.dsn)
    try:
        await conn.execute("ALTER TABLE ai_metadata DISABLE TRIGGER USER")
        await conn.copy_records_to_table(
            "ai_metadata", records=[(p, False) for p in paths], columns=["image_path", "is_processed"]
        )
        await conn.execute("ALTER TABLE ai_metadata ENABLE TRIGGER USER")
        await conn.execute("VACUUM ANALYZE ai_metadata")
        engine = "bench.gpu_engine" if detect_ms > 0 else "bench.fast_engine"
        config = common.write_config(
            work / "reactor.toml",
            pg.dsn,
            share,
            detector={"engine": engine, "workers": 1},
            health={"heartbeat_seconds": 1.0},
        )
        detections = work / "detections.txt"
        env = {"BENCH_DETECT_MS": str(detect_ms), "BENCH_DETECT_LOG": str(detections)}
        reactors = [common.ReactorProcess(config, work / f"reactor{i}.log", env) for i in range(instances)]
        for r in reactors:
            r.start(sample_interval=1.0)
        try:
            for r in reactors:
                await asyncio.to_thread(r.wait_event, "sweep_done", 120)
            await wait_heartbeats(conn, instances, 60)
            # One more beat: each instance has read the others' rows (work_share_changed).
            await asyncio.sleep(2.5)
            tokens_before = await conn.fetchval("SELECT last_value FROM reactor_claim_token_seq")
            cpu_before = server_cpu(pg.pgdata)
            started = time.time()
            await storm(conn, batch)
            done = await common.wait_done(conn, rows, within, reactors[0], poll=0.5)
            elapsed = time.time() - started
            cpu = server_cpu(pg.pgdata) - cpu_before
            tokens = await conn.fetchval("SELECT last_value FROM reactor_claim_token_seq") - tokens_before
            per_instance = {
                r["instance_id"]: r["n"]
                for r in await conn.fetch("SELECT instance_id, count(*) AS n FROM face_metadata GROUP BY 1")
            }
            rate = common.steady_rate(await common.commit_times(conn))
        finally:
            for r in reactors:
                r.stop()
    finally:
        await conn.close()
    fenced = sum(len(r.events("result_fenced")) for r in reactors)
    detected = detections.read_text().splitlines() if detections.exists() else []
    return {
        "instances": instances,
        "rows": rows,
        "statement_rows": batch or rows,
        "all_done": done >= rows,
        "storm_s": round(elapsed, 1),
        "rows_per_s": round(rate, 1),
        "results_per_instance": sorted(per_instance.values()),
        "claim_attempts": int(tokens) + 1,
        "detections": len(detected),
        "detected_twice": len(detected) - len(set(detected)),
        "written_twice": fenced,
        "db_cpu_s": round(cpu, 1),
        "db_cpu_ms_per_row": round(cpu / rows * 1000, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--detect-ms", type=float, default=30.0, help="ms per image (0: the instant fast engine)")
    parser.add_argument("--instances", default="1,2,4")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--batch", type=int, default=0, help="rows per UPDATE (0: one statement)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    arms = []
    for k in (int(n) for n in args.instances.split(",") if n):
        with common.workdir(args.keep) as work, common.postgres(work) as pg:
            arms.append(asyncio.run(arm(pg, work, args.rows, k, args.timeout, args.batch, args.detect_ms)))
            print(arms[-1], flush=True)
    base = float(arms[0]["rows_per_s"]) or 1.0  # type: ignore[arg-type]
    result = {
        "arms": arms,
        "rows_per_s_to_one": {a["instances"]: round(float(a["rows_per_s"]) / base, 2) for a in arms},  # type: ignore[arg-type]
        "nothing_twice": all(a["written_twice"] == 0 for a in arms),
        "detect_ms": args.detect_ms,
    }
    path = common.report(f"instances_batch{args.batch}_ms{args.detect_ms:g}", result)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
