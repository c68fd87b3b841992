"""The reactor as real processes (`python -m reactor run`): `reactor sweep` against a
running reactor, SIGTERM, `sweep --once` without a daemon (kill -9 and two instances are
in test_reactor_crash.py)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from reactor.config import cpu_cores
from reactor.handlers.common import PORTABLE_SIGNALS_ENV
from tests.reactor_support import (
    REPO,
    ReactorProcess,
    add_processed,
    count_results,
    outcomes,
    process_config,
    wait_until,
    write_photos,
)


async def test_reactor_sweep_asks_the_running_reactor_and_prints_counts(
    conn: asyncpg.Connection, dsn: str, share: Path, tmp_path: Path, procs: list[ReactorProcess]
) -> None:
    config = process_config(tmp_path, dsn, share, "swept", sweep={"interval_seconds": 3600.0, "poll_seconds": 3600.0})
    reactor = ReactorProcess(config, tmp_path / "reactor.log").start()
    procs.append(reactor)
    await reactor.wait_event("sweep_done", 60)  # the start-up sweep, after LISTEN
    paths = write_photos(share, [f"missed/{i}.jpg" for i in range(3)])
    # Rows whose notifications never arrive: only a sweep can find them.
    await conn.execute("ALTER TABLE ai_metadata DISABLE TRIGGER USER")
    await add_processed(conn, paths)
    await conn.execute("ALTER TABLE ai_metadata ENABLE TRIGGER USER")
    # No notification came; the change log has the rows (as for a statement past the bulk threshold).
    await conn.execute("SELECT reactor_log_changes($1::text[])", paths)

    def command(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "reactor", "--config", str(config), "--log-format", "json", "sweep", *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )

    dry = await asyncio.to_thread(command, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert sorted(line for line in dry.stdout.splitlines() if line.startswith("pending")) == [
        f"pending\t{p}" for p in paths
    ]
    assert await count_results(conn, paths) == 0
    swept = await asyncio.to_thread(command)
    assert swept.returncode == 0, swept.stderr
    assert "sweep by " in swept.stdout and "pending=3" in swept.stdout and "queued=3" in swept.stdout

    async def all_done() -> bool:
        return await count_results(conn, paths) == len(paths)

    await wait_until(all_done, 90, "the swept rows to be detected")
    assert reactor.stop() == 0
    assert reactor.events("reactor_stopped")
    assert await conn.fetchval("SELECT count(*) FROM reactor_instances") == 0
    alone = await asyncio.to_thread(command)
    assert alone.returncode == 2 and "no running reactor" in alone.stderr


@pytest.mark.parametrize(
    ("sig", "env"),
    [
        (signal.SIGTERM, {}),
        # Ctrl+C through the handlers Windows uses (signal.signal + call_soon_threadsafe), which
        # is how NSSM stops the service there.
        (signal.SIGINT, {PORTABLE_SIGNALS_ENV: "1"}),
    ],
    ids=["sigterm", "ctrl_c_windows_handlers"],
)
async def test_sigterm_mid_image_writes_its_outcome_and_exits_0(
    conn: asyncpg.Connection,
    dsn: str,
    share: Path,
    tmp_path: Path,
    procs: list[ReactorProcess],
    sig: signal.Signals,
    env: dict[str, str],
) -> None:
    # The test engine never answers for this file, so the image in flight ends by the
    # per-image timeout, during the shutdown.
    config = process_config(
        tmp_path,
        dsn,
        share,
        "sigterm",
        detector={"engine": "tests.fault_engine", "timeout_seconds": 8.0},
        service={"shutdown_grace_seconds": 30.0},
        sweep={"interval_seconds": 3600.0, "poll_seconds": 3600.0},
    )
    paths = write_photos(share, ["slow/__hang__.jpg", "slow/next.jpg"])
    reactor = ReactorProcess(config, tmp_path / "reactor.log", env=env).start()
    procs.append(reactor)
    await reactor.wait_event("detector_ready", 90)
    await add_processed(conn, paths[:1])

    async def in_flight() -> bool:
        state: str | None = await conn.fetchval("SELECT state ->> 'current_image' FROM reactor_instances")
        return state == paths[0]

    await wait_until(in_flight, 60, "the slow image to be in flight")
    await add_processed(conn, paths[1:])
    assert await asyncio.to_thread(reactor.stop, 60, sig) == 0
    assert reactor.events("stop_requested")[0]["signal"] == sig.name
    found = await outcomes(conn)
    # The image in flight got its outcome; the queued one was either detected by another
    # child before the stop, or left for the next run, never half done.
    assert found.pop(paths[0]) == ["failure:timeout"]
    assert found in ({}, {paths[1]: ["result"]})
    assert await conn.fetchval("SELECT count(*) FROM reactor_claims") == 0
    assert reactor.events("reactor_stopping") and reactor.events("reactor_stopped")


@pytest.mark.skipif(cpu_cores() < 2, reason="two detector children need two cores")
async def test_sigterm_with_both_children_busy_writes_both_outcomes(
    conn: asyncpg.Connection, dsn: str, share: Path, tmp_path: Path, procs: list[ReactorProcess]
) -> None:
    config = process_config(
        tmp_path,
        dsn,
        share,
        "sigterm2",
        detector={"engine": "tests.fault_engine", "workers": 2, "timeout_seconds": 30.0},
        service={"shutdown_grace_seconds": 60.0},
        sweep={"interval_seconds": 3600.0, "poll_seconds": 3600.0},
    )
    paths = write_photos(share, ["busy/a__slow_4__.jpg", "busy/b__slow_4__.jpg", "busy/queued.jpg"])
    reactor = ReactorProcess(config, tmp_path / "reactor.log").start()
    procs.append(reactor)
    await reactor.wait_event("detection_lanes", 90)

    async def both_ready() -> bool:
        return len(reactor.events("detector_ready")) == 2

    await wait_until(both_ready, 90, "both children to load their models")
    await add_processed(conn, paths[:2])

    async def both_busy() -> bool:
        state = await conn.fetchval("SELECT state -> 'detectors' FROM reactor_instances")
        children = json.loads(state) if state else []
        return sorted(c["current_image"] or "" for c in children) == paths[:2]

    await wait_until(both_busy, 60, "both children to be busy")
    await add_processed(conn, paths[2:])
    assert await asyncio.to_thread(reactor.stop, 60) == 0
    found = await outcomes(conn)
    # Each child's image finished and was written during the shutdown.
    assert found.get(paths[0]) == ["result"] and found.get(paths[1]) == ["result"]
    assert paths[2] not in found or found[paths[2]] == ["result"]
    assert await conn.fetchval("SELECT count(*) FROM reactor_claims") == 0


async def test_sweep_once_processes_the_backlog_without_a_daemon(
    conn: asyncpg.Connection, dsn: str, share: Path, tmp_path: Path
) -> None:
    config = process_config(tmp_path, dsn, share, "once")
    paths = write_photos(share, [f"once/{i}.jpg" for i in range(3)])
    await add_processed(conn, paths)
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "reactor", "--config", str(config), "sweep", "--once", "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=170,
    )
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout)
    assert (counts["pending"], counts["queued"], counts["processed"]) == (3, 3, 3)
    assert await count_results(conn, paths) == 3
    assert await conn.fetchval("SELECT count(*) FROM reactor_claims") == 0
