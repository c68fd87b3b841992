"""A detection lane's store calls (reactor.core.loop_settings.StoreCalls): "stopped" is an
exception, never the None an operation returns for "nothing recorded"; the database being
away is waited out, and only the store's exceptions come through."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from reactor.core.loop_settings import LoopStopped, StoreCalls
from reactor.store import errors
from reactor.store.dbtypes import Conn
from tests.reactor_support import wait_until


async def nothing(conn: Conn) -> int | None:
    """What an operation that recorded nothing returns (a skipped write)."""
    await conn.execute("SELECT 1")
    return None


async def test_nothing_recorded_is_none_and_stopped_is_an_exception(dsn: str) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        calls = StoreCalls(pool, reconnect_max_seconds=1.0)
        assert await calls.run(asyncio.Event(), nothing) is None
        assert await calls.run(None, nothing) is None
        stop = asyncio.Event()
        stop.set()
        with pytest.raises(LoopStopped):
            await calls.run(stop, nothing)
        with pytest.raises(errors.StatementFailed):
            await calls.run(None, lambda conn: conn.execute("SELECT 1 / 0"))
        assert calls.ok
    finally:
        await pool.close()


async def test_a_stop_ends_the_wait_for_an_absent_database(dsn: str) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    await pool.close()  # every acquire now fails as the driver's InterfaceError: transient
    calls = StoreCalls(pool, reconnect_max_seconds=60.0)
    with pytest.raises(errors.StoreUnavailable):
        await calls.once(nothing)
    stop = asyncio.Event()
    waiting = asyncio.ensure_future(calls.run(stop, nothing))

    async def away() -> bool:
        return not calls.ok

    await wait_until(away, 30, "the lane to see the database away")
    assert not waiting.done()  # it waits for the database, however long
    stop.set()
    with pytest.raises(LoopStopped):
        await asyncio.wait_for(waiting, 30)
