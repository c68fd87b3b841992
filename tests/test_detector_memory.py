"""The parent reads a child's resident size (reactor.detector.memory) on each platform:
``/proc/<pid>/statm`` on Linux, ``GetProcessMemoryInfo`` on Windows. This file runs on
Linux in the suite and under the Windows interpreter in tests/test_windows_wine.py."""

from __future__ import annotations

import os
import subprocess
import sys

from reactor.detector.memory import resident_bytes


def test_a_live_process_has_a_resident_size_and_a_gone_one_none_on_linux() -> None:
    here = resident_bytes(os.getpid())
    # A Python interpreter with this module loaded holds several MB, far less than 1 TB.
    assert here is not None and 1 << 20 < here < 1 << 40
    if sys.platform == "win32":
        # An exited process's object lives while a handle to it is open (Popen holds one,
        # as the supervisor's Process does), and Wine still reports its last working set
        # then: what a gone child reads as is checked on Linux only.
        return
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert resident_bytes(child.pid) is None
