"""A real SMB share for tests: Samba's smbd on a loopback port, seen through smbnetfs (FUSE).

The production share is SMB. This machine's kernel has no cifs module, so the client is
smbnetfs, a FUSE client on libsmbclient: a file written through SMB by another client
shows a frozen size and mtime until it is closed, an open of a file that another client
holds without sharing fails, and the client reconnects its session after such an error.

Everything lives in a temporary folder: smbd's config (listening on 127.0.0.1 only, on
a free port, its private, state, lock and pid folders), a throwaway password for the
current user in smbd's own password database, and smbnetfs's home. No system
configuration is touched. The share is ``mount/127.0.0.1:PORT/share``; ``server`` is the
exported folder (writing there is another client writing on the file server).
Where samba, smbnetfs or /dev/fuse is missing, or the share does not come up, the tests
that need it are skipped with one line saying why (``unavailable``).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

SMBD = shutil.which("smbd") or ("/usr/sbin/smbd" if os.path.exists("/usr/sbin/smbd") else None)
SHARE = "share"
INSTALL = "apt-get install samba smbnetfs; .ci/run does it"


def unavailable() -> str | None:
    """Why no SMB share can be made here, or None."""
    for name, path in (
        ("smbd", SMBD),
        ("smbpasswd", shutil.which("smbpasswd")),
        ("smbnetfs", shutil.which("smbnetfs")),
    ):
        if not path:
            return f"{name} is not installed ({INSTALL})"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing: FUSE is not available on this machine"
    if not os.path.exists("/etc/smbnetfs.conf"):
        return f"/etc/smbnetfs.conf is missing ({INSTALL})"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


class SmbShare:
    """``server``: the exported folder; ``root``: the share as the reactor sees it."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.server = base / "srv"
        self.mount = base / "mnt"
        self.home = base / "home"
        self.port = 0
        self.user = getpass.getuser()
        # Made here, for this share only; never written anywhere but its scratch folder.
        self.password = secrets.token_urlsafe(16)
        self.smbd: subprocess.Popen[bytes] | None = None
        self.smbnetfs: subprocess.Popen[bytes] | None = None
        self.mounts = 0

    @property
    def host(self) -> str:
        # smbnetfs takes a port in the host's folder name.
        return f"127.0.0.1:{self.port}"

    @property
    def root(self) -> Path:
        return self.mount / self.host / SHARE

    # -- smbd ------------------------------------------------------------------

    def start(self) -> None:
        self.server.mkdir(parents=True)
        self.mount.mkdir()
        self.port = _free_port()
        state = self.base / "state"
        for name in ("private", "state", "cache", "lock", "pid", "ncalrpc"):
            (state / name).mkdir(parents=True)
        config = self.base / "smb.conf"
        config.write_text(
            "[global]\n"
            "interfaces = 127.0.0.1\nbind interfaces only = yes\n"
            f"smb ports = {self.port}\ndisable netbios = yes\n"
            "server role = standalone server\nserver min protocol = SMB2_02\n"
            f"private dir = {state / 'private'}\nstate directory = {state / 'state'}\n"
            f"cache directory = {state / 'cache'}\nlock directory = {state / 'lock'}\n"
            f"pid directory = {state / 'pid'}\nncalrpc dir = {state / 'ncalrpc'}\n"
            f"passdb backend = tdbsam:{state / 'private' / 'passdb.tdb'}\n"
            f"log file = {self.base / 'smbd.log'}\nmax log size = 1000\n"
            "load printers = no\nprinting = bsd\nprintcap name = /dev/null\ndisable spoolss = yes\n"
            "map to guest = never\n"
            f"[{SHARE}]\npath = {self.server}\nread only = no\nvalid users = {self.user}\n"
        )
        subprocess.run(
            ["smbpasswd", "-c", str(config), "-s", "-a", self.user],
            input=f"{self.password}\n{self.password}\n".encode(),
            check=True,
            capture_output=True,
            timeout=30,
        )
        self._write_client_home()
        self.start_smbd()
        self.connect()

    def _write_client_home(self) -> None:
        smb = self.home / ".smb"
        smb.mkdir(parents=True, mode=0o700)
        shutil.copy("/etc/smbnetfs.conf", smb / "smbnetfs.conf")
        files = {
            "smbnetfs.auth": f'auth "127.0.0.1" "{self.user}" "{self.password}"\n',
            "smbnetfs.host": "host 127.0.0.1 visible=true\n",
            "smb.conf": "[global]\nclient min protocol = SMB2\n",
        }
        for name, text in files.items():
            (smb / name).write_text(text)
        for path in smb.iterdir():
            path.chmod(0o600)

    def start_smbd(self) -> None:
        command = [str(SMBD), "-s", str(self.base / "smb.conf"), "-F", "--no-process-group"]
        with open(self.base / "smbd.out", "ab") as out:
            # Its own session (so not its own setsid): smbd signals its whole group when it stops.
            self.smbd = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

        def listening() -> bool:
            if self.smbd is not None and self.smbd.poll() is not None:
                raise RuntimeError(f"smbd exited: {self.log_tail()}")
            with contextlib.closing(socket.socket()) as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        wait_for(listening, 20, "smbd to listen")

    def stop_smbd(self) -> None:
        """The file server goes away (its children, one per client, go with it)."""
        if self.smbd is None:
            return
        self.smbd.terminate()
        try:
            self.smbd.wait(15)
        except subprocess.TimeoutExpired:
            self.smbd.kill()
            self.smbd.wait(10)
        self.smbd = None

    def log_tail(self) -> str:
        parts = []
        for name in ("smbd.out", "smbd.log"):
            with contextlib.suppress(OSError):
                parts.append((self.base / name).read_text(errors="replace")[-300:])
        return " | ".join(parts).replace("\n", " ")

    # -- the mount -------------------------------------------------------------

    def connect(self) -> None:
        env = {**os.environ, "HOME": str(self.home)}
        log_path = self.base / f"smbnetfs-{self.mounts}.log"
        with open(log_path, "wb") as log:
            command = ["smbnetfs", str(self.mount), "-f", "-o", "smb_query_browsers=false"]
            self.smbnetfs = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.mounts += 1

        def ready() -> bool:
            if self.smbnetfs is not None and self.smbnetfs.poll() is not None:
                raise RuntimeError(f"smbnetfs exited: {log_path.read_text(errors='replace')[-300:]}")
            if not os.path.ismount(self.mount):
                return False
            try:
                return self.root.is_dir()
            except OSError:
                return False

        wait_for(ready, 20, "the smbnetfs mount")

    def disconnect(self) -> None:
        if self.smbnetfs is not None:
            self.smbnetfs.send_signal(signal.SIGTERM)
            try:
                self.smbnetfs.wait(10)
            except subprocess.TimeoutExpired:
                self.smbnetfs.kill()
                self.smbnetfs.wait(10)
            self.smbnetfs = None
        if os.path.ismount(self.mount):
            # After a kill the mount point stays, answering ENOTCONN, until unmounted.
            fusermount = shutil.which("fusermount3") or shutil.which("fusermount")
            command = [fusermount, "-u", "-z"] if fusermount else ["umount", "-l"]
            subprocess.run([*command, str(self.mount)], check=False, capture_output=True)

    def close(self) -> None:
        self.disconnect()
        self.stop_smbd()

    def reset(self) -> None:
        """An empty share, freshly mounted (no cached attributes of the last test's files)."""
        self.disconnect()
        if self.smbd is None or self.smbd.poll() is not None:
            self.start_smbd()
        for child in self.server.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        self.connect()

    # -- another SMB client (smbprotocol, from PyPI) -----------------------------

    def unc(self, relative: str) -> str:
        return "\\\\127.0.0.1\\" + SHARE + "\\" + relative.replace("/", "\\")

    def client(self) -> SmbClient:
        return SmbClient(self)


