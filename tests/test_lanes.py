"""Detection lanes: several detector children side by side on one queue."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from reactor.config import Config, ConfigError, cpu_cores, load
from reactor.core.inflight import InFlight
from reactor.core.lanes import lanes_for
from reactor.store.claims import Claim, ImageState
from tests.reactor_support import add_processed, outcomes, wait_until, write_photos
from tests.test_reactor import NO_POLLING, connection, running


def test_how_many_lanes() -> None:
    assert lanes_for("auto", cuda=False, gpus=0, cores=8) == 8
    assert lanes_for("auto", cuda=True, gpus=1, cores=8) == 1
    assert lanes_for("auto", cuda=True, gpus=2, cores=8) == 2
    assert lanes_for("auto", cuda=False, gpus=0, cores=1) == 1
    assert lanes_for(3, cuda=False, gpus=0, cores=8) == 3


@pytest.mark.parametrize("value", ["0", "-1", str(cpu_cores() + 1)])
def test_workers_outside_one_to_the_cores_is_a_configuration_error(value: str) -> None:
    with pytest.raises(ConfigError, match=r"\[detector\] workers: expected \"auto\" or 1 to"):
        load(None, env={"REACTOR_DETECTOR__WORKERS": value})


def test_workers_accepts_auto_and_a_number(tmp_path: Path) -> None:
    assert load(None, env={}).detector.workers == "auto"
    path = tmp_path / "c.toml"
    path.write_text("[detector]\nworkers = 1\n")
    assert load(path, env={}).detector.workers == 1
    path.write_text('[detector]\nworkers = "many"\n')
    with pytest.raises(ConfigError, match="expected integer or 'auto'"):
        load(path, env={})


def test_replaced_keys_say_what_to_use_instead(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[detector]\nmax_dimension = 1280\n")
    with pytest.raises(ConfigError, match="max_detect_pixels"):
        load(path, env={})


async def test_a_path_held_by_one_lane_waits_for_its_outcome() -> None:
    in_flight = InFlight()
    state = ImageState(False, True, False, 0, False, False, None, None)
    claim = Claim(path="a.jpg", token=1, state=state)
    await in_flight.reserve("a.jpg")
    in_flight["a.jpg"] = claim
    in_flight.unreserve("a.jpg")
    other = asyncio.create_task(in_flight.reserve("a.jpg"))
    await asyncio.sleep(0)
    assert not other.done()  # held: the second lane must not claim it
    assert in_flight.pop("a.jpg") is claim
    await asyncio.wait_for(other, 2)
    # Now the second lane is claiming it: a third waits for that too.
    third = asyncio.create_task(in_flight.reserve("a.jpg"))
    await asyncio.sleep(0)
    assert not third.done()
    in_flight.unreserve("a.jpg")
    await asyncio.wait_for(third, 2)


async def test_a_crash_in_one_child_fails_only_its_image_while_the_other_detects(
    make_config: Callable[..., Config], dsn: str, share: Path
) -> None:
    config = make_config(
        detector={"model": "hog", "engine": "tests.fault_engine", "workers": 2, "timeout_seconds": 60.0},
        sweep=NO_POLLING,
    )
    slow = [f"ok/{i}__slow_1__.jpg" for i in range(4)]
    paths = write_photos(share, ["bad/__crash__.jpg", *slow])
    async with running(config, dsn) as reactor, connection(dsn) as conn:
        await add_processed(conn, paths)

        async def all_recorded() -> bool:
            return len(await outcomes(conn)) == len(paths)

        await wait_until(all_recorded, 90, "an outcome for every image")

        async def all_counted() -> bool:
            # A lane counts an outcome once its connection is back in the pool, a moment
            # after the commit that made it visible here.
            counted: int = sum(c["processed"] for c in reactor.lanes.snapshot())
            return counted >= len(paths)

        await wait_until(all_counted, 10, "every outcome counted by its lane")
        found = await outcomes(conn)
        assert found.pop("bad/__crash__.jpg") == ["failure:crash"]
        assert found == {p: ["result"] for p in slow}
        children = reactor.lanes.snapshot()
        assert len(children) == 2
        # One child was replaced after the crash; the other was never touched, and both detected.
        assert sorted(c["restarts"] for c in children) == [0, 1]
        assert all(c["processed"] >= 1 for c in children)
        assert sum(c["processed"] for c in children) == len(paths)
