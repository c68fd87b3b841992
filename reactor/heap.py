"""Handing freed heap memory back to the kernel after work (glibc's malloc_trim).

Every image allocates and frees short-lived buffers of many sizes (asyncpg messages,
records, log lines, pipe messages to the detector). glibc keeps freed chunks inside its
heap for reuse and returns memory to the kernel only from the top of the heap, so the
resident size creeps up with the number of images while the memory actually in use stays
flat (the storm benchmark: tracemalloc and pymalloc flat, glibc's free heap space rising).
``malloc_trim(0)`` releases the free pages anywhere in the heap. The trimmer calls it
every ``interval`` seconds, and only when images were processed since the last call, so
an idle reactor never pays for it. Where there is no glibc it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import sys
from collections.abc import Callable

from reactor.supervisor import sleep_or_stop

TRIM_INTERVAL_SECONDS = 30.0

Trim = Callable[[], bool]


def _load_malloc_trim() -> Trim | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        malloc_trim = libc.malloc_trim  # glibc only (musl has none)
    except (OSError, AttributeError):
        return None
    malloc_trim.argtypes = [ctypes.c_size_t]
    malloc_trim.restype = ctypes.c_int

    def trim() -> bool:
        return bool(malloc_trim(0))

    return trim


_TRIM = _load_malloc_trim()


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
