"""Is the share there? The one place that decides whether "file not found" can be believed.

An unmounted share looks exactly like a library whose every photo was deleted
(Immich 17290, PhotoPrism 2299). So the share counts as online only while its root
exists, is a directory, holds the marker file, and (if configured) is still a mount
point. Any error while checking (EIO, ESTALE, EACCES, a dead CIFS session) counts as
offline too, once it has lasted ``CONFIRM_SECONDS`` (an SMB client reconnecting answers
EIO for a few seconds): when in doubt, believe nothing is missing.

Nothing here blocks the event loop: ``acheck`` runs the probe on a thread with a
timeout (``PROBE_TIMEOUT_SECONDS``), and while a probe hangs (a hard NFS mount, a
dead SMB session) the share is offline with reason ``probe_hung``, never "online by
default"; no second thread is sent into the same hang. ``check`` is the synchronous
probe for one-shot commands, not for the running service.

Many files vanishing at once (``watcher.vanish_fraction``) is held once by a
``VanishGuard`` and believed only if the same files are still gone at the next look;
the share does not go offline for it, so a confirmed mass deletion cannot make it
flap. What is believed then is only marked orphaned (reactor.store.orphans), and purged
within a bound.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
from collections.abc import Callable, Mapping

from reactor import logs
from reactor.config import ImagesConfig, WatcherConfig
from reactor.util.aio import sleep_or_stop
from reactor.util.shareio import ShareIO
from reactor.watch.mounts import mount_point_found, network_mount_of

log = logs.get("reactor.share")

Listener = Callable[[bool], None]

# A probe is a few stat calls; one that takes longer is a hung mount.
PROBE_TIMEOUT_SECONDS = 10.0
# An I/O error from an online share is confirmed before the share goes offline: an SMB
# client reconnecting its session (smbnetfs does after an open of a file that another
# client holds locked) answers EIO for about 3 s, then the share is back. Probes are
# repeated for this long, and one success keeps the share online.
CONFIRM_SECONDS = 6.0
CONFIRM_STEP_SECONDS = 0.5


def is_mass_vanish(watcher: WatcherConfig, vanished: int, known: int) -> bool:
    """More than watcher.vanish_fraction of the known files, and at least vanish_min_files."""
    if vanished < max(1, watcher.vanish_min_files) or known <= 0:
        return False
    return vanished / known > watcher.vanish_fraction


class VanishGuard:
    """Holds a mass vanish once; the files still gone at the next look are believed.

    Files that vanish on top of a held set are a fresh set (held again only if they
    are themselves a mass vanish), so continuous deletions never hold forever.
    """

    def __init__(self, watcher: WatcherConfig, what: str) -> None:
        self.watcher = watcher
        self.what = what
        self._suspect: frozenset[str] = frozenset()

    def believe(self, vanished: list[str], known: int) -> list[str]:
        """The vanished paths to treat as deleted now; the rest are held for one more look."""
        deleted, confirmed = self.sort(vanished, known)
        return confirmed + deleted

    def sort(
        self, vanished: list[str], known: int, files: Mapping[str, int] | None = None
    ) -> tuple[list[str], list[str]]:
        """(deleted now, a confirmed mass vanish); a fresh mass vanish is held for one more look.

        ``files`` counts the known files a vanished path stands for (a deleted or
        moved-out folder is all its files, not one path); each counts one without it.
        The confirmed set is a decision for the operator where the caller can hold it
        (reactor.store.held), so that a real mass deletion is applied once, by a person."""
        confirmed = [p for p in vanished if p in self._suspect]
        fresh = [p for p in vanished if p not in self._suspect]
        self._suspect = frozenset()
        if confirmed:
            log.warning("share_mass_vanish_confirmed", source=self.what, files=len(confirmed))
        count = sum(max(1, files.get(p, 1)) for p in fresh) if files is not None else len(fresh)
        if fresh and is_mass_vanish(self.watcher, count, known):
            log.warning(
                "share_mass_vanish",
                source=self.what,
                vanished=count,
                known=known,
                fraction=round(count / max(known, 1), 3),
                held=True,
            )
            self._suspect = frozenset(fresh)
            fresh = []
        return fresh, confirmed


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
            # A mount point, or a folder on a network mount above it (smbnetfs: MNT/host/share).
            if not os.path.ismount(root) and network_mount_of(root) is None:
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


def _transient(reason: str) -> bool:
    """An error while probing (EIO during a reconnect), not a clean answer or a hang."""
    return "_error:" in reason


def not_mounted_advice(root: str) -> str:
    return (
        f"{root} is neither a mount point nor on a network mount (it is on {mount_point_found(root)}): "
        "mount the share there, or set images.require_mount = false"
    )


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
        probe_timeout: float = PROBE_TIMEOUT_SECONDS,
        confirm_seconds: float = CONFIRM_SECONDS,
    ) -> None:
        self.images = images
        self.watcher = watcher or WatcherConfig()
        self.online_interval = online_interval
        self.offline_initial = offline_initial
        self.offline_max = offline_max
        self.probe_timeout = probe_timeout
        # Every other file-system call on the share goes through this pool, apart from the
        # probe's thread: a folder that hangs stalls there, never the probe.
        self.io = ShareIO(images.io_timeout_seconds)
        self.confirm_seconds = confirm_seconds
        # Probe errors that an online share recovered from within confirm_seconds.
        self.blips = 0
        self.online = False
        self.reason: str | None = "not_checked"
        self.transitions = 0
        self._known = False
        self._listeners: list[Listener] = []
        self._online_event = asyncio.Event()
        # The probe thread in flight; while it hangs no other is started.
        self._probe: asyncio.Future[str | None] | None = None

    # -- state -----------------------------------------------------------------

    def add_listener(self, cb: Listener) -> None:
        self._listeners.append(cb)

    def check(self) -> bool:
        """Look at the share now (a few stat calls), update the state, return online."""
        self._apply(probe(self.images))
        return self.online

    async def acheck(self) -> bool:
        """``check`` with the stat calls on a worker thread and a timeout: a hard-mounted
        NFS share that hangs must not freeze the event loop, nor count as online.

        An online share that answers an I/O error is probed again for confirm_seconds
        before it goes offline (a client reconnecting); a clean answer (the root or the
        marker not found) and a hung probe are believed at once."""
        reason = await self._probe_once()
        if reason is not None and self.online and _transient(reason):
            reason = await self._confirm(reason)
        self._apply(reason)
        return self.online

    async def _probe_once(self) -> str | None:
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(asyncio.to_thread(probe, self.images))
        try:
            return await asyncio.wait_for(asyncio.shield(self._probe), self.probe_timeout)
        except TimeoutError:
            return "probe_hung"

    async def _confirm(self, first: str) -> str | None:
        """Probe until one succeeds or confirm_seconds have passed: the last reason, or None."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.confirm_seconds
        reason: str | None = first
        while reason is not None and _transient(reason) and loop.time() < deadline:
            await asyncio.sleep(CONFIRM_STEP_SECONDS)
            reason = await self._probe_once()
        if reason is None:
            self.blips += 1
            log.info("share_probe_recovered", root=self.images.root, error=first, blips=self.blips)
        return reason

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
            log.warning("share_offline", root=self.images.root, reason=reason, advice=self._advice(reason))
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
            return not_mounted_advice(self.images.root)
        if reason == "probe_hung":
            return f"checking {self.images.root} did not finish in {self.probe_timeout:.0f} s: the mount hangs"
        return f"check that {self.images.root} is mounted and readable; detection resumes when it is"

    # -- waiting ---------------------------------------------------------------

    async def wait_online(self) -> None:
        await self._online_event.wait()

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
                backoff = min(self.offline_max, backoff * 2)
            await sleep_or_stop(stop, delay)
