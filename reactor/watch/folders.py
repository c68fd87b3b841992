"""The scanner's memory of the share: one packed, compressed listing per folder.

A dict of every path (path -> size, mtime, inode) costs about 250 bytes a file in Python
objects, 750 MB at a million photos once a walk and a diff sit beside it. Here each
folder is one ``bytes`` object (its sorted names, then its sizes, mtimes and inodes as
arrays, compressed with zlib) and a 16-byte digest of the uncompressed form: a
scan packs the folder it has just listed the same way and compares digests, so an
unchanged folder costs its listing and nothing per file. Only a changed folder is
unpacked, into a plain dict of its own files; a few recently used folders stay unpacked
(``HOT_FOLDERS``) so a burst of native events in one album does not repack it per file.
Working memory is bounded by the largest folder, not the library.

A ``FolderSnapshot`` is a read-only ``Mapping[str, Signature]`` of database paths for
the code that asks about one path; ``put``, ``pop`` and the ``*_folder`` methods change it.
"""

from __future__ import annotations

import hashlib
import zlib
from array import array
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

# (size, mtime_ns, inode); see reactor.watch.scanner.signature.
Signature = tuple[int, int, int]
# name (within its folder) -> signature
Entries = dict[str, Signature]

# Unpacked folders kept for reuse; a changed one is repacked when it leaves.
HOT_FOLDERS = 16
_LEVEL = 1  # the first zlib level: three times smaller than raw, fast enough for every changed folder


@dataclass(frozen=True, slots=True)
class Packed:
    count: int
    digest: bytes
    blob: bytes


def _raw(entries: Entries) -> bytes:
    names = sorted(entries)
    sizes, mtimes, inodes = array("q"), array("q"), array("Q")
    for name in names:
        size, mtime_ns, inode = entries[name]
        sizes.append(size)
        mtimes.append(mtime_ns)
        inodes.append(inode)
    blob = "\0".join(names).encode("utf-8", "surrogatepass")
    return len(blob).to_bytes(8, "little") + blob + sizes.tobytes() + mtimes.tobytes() + inodes.tobytes()


def digest_of(raw: bytes) -> bytes:
    return hashlib.blake2b(raw, digest_size=16).digest()


def pack(entries: Entries) -> Packed:
    raw = _raw(entries)
    return Packed(len(entries), digest_of(raw), zlib.compress(raw, _LEVEL))


def listing_digest(entries: Entries) -> bytes:
    """The digest ``pack`` would give these entries: compared with a folder's to skip it."""
    return digest_of(_raw(entries))


def unpack(packed: Packed) -> Entries:
    if not packed.count:
        return {}
    raw = zlib.decompress(packed.blob)
    length = int.from_bytes(raw[:8], "little")
    names = raw[8 : 8 + length].decode("utf-8", "surrogatepass").split("\0")
    n = packed.count
    columns = []
    offset = 8 + length
    for code in ("q", "q", "Q"):
        column = array(code)
        column.frombytes(raw[offset : offset + 8 * n])
        columns.append(column)
        offset += 8 * n
    return dict(zip(names, zip(*columns, strict=True), strict=True))


def split(path: str) -> tuple[str, str]:
    """(folder prefix, name) of a database path; "" is the share's root."""
    folder, _, name = path.rpartition("/")
    return folder, name


def join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def under(folder: str, prefix: str) -> bool:
    return not prefix or folder == prefix or folder.startswith(prefix + "/")


