"""reactor.core.heap_trim: free heap pages go back to the kernel after work, never while idle."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from reactor.core import heap_trim


def test_trims_only_when_work_was_done_since_the_last_trim() -> None:
    done = [0]
    calls: list[int] = []

    def trim() -> bool:
        calls.append(done[0])
        return True

    trimmer = heap_trim.HeapTrimmer(lambda: done[0], trim=trim)
    assert trimmer.maybe_trim()  # the first look trims what start-up left behind
    assert not trimmer.maybe_trim()  # idle: nothing to give back
    done[0] = 500
    assert trimmer.maybe_trim()
    assert not trimmer.maybe_trim()
    assert calls == [0, 500] and trimmer.trims == 2


async def test_the_loop_trims_after_work_until_halted() -> None:
    done = [0]
    trimmed = asyncio.Event()

    def trim() -> bool:
        trimmed.set()
        return True

    trimmer = heap_trim.HeapTrimmer(lambda: done[0], interval=0.01, trim=trim)
    halt = asyncio.Event()
    task = asyncio.create_task(trimmer.run(halt))
    await asyncio.wait_for(trimmed.wait(), 10)
    trimmed.clear()
    done[0] = 1
    await asyncio.wait_for(trimmed.wait(), 10)
    halt.set()
    await asyncio.wait_for(task, 10)
    assert trimmer.trims >= 2


@pytest.mark.skipif(not heap_trim.available(), reason="needs glibc's malloc_trim")
def test_freed_heap_pages_in_the_middle_of_the_heap_are_released() -> None:
    # 16 MiB of blocks below glibc's mmap threshold come from the heap; a block allocated
    # after them pins the top, so freeing them leaves free pages that only a trim releases.
    blocks = [bytearray(4096) for _ in range(4096)]
    pin = bytearray(4096)
    del blocks
    assert heap_trim.release_free_memory()
    assert len(pin) == 4096


_ARENAS_SCRIPT = """
import ctypes, sys, threading
from reactor.core import heap_trim
if sys.argv[1] == "single":
    assert heap_trim.single_arena()
kept = []
worker = threading.Thread(target=lambda: kept.extend(bytearray(4096) for _ in range(256)))
worker.start()
worker.join()
ctypes.CDLL(None).malloc_stats()  # one "Arena N:" block per arena, on stderr
"""


@pytest.mark.skipif(not heap_trim.available(), reason="needs glibc's mallopt and malloc_stats")
@pytest.mark.parametrize(("mode", "arenas"), [("single", 1), ("default", 2)])
def test_single_arena_keeps_worker_threads_on_the_main_heap(mode: str, arenas: int) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _ARENAS_SCRIPT, mode],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert out.stderr.count("Arena ") == arenas, out.stderr
