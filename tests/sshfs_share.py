"""A real network share for tests: sshfs over a throwaway sshd on a loopback port.

fuse.sshfs has what SMB and NFS clients have: an attribute cache (a file being written
shows a frozen size for a while) and inode numbers of its own, different on each
mount. The server side is a plain folder: writing there is another client writing.

Everything lives in a temporary folder: host and user keys, the sshd config (listening
on 127.0.0.1 only, on a free port), its pid file. No system configuration is touched.
Where sshd, sshfs or /dev/fuse is missing, or the mount does not come up, the tests that
need it are skipped with one line saying why (``unavailable``).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
# sshfs's directory and attribute caches (dcache_timeout), kept short in tests: the
# reactor is told the same value through watcher.attribute_cache_seconds.
CACHE_SECONDS = 2


def unavailable() -> str | None:
    """Why no sshfs share can be made here, or None."""
    for name, path in (
        ("sshd", SSHD),
        ("sshfs", shutil.which("sshfs")),
        ("ssh-keygen", shutil.which("ssh-keygen")),
        ("fusermount3", shutil.which("fusermount3") or shutil.which("fusermount")),
    ):
        if not path:
            return f"{name} is not installed (apt-get install openssh-server sshfs pv; .ci/run does it)"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing: FUSE is not available on this machine"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(predicate: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


class SshfsShare:
    """``server``: the exported folder (the other client's view); ``mount``: the reactor's."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.server = base / "srv"
        self.mount = base / "mnt"
        self.port = 0
        self.sshd: subprocess.Popen[bytes] | None = None
        self.sshfs: subprocess.Popen[bytes] | None = None
        self.mounts = 0

    # -- sshd ------------------------------------------------------------------

    def start(self) -> None:
        self.server.mkdir(parents=True)
        self.mount.mkdir()
        keys = self.base / "keys"
        keys.mkdir(mode=0o700)
        for name in ("host", "user"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True)
        (keys / "authorized_keys").write_text((keys / "user.pub").read_text())
        self.port = _free_port()
        config = self.base / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {keys / 'host'}\n"
            f"AuthorizedKeysFile {keys / 'authorized_keys'}\nPidFile {self.base / 'sshd.pid'}\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
            "StrictModes no\nUsePAM no\nSubsystem sftp internal-sftp\n"
        )
        # sshd refuses to start without its privilege-separation folder (normally made by
        # its service unit); an empty folder is all it needs.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        with open(self.base / "sshd.log", "wb") as log:
            self.sshd = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stderr=log)

        def listening() -> bool:
            if self.sshd is not None and self.sshd.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.base / 'sshd.log').read_text()[-300:]}")
            with contextlib.closing(socket.socket()) as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        _wait(listening, 10, "sshd to listen")
        self.connect()

    # -- the mount -------------------------------------------------------------

    def mount_folder(self, folder: Path, mountpoint: Path) -> subprocess.Popen[bytes]:
        """A second sshfs client: the server's ``folder`` mounted at ``mountpoint`` (for
        example a folder inside a local share). Its process is returned: SIGSTOP it and
        every call into the mount hangs, as on a hung network folder; SIGCONT ends it."""
        with open(self.base / f"sshfs-extra-{mountpoint.name}.log", "wb") as log:
            command = [
                "sshfs",
                "-f",
                "-p",
                str(self.port),
                "-o",
                self._options(),
                f"{getpass.getuser()}@127.0.0.1:{folder}",
            ]
            client = subprocess.Popen([*command, str(mountpoint)], stderr=log)
        _wait(lambda: client.poll() is None and os.path.ismount(mountpoint), 15, f"the sshfs mount at {mountpoint}")
        return client

    def unmount_folder(self, client: subprocess.Popen[bytes], mountpoint: Path) -> None:
        with contextlib.suppress(ProcessLookupError):
            client.send_signal(signal.SIGCONT)
        client.kill()
        client.wait(10)
        subprocess.run(
            ["fusermount3" if shutil.which("fusermount3") else "fusermount", "-u", "-z", str(mountpoint)],
            check=False,
            capture_output=True,
        )

    def _options(self) -> str:
        return ",".join(
            [
                f"IdentityFile={self.base / 'keys' / 'user'}",
                "StrictHostKeyChecking=no",
                "UserKnownHostsFile=/dev/null",
                "LogLevel=ERROR",
                f"dcache_timeout={CACHE_SECONDS}",
                "reconnect",
            ]
        )

    def connect(self) -> None:
        """Mount the server folder (again): every mount numbers inodes afresh."""
        options = self._options()
        target = f"{getpass.getuser()}@127.0.0.1:{self.server}"
        with open(self.base / f"sshfs-{self.mounts}.log", "wb") as log:
            command = ["sshfs", "-f", "-p", str(self.port), "-o", options, target, str(self.mount)]
            self.sshfs = subprocess.Popen(command, stderr=log)
        self.mounts += 1

        def mounted() -> bool:
            if self.sshfs is not None and self.sshfs.poll() is not None:
                log = (self.base / f"sshfs-{self.mounts - 1}.log").read_text()[-300:]
                raise RuntimeError(f"sshfs exited: {log}")
            return os.path.ismount(self.mount)

        _wait(mounted, 15, "the sshfs mount")

    def kill(self) -> None:
        """The connection dies: sshfs is gone and the mount answers ENOTCONN."""
        if self.sshfs is not None:
            self.sshfs.kill()
            self.sshfs.wait(10)
            self.sshfs = None

    def disconnect(self) -> None:
        self.kill()
        subprocess.run(
            ["fusermount3" if shutil.which("fusermount3") else "fusermount", "-u", "-z", str(self.mount)],
            check=False,
            capture_output=True,
        )

    def remount(self) -> None:
        self.disconnect()
        self.connect()

    def close(self) -> None:
        self.disconnect()
        if self.sshd is not None:
            self.sshd.terminate()
            try:
                self.sshd.wait(10)
            except subprocess.TimeoutExpired:
                self.sshd.kill()
            self.sshd = None

    def reset(self) -> None:
        """An empty share, freshly mounted (no cached listing of the last test's files)."""
        for child in self.server.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        self.remount()
