"""Read-ahead: the next photo's bytes are read while the child works on the current one.

On a network share, reading a 5 MB phone photo can take as long as detecting faces in it.
``Detector.prefetch(path)`` reads the file in a worker thread of the reactor process; when
``detect`` is then called for the same path, the bytes travel to the child with the job, so
the child decodes at once. It is only a hint: a file that changed, vanished, is too big or
could not be read is simply read again by the child, which then reports any error itself.

Without a hint ``take`` reads the file now, so every read of a photo happens here, under
a time limit: a read that does not finish is ``ReadStalled`` (an ``io_stall`` failure, the
share's fault), never a detection ``timeout`` that would move the next try down the
scale cascade. The reads run on the share's own threads (reactor.util.shareio): a read
that hangs marks its folder stalled, and the next photos of that folder fail at once
instead of each holding a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from reactor.util.shareio import IoStall, ShareIO, retrieved

T = TypeVar("T")

# Larger files are streamed to the child: holding them here would only double the memory.
MAX_PREFETCH_BYTES = 32 * 1024 * 1024


# Larger files are streamed to the child in chunks of this size, each read under the
# share's deadline (reactor.detector.parent): the child never reads the share itself.
STREAM_CHUNK_BYTES = 4 * 1024 * 1024


class Streamed:
    """The marker of a file the reactor streams to the child instead of holding it."""


STREAMED = Streamed()


class ReadStalled(Exception):
    """Reading the file from the share did not finish in time."""


@dataclass(frozen=True)
class Seen:
    """A regular file's size and mtime as the reactor looked at it on its way in
    (reactor.paths.look_in_share): the read takes them instead of looking again."""

    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Prefetched:
    path: str
    data: bytes
    size: int
    mtime_ns: int


def read_ahead(path: str, limit: int = MAX_PREFETCH_BYTES, seen: Seen | None = None) -> Prefetched | None:
    """The file's bytes, or None where the child must read it (too large, empty, not a
    regular file, changed). ``seen``: the look on the way in, instead of a look here: the
    bytes are the file's if there are as many as it said (a copy still under way has
    fewer or more; one that rewrote the same size is caught after the read, by the
    child's second look, reactor.detector.loading.changed_after_read)."""
    if seen is not None:
        if seen.size > limit or seen.size == 0:
            return None
        try:
            with open(path, "rb") as fh:
                data = fh.read(limit + 1)
        except OSError:
            return None
        return Prefetched(path, data, seen.size, seen.mtime_ns) if len(data) == seen.size else None
    try:
        before = os.stat(path)
        if not stat.S_ISREG(before.st_mode) or before.st_size > limit or before.st_size == 0:
            return None
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError:
        return None
    if len(data) != before.st_size:
        return None  # still being written
    return Prefetched(path, data, before.st_size, before.st_mtime_ns)


def still_current(prefetched: Prefetched) -> bool:
    try:
        now = os.stat(prefetched.path)
    except OSError:
        return False
    return now.st_size == prefetched.size and now.st_mtime_ns == prefetched.mtime_ns


