"""One instance id, one process (issue 13): real processes on the real database."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg

from tests.reactor_support import REPO, ReactorProcess, add_processed, process_config, wait_until


def reactor_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REACTOR_")}
    return subprocess.run(
        [sys.executable, "-m", "reactor", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=150,
    )


async def test_a_second_process_with_the_same_id_refuses_and_sweep_once_leaves_the_daemon_alone(
    dsn: str,
    share: Path,
    tmp_path: Path,
    conn: asyncpg.Connection,
) -> None:
    config = process_config(
        tmp_path, dsn, share, "twin", service={"instance_id": "twin", "shutdown_grace_seconds": 90.0}
    )
    daemon = ReactorProcess(config, tmp_path / "daemon.log").start()
    try:
        await daemon.wait_event("reactor_started")
        second = await asyncio.to_thread(reactor_cli, config, "run")
        assert second.returncode == 2, second.stderr
        refusal = [line for line in second.stderr.splitlines() if "instance id 'twin' is in use" in line]
        assert len(refusal) == 1 and "give this one its own [service] instance_id" in refusal[0]
        # The daemon's claim on an image it is working on (a live lease); no notification,
        # so that only `sweep --once` could find the row.
        await conn.execute("ALTER TABLE ai_metadata DISABLE TRIGGER USER")
        await add_processed(conn, ["held.jpg"])
        await conn.execute("ALTER TABLE ai_metadata ENABLE TRIGGER USER")
        await conn.execute(
            "INSERT INTO reactor_claims (image_path, instance_id, token, lease_until) "
            "VALUES ('held.jpg', 'twin', nextval('reactor_claim_token_seq'), now() + interval '1 h')"
        )
        once = await asyncio.to_thread(reactor_cli, config, "sweep", "--once")
        assert once.returncode == 0, once.stderr
        assert "twin:once:" in once.stdout
        rows = await conn.fetch("SELECT image_path, instance_id FROM reactor_claims")
        assert [(r["image_path"], r["instance_id"]) for r in rows] == [("held.jpg", "twin")]
        assert daemon.proc is not None and daemon.proc.poll() is None
    finally:
        assert daemon.stop() == 0


async def test_a_process_that_lost_its_id_leaves_the_new_owners_claims_and_heartbeat(
    dsn: str,
    share: Path,
    tmp_path: Path,
    conn: asyncpg.Connection,
) -> None:
    """Two processes through a takeover: the first loses its lock connection while
    stopped, the second takes the id; the first's teardown touches only its own rows."""
    config = process_config(tmp_path, dsn, share, "twin", service={"instance_id": "twin"})
    first = ReactorProcess(config, tmp_path / "first.log").start()
    second = ReactorProcess(config, tmp_path / "second.log")
    try:
        await first.wait_event("reactor_started")
        assert first.proc is not None
        first.proc.send_signal(signal.SIGSTOP)
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'face-reactor-instance:twin'"
        )
        second.start()
        await second.wait_event("reactor_started")

        async def heartbeat_of_second() -> bool:
            pid = await conn.fetchval("SELECT pid FROM reactor_instances WHERE instance_id = 'twin'")
            return bool(pid == second.pid)

        await wait_until(heartbeat_of_second, 60, "the second process's heartbeat")
        # The new owner's claim on an image it is working on (a live lease). Its row is not
        # processed, so that neither process's sweep takes the image (the same instance id
        # may re-take its own claim) and detects it while the test looks.
        await conn.execute("ALTER TABLE ai_metadata DISABLE TRIGGER USER")
        await conn.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ('held.jpg', FALSE)")
        await conn.execute("ALTER TABLE ai_metadata ENABLE TRIGGER USER")
        await conn.execute(
            "INSERT INTO reactor_claims (image_path, instance_id, token, lease_until) "
            "VALUES ('held.jpg', 'twin', nextval('reactor_claim_token_seq'), now() + interval '1 h')"
        )
        first.proc.send_signal(signal.SIGCONT)
        await asyncio.to_thread(first.proc.wait, 120)
        assert first.events("instance_id_taken"), first.tail()
        rows = await conn.fetch("SELECT image_path, instance_id FROM reactor_claims")
        assert [(r["image_path"], r["instance_id"]) for r in rows] == [("held.jpg", "twin")]
        assert await conn.fetchval("SELECT pid FROM reactor_instances WHERE instance_id = 'twin'") == second.pid
        assert second.proc is not None and second.proc.poll() is None
    finally:
        if first.proc is not None and first.proc.poll() is None:
            first.proc.send_signal(signal.SIGCONT)
            first.stop()
        if second.proc is not None:
            assert second.stop() == 0
