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

from reactor import logs
from reactor.config import Config
from reactor.errors import ReactorError
from reactor.store import instances
from reactor.store.connections import Session
from reactor.store.db import DatabaseUnavailable
from reactor.store.errors import StoreUnavailable
from reactor.util.aio import sleep_or_stop

# How long closing the lock's session may take before it is cut.
CLOSE_TIMEOUT_SECONDS = 5.0
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
        self._session: Session | None = None

    async def acquire(self) -> None:
        """Take the lock on a fresh connection; InstanceTaken if another process has it."""
        session = await Session.open(self.dsn, self.config, f"face-reactor-instance:{self.instance_id}")
        try:
            taken = await instances.try_lock(session.conn, self.instance_id)
        except BaseException:
            await session.close(CLOSE_TIMEOUT_SECONDS)
            raise
        if not taken:
            await session.close(CLOSE_TIMEOUT_SECONDS)
            raise InstanceTaken(self.instance_id)
        self._session = session

    async def hold(self, stop: asyncio.Event, on_taken: asyncio.Event) -> None:
        """Keep the lock: check the connection, take the lock again after it dropped."""
        interval = self.config.database.probe_interval_seconds
        while not await sleep_or_stop(stop, interval):
            session = self._session
            try:
                if session is not None and not session.closed:
                    await session.probe(self.config.database.probe_timeout_seconds)
                    continue
            except StoreUnavailable:
                pass
            await self._drop()
            try:
                await self.acquire()
                log.info("instance_lock_retaken", instance_id=self.instance_id)
            except InstanceTaken as exc:
                log.error("instance_id_taken", instance_id=self.instance_id, error=str(exc))
                on_taken.set()
                return
            except (DatabaseUnavailable, StoreUnavailable):
                continue  # the database is away: the rest of the reactor rides it out too

    async def _drop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.terminate()

    async def release(self) -> None:
        """Closing the session releases the lock."""
        session, self._session = self._session, None
        if session is not None:
            await session.close(CLOSE_TIMEOUT_SECONDS)
