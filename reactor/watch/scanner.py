"""Walking the share folder by folder, and comparing it with a compact snapshot.

The polling observer on network shares is this walk, repeated. The native observer
uses it too, for the baseline at start and the rescan after an event-queue overflow,
so both observers produce the same kinds of change.

The snapshot (path -> size, mtime, inode) is kept packed per folder
(reactor.watch.folders), and each folder is compared as soon as it is listed, so a
scan's memory is bounded by the largest folder and the changes it finds, not by the
library. The snapshot holds what the watcher has handled: a change found by a walk
stays pending until the watcher applies it (``record``, ``move``, ``forget``).

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

import errno
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from reactor import logs
from reactor.util.progress import Progress
from reactor.util.shareio import IoStall
from reactor.watch.candidates import Candidates
from reactor.watch.folders import FolderSnapshot, Signature, join, listing_digest, split, under
from reactor.watch.share import ShareMonitor, VanishGuard

log = logs.get("reactor.scanner")

# (size, mtime_ns, inode). On a network share the inode is 0: a client numbers files per
# mount (a remount renumbers them all, a rename on the server gives a new one), so there a
# file is its path, size and mtime. A walk's files (``Snapshot``) are a plain dict; the
# scanner keeps them packed per folder (reactor.watch.folders).
Snapshot = dict[str, Signature]
PROGRESS_SECONDS = 10.0
INODE_MASK = (1 << 64) - 1
# (vanished paths, appeared path -> (size, mtime_ns)) -> pairs that are one file moved.
MatchMoves = Callable[[Sequence[str], Mapping[str, tuple[int, int]]], Awaitable[list[tuple[str, str]]]]


@dataclass
class Walk:
    files: Snapshot
    dirs: int = 0
    errors: list[str] = field(default_factory=list)
    # Database prefixes (folders, or single files) the walk could not see: "" is all.
    unknown: list[str] = field(default_factory=list)
    # The folders among them that did not answer in time (reactor.util.shareio).
    stalled: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.errors

    def fail(self, prefix: str, code: str) -> None:
        self.errors.append(f"{prefix or '.'}:{code}")
        self.unknown.append(prefix)

    def covers(self, path: str) -> bool:
        """Whether the walk really looked at where ``path`` would be."""
        return not any(under(path, prefix) for prefix in self.unknown)


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
    # Windows may give 128-bit file ids (ReFS); the packed snapshot keeps 64 bits of one.
    return (st.st_size, st.st_mtime_ns, st.st_ino & INODE_MASK if use_inode else 0)


@dataclass
class Folder:
    """One folder's listing: its photos, its subfolders, and what failed in it."""

    files: Snapshot = field(default_factory=dict)
    subfolders: list[str] = field(default_factory=list)
    # (database prefix or path, errno code); the folder itself when it could not be listed.
    errors: list[tuple[str, str]] = field(default_factory=list)
    listed: bool = True


def list_folder(candidates: Candidates, prefix: str, use_inode: bool = True) -> Folder:
    """The candidate photos directly in ``prefix`` (a database prefix, "" for the root)."""
    local = candidates.local(prefix) if prefix else candidates.root
    folder = Folder()
    try:
        with os.scandir(local) as it:
            entries = list(it)
    except FileNotFoundError:
        return Folder(errors=[(prefix, "root_missing" if not prefix else "ENOENT")], listed=False)
    except OSError as exc:
        return Folder(errors=[(prefix, _code(exc))], listed=False)
    for entry in entries:
        name = entry.name
        rel = f"{prefix}/{name}" if prefix else name
        try:
            if entry.is_dir(follow_symlinks=False):
                if not candidates.skip_dir(name):
                    folder.subfolders.append(rel)
                continue
            if not candidates.image_name(name) or not entry.is_file(follow_symlinks=False):
                continue
            st = entry.stat(follow_symlinks=False)
        except OSError as exc:
            # Listed a moment ago: ENOENT now is as unknown as EIO (the next walk decides).
            folder.errors.append((rel, _code(exc)))
            continue
        if len(rel.encode("utf-8", "surrogateescape")) > candidates.mapper.max_length:
            continue
        folder.files[rel] = signature(st, use_inode)
    return folder


