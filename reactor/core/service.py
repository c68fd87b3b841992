"""The Reactor: owns the pool, the queue, the listener, the sweep, the detector and its loop.

``Reactor(config, dsn)`` does no I/O. ``run(stop)`` connects (retrying while the
database is down), starts every task under a supervisor, and on ``stop`` shuts
down in a bounded order: the detection loop stops taking work and finishes the
image in flight within ``service.shutdown_grace_seconds`` (its outcome is
written), then the side tasks are cancelled, this instance's claims are released
and its heartbeat row removed.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from reactor import logs
from reactor.config import Config
from reactor.core import control, gate, heap_trim, metrics
from reactor.core.detection_loop import DetectionLoop
from reactor.core.gate import NoticeKind
from reactor.core.health import HealthServer, LoopLag
from reactor.core.inflight import InFlight
from reactor.core.instance_lock import InstanceLock
from reactor.core.instances import gone_after_seconds
from reactor.core.lanes import Lanes
from reactor.core.listener import Listener, ListenerState
from reactor.core.loop_settings import LoopSettings, WriteBlock
from reactor.core.queue import ImageQueue, Priority
from reactor.core.scheduler import SweepScheduler
from reactor.core.supervisor import Supervisor
from reactor.core.sweep import SweepCounts, Sweeper
from reactor.core.work_share import WorkShare
from reactor.detector import Detector
from reactor.paths import PathMapper
from reactor.store import catalog, changes, claims, connections, instances, legacy, notifications, writable
from reactor.store.connections import borrowed
from reactor.store.db import DatabaseUnavailable
from reactor.store.dbtypes import Conn, Pool
from reactor.store.errors import StoreUnavailable
from reactor.store.orphans import OrphanPolicy
from reactor.util.aio import sleep_or_stop
from reactor.util.backoff import Backoff
from reactor.watch.file_events import DatabaseSink
from reactor.watch.mounts import choose_observer, stability_window
from reactor.watch.share import ShareMonitor
from reactor.watch.watcher import Watcher

log = logs.get("reactor.service")

TaskFactory = Callable[[asyncio.Event], Awaitable[None]]
CLEANUP_TIMEOUT_SECONDS = 5.0


def default_instance_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Reactor:
    def __init__(self, config: Config, dsn: str, instance_id: str | None = None) -> None:
        self.config = config
        self.dsn = dsn
        self.instance_id = instance_id or config.service.instance_id or default_instance_id()
        self.queue = ImageQueue(config.service.queue_size)
        self.mapper = PathMapper.for_images(config.images)
        self.share = ShareMonitor(config.images, config.watcher)
        # One detector child and detection loop per core (CPU) or GPU (CUDA): reactor.core.lanes.
        self.lanes = Lanes(config.detector, self.share.io)
        self.pool: Pool | None = None
        self._failure_columns: frozenset[str] = frozenset()
        self._result_shape = legacy.NO_LEGACY
        self.write_block = WriteBlock()
        # None until the first connection attempt, then whether the pool could be opened.
        self.database_up: bool | None = None
        self.listener: Listener | None = None
        self.sweeper: Sweeper | None = None
        # The first lane's loop (every lane's: self.lanes.loops); None until _build.
        self.first_loop: DetectionLoop | None = None
        self.watcher: Watcher | None = None
        self.supervisor = Supervisor()
        # /healthz and /metrics, once bound (health.enabled).
        self.health: HealthServer | None = None
        # Extra supervised tasks (watcher, health server): name -> factory(halt).
        self.side_tasks: dict[str, TaskFactory] = {}
        self.loop_lag = LoopLag()
        self.started_at = datetime.now(UTC)
        self.scheduler = SweepScheduler(config, self.instance_id)
        # Which notified paths and changes this instance takes first (several instances).
        self.work_share = WorkShare(self.instance_id)
        # Who may request sweeps and manual overrides; the reactor's own role joins at _build.
        self.senders = gate.SenderCheck(lambda: self.pool, config.database.control_roles)

    # ------------------------------------------------------------------ state

    @property
    def detector(self) -> Detector:
        """The first lane's detector child."""
        return self.lanes.first

    def health_snapshot(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "listener": self.listener.state if self.listener else ListenerState.STOPPED,
            "detector": self.lanes.state(),
            "detector_restarts": self.lanes.restarts,
            "detectors": self.lanes.snapshot(),
            "share_online": self.share.online,
            "share_reason": self.share.reason,
            "database": "ok" if self.database_up and self.lanes.db_ok else "unavailable",
            "queue_depth": len(self.queue),
            "queue_by_priority": self.queue.depth_by_priority(),
            "queue_dropped": self.queue.dropped,
            "current_image": next(iter(self.lanes.current), None),
            "processed": self.lanes.processed,
            "loop_lag_seconds": round(self.loop_lag.seconds, 3),
            "write_blocked": self.write_block.reason,
            # Supervised tasks that keep dying (still restarted): unhealthy until they run again.
            "tasks_failing": self.supervisor.failing(),
            "held_deletions": self.watcher.held_deletions if self.watcher else 0,
            # Folders of the share that do not answer (reactor.util.shareio): skipped, retried.
            "stalled_folders": self.share.io.stalled(),
            # This instance's share of the work among the live instances (reactor.core.work_share).
            "work_share": self.work_share.as_dict(),
        }

    # ------------------------------------------------------------------ events

    def request_sweep(self, request_id: str | None = None) -> None:
        self.scheduler.request(request_id)

    def on_notify(self, channel: str, data: dict[str, Any], pid: int = 0) -> None:
        """A notification only enqueues (or wakes the sweep); it never does work itself.

        Payloads are validated and what acts (a sweep request, a manual override) is
        honoured only from allowed roles (reactor.core.gate)."""
        notice = gate.validate(channel, data, control_channel=self.config.database.control_channel, pid=pid)
        if notice is None:
            return
        if notice.kind == NoticeKind.SWEEP_REQUEST:
            request_id = notice.request_id
            self.senders.when_allowed(notice, lambda: self.request_sweep(request_id), lambda: None)
        elif notice.kind == NoticeKind.BULK:
            self.request_sweep()
        elif notice.kind == NoticeKind.PROCESSED and notice.path is not None:
            # Another live instance's share: it queues the path (or, gone, its change in the log is taken over).
            if self.work_share.mine(notice.path):
                self.queue.put(notice.path, Priority.NOTIFY)
        elif notice.kind == NoticeKind.MANUAL and notice.path is not None:
            path = notice.path
            self.senders.when_allowed(
                notice, lambda: self.queue.put(path, Priority.MANUAL), lambda: self.queue.put(path, Priority.NOTIFY)
            )
        elif notice.kind == NoticeKind.DELETED and notice.path is not None:
            self.queue.discard(notice.path)
            self.scheduler.deleted(notice.path)

    def _on_listener_connected(self) -> None:
        # First connect: the start-up sweep; reconnect: the catch-up sweep. Either
        # way after LISTEN, so nothing committed in between is missed.
        self.request_sweep()

    # ------------------------------------------------------------------ run

    async def run(self, stop: asyncio.Event) -> None:
        await self._start_health()
        pool = await self._connect(stop)
        if pool is None:
            if self.health is not None:
                await self.health.close()
            return
        lock = await self._lock_instance(pool)
        self.pool = pool
        halt = asyncio.Event()
        try:
            await self._build(pool)
            await self.share.acheck()
            self.supervisor.start("instance_lock", lambda: lock.hold(halt, stop), halt)
            self._start_tasks(stop, halt)
            await stop.wait()
            await self._shutdown(halt)
        finally:
            await self._teardown(halt, pool, lock)

    async def _lock_instance(self, pool: Pool) -> InstanceLock:
        """Take this instance id for this process; InstanceTaken (nothing touched) if another has it."""
        lock = InstanceLock(self.config, self.dsn, self.instance_id)
        try:
            await lock.acquire()
        except BaseException:
            # Not ours to clean up: the claims under this id belong to the other process.
            if self.health is not None:
                await self.health.close()
            await pool.close()
            raise
        return lock

    async def _start_health(self) -> None:
        """Bind /healthz and /metrics before anything else: a port in use ends the start
        with one line naming health.port (ConfigError, exit 2). Served until `halt`, so it
        answers during the shutdown too."""
        if not self.config.health.enabled:
            return
        health = HealthServer(self.config.health, self.health_snapshot, metrics.REGISTRY)
        await health.start()
        self.side_tasks["health"] = health.run
        self.health = health

    async def run_once(self, stop: asyncio.Event) -> SweepCounts:
        """`reactor sweep --once`: one sweep, process what it queued, return its counts."""
        pool = await self._connect(stop)
        if pool is None:
            return SweepCounts(skipped="stopped")
        lock = await self._lock_instance(pool)
        self.pool = pool
        halt = asyncio.Event()
        try:
            sweeper, _ = await self._build(pool)
            await self.share.acheck()
            self.supervisor.start("instance_lock", lambda: lock.hold(halt, stop), halt)
            self.supervisor.start("share", lambda: self.share.run(halt), halt)
            self.supervisor.start("lease", lambda: self._lease_loop(halt), halt)
            total = SweepCounts()
            # The change log first (it is then read), then the full walk.
            for sweep in (sweeper.sweep_changes, sweeper.sweep):
                while not stop.is_set():
                    counts = await sweep(stop)
                    if counts.skipped:
                        return counts
                    total.add(counts)
                    await self.lanes.run(stop, until_empty=True)
                    if not counts.deferred:
                        break
            return total
        finally:
            await self._teardown(halt, pool, lock)

    async def _connect(self, stop: asyncio.Event) -> Pool | None:
        """The pool, retrying with backoff while the database is down (logged once per state)."""
        backoff = Backoff(cap=self.config.database.reconnect_max_seconds)
        while not stop.is_set():
            pool: Pool | None = None
            try:
                pool = await connections.open_pool(self.dsn, self.config)
                async with borrowed(pool) as conn:
                    # Before anything is detected: an image is never detected for a write that cannot succeed.
                    shapes = await writable.write_shapes(conn, self.config.database.channel)
                    self._failure_columns, self._result_shape = shapes.failure_columns, shapes.result_shape
            except catalog.SchemaUnusable:
                if pool is not None:
                    await pool.close()
                raise
            except (DatabaseUnavailable, StoreUnavailable) as exc:
                if pool is not None:
                    pool.terminate()
                if self.database_up is not False:
                    log.warning("database_unavailable", error=str(exc), retry="with backoff until it is up")
                self.database_up = False
                await sleep_or_stop(stop, backoff.next_delay())
                continue
            if self.database_up is False:
                log.info("database_available")
            self.database_up = True
            return pool
        return None

    @property
    def started(self) -> bool:
        """Whether the lanes have their loops: run_once and run have connected and built them."""
        return self.first_loop is not None

    async def _build(self, pool: Pool) -> tuple[Sweeper, DetectionLoop]:
        async with borrowed(pool) as conn:
            own_role = await notifications.current_role(conn)
        self.senders.roles = self.senders.roles | {own_role}
        self.sweeper = Sweeper(
            pool,
            self.queue,
            page_size=self.config.sweep.page_size,
            lease_seconds=self.config.service.lease_seconds,
            instance_id=self.instance_id,
            share_online=lambda: self.share.online,
            orphan_policy=OrphanPolicy.from_config(self.config.sweep),
            walk_interval_seconds=self.config.sweep.walk_interval_hours * 3600.0,
            work_share=self.work_share,
        )

        settings = LoopSettings(
            self.config,
            pool,
            self.queue,
            self.share,
            self.mapper,
            self.instance_id,
            self._failure_columns,
            # A file still being written is tried again after the share's stability window.
            incomplete_delay=stability_window(self.config, choose_observer(self.config)),
            result_shape=self._result_shape,
            blocked=self.write_block,
        )

        def make_loop(detector: Detector, in_flight: InFlight) -> DetectionLoop:
            return DetectionLoop(settings, detector, in_flight)

        self.first_loop = self.lanes.bind(make_loop)
        self.listener = Listener(self.config, self.dsn, self.instance_id, self.on_notify, self._on_listener_connected)
        if self.config.watcher.enabled:
            # File events enter the same queue; the watcher's rescans ask for a sweep.
            sink = DatabaseSink(
                pool,
                lambda path, redetect: self.queue.put(path, Priority.FILE_EVENT, redetect=redetect),
                register_files=self.config.register_files,
                request_sweep=self.request_sweep,
            )
            self.watcher = Watcher(self.config, self.mapper, self.share, sink)
            self.side_tasks["watcher"] = self.watcher.run
        metrics.bind_queue(self.queue)
        listener = self.listener
        metrics.LISTENER_CONNECTED.set_function(lambda: float(listener.connected))
        metrics.SHARE_ONLINE.set_function(lambda: float(self.share.online))
        metrics.DETECTOR_RESTARTS.set_function(lambda: float(self.lanes.restarts))
        metrics.bind_children(self.lanes.snapshot)
        return self.sweeper, self.first_loop

    def _start_tasks(self, stop: asyncio.Event, halt: asyncio.Event) -> None:
        assert self.listener is not None and self.first_loop is not None
        assert self.sweeper is not None and self.pool is not None
        listener, sweeper, pool, lanes = self.listener, self.sweeper, self.pool, self.lanes
        tasks: dict[str, TaskFactory] = {
            "share": self.share.run,
            "listener": listener.run,
            "sweeper": lambda halt: self.scheduler.run(sweeper, pool, lambda: listener.connected, halt),
            "orphan_hints": lambda halt: self.scheduler.run_orphan_hints(sweeper, halt),
            "walk": lambda halt: self.scheduler.run_walk(sweeper, halt),
            "heartbeat": self._heartbeat_loop,
            "lease": self._lease_loop,
            "loop_lag": self.loop_lag.run,
            # A storm frees as much as it allocates; glibc keeps the freed pages unless asked.
            "heap_trim": heap_trim.HeapTrimmer(lambda: lanes.processed).run,
            **self.side_tasks,
        }
        for name, factory in tasks.items():
            self.supervisor.start(name, _bind(factory, halt), halt)
        # The detection lanes alone watch `stop`: side tasks (lease renewal among
        # them) keep running until every lane's image in flight is written.
        self.supervisor.start("detection", lambda: lanes.run(stop), stop)
        log.info(
            "reactor_started",
            instance_id=self.instance_id,
            queue_size=self.queue.maxsize,
            share_online=self.share.online,
        )

    async def _shutdown(self, halt: asyncio.Event) -> None:
        grace = self.config.service.shutdown_grace_seconds
        current = self.lanes.current
        log.info("reactor_stopping", current_images=current, grace_seconds=grace)
        if not await self.supervisor.drain(("detection",), grace):
            log.warning("shutdown_grace_exceeded", current_image=current)
        halt.set()
        await self.supervisor.cancel_all()
        persisting = {task for task in self.lanes.persisting() if not task.done()}
        if persisting:
            # The outcome writes were shielded from the cancellation; give them a moment.
            await asyncio.wait(persisting, timeout=CLEANUP_TIMEOUT_SECONDS)

    async def _teardown(self, halt: asyncio.Event, pool: Pool, lock: InstanceLock) -> None:
        """However the run ended: every task stopped, the claims released and the pool
        closed, and only then the instance lock (another process may take the id next)."""
        halt.set()
        await self.supervisor.cancel_all()
        await self._cleanup(pool)
        await lock.release()

    async def _cleanup(self, pool: Pool) -> None:
        try:
            async with asyncio.timeout(CLEANUP_TIMEOUT_SECONDS):
                async with borrowed(pool) as conn:
                    # Only what this process made: after a takeover of the id the rest is the new owner's.
                    released = await claims.release_instance(conn, self.instance_id, self.lanes.in_flight.tokens())
                    # What is still queued goes back to the change log, so no walk is needed for it;
                    # so do the claims just released (read ahead or not written): they are in no queue.
                    await changes.hand_back(conn, [*self.queue.paths(), *self.lanes.in_flight, *self.lanes.current])
                    await instances.remove(conn, self.instance_id, self.started_at, os.getpid())
            log.info("claims_released", count=released)
        except (TimeoutError, StoreUnavailable) as exc:
            log.warning(
                "claims_not_released",
                error=str(exc) or type(exc).__name__,
                effect="they expire after service.lease_seconds",
            )
        await self.lanes.close()
        try:
            await asyncio.wait_for(pool.close(), CLEANUP_TIMEOUT_SECONDS)
        except TimeoutError:
            pool.terminate()
        log.info("reactor_stopped", instance_id=self.instance_id)

    # ------------------------------------------------------------------ side tasks

    async def _heartbeat_loop(self, halt: asyncio.Event) -> None:
        assert self.pool is not None
        beat = self.config.health.heartbeat_seconds
        while not halt.is_set():
            state = json.dumps(self.health_snapshot(), default=str)
            try:
                async with borrowed(self.pool) as conn:
                    await self.take_gone_instances(conn, gone_after_seconds(beat))
                    await instances.heartbeat(
                        conn, self.instance_id, socket.gethostname(), os.getpid(), self.started_at, state
                    )
                    live = await control.live_instances(conn, beat)
                if self.work_share.update(live):
                    log.info("work_share_changed", **self.work_share.as_dict())
                    # This share of the change log may hold changes another instance left.
                    self.request_sweep()
            except StoreUnavailable:
                pass  # the detection loop logs database state changes
            await sleep_or_stop(halt, beat)

    async def take_gone_instances(self, conn: Conn, gone_after: float) -> None:
        """An instance gone without a clean stop (an earlier process of this id among them)
        left what it had queued in no queue and, its changes read, in no log: ask for the walk."""
        gone = await changes.take_gone_instances(conn, gone_after, self.instance_id, self.started_at)
        if gone:
            log.warning("instances_gone", instances=gone[:10], count=len(gone), effect="full walk requested")
            await changes.request_walk(conn)
            self.scheduler.walk_soon()

    async def _lease_loop(self, halt: asyncio.Event) -> None:
        assert self.pool is not None
        lease = self.config.service.lease_seconds
        while not await sleep_or_stop(halt, lease / 3):
            # Each lane's image being detected and the one being written (see reactor.core.detection_loop).
            in_flight = self.lanes.in_flight.values()
            if not in_flight:
                continue
            try:
                async with borrowed(self.pool) as conn:
                    for claim in in_flight:
                        if not await claims.renew(conn, claim, lease):
                            log.warning("claim_lost", path=claim.path, token=claim.token)
            except StoreUnavailable:
                pass  # fencing protects the result if the lease runs out meanwhile


def _bind(factory: TaskFactory, halt: asyncio.Event) -> Callable[[], Awaitable[None]]:
    return lambda: factory(halt)
