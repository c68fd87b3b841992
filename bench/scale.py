"""Scale: the sweep on a million rows, the reactor's memory, and the query plans.

Data (loaded with triggers off): 1,000,000 processed ai_metadata rows; 990,000 have a
result (face_metadata, zero faces: the sweep never reads face rows), 2,000 have a
failure (half due for a retry, half not), and 8,000 have nothing yet. Their files are
hard links to one tiny JPEG; the detector is bench.fast_engine, so the reactor's
start-up sweep queues the 9,000 due and pending images and works through them.

Reported: the start-up sweep's wall time (its own `sweep_done` seconds), a second sweep
on demand (`reactor sweep`) once the backlog is done, the reactor's peak RSS (VmHWM of
the `reactor run` process; the detector child is reported apart), EXPLAIN (ANALYZE) of
each sweep query's first page on the loaded data (before the reactor starts), and
`reactor audit --skip-files` on the same database.
Baseline, in the same run: the same anti-joins as single unpaginated queries.
Targets: sweep < 5 s, RSS < 300 MB.

    .venv/bin/python -m bench.scale [--rows 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench import common
from bench.overhead import tiny_photo
from reactor.store import sql

TARGET_SWEEP_S = 5.0
TARGET_RSS_MIB = 300.0
# Each sweep query, and the file under sql/ that holds it.
SWEEP_QUERIES = {
    "due_retries": "sweep.sql",
    "pending_images": "sweep.sql",
    "orphan_results": "orphans.sql",
    "orphan_failures": "orphans.sql",
}
# The same questions as the sweep's, asked at once without keyset pages.
BASELINE = {
    "due_retries": """SELECT count(*) FROM face_detection_failures f
        WHERE NOT coalesce(f.permanently_failed, false) AND coalesce(f.next_retry_after, now()) <= now()
          AND EXISTS (SELECT 1 FROM ai_metadata a WHERE a.image_path = f.image_path AND a.is_processed)""",
    "pending_images": """SELECT count(*) FROM ai_metadata a WHERE a.is_processed
          AND NOT EXISTS (SELECT 1 FROM face_metadata m WHERE m.image_path = a.image_path)
          AND NOT EXISTS (SELECT 1 FROM face_detection_failures f WHERE f.image_path = a.image_path)""",
    "orphan_results": """SELECT count(*) FROM face_metadata m
          WHERE NOT EXISTS (SELECT 1 FROM ai_metadata a WHERE a.image_path = m.image_path)""",
    "orphan_failures": """SELECT count(*) FROM face_detection_failures f
          WHERE NOT EXISTS (SELECT 1 FROM ai_metadata a WHERE a.image_path = f.image_path)""",
}


def path_sql(expr: str) -> str:
    return f"'lib/' || lpad(({expr} / 1000)::text, 4, '0') || '/' || lpad({expr}::text, 7, '0') || '.jpg'"


async def load(conn: asyncpg.Connection, rows: int, results: int, failures: int) -> None:
    await conn.execute("SET session_replication_role = replica")  # a bulk load: no trigger
    await conn.execute(f"""INSERT INTO ai_metadata (image_path, is_processed, created_at)
        SELECT {path_sql("i")}, TRUE, now() - interval '1 day' FROM generate_series(0, {rows - 1}) i""")
    await conn.execute(f"""INSERT INTO face_metadata (image_path, face_count, model, scale, detected_at)
        SELECT {path_sql("i")}, 0, 'hog', 1.0, now() - interval '1 day' FROM generate_series(0, {results - 1}) i""")
    await conn.execute(f"""INSERT INTO face_detection_failures
        (image_path, retry_count, last_error, last_error_type, next_retry_after)
        SELECT {path_sql("i")}, 1, 'bench', 'timeout',
               CASE WHEN i % 2 = 0 THEN now() - interval '1 hour' ELSE now() + interval '1 day' END
        FROM generate_series({results}, {results + failures - 1}) i""")
    await conn.execute("SET session_replication_role = DEFAULT")
    await conn.execute("VACUUM ANALYZE ai_metadata")
    await conn.execute("VACUUM ANALYZE face_metadata")
    await conn.execute("VACUUM ANALYZE face_detection_failures")


async def explain(conn: asyncpg.Connection) -> dict[str, dict[str, Any]]:
    plans: dict[str, dict[str, Any]] = {}
    for name, file in SWEEP_QUERIES.items():
        query = sql.blocks(file)[name]
        # pending_images and the orphan pages read a window of the table, up to a path.
        args: tuple[object, ...] = {
            "due_retries": ("", 1000, "bench-explain"),
            "pending_images": ("", 1000, "bench-explain", "\uffff"),
        }.get(name, ("", 1000, "\uffff"))
        rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + query, *args)
        text = "\n".join(r[0] for r in rows)
        started = time.perf_counter()
        await conn.fetchval(BASELINE[name])
        baseline_ms = (time.perf_counter() - started) * 1000.0
        plans[name] = {
            "uses_index": "Index" in text,
            "seq_scans": text.count("Seq Scan"),
            "baseline_unpaginated_ms": round(baseline_ms, 1),
            "plan": text,
        }
    return plans


def reactor_cli(config: Path, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "reactor", "--config", str(config), *args],
        capture_output=True,
        text=True,
        cwd=common.REPO,
        timeout=600,
    )
    return time.perf_counter() - started, out


async def measure(pg: common.Postgres, work: Path, rows: int, within: float) -> dict[str, object]:
    results, failures = rows * 99 // 100, rows // 500
    share = common.make_share(work / "share")
    conn = await asyncpg.connect(pg.dsn)
    try:
        started = time.perf_counter()
        await load(conn, rows, results, failures)
        load_s = time.perf_counter() - started
        todo = [
            r["image_path"]
            for r in await conn.fetch(
                "SELECT image_path FROM ai_metadata a WHERE NOT EXISTS "
                "(SELECT 1 FROM face_metadata m WHERE m.image_path = a.image_path)"
            )
        ]
        # The plans the start-up sweep meets: before any of the backlog is worked off.
        plans = await explain(conn)
        photo = tiny_photo(work / "src")
        for rel in todo:
            (share / rel).parent.mkdir(parents=True, exist_ok=True)
            (share / rel).hardlink_to(photo)
        config = common.write_config(work / "reactor.toml", pg.dsn, share, detector={"engine": "bench.fast_engine"})
        reactor = common.ReactorProcess(config, work / "reactor.log")
        reactor.start()
        try:
            first = (await asyncio.to_thread(reactor.wait_event, "sweep_done", within))[0]
            expected = rows  # every row ends with a result, or its not-yet-due failure
            done = await common.wait_done(conn, expected, within, reactor, poll=1.0)
            second_cli_s, second_out = await asyncio.to_thread(reactor_cli, config, "sweep", "--json")
            sweeps = reactor.events("sweep_done")
            peak = reactor.peak_rss()
            assert reactor.sampler is not None
            child_peak = max((s[2] for s in reactor.sampler.samples), default=0)
        finally:
            reactor.stop()
        audit_s, audit_out = await asyncio.to_thread(reactor_cli, config, "audit", "--skip-files", "--json")
    finally:
        await conn.close()
    second = sweeps[1] if len(sweeps) > 1 else None
    sweep_s = float(first.get("seconds", 0.0))
    baseline_ms = sum(float(p["baseline_unpaginated_ms"]) for p in plans.values())
    return {
        "rows": rows,
        "results": results,
        "failures": failures,
        "load_s": round(load_s, 1),
        "startup_sweep": {k: first.get(k) for k in ("seconds", "retries", "pending", "queued", "orphans", "dropped")},
        "second_sweep": {k: second.get(k) for k in ("seconds", "retries", "pending", "orphans")} if second else None,
        "second_sweep_cli_s": round(second_cli_s, 2),
        "second_sweep_cli_rc": second_out.returncode,
        "done": done,
        "baseline_unpaginated_queries_ms": round(baseline_ms, 1),
        "ratio_sweep_to_baseline": round(sweep_s * 1000.0 / baseline_ms, 2) if baseline_ms else None,
        "reactor_peak_rss_mib": common.mib(peak),
        "detector_child_peak_rss_mib": common.mib(child_peak),
        "target_sweep_s": TARGET_SWEEP_S,
        "target_rss_mib": TARGET_RSS_MIB,
        "meets_sweep_target": sweep_s < TARGET_SWEEP_S,
        "meets_rss_target": common.mib(peak) < TARGET_RSS_MIB,
        "audit_skip_files_s": round(audit_s, 2),
        "audit_rc": audit_out.returncode,
        "explain": plans,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--timeout", type=float, default=540.0, help="give up waiting after this many seconds")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (database, share, log)")
    args = parser.parse_args()
    with common.workdir(args.keep) as work, common.postgres(work) as pg:
        result = asyncio.run(measure(pg, work, args.rows, args.timeout))
    path = common.report("scale", result, skip=("explain",))
    for name, plan in result["explain"].items():  # type: ignore[attr-defined]
        print(f"--- EXPLAIN {name} (index: {plan['uses_index']}, seq scans: {plan['seq_scans']})")
        print(plan["plan"])
    print(f"saved {path}")


if __name__ == "__main__":
    main()