def _add(result: Walk, prefix: str, folder: Folder) -> list[str]:
    """Merge one folder's listing into the walk; returns its subfolders to walk next."""
    for path, code in folder.errors:
        result.fail(path, code)
    if not folder.listed:
        return []
    result.dirs += 1
    result.files.update(folder.files)
    return folder.subfolders


def walk(candidates: Candidates, start: str = "", use_inode: bool = True) -> Walk:
    """Every candidate photo under ``start`` (a database prefix, "" for the root).

    Ignored folders are never entered. A folder that errors, or disappears between
    its parent's listing and its own, is recorded as unknown (never as emptied).
    """
    result = Walk(files={})
    stack = [start]
    while stack:
        prefix = stack.pop()
        stack.extend(_add(result, prefix, list_folder(candidates, prefix, use_inode)))
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


class Scanner:
    """Keeps the snapshot of one share and turns walks into trusted diffs.

    A scan compares the share with the snapshot folder by folder
    (reactor.watch.folders): a folder whose listing packs to the digest it had costs
    nothing more; only a changed folder is unpacked and compared file by file. What
    changed is therefore held per change, never per file of the library.
    """

    def __init__(self, candidates: Candidates, share: ShareMonitor) -> None:
        self.candidates = candidates
        self.share = share
        self.snapshot = FolderSnapshot()
        # False on network shares, whose inode numbers are not a file's identity; there
        # ``match_moves`` (reactor.watch.moves) tells a moved file by its content instead.
        self.use_inode = True
        self.match_moves: MatchMoves | None = None
        self.baseline_done = False
        self.scans = 0
        self.last_scan_seconds = 0.0
        self.last_complete = False
        # The first scan of a share logs `progress` events this often (reactor.util.progress).
        self.progress_interval = PROGRESS_SECONDS
        # A mass vanish is held for one more scan; the files still gone then are believed.
        self.vanish = VanishGuard(share.watcher, "scan")

    async def scan(self, prefix: str = "") -> ScanDiff | None:
        """Walk (part of) the share and diff it against the snapshot; None if offline.

        The first full scan is the baseline: it becomes the snapshot and reports nothing."""
        if not await self.share.acheck():
            return None
        started = time.monotonic()
        baseline = not self.baseline_done and not prefix
        known = self.snapshot.count_under(prefix)
        found = _Found(FolderSnapshot() if baseline else self.snapshot, baseline)
        if baseline:
            with Progress(None, "first_scan", mode="events", interval=self.progress_interval) as progress:
                await self._walk(found, prefix, progress)
        else:
            await self._walk(found, prefix, None)
        result = found.walk
        self.last_scan_seconds = time.monotonic() - started
        self.scans += 1
        online_after = await self.share.acheck()
        self.last_complete = result.complete and online_after
        if baseline:
            self.snapshot = found.state
            self.baseline_done = True
            log.info(
                "first_scan_done",
                files=len(self.snapshot),
                dirs=result.dirs,
                errors=len(result.errors),
                seconds=round(self.last_scan_seconds, 3),
            )
            return ScanDiff()
        found.unseen_folders(prefix)
        # Vanished and appeared files with the same inode, size and mtime are one move.
        paired = diff(found.vanished, found.created)
        changes = ScanDiff(created=paired.created, modified=found.modified, deleted=paired.deleted, moved=paired.moved)
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
            await self._pair_by_content(changes, found.created)
        if vanished:
            changes.deleted, changes.held = self.vanish.sort(changes.deleted, max(known, 1))
        # The snapshot is not changed here: a change stays pending (its old signature
        # kept, a new path absent) until the watcher has applied it and calls
        # record/move/forget; one that fails to apply, or a withheld deletion, is
        # therefore reported again by the next scan.
        if changes:
            log.debug(
                "scan_done",
                prefix=prefix or ".",
                files=found.files,
                dirs=result.dirs,
                changed_dirs=found.changed_dirs,
                created=len(changes.created),
                modified=len(changes.modified),
                deleted=len(changes.deleted),
                moved=len(changes.moved),
                seconds=round(self.last_scan_seconds, 3),
            )
        return changes

    async def _walk(self, found: _Found, start: str, progress: Progress | None) -> None:
        """``walk_share``, one folder at a time, each compared as soon as it is listed."""
        result = found.walk
        stack = [start]
        while stack:
            prefix = stack.pop()
            local = self.candidates.local(prefix) if prefix else self.candidates.root
            try:
                folder = await self.share.io.call(str(local), list_folder, self.candidates, prefix, self.use_inode)
            except IoStall:
                result.fail(prefix, "io_stall")
                result.stalled.append(prefix)
                continue
            for path, code in folder.errors:
                result.fail(path, code)
            if not folder.listed:
                continue
            result.dirs += 1
            stack.extend(folder.subfolders)
            found.compare(prefix, folder.files)
            if progress is not None:
                progress.advance(len(folder.files))

    async def _pair_by_content(self, changes: ScanDiff, files: Mapping[str, Signature]) -> None:
        assert self.match_moves is not None
        appeared = {p: (files[p][0], files[p][1]) for p in changes.created}
        pairs = await self.match_moves(changes.deleted, appeared)
        if not pairs:
            return
        sources, targets = {s for s, _ in pairs}, {d for _, d in pairs}
        changes.moved.extend(pairs)
        changes.created = [p for p in changes.created if p not in targets]
        changes.deleted = [p for p in changes.deleted if p not in sources]

    def forget_baseline(self) -> None:
        """The baseline's files were not registered after all: the next scan is a baseline again."""
        self.snapshot = FolderSnapshot()
        self.baseline_done = False

    # -- keeping the snapshot in step with native events ------------------------

    def record(self, path: str, sig: Signature) -> Signature | None:
        """Remember a stable file; returns what was known before (None if new)."""
        return self.snapshot.put(path, sig)

    def forget(self, path: str) -> None:
        self.snapshot.pop(path)

    def forget_prefix(self, prefix: str) -> None:
        self.snapshot.pop(prefix)
        self.snapshot.drop_under(prefix)

    def move(self, src: str, dst: str) -> None:
        sig = self.snapshot.pop(src)
        if sig is not None:
            self.snapshot.put(dst, sig)

    def move_prefix(self, src: str, dst: str) -> None:
        self.move(src, dst)
        moving = [(folder, dict(entries)) for folder, entries in self.snapshot.folders(src)]
        self.snapshot.drop_under(src)
        for folder, entries in moving:
            target = dst + folder[len(src) :]
            merged = dict(self.snapshot.folder(target))
            merged.update(entries)
            self.snapshot.put_folder(target, merged)


