import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from reactor.config import ConfigError, HealthConfig, ImagesConfig
from reactor.core.health import HealthServer, LoopLag, evaluate
from reactor.watch.share import ShareMonitor
from tests.httpget import http_request
from tests.reactor_support import reported

LOCAL = "127.0.0.1"


class Served:
    def __init__(self, server: HealthServer, stop: asyncio.Event, task: asyncio.Task[None]) -> None:
        self.server, self.stop, self.task = server, stop, task

    async def get(self, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        return await http_request(LOCAL, self.server.port, path, method)


@contextlib.asynccontextmanager
async def serve(snapshot: Any, registry: CollectorRegistry | None = None) -> AsyncIterator[Served]:
    server = HealthServer(HealthConfig(host=LOCAL, port=0), snapshot, registry or CollectorRegistry())
    stop = asyncio.Event()
    await server.start()
    task = asyncio.create_task(server.run(stop))
    try:
        yield Served(server, stop, task)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def monitor(share: Path) -> AsyncIterator[ShareMonitor]:
    mon = ShareMonitor(ImagesConfig(root=str(share)), online_interval=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(mon.run(stop))
    await asyncio.wait_for(mon.wait_online(), 10)
    yield mon
    stop.set()
    await asyncio.wait_for(task, 10)


async def wait_status(served: Served, want: int) -> dict[str, Any]:
    """Poll /healthz until it answers `want` (the share monitor re-checks on its own schedule)."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        status, _, body = await served.get("/healthz")
        if status == want:
            parsed: dict[str, Any] = json.loads(body)
            return parsed
        assert asyncio.get_running_loop().time() < deadline, f"/healthz stayed {status}: {body!r}"
        await asyncio.sleep(0.05)


async def test_healthz_turns_503_when_share_goes_offline(share: Path, monitor: ShareMonitor) -> None:
    def snapshot() -> Mapping[str, Any]:
        return {
            "listener": "connected",
            "detector": "ready",
            "share_online": monitor.online,
            "share_reason": monitor.reason,
            "queue_depth": 0,
        }

    async with serve(snapshot) as served:
        body = await wait_status(served, 200)
        assert body["status"] == "ok" and body["reasons"] == []
        (share / ".reactor-share").unlink()
        body = await wait_status(served, 503)
        assert body["status"] == "unhealthy"
        assert body["reasons"] == ["share is offline (marker_missing)"]
        (share / ".reactor-share").write_text("back\n")
        await wait_status(served, 200)


async def test_healthz_reasons_for_listener_and_detector() -> None:
    snap: dict[str, Any] = {"listener": "disconnected", "detector": "unavailable", "share_online": True}
    async with serve(lambda: snap) as served:
        status, headers, body = await served.get("/healthz")
        assert status == 503
        assert headers["content-type"] == "application/json"
        assert json.loads(body)["reasons"] == [
            "listener is disconnected (expected connected or polling)",
            "detector is unavailable (expected ready or busy)",
        ]
        snap.update(listener="polling", detector="busy")
        status, _, _ = await served.get("/healthz")
        assert status == 200


def test_evaluate_loop_lag_and_database() -> None:
    healthy = {"listener": "connected", "detector": "ready", "share_online": True, "database": "ok"}
    assert evaluate(healthy, 0.1) == []
    assert evaluate(healthy, 3.0) == ["event loop lagging 3.0 s"]
    assert evaluate({**healthy, "listener": "polling", "database": "unavailable"}, 0.0) == ["database is unavailable"]


async def test_broken_snapshot_is_503_not_a_crash() -> None:
    def snapshot() -> Mapping[str, Any]:
        raise RuntimeError("boom")

    async with serve(snapshot) as served:
        status, _, body = await served.get("/healthz")
        assert status == 503
        assert json.loads(body)["reasons"] == ["health snapshot failed: RuntimeError('boom')"]


async def test_metrics_serves_registry_and_counters_move() -> None:
    registry = CollectorRegistry()
    counter = Counter("reactor_test_images", "images", ["outcome"], registry=registry)
    async with serve(lambda: {}, registry) as served:
        counter.labels(outcome="success").inc()
        status, headers, body = await served.get("/metrics")
        assert status == 200
        assert headers["content-type"].startswith("text/plain")
        assert 'reactor_test_images_total{outcome="success"} 1.0' in body.decode()
        counter.labels(outcome="success").inc(2)
        _, _, body = await served.get("/metrics")
        assert 'reactor_test_images_total{outcome="success"} 3.0' in body.decode()


async def test_unknown_path_and_method() -> None:
    async with serve(lambda: {}) as served:
        assert (await served.get("/nope"))[0] == 404
        assert (await served.get("/healthz", method="POST"))[0] == 405
        status, headers, body = await served.get("/healthz", method="HEAD")
        assert status == 503 and body == b"" and int(headers["content-length"]) > 0


async def test_port_in_use_is_one_line_naming_the_key() -> None:
    with socket.socket() as busy:
        busy.bind((LOCAL, 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = HealthServer(HealthConfig(host=LOCAL, port=port), dict, CollectorRegistry())
        with pytest.raises(ConfigError) as info:
            await server.start()
    assert str(info.value) == (
        f"health port 127.0.0.1:{port} is already in use; "
        "set health.port ([health] port or REACTOR_HEALTH__PORT) to a free port"
    )


# -- the health server inside a running Reactor ------------------------------------------


def metric(text: str, name: str) -> float:
    """One sample's value from Prometheus text; 0 when the series has not appeared yet."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


async def test_reactor_serves_health_and_metrics_move_after_a_detection(
    dsn: str, share: Path, make_config: Any
) -> None:
    import asyncpg

    from reactor.core.service import Reactor
    from reactor.ops import samples

    samples.write_jpeg(samples.astronaut(), share, "astronaut.jpg")
    config = make_config(health={"enabled": True, "host": LOCAL, "port": 0}, watcher={"enabled": False})
    reactor = Reactor(config, dsn)
    stop = asyncio.Event()
    run = asyncio.create_task(reactor.run(stop))
    loop = asyncio.get_running_loop()
    try:
        deadline = loop.time() + 120
        while getattr(reactor, "health", None) is None:
            assert loop.time() < deadline and not run.done()
            await asyncio.sleep(0.05)
        port = reactor.health.port  # type: ignore[union-attr]
        # Healthy once the listener is connected and the detector child has loaded its models.
        while (await http_request(LOCAL, port, "/healthz"))[0] != 200:
            assert loop.time() < deadline and not run.done(), "never became healthy"
            await asyncio.sleep(0.1)

        _, _, body = await http_request(LOCAL, port, "/metrics")
        before = body.decode()
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ('astronaut.jpg', TRUE)")
            while not await conn.fetchval("SELECT count(*) FROM face_metadata"):
                assert loop.time() < deadline and not run.done(), "no detection"
                await asyncio.sleep(0.1)
        finally:
            await conn.close()

        async def detected_delta() -> float:
            _, _, body = await http_request(LOCAL, port, "/metrics")
            name = 'reactor_images_processed_total{outcome="detected"}'
            return metric(body.decode(), name) - metric(before, name)

        # Counted just after the commit the loop above saw: the scrape waits for it.
        await reported(detected_delta, 1.0, "the detection counted in /metrics")
        _, _, body = await http_request(LOCAL, port, "/metrics")
        after = body.decode()
        for name, delta in (
            ('reactor_images_processed_total{outcome="detected"}', 1.0),
            ("reactor_faces_found_total", 1.0),
            ("reactor_detection_seconds_count", 1.0),
        ):
            assert metric(after, name) - metric(before, name) == delta, name
        assert metric(after, "reactor_last_success_timestamp_seconds") > 0
        assert metric(after, "reactor_share_online") == 1.0

        # The share goes offline: /healthz turns 503 with the reason.
        (share / ".reactor-share").unlink()
        while True:
            status, _, body = await http_request(LOCAL, port, "/healthz")
            if status == 503:
                break
            assert loop.time() < deadline, "never turned 503"
            await asyncio.sleep(0.1)
        assert json.loads(body)["reasons"] == ["share is offline (marker_missing)"]
    finally:
        stop.set()
        await asyncio.wait_for(run, 60)


def test_reactor_run_with_the_health_port_in_use_exits_2(dsn: str, share: Path) -> None:
    import os
    import subprocess
    import sys

    with socket.socket() as busy:
        busy.bind((LOCAL, 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("REACTOR_")}
        env.update(
            REACTOR_DATABASE__DSN=dsn,
            REACTOR_IMAGES__ROOT=str(share),
            REACTOR_HEALTH__PORT=str(port),
            PYTHONPATH=str(Path(__file__).resolve().parent.parent),
        )
        proc = subprocess.run(
            [sys.executable, "-m", "reactor", "run"], cwd=share, env=env, capture_output=True, text=True, timeout=120
        )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"reactor: health port 127.0.0.1:{port} is already in use; "
        "set health.port ([health] port or REACTOR_HEALTH__PORT) to a free port"
    )


def block_the_loop(seconds: float) -> None:
    time.sleep(seconds)


async def test_loop_lag_is_how_late_the_ticker_wakes() -> None:
    lag = LoopLag()
    stop = asyncio.Event()
    ticker = asyncio.create_task(lag.run(stop))
    await asyncio.sleep(0.1)
    block_the_loop(0.8)  # past the tick
    await asyncio.sleep(0.05)
    assert lag.seconds >= 0.3
    stop.set()
    await asyncio.wait_for(ticker, 5)
