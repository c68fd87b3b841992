import json
import os
from collections.abc import Callable

import pytest
from prometheus_client import generate_latest

from reactor.config import Config
from reactor.core import metrics
from reactor.handlers import status as status_handler
from tests.ops_seed import invoke, seed
from tests.pg import PgServer


async def test_status_json_counts_exactly(
    dsn: str, make_config: Callable[..., Config], capsys: pytest.CaptureFixture[str]
) -> None:
    await seed(dsn)
    assert await invoke(status_handler.register, make_config(), ["status", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images_processed"] == 4
    assert out["faces_found"] == 6
    assert out["average_faces_per_image"] == 1.5
    assert out["last_detection"] == "2026-01-02T03:04:05+00:00"
    assert out["pending"] == 2
    assert out["failures"] == 4
    assert out["permanently_failed"] == 1
    assert out["due_for_retry"] == 2
    assert out["failures_by_type"] == {
        "corrupt": {"error_type": "corrupt", "failures": 1, "permanent": 1, "due": 0},
        "missing": {"error_type": "missing", "failures": 1, "permanent": 0, "due": 1},
        "timeout": {"error_type": "timeout", "failures": 2, "permanent": 0, "due": 1},
    }
    # Only the instance with a fresh heartbeat counts as running.
    assert [i["instance_id"] for i in out["instances"]] == ["live"]
    assert out["instances"][0]["state"]["queue_depth"] == 7
    assert out["instances"][0]["state"]["current_image"] == "d/new1.jpg"


async def test_status_table(dsn: str, make_config: Callable[..., Config], capsys: pytest.CaptureFixture[str]) -> None:
    await seed(dsn)
    assert await invoke(status_handler.register, make_config(), ["status"]) == 0
    lines = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    assert "images processed 4" in lines
    assert "faces found 6" in lines
    assert "average faces/image 1.50" in lines
    assert "pending 2" in lines
    assert "permanently failed 1" in lines
    assert "due for retry 2" in lines
    assert "timeout 2 (0 permanent, 1 due)" in lines
    assert "queue depth 7" in lines
    assert "current image d/new1.jpg" in lines
    assert "detector busy" in lines
    assert "share online yes" in lines
    assert "listener connected" in lines


async def test_status_empty_database(
    dsn: str, make_config: Callable[..., Config], capsys: pytest.CaptureFixture[str]
) -> None:
    assert await invoke(status_handler.register, make_config(), ["status", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["images_processed"], out["faces_found"], out["average_faces_per_image"]) == (0, 0, 0.0)
    assert out["last_detection"] is None
    assert out["instances"] == []


async def test_status_shows_a_running_reactor_from_its_heartbeat(
    dsn: str, make_config: Callable[..., Config], capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    from reactor.core.service import Reactor

    config = make_config(watcher={"enabled": False}, health={"heartbeat_seconds": 0.2}, detector={"workers": 2})
    reactor = Reactor(config, dsn)
    stop = asyncio.Event()
    run = asyncio.create_task(reactor.run(stop))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 120
    try:
        # Wait until a heartbeat shows the listener connected and the detector loaded.
        while True:
            assert await invoke(status_handler.register, config, ["status", "--json"]) == 0
            instances = json.loads(capsys.readouterr().out)["instances"]
            state = instances[0]["state"] if instances else {}
            if state.get("listener") == "connected" and state.get("detector") == "ready":
                break
            assert loop.time() < deadline and not run.done(), f"no fresh heartbeat: {instances}"
            await asyncio.sleep(0.1)
        assert [i["instance_id"] for i in instances] == [reactor.instance_id]
        assert state["share_online"] is True
        assert state["queue_depth"] == 0
        assert state["current_image"] is None
        # Each detector child, in the heartbeat, the table and /metrics.
        assert [c["child"] for c in state["detectors"]] == [0, 1]
        assert all(c["state"] == "ready" and c["pid"] for c in state["detectors"])
        assert await invoke(status_handler.register, config, ["status"]) == 0
        table = capsys.readouterr().out
        assert "detector 0" in table and "detector 1" in table and "0 restarts" in table
        assert "writes blocked" in table and "None" not in table  # not a raw `write_blocked None`
        scrape = generate_latest(metrics.REGISTRY).decode()
        assert 'reactor_detector_child_up{child="1"} 1.0' in scrape
        assert 'reactor_detector_child_busy{child="0"} 0.0' in scrape
    finally:
        stop.set()
        await asyncio.wait_for(run, 60)
    # A stopped reactor removes its heartbeat row: nothing is shown as running.
    assert await invoke(status_handler.register, config, ["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["instances"] == []


async def test_status_without_the_schema_is_one_line(pg: PgServer, make_config: Callable[..., Config]) -> None:
    from reactor.errors import UsageError

    name = f"bare_{os.getpid()}"
    pg.psql(f"CREATE DATABASE {name}")
    try:
        config = make_config(database={"dsn": pg.dsn(name)})
        with pytest.raises(UsageError) as info:
            await invoke(status_handler.register, config, ["status"])
        assert str(info.value) == (
            'relation "face_metadata" does not exist: the reactor\'s schema is not in this database; '
            "run `reactor db init` (`reactor db check` lists what is missing)"
        )
    finally:
        pg.drop_database(name)


def test_one_rule_says_when_an_instance_is_gone(make_config: Callable[..., Config]) -> None:
    from reactor.core.instances import gone_after_seconds
    from reactor.ops import audit

    assert gone_after_seconds(10.0) == 30.0  # three missed beats
    assert gone_after_seconds(0.2) == 5.0  # never after one busy moment
    # A claim is dead once its instance is gone, and not before a lease could have run out.
    config = make_config(health={"heartbeat_seconds": 10.0}, service={"lease_seconds": 60.0})
    assert audit.dead_claim_after_seconds(config) == 60.0
