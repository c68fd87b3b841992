"""The detector's wait on a pipe or a process: no add_reader, and no helper thread left behind."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time

import pytest

from reactor.detector import child, waiting, wire


def helper_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == waiting.HELPER_THREAD_NAME]


def assert_helpers_end() -> None:
    for thread in helper_threads():
        thread.join(5 * waiting.WAIT_SLICE_SECONDS + 5)
        assert not thread.is_alive(), "a helper thread outlived its wait"


async def test_a_message_sent_while_waiting_is_received() -> None:
    ours, theirs = multiprocessing.Pipe()
    with ours, theirs:
        waiter = asyncio.create_task(waiting.receive(ours, 60))
        await asyncio.sleep(0)  # the wait is under way (in its helper thread) before the send
        # What the child sends: checked JSON (reactor.detector.wire), never a pickle.
        await asyncio.to_thread(theirs.send_bytes, wire.encode("failed", "no models"))
        assert await waiter == ("failed", "no models")
    assert_helpers_end()


async def test_a_message_already_there_needs_no_thread() -> None:
    ours, theirs = multiprocessing.Pipe()
    with ours, theirs:
        theirs.send_bytes(wire.encode("ready", {"cuda": False, "pid": 1}))
        assert await waiting.receive(ours, 60) == ("ready", {"cuda": False, "gpus": 0, "pid": 1})
    assert not helper_threads()


async def test_a_closed_pipe_reads_as_eof() -> None:
    ours, theirs = multiprocessing.Pipe()
    with ours:
        waiter = asyncio.create_task(waiting.receive(ours, 60))
        await asyncio.sleep(0)
        theirs.close()
        with pytest.raises(EOFError):
            await waiter
    assert_helpers_end()


async def test_a_timeout_ends_the_helper_thread() -> None:
    ours, theirs = multiprocessing.Pipe()
    with ours, theirs:
        with pytest.raises(TimeoutError):
            await waiting.receive(ours, 0.3)
        assert_helpers_end()


async def test_a_cancelled_wait_ends_the_helper_thread() -> None:
    ours, theirs = multiprocessing.Pipe()
    with ours, theirs:
        waiter = asyncio.create_task(waiting.receive(ours, 3600))
        await asyncio.sleep(0)
        assert helper_threads()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        # Within one slice, not after the hour the caller was ready to wait.
        assert_helpers_end()


async def test_reap_waits_on_the_process_sentinel() -> None:
    process = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(3600,), daemon=True)
    process.start()
    assert process.exitcode is None
    code = await waiting.reap(process, kill=True)
    assert code is not None and code != 0
    assert "killed" in waiting.describe_exit(code)
    assert_helpers_end()


def test_windows_crash_statuses_are_named() -> None:
    assert waiting.describe_exit(0xC0000005) == "crashed with status 0xC0000005 (access violation)"
    assert waiting.describe_exit(0xC0000001) == "crashed with status 0xC0000001"
    assert waiting.describe_exit(child.EXIT_ENGINE_FAILED) == "could not load the detection engine"
    # abort() ends a process with 3 on Windows: a crash, not an engine that failed to load.
    assert waiting.describe_exit(3) == "exited with code 3"
    assert waiting.describe_exit(1) == "exited with code 1"
