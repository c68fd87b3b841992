"""reactor.store.connections and the repositories the core calls through them: the
driver's errors come out as the store's, on a real server."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg
import pytest

from reactor.config import Config
from reactor.store import connections, control_replies, instances, notifications, sweeps
from reactor.store.connections import Session, borrowed
from reactor.store.db import DatabaseUnavailable
from reactor.store.errors import StatementFailed, StoreUnavailable, UnwritableSchema


async def test_a_borrowed_connection_raises_the_stores_errors(make_config: Callable[..., Config], dsn: str) -> None:
    pool = await connections.open_pool(dsn, make_config())
    try:
        with pytest.raises(UnwritableSchema) as caught:
            async with borrowed(pool) as conn:
                await conn.execute("SELECT * FROM no_such_table_anywhere")
        assert isinstance(caught.value.__cause__, asyncpg.UndefinedTableError)
        async with borrowed(pool) as conn:  # the pool is still good
            assert await sweeps.try_lock(conn)
            await sweeps.unlock(conn)
    finally:
        await pool.close()
    with pytest.raises(StoreUnavailable):
        async with borrowed(pool):
            pass  # a closed pool: the driver's InterfaceError


async def test_a_session_probes_closes_and_cannot_be_opened_without_a_server(
    make_config: Callable[..., Config], dsn: str
) -> None:
    config = make_config()
    session = await Session.open(dsn, config, "reactor-test-session")
    await session.probe(10.0)
    session.terminate()
    assert session.closed
    with pytest.raises(StoreUnavailable):
        await session.probe(10.0)
    await session.close(1.0)  # closed already: nothing to do
    with pytest.raises(DatabaseUnavailable):
        await Session.open("postgresql://reactor@127.0.0.1:1/vision", config, "reactor-test-session")


async def test_one_session_holds_an_instance_id(make_config: Callable[..., Config], dsn: str) -> None:
    config = make_config()
    first, second = [await Session.open(dsn, config, "reactor-test-lock") for _ in range(2)]
    try:
        assert await instances.try_lock(first.conn, "twin")
        assert not await instances.try_lock(second.conn, "twin")
        assert await instances.try_lock(second.conn, "other")
    finally:
        await first.close(5.0)
        await second.close(5.0)


async def test_heartbeats_replies_and_roles(conn: asyncpg.Connection) -> None:
    started = datetime.now(UTC)
    await instances.heartbeat(conn, "vm:1", "vm", 1, started, '{"listener": "connected"}')
    assert await instances.live(conn, 60.0) == ["vm:1"]
    await instances.remove(conn, "vm:1", started, 2)  # another pid: not this row
    assert await instances.live(conn, 60.0) == ["vm:1"]
    await instances.remove(conn, "vm:1", started, 1)
    assert await instances.live(conn, 60.0) == []
    await control_replies.write(conn, "r1", "vm:1", False, '{"counts": {"skipped": "busy"}}')
    await control_replies.write(conn, "r1", "vm:2", True, "{}")
    assert [(r.instance_id, r.swept) for r in await control_replies.read(conn, "r1")] == [
        ("vm:1", False),
        ("vm:2", True),
    ]
    role = await notifications.current_role(conn)
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    assert await notifications.backend_role(conn, pid) == role
    assert await notifications.backend_role(conn, 0) is None
    with pytest.raises(StatementFailed):
        await notifications.notify(conn, "", "x")  # an empty channel name
