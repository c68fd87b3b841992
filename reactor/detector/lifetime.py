"""The detector child dies with the reactor, however the reactor ends, so no orphan keeps the GPU.

- Linux: the child asks the kernel for SIGKILL when the thread that started it exits
  (``prctl(PR_SET_PDEATHSIG)``), so ``kill -9`` of the reactor ends a child busy in dlib.
- Windows: the reactor puts each child in a Job object created with
  ``JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE``. Only the reactor holds the job's handle; when its
  process ends in any way (a crash, ``TerminateProcess``, a service manager killing the tree)
  Windows closes the handle and kills every process in the job.
- Everywhere: an idle child also ends on its own when the pipe to the reactor reads EOF.

The child is adopted into the job just after it starts. Until then it is only loading
Python and waiting on its pipe, which an ended reactor closes, so nothing is left behind.

Console signals: Ctrl+C (and on Windows Ctrl+Break, which NSSM may send) reach every process
on the console or in the process group. The reactor decides how its child stops, so the
child ignores them.
"""

from __future__ import annotations

import ctypes
import signal
import sys
from multiprocessing.process import BaseProcess

from reactor import logs

log = logs.get("reactor.detector")

_PR_SET_PDEATHSIG = 1
_JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x2000
_JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS = 9
_PROCESS_SET_QUOTA = 0x0100
_PROCESS_TERMINATE = 0x0001


class JobObjectBasicLimitInformation(ctypes.Structure):
    """JOBOBJECT_BASIC_LIMIT_INFORMATION (winnt.h), in portable ctypes types."""

    _fields_ = [
        ("PerProcessUserTimeLimit", ctypes.c_int64),
        ("PerJobUserTimeLimit", ctypes.c_int64),
        ("LimitFlags", ctypes.c_uint32),
        ("MinimumWorkingSetSize", ctypes.c_size_t),
        ("MaximumWorkingSetSize", ctypes.c_size_t),
        ("ActiveProcessLimit", ctypes.c_uint32),
        ("Affinity", ctypes.c_size_t),
        ("PriorityClass", ctypes.c_uint32),
        ("SchedulingClass", ctypes.c_uint32),
    ]


class IoCounters(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "ReadOperationCount",
            "WriteOperationCount",
            "OtherOperationCount",
            "ReadTransferCount",
            "WriteTransferCount",
            "OtherTransferCount",
        )
    ]


class JobObjectExtendedLimitInformation(ctypes.Structure):
    """JOBOBJECT_EXTENDED_LIMIT_INFORMATION: 144 bytes on 64-bit Windows."""

    _fields_ = [
        ("BasicLimitInformation", JobObjectBasicLimitInformation),
        ("IoInfo", IoCounters),
        ("ProcessMemoryLimit", ctypes.c_size_t),
        ("JobMemoryLimit", ctypes.c_size_t),
        ("PeakProcessMemoryUsed", ctypes.c_size_t),
        ("PeakJobMemoryUsed", ctypes.c_size_t),
    ]


def kill_on_close_limits() -> JobObjectExtendedLimitInformation:
    info = JobObjectExtendedLimitInformation()
    info.BasicLimitInformation.LimitFlags = _JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
    return info


def prepare_child() -> None:
    """First thing in the child: leave console signals to the parent, die with it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform == "win32":
        signal.signal(signal.SIGBREAK, signal.SIG_IGN)
    elif sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            return


# The reactor's one job object, created at the first child; its handle is never closed,
# on purpose: the handle's end, with the reactor's, is what kills the children.
_job_handle: int | None = None
_job_failed = False


def adopt(process: BaseProcess) -> None:
    """In the parent, right after ``process.start()``: bind the child's life to ours."""
    if sys.platform == "win32":
        global _job_failed
        if _job_failed:
            return
        try:
            _assign_to_job(process.pid)
        except OSError as exc:
            # Windows 7 cannot nest jobs, and a job without JOB_OBJECT_LIMIT_BREAKAWAY_OK refuses.
            _job_failed = True
            log.warning(
                "detector_job_unavailable",
                error=str(exc),
                advice="a killed reactor may leave its detector child running; stop it with the service",
            )


if sys.platform == "win32":
    from ctypes import wintypes

    def _kernel32() -> ctypes.WinDLL:
        k32 = ctypes.WinDLL("kernel32", use_last_error=True)
        k32.CreateJobObjectW.restype = wintypes.HANDLE
        k32.CreateJobObjectW.argtypes = (ctypes.c_void_p, wintypes.LPCWSTR)
        k32.SetInformationJobObject.restype = wintypes.BOOL
        k32.SetInformationJobObject.argtypes = (wintypes.HANDLE, ctypes.c_int, ctypes.c_void_p, wintypes.DWORD)
        k32.OpenProcess.restype = wintypes.HANDLE
        k32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
        k32.AssignProcessToJobObject.restype = wintypes.BOOL
        k32.AssignProcessToJobObject.argtypes = (wintypes.HANDLE, wintypes.HANDLE)
        k32.CloseHandle.restype = wintypes.BOOL
        k32.CloseHandle.argtypes = (wintypes.HANDLE,)
        return k32

    def _job(k32: ctypes.WinDLL) -> int:
        global _job_handle
        if _job_handle is None:
            handle = k32.CreateJobObjectW(None, None)
            if not handle:
                raise ctypes.WinError(ctypes.get_last_error())
            info = kill_on_close_limits()
            if not k32.SetInformationJobObject(
                handle, _JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS, ctypes.byref(info), ctypes.sizeof(info)
            ):
                error = ctypes.WinError(ctypes.get_last_error())
                k32.CloseHandle(handle)
                raise error
            _job_handle = int(handle)
        return _job_handle

    def _assign_to_job(pid: int | None) -> None:
        if pid is None:
            return
        k32 = _kernel32()
        job = _job(k32)
        process = k32.OpenProcess(_PROCESS_SET_QUOTA | _PROCESS_TERMINATE, False, pid)
        if not process:
            raise ctypes.WinError(ctypes.get_last_error())
        try:
            if not k32.AssignProcessToJobObject(job, process):
                raise ctypes.WinError(ctypes.get_last_error())
        finally:
            k32.CloseHandle(process)
