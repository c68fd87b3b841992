"""Is the share there? The one place that decides whether "file not found" can be believed.

An unmounted share looks exactly like a library whose every photo was deleted
(Immich 17290, PhotoPrism 2299). So the share counts as online only while its root
exists, is a directory, holds the marker file, and (if configured) is still a mount
point. Any error while checking (EIO, ESTALE, EACCES, a dead CIFS session) counts as
offline too: when in doubt, believe nothing is missing.

Call ``check`` and ``record_vanish`` on the event loop's thread: they may fire the
transition listeners and set the ``wait_online`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
import time
from collections.abc import Callable

from reactor import logs
from reactor.config import ImagesConfig, WatcherConfig

log = logs.get("reactor.share")

Listener = Callable[[bool], None]


def probe(images: ImagesConfig) -> str | None:
    """Why the share is offline right now, or None when it is online. Never raises."""
    root = images.root
    try:
        st = os.stat(root)
    except FileNotFoundError:
        return "root_missing"
    except OSError as exc:
        return f"root_error:{errno.errorcode.get(exc.errno or 0, exc.errno)}"
    if not stat.S_ISDIR(st.st_mode):
        return "root_not_directory"
    if images.require_mount:
        try:
            if not os.path.ismount(root):
                return "not_mounted"
        except OSError as exc:
            return f"mount_error:{errno.errorcode.get(exc.errno or 0, exc.errno)}"
    try:
        os.stat(os.path.join(root, images.marker))
    except FileNotFoundError:
        return "marker_missing"
    except OSError as exc:
        return f"marker_error:{errno.errorcode.get(exc.errno or 0, exc.errno)}"
    return None


class ShareMonitor:
    """Tracks whether the share is online, logs each transition once, tells listeners."""

    def __init__(
        self,
        images: ImagesConfig,
        watcher: WatcherConfig | None = None,
        *,
        online_interval: float = 10.0,
        offline_initial: float = 1.0,
        offline_max: float = 60.0,
    ) -> None:
        self.images = images
        self.watcher = watcher or WatcherConfig()
        self.online_interval = online_interval
        self.offline_initial = offline_initial
        self.offline_max = offline_max
        self.online = False
        self.reason: str | None = "not_checked"
        self.transitions = 0
        self._known = False
        self._listeners: list[Listener] = []
        self._online_event = asyncio.Event()
        self._wake = asyncio.Event()
        # After a mass vanish the share stays offline until this monotonic time, even
        # if the marker is still there: half a share disappearing is not a deletion.
        self._hold_until = 0.0
        self._hold_reason: str | None = None

    # -- state -----------------------------------------------------------------

    def add_listener(self, cb: Listener) -> None:
        self._listeners.append(cb)

    def check(self) -> bool:
        """Look at the share now (a few stat calls), update the state, return online."""
        reason = probe(self.images)
        if reason is None and time.monotonic() < self._hold_until:
            reason = self._hold_reason
        self._apply(reason)
        return self.online

    async def acheck(self) -> bool:
        """``check`` with the stat calls on a worker thread: a hard-mounted NFS share
        that hangs must not freeze the event loop."""
        reason = await asyncio.to_thread(probe, self.images)
        if reason is None and time.monotonic() < self._hold_until:
            reason = self._hold_reason
        self._apply(reason)
        return self.online

    def record_vanish(self, vanished: int, known: int) -> bool:
        """True when ``vanished`` of ``known`` files disappearing at once is an outage.

        More than watcher.vanish_fraction (and at least vanish_min_files) counts as
        one: the share goes offline for a hold period, and the caller must not report
        those files as deleted.
        """
        if vanished < max(1, self.watcher.vanish_min_files) or known <= 0:
            return False
        if vanished / known <= self.watcher.vanish_fraction:
            return False
        hold = max(self.offline_initial, self.online_interval)
        self._hold_until = time.monotonic() + hold
        self._hold_reason = "mass_vanish"
        log.warning("share_mass_vanish", root=self.images.root, vanished=vanished, known=known,
                    fraction=round(vanished / known, 3), hold_seconds=hold)
        self._apply("mass_vanish")
        self._wake.set()
        return True

    def _apply(self, reason: str | None) -> None:
        online = reason is None
        changed = (not self._known) or online != self.online
        self._known = True
        self.online = online
        self.reason = reason
        if online:
            self._online_event.set()
        else:
            self._online_event.clear()
        if not changed:
            return
        self.transitions += 1
        if online:
            log.info("share_online", root=self.images.root)
        else:
            log.warning("share_offline", root=self.images.root, reason=reason,
                        advice=self._advice(reason))
        for cb in list(self._listeners):
            try:
                cb(online)
            except Exception:
                log.exception("share_listener_failed", listener=getattr(cb, "__qualname__", repr(cb)))

    def _advice(self, reason: str | None) -> str:
        marker = os.path.join(self.images.root, self.images.marker)
        if reason == "marker_missing":
            return f"create the marker file {marker} on the share (see README 'Watching the share')"
        if reason == "not_mounted":
            return f"mount the share at {self.images.root}, or set images.require_mount = false"
        if reason == "mass_vanish":
            return "many files vanished at once; detection pauses until the share is checked again"
        return f"check that {self.images.root} is mounted and readable; detection resumes when it is"

    # -- waiting ---------------------------------------------------------------

    async def wait_online(self) -> None:
        await self._online_event.wait()

    def poke(self) -> None:
        """Ask ``run`` to check again now (for example after an I/O error elsewhere)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Check periodically while online, with doubling backoff while offline."""
        backoff = self.offline_initial
        while not stop.is_set():
            await self.acheck()
            if self.online:
                backoff = self.offline_initial
                delay = self.online_interval
            else:
                delay = backoff
                if self.reason == "mass_vanish":
                    delay = max(0.0, self._hold_until - time.monotonic()) + 0.01
                backoff = min(self.offline_max, backoff * 2)
            self._wake.clear()
            await wait_any(stop, self._wake, delay)


async def wait_any(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    """Return when either event is set or ``seconds`` have passed."""
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        for w in waiters:
            with contextlib.suppress(asyncio.CancelledError):
                await w
