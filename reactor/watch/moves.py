"""Moves on a network share, told by content: there the inode is no identity.

A rename on the server (or by another client) reaches this machine as a file that
vanished and one that appeared, with a new inode. A result whose file vanished and a
new file with the same size, mtime and content fingerprint (reactor.util.identity) are one
photo that moved: the result follows it with its faces, and nothing is detected again.
Only results carry a fingerprint, and only the standalone sink returns them; in
vision-database mode the upstream's ai_metadata decides what a path is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

from reactor import logs
from reactor.util.identity import FileIdentity, read_identity
from reactor.util.shareio import ShareIO

log = logs.get("reactor.moves")

# vanished paths -> the identity of their results (paths without one are left out).
Identities = Callable[[Sequence[str]], Awaitable[dict[str, FileIdentity]]]


class MoveMatcher:
    def __init__(self, identities: Identities, local: Callable[[str], str], io: ShareIO | None = None) -> None:
        self.identities = identities
        self.local = local
        self.io = io if io is not None else ShareIO()
        self.matched = 0

    async def __call__(self, vanished: Sequence[str], appeared: Mapping[str, tuple[int, int]]) -> list[tuple[str, str]]:
        """Pairs (vanished, appeared) that are the same file; ``appeared`` maps a path to (size, mtime_ns)."""
        if not vanished or not appeared:
            return []
        known = await self.identities(list(vanished))
        by_size: dict[int, list[tuple[str, FileIdentity]]] = {}
        for path, identity in known.items():
            by_size.setdefault(identity.size, []).append((path, identity))
        candidates = [
            dst
            for dst, (size, mtime) in appeared.items()
            if any(i.mtime_ns in (None, mtime) for _, i in by_size.get(size, ()))
        ]
        if not candidates:
            return []
        by_local = {self.local(dst): dst for dst in candidates}
        looked = await self.io.by_folder(list(by_local), lambda locals_: [read_identity(p) for p in locals_])
        read = {dst: looked.get(local) for local, dst in by_local.items()}
        pairs: list[tuple[str, str]] = []
        for dst in candidates:
            now = read[dst]
            if now is None:
                continue
            options = by_size.get(now.size, [])
            for i, (src, was) in enumerate(options):
                if was.fingerprint == now.fingerprint and was.mtime_ns in (None, now.mtime_ns):
                    pairs.append((src, dst))
                    del options[i]
                    break
        self.matched += len(pairs)
        if pairs:
            log.info("moves_matched", pairs=len(pairs), vanished=len(vanished), appeared=len(appeared))
        return pairs
