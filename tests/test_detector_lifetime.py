"""The detector child never outlives the reactor, and console signals are left to the reactor."""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reactor.detector import lifetime
from reactor.ops import samples
from tests.reactor_support import REPO


@contextlib.contextmanager
def exit_watch(pid: int) -> Iterator[Callable[[float], bool]]:
    """A wait for the end of a process that is not our child: True if it ended in time.

    Opened before the process's parent dies, so that the pid cannot be reused meanwhile.
    """
    if sys.platform == "win32":
        import _winapi

        synchronize = 0x00100000
        handle = _winapi.OpenProcess(synchronize, False, pid)
        try:
            yield lambda seconds: _winapi.WaitForSingleObject(handle, int(seconds * 1000)) == _winapi.WAIT_OBJECT_0
        finally:
            _winapi.CloseHandle(handle)
        return
    if not hasattr(os, "pidfd_open"):
        pytest.skip("needs pidfd_open (Linux 5.3+) to wait on a process that is not our child")
    fd = os.pidfd_open(pid)
    try:
        # A pidfd reads ready when the process ends, even before its new parent reaps it.
        yield lambda seconds: bool(select.select([fd], [], [], seconds)[0])
    finally:
        os.close(fd)


def wait_for_text(path: Path, text: str, seconds: float) -> None:
    """Another process writes ``path``; there is no event to wait on across processes."""
    deadline = time.monotonic() + seconds
    while not (path.exists() and path.read_text(encoding="utf-8") == text):
        assert time.monotonic() < deadline, f"{path} never read {text!r}"
        time.sleep(0.05)


def test_a_child_busy_in_the_engine_dies_when_the_reactor_is_killed(tmp_path: Path) -> None:
    samples.build_library(tmp_path, include=lambda name: name == "cat.jpg")
    photo = tmp_path / "cat__hang__.jpg"
    (tmp_path / "cat.jpg").rename(photo)
    parent = subprocess.Popen(
        [sys.executable, "-m", "tests.orphan_parent", str(photo)],
        stdout=subprocess.PIPE,
        cwd=REPO,
        text=True,
    )
    assert parent.stdout is not None
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(parent.wait, 30)
        cleanup.callback(parent.kill)
        cleanup.enter_context(parent.stdout)
        child = int(next(line for line in parent.stdout if line.startswith("child="))[len("child=") :])
        with exit_watch(child) as ended:
            try:
                # In the engine the child no longer reads its pipe: only the lifetime binding can end it.
                wait_for_text(Path(f"{photo}.hanging"), str(child), 120)
                parent.kill()  # SIGKILL on POSIX, TerminateProcess on Windows: no clean-up runs
                parent.wait(30)
                assert ended(30), f"detector child {child} outlived its killed parent"
            finally:
                if not ended(0):
                    os.kill(child, signal.SIGTERM)  # never leave a hung child behind a failed test


def test_job_limit_structure_matches_the_windows_layout() -> None:
    """JOBOBJECT_EXTENDED_LIMIT_INFORMATION as winnt.h lays it out on 64-bit Windows."""
    info = lifetime.kill_on_close_limits()
    assert info.BasicLimitInformation.LimitFlags == 0x2000  # JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        pytest.skip("the documented offsets below are the 64-bit ones")
    basic = lifetime.JobObjectBasicLimitInformation
    assert ctypes.sizeof(basic) == 64
    assert basic.LimitFlags.offset == 16 and basic.Affinity.offset == 48 and basic.SchedulingClass.offset == 60
    extended = lifetime.JobObjectExtendedLimitInformation
    assert extended.IoInfo.offset == 64 and extended.ProcessMemoryLimit.offset == 112
    assert ctypes.sizeof(extended) == 144