class _Found:
    """What one scan found, folder by folder: only the changes are kept, per file."""

    def __init__(self, state: FolderSnapshot, baseline: bool) -> None:
        self.state = state
        # The baseline fills an empty snapshot: nothing to compare with.
        self.baseline = baseline
        self.walk = Walk(files={})
        self.created: Snapshot = {}
        self.modified: list[str] = []
        self.vanished: Snapshot = {}
        self.seen: set[str] = set()
        self.files = 0
        self.changed_dirs = 0

    def compare(self, folder: str, files: Snapshot) -> None:
        """One listed folder against what the snapshot holds for it."""
        self.seen.add(folder)
        self.files += len(files)
        entries = {split(path)[1]: sig for path, sig in files.items()}
        if self.baseline:
            self.state.put_folder(folder, entries)
            return
        before = self.state.digest(folder)
        if before is None and not entries:
            return
        if before == listing_digest(entries):
            return
        self.changed_dirs += 1
        old = self.state.folder(folder)
        for name, sig in entries.items():
            was = old.get(name)
            if was is None:
                self.created[join(folder, name)] = sig
            elif was != sig:
                self.modified.append(join(folder, name))
        for name, sig in old.items():
            if name not in entries:
                self.vanished[join(folder, name)] = sig

    def unseen_folders(self, prefix: str) -> None:
        """Every file of a known folder the walk did not list is vanished (or unknown,
        which ``Walk.covers`` tells apart)."""
        for folder in self.state.folder_names(prefix):
            if folder not in self.seen:
                entries = self.state.folder(folder)
                self.vanished.update((join(folder, name), sig) for name, sig in entries.items())
