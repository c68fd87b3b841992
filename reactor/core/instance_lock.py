"""One instance id, one process.

Claims, heartbeats and the claims released at shutdown are keyed by
``service.instance_id``; two processes with the same id would take over and release
each other's claims. So a process holds a session advisory lock keyed on its id, on a
connection of its own, for as long as it runs. A second process with the same id
refuses to start with one line (``InstanceTaken``). Should the connection drop (a
database restart), the lock is taken again on a new one; if another process took
the id meanwhile, this one stops rather than share it.
"""

from __future__ import annotations

import asyncio

import asyncpg

from reactor import logs
from reactor.config import Config
from reactor.errors import ReactorError
from reactor.store import db
from reactor.store.db import TRANSIENT_DB_ERRORS, UNAVAILABLE_ERRORS
from reactor.store.sql import Queries
from reactor.util.aio import sleep_or_stop

Q = Queries("queries.sql")
log = logs.get("reactor.instance_lock")


class InstanceTaken(ReactorError):
    """Another running process holds this instance id."""

    def __init__(self, instance_id: str) -> None:
        super().__init__(
            f"instance id {instance_id!r} is in use by another running reactor; stop it, or give this one "
            "its own [service] instance_id (empty: hostname and pid)"
        )
        self.instance_id = instance_id


class InstanceLock:
    def __init__(self, config: Config, dsn: str, instance_id: str) -> None:
        self.config = config
        self.dsn = dsn
        self.instance_id = instance_id
        self._conn: asyncpg.Connection | None = None

    async def acquire(self) -> None:
        """Take the lock on a fresh connection; InstanceTaken if another process has it."""
        conn = await db.connect(
            self.dsn,
            self.config,
            server_settings={"application_name": f"face-reactor-instance:{self.instance_id}"[:63]},
        )
        try:
            taken = await conn.fetchval(Q.instance_try_lock, self.instance_id)
        except BaseException:
            await conn.close()
            raise
        if not taken:
            await conn.close()
            raise InstanceTaken(self.instance_id)
        self._conn = conn

    async def hold(self, stop: asyncio.Event, on_taken: asyncio.Event) -> None:
        """Keep the lock: check the connection, take the lock again after it dropped."""
        interval = self.config.database.probe_interval_seconds
        while not await sleep_or_stop(stop, interval):
            conn = self._conn
            try:
                if conn is not None and not conn.is_closed():
                    await asyncio.wait_for(conn.fetchval("SELECT 1"), self.config.database.probe_timeout_seconds)
                    continue
            except TRANSIENT_DB_ERRORS:
                pass
            await self._drop()
            try:
                await self.acquire()
                log.info("instance_lock_retaken", instance_id=self.instance_id)
            except InstanceTaken as exc:
                log.error("instance_id_taken", instance_id=self.instance_id, error=str(exc))
                on_taken.set()
                return
            except UNAVAILABLE_ERRORS:
                continue  # the database is away: the rest of the reactor rides it out too

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def release(self) -> None:
        """Closing the session releases the lock."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), 5.0)
            except TRANSIENT_DB_ERRORS:
                conn.terminate()
