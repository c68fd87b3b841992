"""Walking the share: a compact snapshot (path -> size, mtime, inode) and its diff.

The polling observer on network shares is this walk, repeated. The native observer
uses it too, for the baseline at start and the rescan after an event-queue overflow,
so both observers produce the same kinds of change.

The snapshot holds what the watcher has handled: a change found by a walk stays
pending until the watcher applies it (see ``_unchanged``).

A partial outage is not a deletion. A vanished file is reported as deleted (or
paired with a new file as a move) only when the share was online before and after the
walk, and when no part of the walk that covers it failed: a folder that errors (EIO, EACCES, ESTALE, a dead automount
or DFS link) or that was listed by its parent and then was not there (ENOENT) makes
everything below it *unknown*, and a file whose stat fails is unknown itself. More
than ``watcher.vanish_fraction`` vanishing at once is held for one more scan
(reactor.watch.share.VanishGuard); the files still gone then are a confirmed mass deletion,
reported as ``held``: a decision for the operator (reactor.store.held).

On a network share the inode is no identity (``use_inode`` False): a rename there
is a vanished and an appeared file, paired by content through ``match_moves``.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from reactor import logs
from reactor.watch.candidates import Candidates
from reactor.watch.share import ShareMonitor, VanishGuard

log = logs.get("reactor.scanner")

# (size, mtime_ns, inode): ints in a tuple keep 50,000 files in a few MB. On a network
# share the inode is 0: a client numbers files per mount (a remount renumbers them all,
# a rename on the server gives a new one), so there a file is its path, size and mtime.
Signature = tuple[int, int, int]
Snapshot = dict[str, Signature]
# (vanished paths, appeared path -> (size, mtime_ns)) -> pairs that are one file moved.
MatchMoves = Callable[[Sequence[str], Mapping[str, tuple[int, int]]], Awaitable[list[tuple[str, str]]]]


@dataclass
class Walk:
    files: Snapshot
    dirs: int = 0
    errors: list[str] = field(default_factory=list)
    # Database prefixes (folders, or single files) the walk could not see: "" is all.
    unknown: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.errors

    def fail(self, prefix: str, code: str) -> None:
        self.errors.append(f"{prefix or '.'}:{code}")
        self.unknown.append(prefix)

    def covers(self, path: str) -> bool:
        """Whether the walk really looked at where ``path`` would be."""
        return not any(in_prefix(path, prefix) for prefix in self.unknown)


def _code(exc: OSError) -> str:
    return str(errno.errorcode.get(exc.errno or 0, exc.errno))


@dataclass
class ScanDiff:
    created: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    moved: list[tuple[str, str]] = field(default_factory=list)
    # A confirmed mass vanish: held for the operator (reactor.store.held), never applied here.
    held: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.created or self.modified or self.deleted or self.moved or self.held)


def signature(st: os.stat_result, use_inode: bool = True) -> Signature:
    return (st.st_size, st.st_mtime_ns, st.st_ino if use_inode else 0)


def walk(candidates: Candidates, start: str = "", use_inode: bool = True) -> Walk:
    """Every candidate photo under ``start`` (a database prefix, "" for the root).

    Ignored folders are never entered. A folder that errors, or disappears between
    its parent's listing and its own, is recorded as unknown (never as emptied).
    """
    root = candidates.root
    result = Walk(files={})
    stack = [start]
    while stack:
        prefix = stack.pop()
        local = candidates.local(prefix) if prefix else root
        try:
            with os.scandir(local) as it:
                entries = list(it)
        except FileNotFoundError:
            result.fail(prefix, "root_missing" if not prefix else "ENOENT")
            continue
        except OSError as exc:
            result.fail(prefix, _code(exc))
            continue
        result.dirs += 1
        for entry in entries:
            name = entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    if not candidates.skip_dir(name):
                        stack.append(f"{prefix}/{name}" if prefix else name)
                    continue
                if not candidates.image_name(name) or not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError as exc:
                # Listed a moment ago: ENOENT now is as unknown as EIO (the next walk decides).
                result.fail(f"{prefix}/{name}" if prefix else name, _code(exc))
                continue
            rel = f"{prefix}/{name}" if prefix else name
            if len(rel.encode("utf-8", "surrogateescape")) > candidates.mapper.max_length:
                continue
            result.files[rel] = signature(st, use_inode)
    return result


def diff(old: Snapshot, new: Snapshot) -> ScanDiff:
    """What changed between two snapshots. A vanished and an appeared file with the
    same inode, size and mtime are one move (renames keep all three)."""
    out = ScanDiff()
    for path, sig in new.items():
        before = old.get(path)
        if before is None:
            out.created.append(path)
        elif before != sig:
            out.modified.append(path)
    vanished = [p for p in old if p not in new]
    if vanished and out.created:
        by_sig = {old[p]: p for p in vanished if old[p][2]}
        still_created = []
        for path in out.created:
            src = by_sig.pop(new[path], None) if new[path][2] else None
            if src is None:
                still_created.append(path)
            else:
                out.moved.append((src, path))
        moved_src = {s for s, _ in out.moved}
        out.created = still_created
        vanished = [p for p in vanished if p not in moved_src]
    out.deleted = vanished
    return out


def _unchanged(old: Snapshot, new: Snapshot, changes: ScanDiff) -> Snapshot:
    """The snapshot after a scan: only what did not change is updated.

    A change stays pending (old signature kept, new path absent) until the watcher
    has applied it and calls record/move/forget; a change that fails to apply, or a
    withheld deletion, is therefore reported again by the next scan.
    """
    merged = dict(new)
    for path in changes.created:
        del merged[path]
    for path in changes.modified:
        merged[path] = old[path]
    for src, dst in changes.moved:
        del merged[dst]
        merged[src] = old[src]
    for path in old:
        if path not in new:
            merged[path] = old[path]
    return merged


def in_prefix(path: str, prefix: str) -> bool:
    return not prefix or path == prefix or path.startswith(prefix + "/")


class Scanner:
    """Keeps the snapshot of one share and turns walks into trusted diffs."""

    def __init__(self, candidates: Candidates, share: ShareMonitor) -> None:
        self.candidates = candidates
        self.share = share
        self.snapshot: Snapshot = {}
        # False on network shares, whose inode numbers are not a file's identity; there
        # ``match_moves`` (reactor.watch.moves) tells a moved file by its content instead.
        self.use_inode = True
        self.match_moves: MatchMoves | None = None
        self.baseline_done = False
        self.scans = 0
        self.last_scan_seconds = 0.0
        self.last_complete = False
        # A mass vanish is held for one more scan; the files still gone then are believed.
        self.vanish = VanishGuard(share.watcher, "scan")

    async def scan(self, prefix: str = "") -> ScanDiff | None:
        """Walk (part of) the share and diff it against the snapshot; None if offline."""
        if not await self.share.acheck():
            return None
        started = time.monotonic()
        result = await asyncio.to_thread(walk, self.candidates, prefix, self.use_inode)
        self.last_scan_seconds = time.monotonic() - started
        self.scans += 1
        old = self.snapshot if not prefix else {p: s for p, s in self.snapshot.items() if in_prefix(p, prefix)}
        changes = diff(old, result.files)
        online_after = await self.share.acheck()
        self.last_complete = result.complete and online_after
        vanished = bool(changes.deleted)
        if vanished:
            seen = [p for p in changes.deleted if online_after and result.covers(p)]
            if len(seen) < len(changes.deleted):
                log.warning(
                    "scan_deletes_withheld",
                    prefix=prefix or ".",
                    vanished=len(changes.deleted),
                    unknown=len(changes.deleted) - len(seen),
                    errors=result.errors[:5],
                    share_online=online_after,
                )
            # Unknown is not vanished: only what the walk really saw gone may pair with a
            # new file as a move (a folder that errored for one scan must not move its
            # files to a same-content copy elsewhere); the snapshot keeps the rest.
            changes.deleted = seen
        if self.match_moves is not None and not self.use_inode and changes.created and changes.deleted:
            await self._pair_by_content(changes, result.files)
        if vanished:
            changes.deleted, changes.held = self.vanish.sort(changes.deleted, max(len(old), 1))
        baseline = not self.baseline_done and not prefix
        self._replace(prefix, result.files if baseline else _unchanged(old, result.files, changes))
        if changes:
            log.debug(
                "scan_done",
                prefix=prefix or ".",
                files=len(result.files),
                dirs=result.dirs,
                created=len(changes.created),
                modified=len(changes.modified),
                deleted=len(changes.deleted),
                moved=len(changes.moved),
                seconds=round(self.last_scan_seconds, 3),
            )
        return changes

    async def _pair_by_content(self, changes: ScanDiff, files: Snapshot) -> None:
        assert self.match_moves is not None
        appeared = {p: (files[p][0], files[p][1]) for p in changes.created}
        pairs = await self.match_moves(changes.deleted, appeared)
        if not pairs:
            return
        sources, targets = {s for s, _ in pairs}, {d for _, d in pairs}
        changes.moved.extend(pairs)
        changes.created = [p for p in changes.created if p not in targets]
        changes.deleted = [p for p in changes.deleted if p not in sources]

    def _replace(self, prefix: str, files: Snapshot) -> None:
        if not prefix:
            self.snapshot = files
            self.baseline_done = True
            return
        for path in [p for p in self.snapshot if in_prefix(p, prefix)]:
            del self.snapshot[path]
        self.snapshot.update(files)

    def forget_baseline(self) -> None:
        """The baseline's files were not registered after all: the next scan is a baseline again."""
        self.snapshot = {}
        self.baseline_done = False

    # -- keeping the snapshot in step with native events ------------------------

    def record(self, path: str, sig: Signature) -> Signature | None:
        """Remember a stable file; returns what was known before (None if new)."""
        before = self.snapshot.get(path)
        self.snapshot[path] = sig
        return before

    def forget(self, path: str) -> None:
        self.snapshot.pop(path, None)

    def forget_prefix(self, prefix: str) -> None:
        for path in [p for p in self.snapshot if in_prefix(p, prefix)]:
            del self.snapshot[path]

    def move(self, src: str, dst: str) -> None:
        sig = self.snapshot.pop(src, None)
        if sig is not None:
            self.snapshot[dst] = sig

    def move_prefix(self, src: str, dst: str) -> None:
        for path in [p for p in self.snapshot if in_prefix(p, src)]:
            self.snapshot[dst + path[len(src) :]] = self.snapshot.pop(path)
