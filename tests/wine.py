"""A real Windows CPython under Wine, for tests/test_windows_wine*.py.

tools/wine/setup makes it (Debian's Wine 8.0, python.org's embeddable CPython 3.11, the
lock's win_amd64 wheels) and writes ``env.json`` in its cache. Where it is missing or was
made for another uv.lock, the tests that need it are skipped with one line saying why
(``unavailable``), as the sshfs tests are.

Wine maps the Linux root to drive ``Z:``, so a Linux path is a Windows path there
(``windows_path``). python.exe dies at start under Wine when its stdout or stderr is a
regular file: every process here is given pipes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import IO

import pytest

from tests.reactor_support import REPO, ReactorProcess

CACHE = Path(os.environ.get("FACE_REACTOR_WINE_CACHE", Path.home() / ".cache" / "face-reactor-wine"))
SETUP = "tools/wine/setup (.ci/run runs it)"
# The embeddable build reads no PYTHONPATH (its ._pth file decides sys.path): the checkout
# is put on the path by the command itself, and multiprocessing hands it to the children.
BOOT = (
    "import runpy, sys; sys.path.insert(0, {repo!r}); runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
)


def running_under_wine() -> bool:
    """Inside a Windows process: whether Wine runs it (ntdll exports wine_get_version)."""
    if sys.platform != "win32":
        return False
    import ctypes

    return hasattr(ctypes.WinDLL("ntdll"), "wine_get_version")


def windows_path(path: Path | str) -> str:
    """The Windows name of a Linux path: Wine's drive Z: is the Linux root."""
    return str(PureWindowsPath("Z:\\", *Path(path).absolute().parts[1:]))


@dataclass(frozen=True)
class WindowsPython:
    python: Path  # python.exe, as a Linux path
    wineprefix: Path

    def env(self, **extra: str) -> dict[str, str]:
        """The Linux environment, which Wine hands to Windows processes, without REACTOR_* or pip settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REACTOR_", "PIP_", "PYTHON", "WINE"))}
        env.update(WINEPREFIX=str(self.wineprefix), WINEDEBUG="-all", WINEDLLOVERRIDES="mscoree,mshtml=")
        env.pop("DISPLAY", None)
        return env | extra

    def command(self, *args: str) -> list[str]:
        return [shutil.which("wine") or "wine", str(self.python), *args]

    def module(self, module: str, *args: str) -> list[str]:
        """``python -m module args`` for the embeddable build, with the checkout on its path."""
        return self.command("-c", BOOT.format(repo=windows_path(REPO), module=module), *args)

    def run(self, args: list[str], timeout: float, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout,
            cwd=REPO,
            env=self.env(**extra),
        )


def unavailable() -> str | None:
    """Why no Windows Python can run here, or None."""
    if sys.platform != "linux":
        return "the Windows stage runs on Linux, under Wine"
    if shutil.which("wine") is None:
        return f"Wine is not installed: run {SETUP}"
    info = CACHE / "current" / "env.json"
    if not info.is_file():
        return f"no Windows Python in {CACHE}: run {SETUP}"
    if json.loads(info.read_text())["lock_sha256"] != hashlib.sha256((REPO / "uv.lock").read_bytes()).hexdigest():
        return f"the Windows Python in {CACHE} was made for another uv.lock: run {SETUP}"
    return None


def needed() -> pytest.MarkDecorator:
    """The mark of a test that needs the Windows Python: skipped, with the reason, without it."""
    reason = unavailable()
    return pytest.mark.skipif(reason is not None, reason=reason or "")


def windows_python() -> WindowsPython:
    info = json.loads((CACHE / "current" / "env.json").read_text())
    return WindowsPython(python=Path(info["python"]), wineprefix=Path(info["wineprefix"]))


class WineReactor(ReactorProcess):
    """`reactor run` under the Windows interpreter; its output is piped into ``log``."""

    def __init__(self, python: WindowsPython, config: Path, log: Path, *command: str) -> None:
        super().__init__(config, log, *command)
        self.python = python
        self._copier: threading.Thread | None = None

    def start(self) -> WineReactor:
        args = ["--config", windows_path(self.config), "--log-format", "json", *self.command]
        self.proc = subprocess.Popen(
            self.python.module("reactor", *args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=self.python.env(),
        )
        assert self.proc.stdout is not None
        self._copier = threading.Thread(target=_copy, args=(self.proc.stdout, self.log), daemon=True)
        self._copier.start()
        return self

    def ensure_dead(self) -> None:
        super().ensure_dead()
        if self._copier is not None:
            self._copier.join(30)


def _copy(source: IO[bytes], log: Path) -> None:
    with contextlib.closing(source), open(log, "ab") as out:
        for line in source:
            out.write(line)
            out.flush()
