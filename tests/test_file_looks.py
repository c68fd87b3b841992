"""One look at a photo's file on its way in (issue 26): counted, not up to five.

Between the queue and the detector, the path check, the move check, the read's size
check, the read-ahead's look before its read and its look again before use, and the
child's look for the mtime each looked at the file by path. Now the path check's look
(reactor.paths.look_in_share) is passed along. The counters sit below the boundary under
test: ``os.stat``, ``os.lstat`` and ``open`` themselves, in the reactor's process and in the
detector child (tests/stat_engine.py, the real reading path without dlib)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from reactor.config import Config
from reactor.core.service import Reactor
from reactor.detector.prefetch import Seen, read_ahead
from tests import stat_engine
from tests.reactor_support import add_processed, count_results, wait_until, write_photos


async def test_a_new_photo_is_looked_at_once_on_its_way_in(
    make_config: Callable[..., Config], dsn: str, share: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [path] = write_photos(share, ["looks/new-photo.jpg"])
    child_log = tmp_path / "child-looks.txt"
    monkeypatch.setenv(stat_engine.LOG, str(child_log))
    monkeypatch.setenv(stat_engine.NAME, "new-photo.jpg")
    config = make_config(
        detector={"engine": "tests.stat_engine", "workers": 1},
        watcher={"enabled": False},
        sweep={"interval_seconds": 3600.0, "poll_seconds": 3600.0},
    )
    here: list[str] = []
    reactor = Reactor(config, dsn)
    stop = asyncio.Event()
    task = asyncio.create_task(reactor.run(stop))
    conn = await asyncpg.connect(dsn)
    try:

        async def started() -> bool:
            assert not task.done(), "the reactor stopped on its own"
            return reactor.sweeper is not None and reactor.sweeper.completed >= 1

        await wait_until(started, 60, "the reactor to start")
        for (module, attribute), wrapper in stat_engine.counters("new-photo.jpg", here.append).items():
            monkeypatch.setattr(module, attribute, wrapper)
        await add_processed(conn, [path])

        async def done() -> bool:
            return await count_results(conn, [path]) == 1

        await wait_until(done, 90, "the photo's result")
        monkeypatch.undo()
    finally:
        monkeypatch.undo()
        stop.set()
        await asyncio.wait_for(task, 150)
        await conn.close()
    # The reactor: the one look on the way in (the path check, the move check and the read
    # all take it), the read, and one look after the read that its bytes are still the
    # file's (prefetch.still_current: a copy in progress behind a network share's attribute
    # cache must not pass as the whole file). Were: up to 5 looks before the read and that one.
    assert here.count("stat") == 2, here
    assert here.count("open") == 1, here
    # The child: no look for the mtime (it came with the job); one look after the read and
    # the decode (loading.changed_after_read: an SMB copy in progress keeps its size and
    # mtime while its bytes move, so only a look after the read tells), by opening it.
    child = child_log.read_text().split()
    assert child.count("stat") == 0, child
    assert child.count("open") == 1, child


def test_the_read_takes_the_look_on_the_way_in_instead_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"\xff\xd8 a photo")
    st = os.stat(photo)

    def no_look(path: object, *args: object, **kwargs: object) -> os.stat_result:
        raise AssertionError(f"looked at {path} again")

    monkeypatch.setattr(os, "stat", no_look)
    monkeypatch.setattr(os, "lstat", no_look)
    read = read_ahead(str(photo), seen=Seen(st.st_size, st.st_mtime_ns))
    assert read is not None and read.data == b"\xff\xd8 a photo" and read.mtime_ns == st.st_mtime_ns
    # Fewer or more bytes than the look said: still being written, left to the child.
    assert read_ahead(str(photo), seen=Seen(st.st_size + 1, st.st_mtime_ns)) is None
    assert read_ahead(str(photo), seen=Seen(0, st.st_mtime_ns)) is None
