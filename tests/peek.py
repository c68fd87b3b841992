"""Looking inside the reactor's objects, for tests only (the reactor itself never asks)."""

from __future__ import annotations

import os
from typing import Any

import asyncpg

from reactor.core.queue import ImageQueue, Priority
from reactor.store.constraints import PATH_CONSTRAINTS
from reactor.watch.observer import NativeObserver
from reactor.watch.share import VanishGuard


def priority_of(queue: ImageQueue, path: str) -> Priority | None:
    """The priority ``path`` waits at in ``queue``; None when it is not queued."""
    return queue._where.get(path)


def holding(guard: VanishGuard) -> int:
    """How many vanished files ``guard`` holds for one more look."""
    return len(guard._suspect)


def watched_dirs(native: NativeObserver) -> list[str]:
    """The folders holding an inotify watch (Linux, filtered observer only)."""
    out: list[str] = []
    for emitter in getattr(native._observer, "emitters", ()):
        group: Any = getattr(emitter, "_inotify", None)
        out.extend(os.fsdecode(p) for p in getattr(group, "_active_callbacks_by_path", {}))
    return sorted(out)


def is_path_violation(exc: BaseException) -> bool:
    """Whether ``exc`` is a violation of one of the reactor's path constraints."""
    return isinstance(exc, asyncpg.CheckViolationError) and exc.constraint_name in PATH_CONSTRAINTS