class FolderSnapshot(Mapping[str, Signature]):
    def __init__(self) -> None:
        self._packed: dict[str, Packed] = {}
        self._hot: OrderedDict[str, Entries] = OrderedDict()
        self._dirty: set[str] = set()
        self._count = 0

    # -- Mapping ----------------------------------------------------------------

    def __getitem__(self, path: str) -> Signature:
        folder, name = split(path)
        entries = self._open(folder)
        if entries is None:
            raise KeyError(path)
        return entries[name]

    def __contains__(self, path: object) -> bool:
        if not isinstance(path, str):
            return False
        folder, name = split(path)
        entries = self._open(folder)
        return entries is not None and name in entries

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[str]:
        for folder, entries in self.folders():
            for name in entries:
                yield join(folder, name)

    def folders(self, prefix: str = "") -> Iterator[tuple[str, Entries]]:
        """(folder, its entries) for every folder at or below ``prefix``, one unpacked at a time."""
        for folder in self.folder_names(prefix):
            entries = self.folder(folder)
            if entries:
                yield folder, entries

    def folder_names(self, prefix: str = "") -> list[str]:
        """The known folders at or below ``prefix``, sorted; nothing is unpacked."""
        return sorted(f for f in self._known() if under(f, prefix))

    def entries(self, prefix: str = "") -> Iterator[tuple[str, Signature]]:
        """(path, signature) of every file at or below ``prefix``, folder by folder."""
        for folder, entries in self.folders(prefix):
            for name, sig in entries.items():
                yield join(folder, name), sig

    def folder(self, folder: str) -> Entries:
        """One folder's entries (a copy when it is not kept unpacked: do not change it)."""
        hot = self._hot.get(folder)
        if hot is not None:
            return hot
        packed = self._packed.get(folder)
        return unpack(packed) if packed is not None else {}

    def packed_bytes(self) -> int:
        """The size of the packed listings (what the snapshot costs beyond its folder names)."""
        return sum(len(p.blob) + len(p.digest) for p in self._packed.values())

    def count_under(self, prefix: str) -> int:
        if not prefix:
            return self._count
        return sum(self._folder_count(f) for f in self._known() if under(f, prefix))

    def digest(self, folder: str) -> bytes | None:
        """The digest of a folder's packed form; None when unknown or changed since packed."""
        if folder in self._dirty:
            self._flush(folder)
        packed = self._packed.get(folder)
        return packed.digest if packed is not None else None

    # -- changes ------------------------------------------------------------------

    def put(self, path: str, sig: Signature) -> Signature | None:
        folder, name = split(path)
        entries = self._open(folder, create=True)
        assert entries is not None
        before = entries.get(name)
        entries[name] = sig
        if before is None:
            self._count += 1
        self._dirty.add(folder)
        return before

    def pop(self, path: str) -> Signature | None:
        folder, name = split(path)
        entries = self._open(folder)
        if entries is None or name not in entries:
            return None
        self._count -= 1
        self._dirty.add(folder)
        return entries.pop(name)

    def put_folder(self, folder: str, entries: Entries, packed: Packed | None = None) -> None:
        """Replace one folder's entries (``packed``: their packed form, if already made)."""
        self._count += len(entries) - self._folder_count(folder)
        self._hot.pop(folder, None)
        self._dirty.discard(folder)
        if entries:
            self._packed[folder] = packed if packed is not None else pack(entries)
        else:
            self._packed.pop(folder, None)

    def drop_under(self, prefix: str) -> list[str]:
        """Forget every folder at or below ``prefix``; returns the paths that were there."""
        gone: list[str] = []
        for folder in [f for f in self._known() if under(f, prefix)]:
            gone.extend(join(folder, name) for name in self.folder(folder))
            self.put_folder(folder, {})
        return gone

    # -- inside ---------------------------------------------------------------------

    def _known(self) -> set[str]:
        return set(self._packed) | set(self._hot)

    def _folder_count(self, folder: str) -> int:
        hot = self._hot.get(folder)
        if hot is not None:
            return len(hot)
        packed = self._packed.get(folder)
        return packed.count if packed is not None else 0

    def _open(self, folder: str, *, create: bool = False) -> Entries | None:
        entries = self._hot.get(folder)
        if entries is not None:
            self._hot.move_to_end(folder)
            return entries
        packed = self._packed.get(folder)
        if packed is None and not create:
            return None
        entries = unpack(packed) if packed is not None else {}
        self._hot[folder] = entries
        while len(self._hot) > HOT_FOLDERS:
            self._flush(next(iter(self._hot)))
        return entries

    def _flush(self, folder: str) -> None:
        """Pack a changed folder and let it leave the unpacked set."""
        entries = self._hot.pop(folder, None)
        if entries is None:
            return
        if folder in self._dirty:
            self._dirty.discard(folder)
            if entries:
                self._packed[folder] = pack(entries)
            else:
                self._packed.pop(folder, None)