def _size_of(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None  # the child reports missing or unreadable itself


async def _on_share(io: ShareIO, fn: Callable[[str], T], path: str, wait_seconds: float, what: str) -> T:
    try:
        return await io.call(os.path.dirname(path), fn, path, deadline=min(wait_seconds, io.deadline))
    except IoStall as exc:
        raise ReadStalled(f"{what}: {exc}") from None


async def file_size(path: str, wait_seconds: float, io: ShareIO) -> int | None:
    """The file's size, or None if it cannot be looked at; ReadStalled if the stat hangs."""
    return await _on_share(io, _size_of, path, wait_seconds, "looking at the file did not finish")


def _chunk_of(path: str, offset: int, size: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read(size)
    except OSError:
        return b""  # the child reports what it got (cut short: incomplete or corrupt)


async def read_chunk(path: str, offset: int, size: int, wait_seconds: float, io: ShareIO) -> bytes:
    """``size`` bytes of ``path`` from ``offset`` (fewer at its end); ReadStalled if the read hangs."""
    return await _on_share(
        io, lambda p: _chunk_of(p, offset, size), path, wait_seconds, "reading the file did not finish"
    )


class Prefetcher:
    """At most one read-ahead at a time: the image the reactor will detect next."""

    def __init__(self, io: ShareIO | None = None) -> None:
        self.io = io if io is not None else ShareIO()
        self._path: str | None = None
        self._task: asyncio.Future[Prefetched | None] | None = None
        self.hits = 0

    def start(self, path: str, seen: Seen | None = None) -> asyncio.Future[Prefetched | None]:
        """Begin reading ``path`` (unless that is already under way); returns the read."""
        if path == self._path and self._task is not None:
            return self._task
        self.discard()
        self._path = path
        # The share's deadline: a read-ahead that hangs marks its folder stalled even while
        # nobody waits for it yet.
        self._task = asyncio.ensure_future(
            self.io.call(os.path.dirname(path), read_ahead, path, MAX_PREFETCH_BYTES, seen)
        )
        return self._task

    async def take(self, path: str, wait_seconds: float, seen: Seen | None = None) -> bytes | None:
        """The bytes of ``path`` (read ahead, or now) if they are still the file's content, else None.

        Raises ReadStalled when the read (or the check that the file is unchanged) takes
        longer than ``wait_seconds``. ``seen``: the look on the way in, which the read was
        checked against instead of a look before it; the file is looked at once after the
        read (size and mtime unchanged), and the child checks its bytes once more
        (reactor.detector.loading.changed_after_read).
        """
        hinted = self.hinted(path)
        if not hinted:
            self.start(path, seen)
        task = self._task
        assert task is not None
        self._path, self._task = None, None
        try:
            prefetched = await asyncio.wait_for(asyncio.shield(task), min(wait_seconds, self.io.deadline))
        except TimeoutError:
            # Left to end on its own: past the share's deadline it marks its folder stalled.
            task.add_done_callback(retrieved)
            raise ReadStalled(f"reading the file did not finish within {wait_seconds:g} s") from None
        except IoStall as exc:
            raise ReadStalled(f"reading the file did not finish: {exc}") from None
        data = await self._looked_again(prefetched, path, wait_seconds)
        if data is not None and hinted:
            self.hits += 1
        return data

    async def _looked_again(self, prefetched: Prefetched | None, path: str, wait_seconds: float) -> bytes | None:
        """The bytes read, if the file is still what was read; None where the child must read it.

        The one look after the read, whether or not the way in looked: a read-ahead may run
        long after that look, and a copy in progress on a network share (whose attribute
        cache the way-in look may have hit) must not pass as the whole file."""
        if prefetched is None:
            return None
        current = await _on_share(
            self.io,
            lambda _p: still_current(prefetched),
            path,
            wait_seconds,
            "looking at the file again did not finish",
        )
        return prefetched.data if current else None

    def hinted(self, path: str) -> bool:
        """Whether ``path`` is the one being read ahead."""
        return path == self._path and self._task is not None

    async def read_now(self, path: str, wait_seconds: float, seen: Seen | None = None) -> bytes | None:
        """A read of ``path`` beside the read-ahead, which it leaves alone: the photos of a
        batch are read at the same time. None where the child must read it (as ``take``)."""
        prefetched = await _on_share(
            self.io,
            lambda p: read_ahead(p, MAX_PREFETCH_BYTES, seen),
            path,
            wait_seconds,
            "reading the file did not finish",
        )
        return await self._looked_again(prefetched, path, wait_seconds)

    def discard(self) -> None:
        task = self._task
        self._path, self._task = None, None
        if task is not None and not task.done():
            task.cancel()
        elif task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                task.exception()  # a finished read-ahead nobody wants: nothing to report