class SmbClient:
    """Another SMB client of the share, as a Windows machine would be (smbprotocol)."""

    def __init__(self, share: SmbShare) -> None:
        import smbclient

        self.share = share
        self._smbclient = smbclient
        smbclient.register_session(
            "127.0.0.1", username=share.user, password=share.password, port=share.port, encrypt=False
        )

    def explorer_copy(self, relative: str, data: bytes, seconds: float, before_close: Callable[[], None]) -> None:
        """Copy as Windows Explorer does: the final size is set first, the data then follow
        slowly (over ``seconds``), and the file is closed at the end; only then do its size
        and mtime settle. ``before_close`` runs after the last write, before the close."""
        chunks = 24
        step = max(1, -(-len(data) // chunks))
        # Readers are let in (share read): the reactor can read the copy mid-way, zeros and all.
        unc = self.share.unc(relative)
        with self._smbclient.open_file(unc, mode="wb", port=self.share.port, share_access="r") as fh:
            fh.truncate(len(data))
            fh.flush()
            for i in range(0, len(data), step):
                fh.write(data[i : i + step])
                fh.flush()
                time.sleep(seconds / chunks)
            before_close()

    def hold_locked(self, relative: str) -> Callable[[], None]:
        """Open the file with no sharing (as an editor holding it does); returns the close."""
        fh = self._smbclient.open_file(self.share.unc(relative), mode="rb", port=self.share.port, share_access=None)
        close: Callable[[], None] = fh.close
        return close

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._smbclient.reset_connection_cache()
