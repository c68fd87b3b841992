"""The reactor as real processes (`python -m reactor run`): kill -9 mid-backlog, then a
restart; two instances on one database."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from tests.reactor_support import (
    ReactorProcess,
    add_processed,
    count_results,
    detections_per_path,
    outcomes,
    process_config,
    wait_until,
    write_photos,
)


async def test_kill_9_mid_backlog_then_restart_gives_one_outcome_per_row(
    conn: asyncpg.Connection, dsn: str, share: Path, tmp_path: Path, procs: list[ReactorProcess]
) -> None:
    config = process_config(
        tmp_path,
        dsn,
        share,
        "kill9",
        service={"lease_seconds": 3.0},
        sweep={"interval_seconds": 2.0, "poll_seconds": 2.0},
    )
    paths = write_photos(share, [f"kill/{i:02}.jpg" for i in range(30)])
    await add_processed(conn, paths)
    first = ReactorProcess(config, tmp_path / "first.log").start()
    procs.append(first)

    async def some_done() -> bool:
        return await count_results(conn, paths) >= 5

    await wait_until(some_done, 90, "the first reactor to get going")
    first.kill9()
    second = ReactorProcess(config, tmp_path / "second.log").start()
    procs.append(second)

    async def all_done() -> bool:
        return await count_results(conn, paths) == len(paths)

    await wait_until(all_done, 120, "the restarted reactor to finish the backlog")
    assert second.stop() == 0
    found = await outcomes(conn)
    assert {p: found[p] for p in paths} == {p: ["result"] for p in paths}
    per_image = await conn.fetch(
        "SELECT m.image_path, m.face_count, count(d.*) AS rows FROM face_metadata m "
        "LEFT JOIN face_detections d USING (image_path) GROUP BY 1, 2"
    )
    assert all(r["rows"] == r["face_count"] == 1 for r in per_image)
    assert await conn.fetchval("SELECT count(*) FROM reactor_claims WHERE lease_until > now()") == 0


async def test_two_instances_detect_each_image_exactly_once(
    conn: asyncpg.Connection, dsn: str, share: Path, tmp_path: Path, procs: list[ReactorProcess]
) -> None:
    paths = write_photos(share, [f"pair/{i:03}.jpg" for i in range(100)])
    pair = []
    for name in ("a", "b"):
        config = process_config(
            tmp_path,
            dsn,
            share,
            name,
            service={"instance_id": f"instance-{name}"},
            sweep={"interval_seconds": 5.0, "poll_seconds": 5.0},
        )
        pair.append(ReactorProcess(config, tmp_path / f"{name}.log").start())
    procs.extend(pair)
    for proc in pair:
        await proc.wait_event("detector_ready", 90)
    # Both receive every notification and race for every image.
    await add_processed(conn, paths)

    async def all_done() -> bool:
        return await count_results(conn, paths) == len(paths)

    await wait_until(all_done, 170, "both reactors to finish 100 images")
    assert [proc.stop() for proc in pair] == [0, 0]
    detections = detections_per_path(*pair)
    assert set(detections) == set(paths)
    assert {p: n for p, n in detections.items() if n != 1} == {}
    by_instance = {
        r["instance_id"]: r["n"]
        for r in await conn.fetch("SELECT instance_id, count(*) AS n FROM face_metadata GROUP BY 1")
    }
    assert sum(by_instance.values()) == len(paths)
    # Both really worked (and raced for every notified image).
    assert set(by_instance) == {"instance-a", "instance-b"}
