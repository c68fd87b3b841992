"""The resident size of a detector child, read by the parent.

A CPU child runs under RLIMIT_AS (reactor.detector.child.limit_memory), but a CUDA child
cannot: the driver reserves far more address space than it uses. So the parent watches
a CUDA child's resident size while it works on a job and replaces it over
``detector.max_memory_mb`` (reactor.detector.parent): the image gets ``oom`` and is
tried again at a smaller scale, instead of the host's OOM killer choosing a victim.

Read from ``/proc/<pid>/statm`` on Linux and ``GetProcessMemoryInfo`` on Windows (no
psutil in the service's dependencies); None where it cannot be read (the child is gone).
"""

from __future__ import annotations

import ctypes
import os
import sys

# How often the parent looks at a working child's resident size.
POLL_SECONDS = 0.5


def resident_bytes(pid: int) -> int | None:
    """The resident set (working set on Windows) of process ``pid`` in bytes, or None."""
    if sys.platform == "win32":
        return _working_set(pid)
    if sys.platform.startswith("linux"):
        try:
            with open(f"/proc/{pid}/statm", "rb") as statm:
                pages = int(statm.read().split()[1])
        except (OSError, ValueError, IndexError):
            return None
        return pages * os.sysconf("SC_PAGE_SIZE")
    return None


if sys.platform == "win32":
    from ctypes import wintypes

    _PROCESS_QUERY_LIMITED_INFORMATION = 0x1000

    class _ProcessMemoryCounters(ctypes.Structure):
        """PROCESS_MEMORY_COUNTERS (psapi.h)."""

        _fields_ = (
            ("cb", wintypes.DWORD),
            ("PageFaultCount", wintypes.DWORD),
            ("PeakWorkingSetSize", ctypes.c_size_t),
            ("WorkingSetSize", ctypes.c_size_t),
            ("QuotaPeakPagedPoolUsage", ctypes.c_size_t),
            ("QuotaPagedPoolUsage", ctypes.c_size_t),
            ("QuotaPeakNonPagedPoolUsage", ctypes.c_size_t),
            ("QuotaNonPagedPoolUsage", ctypes.c_size_t),
            ("PagefileUsage", ctypes.c_size_t),
            ("PeakPagefileUsage", ctypes.c_size_t),
        )

    def _working_set(pid: int) -> int | None:
        k32 = ctypes.WinDLL("kernel32", use_last_error=True)
        k32.OpenProcess.restype = wintypes.HANDLE
        k32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
        k32.CloseHandle.argtypes = (wintypes.HANDLE,)
        k32.K32GetProcessMemoryInfo.restype = wintypes.BOOL
        k32.K32GetProcessMemoryInfo.argtypes = (wintypes.HANDLE, ctypes.c_void_p, wintypes.DWORD)
        handle = k32.OpenProcess(_PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
        if not handle:
            return None
        try:
            counters = _ProcessMemoryCounters()
            counters.cb = ctypes.sizeof(counters)
            if not k32.K32GetProcessMemoryInfo(handle, ctypes.byref(counters), counters.cb):
                return None
            return int(counters.WorkingSetSize)
        finally:
            k32.CloseHandle(handle)

else:

    def _working_set(pid: int) -> int | None:
        return None
