"""The one in-memory work queue: keyed by image path, prioritised, bounded.

Every source (NOTIFY, file events, due retries, the sweep backlog, manual requests)
feeds it; the detection loop is its only consumer. A path is queued at most once and
keeps the highest priority it was given. The database stays the truth: when the
queue is full the lowest-priority entries are dropped and counted, and the next
sweep finds them again.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum


class Priority(IntEnum):
    """Lower wins."""

    MANUAL = 0
    NOTIFY = 1
    FILE_EVENT = 2
    RETRY = 3
    BACKLOG = 4


@dataclass(frozen=True)
class Entry:
    path: str
    priority: Priority
    # Detect again even though results exist (the file's content changed).
    redetect: bool = False


# A `manual` request jumps the queue, but a flood of them must not starve other work:
# after this many MANUAL entries in a row, one entry of the next level goes first.
MANUAL_BURST = 20


class ImageQueue:
    def __init__(self, maxsize: int) -> None:
        if maxsize <= 0:
            raise ValueError("maxsize must be positive")
        self.maxsize = maxsize
        # One FIFO per priority: get() takes the oldest of the best level, eviction
        # takes the newest of the worst level, both O(1).
        self._levels: dict[Priority, OrderedDict[str, bool]] = {p: OrderedDict() for p in Priority}
        self._where: dict[str, Priority] = {}
        self._nonempty = asyncio.Event()
        # Consumers blocked in get_entry: a detection lane with nothing to do.
        self.waiting = 0
        self._changed = asyncio.Event()
        self.dropped = 0
        # Told of each drop (reactor.core.metrics counts them).
        self.on_drop: Callable[[], None] = lambda: None
        self._manual_streak = 0

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, path: object) -> bool:
        return path in self._where

    def depth_by_priority(self) -> dict[str, int]:
        return {p.name.lower(): len(level) for p, level in self._levels.items()}

    def free(self) -> int:
        return self.maxsize - len(self._where)

    def paths(self) -> list[str]:
        """Every path queued (what a stopping instance hands back to the change log)."""
        return list(self._where)

    def put(self, path: str, priority: Priority, *, redetect: bool = False) -> bool:
        """Queue a path; False if it was dropped because the queue is full of better work."""
        current = self._where.get(path)
        if current is not None:
            redetect = redetect or self._levels[current][path]
            if priority >= current:
                self._levels[current][path] = redetect
                return True
            del self._levels[current][path]
            del self._where[path]
        elif len(self._where) >= self.maxsize and not self._evict_below(priority):
            self._drop()
            return False
        self._levels[priority][path] = redetect
        self._where[path] = priority
        self._nonempty.set()
        return True

    def _evict_below(self, priority: Priority) -> bool:
        """Drop the newest entry of the worst level that is worse than ``priority``."""
        for level in sorted(Priority, reverse=True):
            if level <= priority:
                return False
            entries = self._levels[level]
            if entries:
                path, _ = entries.popitem(last=True)
                del self._where[path]
                self._drop()
                return True
        return False

    def _drop(self) -> None:
        self.dropped += 1
        self.on_drop()

    def discard(self, path: str) -> bool:
        """Forget a queued path (its file was deleted or moved)."""
        level = self._where.pop(path, None)
        if level is None:
            return False
        del self._levels[level][path]
        self._signal_change()
        return True

    def _next_level(self) -> Priority | None:
        levels = [p for p in Priority if self._levels[p]]
        if not levels:
            return None
        if levels[0] is Priority.MANUAL and self._manual_streak >= MANUAL_BURST and len(levels) > 1:
            return levels[1]
        return levels[0]

    def peek(self) -> str | None:
        """The path get() would return next, without taking it."""
        level = self._next_level()
        return None if level is None else next(iter(self._levels[level]))

    def get_nowait(self) -> Entry | None:
        level = self._next_level()
        if level is None:
            return None
        path, redetect = self._levels[level].popitem(last=False)
        del self._where[path]
        self._manual_streak = self._manual_streak + 1 if level is Priority.MANUAL else 0
        self._signal_change()
        return Entry(path, level, redetect)

    async def get_entry(self) -> Entry:
        while True:
            entry = self.get_nowait()
            if entry is not None:
                return entry
            self._nonempty.clear()
            self.waiting += 1
            try:
                await self._nonempty.wait()
            finally:
                self.waiting -= 1

    async def get(self) -> tuple[str, Priority]:
        entry = await self.get_entry()
        return entry.path, entry.priority

    async def wait_free(self, room: int) -> None:
        """Wait until at least ``room`` entries fit (the sweep waits here instead of overfilling)."""
        room = min(room, self.maxsize)
        while self.free() < room:
            self._changed.clear()
            await self._changed.wait()

    def _signal_change(self) -> None:
        if not self._where:
            self._nonempty.clear()
        self._changed.set()
