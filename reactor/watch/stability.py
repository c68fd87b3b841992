"""Waiting until a file has stopped changing before it is detected.

"created" fires when a copy starts, not when it ends (watchdog 586, 787). A file is
ready once its size and mtime have not changed for the stability window; every new
event for it, and every change seen by stat, starts the window again.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from reactor import logs
from reactor.util.aio import wait_any
from reactor.util.shareio import ShareIO
from reactor.watch.folders import Signature
from reactor.watch.scanner import signature

log = logs.get("reactor.stability")

# The files that settled in one look, handed over together (one batch to the database).
OnStable = Callable[[list[tuple[str, Signature]]], Awaitable[None]]


@dataclass
class _Pending:
    local: str
    sig: Signature | None
    since: float


class StabilityTracker:
    def __init__(self, window: float, on_stable: OnStable, io: ShareIO | None = None) -> None:
        self.window = window
        self.on_stable = on_stable
        # The share's own threads (reactor.util.shareio): a stalled folder's files wait.
        self.io = io if io is not None else ShareIO()
        self.use_inode = True
        self._pending: dict[str, _Pending] = {}
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, path: object) -> bool:
        return path in self._pending

    def touch(self, path: str, local: str) -> None:
        """Something happened to this file: (re)start its window."""
        self._pending[path] = _Pending(local, None, time.monotonic())
        self._wake.set()

    def watch(self, path: str, local: str) -> None:
        """A scan saw a change: follow the file unless it is followed already.

        Unlike ``touch`` this does not restart the window: scans repeat, and a scan
        interval shorter than the window must not keep a settled file waiting.
        """
        if path not in self._pending:
            self.touch(path, local)

    def discard(self, path: str) -> None:
        self._pending.pop(path, None)

    def discard_prefix(self, prefix: str) -> None:
        for path in [p for p in self._pending if p.startswith(prefix + "/")]:
            del self._pending[path]

    def rename(self, src: str, dst: str, local: str) -> None:
        entry = self._pending.pop(src, None)
        if entry is not None:
            self._pending[dst] = _Pending(local, entry.sig, entry.since)

    async def run(self, stop: asyncio.Event) -> None:
        tick = max(0.05, min(1.0, self.window / 4))
        while not stop.is_set():
            if not self._pending:
                self._wake.clear()
                await wait_any(stop, self._wake)
                continue
            await self._check_once()
            await asyncio.sleep(tick)

    async def _check_once(self) -> None:
        items = list(self._pending.items())
        use_inode = self.use_inode
        sigs = await self.io.by_folder([e.local for _, e in items], lambda locals_: _stat_all(locals_, use_inode))
        now = time.monotonic()
        settled: list[tuple[str, Signature]] = []
        for path, entry in items:
            if self._pending.get(path) is not entry or entry.local not in sigs:
                continue  # touched again while we were looking, or its folder is stalled
            sig = sigs[entry.local]
            if sig is None:
                # Gone (moved or deleted before it settled): the move/delete event handles it.
                del self._pending[path]
            elif sig != entry.sig:
                entry.sig, entry.since = sig, now
            elif now - entry.since >= self.window:
                del self._pending[path]
                settled.append((path, sig))
        if settled:
            try:
                await self.on_stable(settled)
            except Exception:
                log.exception("stable_file_failed", path=settled[0][0], files=len(settled))


def _stat_all(locals_: list[str], use_inode: bool) -> list[Signature | None]:
    out: list[Signature | None] = []
    for local in locals_:
        try:
            st = os.stat(local, follow_symlinks=False)
        except OSError:
            out.append(None)
            continue
        out.append(signature(st, use_inode))
    return out
