"""Handing freed heap memory back to the kernel after work (glibc's malloc_trim).

Every image allocates and frees short-lived buffers of many sizes (asyncpg messages,
records, log lines, pipe messages to the detector). glibc keeps freed chunks inside its
heap for reuse and returns memory to the kernel only from the top of the heap, so the
resident size creeps up with the number of images while the memory actually in use stays
flat (the storm benchmark: tracemalloc and pymalloc flat, glibc's free heap space rising).
``malloc_trim(0)`` releases the free pages anywhere in the heap. The trimmer calls it
every ``interval`` seconds, and only when images were processed since the last call, so
an idle reactor never pays for it.

Worker threads (``asyncio.to_thread``: path checks, read-ahead, pipe writes) would each get
an arena of their own, a separate heap that grows in steps and whose free top malloc_trim
does not shrink. The reactor's threads run Python under the GIL, so they gain nothing from
separate arenas: ``single_arena()`` makes every thread allocate from the main heap, which
the trimmer keeps small. Where there is no glibc both do nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import sys
from collections.abc import Callable
from dataclasses import dataclass

from reactor.util.aio import sleep_or_stop

TRIM_INTERVAL_SECONDS = 30.0
# mallopt parameter (malloc.h): the most arenas glibc creates for threads.
M_ARENA_MAX = -8

Trim = Callable[[], bool]


@dataclass(frozen=True)
class _Glibc:
    """The two glibc functions, looked up in the Linux branch only (the portability check)."""

    trim: Callable[[int], int]  # malloc_trim
    set_option: Callable[[int, int], int]  # mallopt


def _glibc() -> _Glibc | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.malloc_trim.argtypes = [ctypes.c_size_t]  # glibc only (musl has no malloc_trim)
        libc.malloc_trim.restype = ctypes.c_int
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        return _Glibc(libc.malloc_trim, libc.mallopt)
    except (OSError, AttributeError):
        return None


def _trim_function(libc: _Glibc | None) -> Trim | None:
    if libc is None:
        return None
    trim = libc.trim
    return lambda: bool(trim(0))


_LIBC = _glibc()
_TRIM = _trim_function(_LIBC)


def single_arena() -> bool:
    """Let threads created from now on allocate from the main heap; True if glibc took it.

    Call it before the first worker thread starts: a thread keeps the arena it has.
    """
    return _LIBC is not None and _LIBC.set_option(M_ARENA_MAX, 1) == 1


def available() -> bool:
    """Whether this process's C library can trim its heap."""
    return _TRIM is not None


def release_free_memory() -> bool:
    """Return free heap pages to the kernel; True if any were released."""
    return _TRIM() if _TRIM is not None else False


class HeapTrimmer:
    def __init__(
        self, progress: Callable[[], int], interval: float = TRIM_INTERVAL_SECONDS, trim: Trim | None = None
    ) -> None:
        self.progress = progress
        self.interval = interval
        self._trim = trim if trim is not None else release_free_memory
        self._trimmed_at: int | None = None
        self.trims = 0

    def maybe_trim(self) -> bool:
        """Trim if work was done since the last trim; True if it trimmed."""
        done = self.progress()
        if done == self._trimmed_at:
            return False
        self._trimmed_at = done
        self._trim()
        self.trims += 1
        return True

    async def run(self, halt: asyncio.Event) -> None:
        if self._trim is release_free_memory and not available():
            await halt.wait()
            return
        while not await sleep_or_stop(halt, self.interval):
            self.maybe_trim()
