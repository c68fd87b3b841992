"""Is this new path a photo that moved? Told by content, before it is detected.

When a folder is renamed on the share and the upstream pipeline follows (``UPDATE
ai_metadata SET image_path``, or a DELETE and an INSERT in either order), the new
paths arrive as processed images without results. Each is claimed as usual; then:

1. the one look at the new file on its way in (reactor.paths.look_in_share), and the
   results whose file had that size and mtime (one indexed query; a new photo almost
   never has any);
2. only if there are some, the new file's fingerprint (its first and last 64 KiB);
3. a candidate whose fingerprint matches is the same photo if its old path has
   *vanished*: its ai_metadata row is gone, or the share is online and its file is
   certainly gone (not found while its folder can be read: a folder that errors
   proves nothing, so its files are never taken for moved);
4. the result moves to the new path with its faces and their ids, in one transaction
   with the release of the claim (reactor.store.moves). Nothing is detected.

A candidate whose file is still there is a copy, not a move: the new path is detected.
A changed file has another fingerprint: it is detected too. Legacy results have no
recorded file identity, so a moved legacy photo is detected at its new path.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from reactor import logs
from reactor.paths import InvalidPath, PathMapper, gone_by_folder
from reactor.store import moves
from reactor.store.claims import Claim
from reactor.store.dbtypes import Conn
from reactor.util.identity import read_identity
from reactor.util.shareio import IoStall, ShareIO

log = logs.get("reactor.moved")

T = TypeVar("T")


class RunDb(Protocol):
    """Runs ``op(conn)`` on a pooled connection (the detection loop's retrying runner,
    which raises ``LoopStopped`` when the loop is stopping)."""

    async def __call__(self, op: Callable[[Conn], Awaitable[T]]) -> T: ...


@dataclass(frozen=True)
class Moved:
    src: str
    faces: int


class MoveFinder:
    """Finds and applies the move for a claimed path; file reads are bounded by ``timeout``."""

    def __init__(self, mapper: PathMapper, share_online: Callable[[], bool], io: ShareIO) -> None:
        self.mapper = mapper
        self.share_online = share_online
        self.io = io

    async def _files(self, local: str, fn: Callable[[], T]) -> T:
        """``fn`` on the share's threads, under its deadline (reactor.util.shareio)."""
        return await self.io.call(os.path.dirname(local), fn)

    async def adopt(self, claim: Claim, local: str, run: RunDb, seen: os.stat_result | OSError) -> Moved | None:
        """The move applied, or None: the path is detected. FileNotFoundError: no file.
        ``seen``: the file as the reactor looked at it on its way in (no second look)."""
        if claim.state.done:
            return None  # a re-detection: the path keeps its own result
        if isinstance(seen, FileNotFoundError):
            raise seen  # the caller records it missing on this look (DetectionLoop._moved_here)
        if isinstance(seen, OSError):
            return None  # detection records what is wrong with the file
        st = seen
        found = await run(lambda conn: moves.candidates(conn, claim.path, st.st_size, st.st_mtime_ns))
        if not found:
            return None
        src = await self._match(claim.path, local, found)
        if src is None:
            return None
        faces = await run(lambda conn: moves.adopt(conn, src, claim))
        if faces is None:
            return None
        log.info("result_moved", src=src, dst=claim.path, faces=faces, detection="none")
        return Moved(src, faces)

    async def _match(self, path: str, local: str, found: list[moves.Candidate]) -> str | None:
        try:
            now = await self._files(local, lambda: read_identity(local))
        except IoStall:
            return None
        if now is None:
            return None
        same = [c for c in found if c.fingerprint == now.fingerprint]
        vanished = [c.path for c in same if not c.registered] + await self._gone([c.path for c in same if c.registered])
        if not vanished:
            return None
        # Two identical photos that both moved: the one with the same file name first.
        name = posixpath.basename(path)
        return sorted(vanished, key=lambda p: (posixpath.basename(p) != name, p))[0]

    async def _gone(self, paths: list[str]) -> list[str]:
        """Of these still-registered paths, those whose file is certainly gone from the online
        share (in every Unicode form of its name: an NFC row whose file is NFD is present)."""
        valid = [p for p in paths if self._valid(p)]
        if not valid or not self.share_online():
            return []
        # Each old path under its own folder's deadline: whether that folder still answers.
        gone = await gone_by_folder(self.io, valid, self.mapper.os_path)
        return [p for p, is_gone in gone.items() if is_gone is True]

    def _valid(self, path: str) -> bool:
        try:
            self.mapper.os_path(path)
        except InvalidPath:
            return False
        return True
