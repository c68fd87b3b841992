"""Choosing the observer: inotify on local disks, a polling scanner on network shares.

inotify only sees changes made through this machine's kernel. Photos written to
an SMB or NFS share by another client produce no event at all (watchdog 409, 504;
inotify(7)), so on a network filesystem the reactor walks the share instead.

On Windows there is no mountinfo: a UNC root is a network share, and for a drive letter
Windows is asked (``GetDriveTypeW``): a mapped network drive (``net use Z: \\\\nas\\share``)
answers ``DRIVE_REMOTE`` and gets the network-share rules too.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

from reactor.config import Config
from reactor.paths import plain_windows

# GetDriveTypeW's answers (fileapi.h), named as the observer choice's fstype on Windows.
DRIVE_TYPES = {0: "unknown", 1: "no_root_dir", 2: "removable", 3: "fixed", 4: "remote", 5: "cdrom", 6: "ramdisk"}
DRIVE_REMOTE = 4
# The fstype of a choice on a drive that Windows reports as a network drive.
REMOTE_DRIVE = "drive_remote"

NETWORK_FSTYPES = frozenset(
    {
        "cifs",
        "smb3",
        "smbfs",
        "smb",
        "nfs",
        "nfs4",
        "ncpfs",
        "afs",
        "9p",
        "ceph",
        "glusterfs",
        "lustre",
        "davfs",
        "fuse.sshfs",
        "fuse.rclone",
        "fuse.glusterfs",
        "fuse.s3fs",
        "fuse.gcsfuse",
        "fuse.smbnetfs",
        "fuse.davfs2",
        "fuse.cifs",
        REMOTE_DRIVE,
    }
)

MOUNTINFO = "/proc/self/mountinfo"


# How long a client may show cached sizes and mtimes when its mount options do not
# say: cifs actimeo defaults to 1 s, NFS acregmax to 60 s, sshfs's caches to 20 s
# (dcache_timeout; its options are the process's, not the kernel mount's). smbnetfs
# sets no attribute timeout, so the kernel's FUSE default of 1 s holds: a change made
# by another client showed through it after 0.7 to 1.0 s (tests/test_smb_share.py
# measures it on every run; docs/watching.md has the figures).
ATTRIBUTE_CACHE_DEFAULTS = {
    "cifs": 1.0,
    "smb3": 1.0,
    "nfs": 60.0,
    "nfs4": 60.0,
    "fuse.sshfs": 20.0,
    "fuse.smbnetfs": 1.0,
}
ATTRIBUTE_CACHE_UNKNOWN = 60.0
# Windows' SMB client keeps file information for 10 s (FileInfoCacheLifetime).
WINDOWS_SMB_CACHE = 10.0
# Mount options that bound the attribute cache, in the order they are believed.
ATTRIBUTE_CACHE_OPTIONS = ("acregmax", "actimeo", "attr_timeout", "cache_timeout", "dcache_timeout")


@dataclass(frozen=True)
class Mount:
    mount_point: str
    fstype: str
    source: str
    # Per-mount and superblock options (mountinfo fields 6 and 11), name -> value.
    options: tuple[tuple[str, str], ...] = ()

    def option(self, name: str) -> str | None:
        return next((v for k, v in self.options if k == name), None)


@dataclass(frozen=True)
class ObserverChoice:
    kind: str  # "native" or "polling"
    reason: str
    fstype: str = ""
    mount_point: str = ""
    mount: Mount | None = None

    @property
    def network(self) -> bool:
        return self.kind == "polling"

    @property
    def stable_inodes(self) -> bool:
        """False on network filesystems: a client numbers files per mount, and a rename
        on the server gives a new number, so there a file is its path, size and mtime."""
        return not (self.reason == "unc_root" or is_network(self.fstype))


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
        options = _options(fields[5]) + (_options(tail[2]) if len(tail) > 2 else ())
        mounts.append(Mount(_unescape(fields[4]), tail[0], _unescape(tail[1]), options))
    return mounts


def _options(field: str) -> tuple[tuple[str, str], ...]:
    out = []
    for item in _unescape(field).split(","):
        name, _, value = item.partition("=")
        if name:
            out.append((name, value))
    return tuple(out)


def attribute_cache_seconds(mount: Mount | None) -> float:
    """How long the client may show a stale size or mtime: from the options where they
    say (``acregmax``/``actimeo`` for cifs and NFS, ``attr_timeout``/``cache_timeout``
    for FUSE), else the filesystem type's default; an unknown network type gets 60 s,
    a local filesystem (or none known) 0."""
    if mount is None:
        return 0.0
    if mount.option("noac") is not None:
        return 0.0
    for name in ATTRIBUTE_CACHE_OPTIONS:
        value = mount.option(name)
        try:
            if value is not None and float(value) >= 0:
                return float(value)
        except ValueError:
            continue
    fstype = mount.fstype.lower()
    return ATTRIBUTE_CACHE_DEFAULTS.get(fstype, ATTRIBUTE_CACHE_UNKNOWN if is_network(fstype) else 0.0)


def stability_window(config: Config, choice: ObserverChoice) -> float:
    """Seconds a file's size and mtime must stay the same before it is queued.

    On a network share a stat can answer from the client's attribute cache, so a file
    still being copied can look unchanged for that long: the window must outlast the
    cache, with a margin, whatever watcher.network_stability_seconds says.
    """
    watcher = config.watcher
    if not choice.network:
        return watcher.stability_seconds
    cache = watcher.attribute_cache_seconds
    if cache < 0 and (is_unc(config.images.root) or choice.fstype == REMOTE_DRIVE):
        cache = WINDOWS_SMB_CACHE  # a UNC root or a mapped drive: the Windows SMB client's caches
    elif cache < 0:
        cache = attribute_cache_seconds(choice.mount)
    return max(watcher.network_stability_seconds, cache + max(2.0, cache / 2))


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


def read_mountinfo() -> str:
    """/proc/self/mountinfo, or "" where there is none (Windows, macOS) or it cannot be read."""
    try:
        return Path(MOUNTINFO).read_text(encoding="utf-8", errors="surrogateescape")
    except OSError:
        return ""


def network_mount_of(root: str, mountinfo: str | None = None) -> Mount | None:
    """The network mount that holds ``root`` (its mount point may be above it), or None.

    A FUSE client such as smbnetfs mounts the whole network at one point and shows a
    share as MNT/host/share: a root there is no mount point, yet it lies on the share.
    """
    text = read_mountinfo() if mountinfo is None else mountinfo
    if not text:
        return None
    mount = mount_for(os.path.realpath(root), parse_mountinfo(text))
    return mount if mount is not None and is_network(mount.fstype) else None


def mount_point_found(root: str, mountinfo: str | None = None) -> str:
    """For a message: the mount that holds ``root`` and its type, e.g. "/ (overlay)"."""
    text = read_mountinfo() if mountinfo is None else mountinfo
    mount = mount_for(os.path.realpath(root), parse_mountinfo(text)) if text else None
    return f"{mount.mount_point} ({mount.fstype})" if mount is not None else "no mount known"


def is_unc(root: str) -> bool:
    return root.startswith(("\\\\", "//"))


def has_drive_letter(root: str) -> bool:
    return len(root) >= 2 and root[1] == ":" and root[0].isalpha()


def drive_root(root: str) -> str:
    r"""The root that Windows types a drive by: ``Z:\`` for ``Z:\photos``, ``\\nas\share\`` for UNC."""
    path = PureWindowsPath(plain_windows(root))
    if not path.anchor and os.name == "nt":
        path = PureWindowsPath(os.path.abspath(root))  # a relative root: on the current drive
    return path.anchor


def drive_type(root: str) -> int | None:
    """``GetDriveTypeW`` for the drive holding ``root`` (DRIVE_REMOTE: a network drive); None off Windows."""
    if sys.platform != "win32":
        return None
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.GetDriveTypeW.restype = wintypes.UINT
    kernel32.GetDriveTypeW.argtypes = (wintypes.LPCWSTR,)
    return int(kernel32.GetDriveTypeW(drive_root(root)))


def _windows_drive_choice(forced: str, root: str) -> ObserverChoice:
    """A drive-letter root on Windows, which has no mountinfo: what Windows says of the drive."""
    answer = drive_type(root)
    fstype = f"drive_{DRIVE_TYPES.get(answer, 'unknown')}" if answer is not None else ""
    where = drive_root(root)
    if forced != "auto":
        return ObserverChoice(kind=forced, reason="configured", fstype=fstype, mount_point=where)
    if fstype == REMOTE_DRIVE:
        return ObserverChoice(kind="polling", reason="network_drive", fstype=fstype, mount_point=where)
    return ObserverChoice(
        kind="native", reason="local_drive" if fstype else "no_mountinfo", fstype=fstype, mount_point=where
    )


def is_network(fstype: str) -> bool:
    low = fstype.lower()
    return low in NETWORK_FSTYPES or low.startswith(("nfs", "cifs", "smb"))


def choose_observer(config: Config, mountinfo: str | None = None) -> ObserverChoice:
    """Which observer watches images.root; watcher.observer other than auto forces one."""
    forced = config.watcher.observer
    root = config.images.root
    if is_unc(root):
        return ObserverChoice(
            kind="polling" if forced == "auto" else forced, reason="unc_root" if forced == "auto" else "configured"
        )
    if os.name == "nt" or has_drive_letter(root):
        # Windows has no /proc (under Wine, \proc\self\mountinfo would be the Linux host's).
        return _windows_drive_choice(forced, root)
    if mountinfo is None:
        mountinfo = read_mountinfo()
    mount = mount_for(os.path.realpath(root), parse_mountinfo(mountinfo)) if mountinfo else None
    fstype, mount_point = (mount.fstype, mount.mount_point) if mount is not None else ("", "")
    if forced != "auto":
        return ObserverChoice(kind=forced, reason="configured", fstype=fstype, mount_point=mount_point, mount=mount)
    if not mountinfo:
        # No /proc (macOS): the native observer.
        return ObserverChoice(kind="native", reason="no_mountinfo")
    if mount is None:
        return ObserverChoice(kind="native", reason="mount_unknown")
    kind = "polling" if is_network(mount.fstype) else "native"
    return ObserverChoice(kind=kind, reason="filesystem_type", fstype=fstype, mount_point=mount_point, mount=mount)
