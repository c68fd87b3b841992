"""How the layers above get a connection: borrowed from the pool for a run of repository
calls, or a session of their own (the instance lock, the LISTEN connection).

Either way the driver's errors come out as the store's (reactor.store.errors). A pool or a
session that cannot be opened at all raises the bootstrap's ``DatabaseUnavailable``
(reactor.store.db): one line that names the server, which the command line prints.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import asyncpg

from reactor.config import Config
from reactor.store import db
from reactor.store.dbtypes import Conn, Pool
from reactor.store.errors import translated

# A pooled connection that silently stopped carrying traffic would hang a query for
# ever; past this the query fails as unavailable and the pool opens a new connection.
# Every statement the reactor runs is one small keyset page or one image's rows.
COMMAND_TIMEOUT_SECONDS = 60.0


async def open_pool(dsn: str, config: Config) -> Pool:
    """The reactor's pool; DatabaseUnavailable when it cannot be opened."""
    return await db.create_pool(dsn, config, command_timeout=COMMAND_TIMEOUT_SECONDS)


@contextlib.asynccontextmanager
async def borrowed(pool: Pool, path: str | None = None) -> AsyncIterator[Conn]:
    """A pooled connection for the block; the driver's errors raised in it (acquiring and
    releasing included) come out as the store's (``path``: the image a rejected path names).
    Only statements and the bookkeeping around them belong inside: an ``OSError`` here is a
    broken socket."""
    with translated(path):
        async with pool.acquire() as conn:
            yield conn


class Session:
    """A connection of its own, never from the pool: a session lock or a LISTEN lasts as
    long as it does (a pooled connection runs ``UNLISTEN *`` on release, asyncpg 421)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    @classmethod
    async def open(cls, dsn: str, config: Config, application_name: str, **settings: str) -> Session:
        """DatabaseUnavailable (one line, no password) when it cannot be opened."""
        server_settings = {"application_name": application_name[:63], **settings}
        return cls(await db.connect(dsn, config, server_settings=server_settings))

    @property
    def conn(self) -> Conn:
        """For the repositories' functions, which take any connection."""
        return self._conn

    @property
    def closed(self) -> bool:
        return self._conn.is_closed()

    def on_lost(self, callback: Callable[[], None]) -> None:
        """``callback`` once the driver sees the connection end."""
        self._conn.add_termination_listener(lambda _c: callback())

    async def probe(self, seconds: float) -> None:
        """``SELECT 1`` within ``seconds``: StoreUnavailable for a connection that stopped
        carrying traffic (no FIN, no RST) as for one that broke."""
        with translated():
            await asyncio.wait_for(self._conn.fetchval("SELECT 1"), seconds)

    def terminate(self) -> None:
        if not self._conn.is_closed():
            self._conn.terminate()

    async def close(self, seconds: float) -> None:
        """Close within ``seconds``; a close that fails or hangs terminates instead."""
        if self._conn.is_closed():
            return
        try:
            await asyncio.wait_for(self._conn.close(), seconds)
        except db.ANY_DB_ERRORS:
            self._conn.terminate()
