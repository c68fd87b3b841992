"""Choosing the observer: inotify on local disks, a polling scanner on network shares.

inotify only sees changes made through this machine's kernel. Photos written to
an SMB or NFS share by another client produce no event at all (watchdog 409, 504;
inotify(7)), so on a network filesystem the reactor walks the share instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from reactor.config import Config

NETWORK_FSTYPES = frozenset({
    "cifs", "smb3", "smbfs", "smb", "nfs", "nfs4", "ncpfs", "afs", "9p", "ceph", "glusterfs",
    "lustre", "davfs", "fuse.sshfs", "fuse.rclone", "fuse.glusterfs", "fuse.s3fs", "fuse.gcsfuse",
    "fuse.smbnetfs", "fuse.davfs2", "fuse.cifs",
})

MOUNTINFO = "/proc/self/mountinfo"


@dataclass(frozen=True)
class Mount:
    mount_point: str
    fstype: str
    source: str


@dataclass(frozen=True)
class ObserverChoice:
    kind: str  # "native" or "polling"
    reason: str
    fstype: str = ""
    mount_point: str = ""

    @property
    def network(self) -> bool:
        return self.kind == "polling"


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040).
    out, i = [], 0
    while i < len(field):
        code = field[i + 1 : i + 4]
        if field[i] == "\\" and len(code) == 3 and all(c in "01234567" for c in code):
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    """Mounts from /proc/self/mountinfo (proc(5)): field 5 is the mount point, and
    after the ' - ' separator come the filesystem type and the source."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        tail = right.split()
        if not sep or len(fields) < 5 or len(tail) < 2:
            continue
        mounts.append(Mount(mount_point=_unescape(fields[4]), fstype=tail[0], source=_unescape(tail[1])))
    return mounts


def mount_for(path: str, mounts: list[Mount]) -> Mount | None:
    """The mount holding ``path``: the longest mount point that is a prefix (the last one wins on ties)."""
    best: Mount | None = None
    for m in mounts:
        mp = m.mount_point.rstrip("/") or "/"
        if (path == mp or path.startswith(mp.rstrip("/") + "/")) and (
            best is None or len(mp) >= len(best.mount_point.rstrip("/") or "/")
        ):
            best = m
    return best


def is_network(fstype: str) -> bool:
    low = fstype.lower()
    return low in NETWORK_FSTYPES or low.startswith(("nfs", "cifs", "smb"))


def choose_observer(config: Config, mountinfo: str | None = None) -> ObserverChoice:
    """Which observer watches images.root; watcher.observer other than auto forces one."""
    forced = config.watcher.observer
    if forced != "auto":
        return ObserverChoice(kind=forced, reason="configured")
    root = config.images.root
    if root.startswith(("\\\\", "//")):
        return ObserverChoice(kind="polling", reason="unc_root")
    if mountinfo is None:
        try:
            mountinfo = Path(MOUNTINFO).read_text(encoding="utf-8", errors="surrogateescape")
        except OSError:
            # No /proc (Windows with a drive letter, macOS): the native observer.
            return ObserverChoice(kind="native", reason="no_mountinfo")
    real = os.path.realpath(root)
    mount = mount_for(real, parse_mountinfo(mountinfo))
    if mount is None:
        return ObserverChoice(kind="native", reason="mount_unknown")
    kind = "polling" if is_network(mount.fstype) else "native"
    return ObserverChoice(kind=kind, reason="filesystem_type", fstype=mount.fstype, mount_point=mount.mount_point)
