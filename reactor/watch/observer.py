"""The native watchdog observer, and the hand-over of its events to the event loop.

Watchdog calls handlers on its own thread; ``loop.call_soon_threadsafe`` is the only
bridge to the loop. On Linux the inotify emitter is narrowed so that ignored folders
(face crops, thumbnails, ``@eaDir``, hidden) never get a watch: a NAS's metadata
folders can hold more directories than the photos themselves, and every watch counts
against fs.inotify.max_user_watches. An inotify queue overflow is reported too, so
the watcher can rescan: watchdog only rebuilds its watches, and the events are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

from reactor import logs

log = logs.get("reactor.observer")


@dataclass(frozen=True)
class RawEvent:
    """One change, as plain data. kind: created, modified, moved, deleted, overflow."""

    kind: str
    src: str
    dst: str = ""
    directory: bool = False
    synthetic: bool = False


_KINDS: dict[type[FileSystemEvent], str] = {
    FileCreatedEvent: "created",
    DirCreatedEvent: "created",
    FileModifiedEvent: "modified",
    FileClosedEvent: "modified",
    FileMovedEvent: "moved",
    DirMovedEvent: "moved",
    FileDeletedEvent: "deleted",
    DirDeletedEvent: "deleted",
}


def to_raw(event: FileSystemEvent) -> RawEvent | None:
    kind = _KINDS.get(type(event))
    if kind is None:
        return None  # opened, closed-no-write, attrib, directory modified: no content change
    return RawEvent(
        kind, os.fsdecode(event.src_path), os.fsdecode(event.dest_path or ""), event.is_directory, event.is_synthetic
    )


class _Handler(FileSystemEventHandler):
    def __init__(self, deliver: Callable[[RawEvent], None]) -> None:
        self._deliver = deliver

    def on_any_event(self, event: FileSystemEvent) -> None:
        raw = to_raw(event)
        if raw is not None:
            self._deliver(raw)


def _filtering_inotify(root: str, skip_dir: Callable[[str], bool], on_overflow: Callable[[], None]) -> Any:
    """An InotifyObserver whose recursive watch skips ignored folders.

    This leans on watchdog's inotify internals (InotifyWatchGroup._add_callback); if
    they change, ``native_observer`` falls back to the stock observer.
    """
    from watchdog.observers.inotify import InotifyEmitter, InotifyObserver, InotifyWatchGroup

    root_b = os.fsencode(root)

    def ignored(path: bytes) -> bool:
        rel = os.path.relpath(path, root_b)
        return any(skip_dir(os.fsdecode(part)) for part in rel.split(b"/") if part not in (b"", b"."))

    class Group(InotifyWatchGroup):
        def _add_callback(self, path: bytes) -> None:
            if path != self.path and ignored(path):
                return
            super()._add_callback(path)

        def on_queue_overflow(self) -> None:
            super().on_queue_overflow()
            on_overflow()

    class Emitter(InotifyEmitter):
        def on_thread_start(self) -> None:
            self._inotify = Group(
                self._inotify_fd,
                os.fsencode(self.watch.path),
                is_recursive=self.watch.is_recursive,
                event_mask=self.get_event_mask_from_filter(),
                follow_symlink=self.watch.follow_symlink,
            )

    observer = InotifyObserver()
    observer._emitter_class = Emitter
    return observer


class NativeObserver:
    """Runs one recursive watchdog watch on the share root and delivers RawEvents."""

    def __init__(self, root: str, skip_dir: Callable[[str], bool]) -> None:
        self.root = root
        self.skip_dir = skip_dir
        self.filtered = False
        self._observer: Any = None

    def start(self, loop: asyncio.AbstractEventLoop, sink: Callable[[RawEvent], None]) -> None:
        """Blocking (the first watch walks the tree): call it in a thread."""

        def deliver(raw: RawEvent) -> None:
            # RuntimeError: the loop is closing; the next start-up scan sees the change.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(sink, raw)

        def overflow() -> None:
            deliver(RawEvent("overflow", self.root, directory=True))

        observer: Any = None
        try:
            observer = _filtering_inotify(self.root, self.skip_dir, overflow)
            self.filtered = True
        except Exception as exc:
            # Not Linux (no inotify), or watchdog's internals moved: the stock observer
            # still works; it just also watches the ignored folders.
            log.info("observer_unfiltered", reason=type(exc).__name__)
            from watchdog.observers import Observer

            observer = Observer()
            self.filtered = False
        observer.schedule(_Handler(deliver), self.root, recursive=True)
        observer.start()
        self._observer = observer

    def alive(self) -> bool:
        """False when the observer thread or any of its emitter threads has died."""
        observer = self._observer
        if observer is None or not observer.is_alive():
            return False
        return all(e.is_alive() for e in observer.emitters)

    def stop(self) -> None:
        """Blocking: call it in a thread."""
        observer, self._observer = self._observer, None
        if observer is None:
            return
        try:
            observer.stop()
            observer.join(timeout=5)
        except Exception:
            log.exception("observer_stop_failed")
