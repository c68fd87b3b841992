"""What a photo file is, independent of where it lies: size, mtime and a content fingerprint.

On a network share the inode is no identity (a remount renumbers every file, a rename
on the server gives a new number). A file that vanished and one that appeared with the
same size, mtime and fingerprint are one file that moved. The fingerprint hashes the
size and the first and last 64 KiB, so it costs two small reads, not the whole photo;
the detector computes the same value from the bytes it read, and the result keeps it.

Imported by the detector child too: no dependency beyond the standard library.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

EDGE_BYTES = 64 * 1024


@dataclass(frozen=True)
class FileIdentity:
    size: int
    mtime_ns: int | None  # None: not known (a result written without it)
    fingerprint: str


def fingerprint(size: int, head: bytes, tail: bytes) -> str:
    """``head``: the first EDGE_BYTES (or the whole file), ``tail``: the last EDGE_BYTES."""
    h = hashlib.blake2b(digest_size=16)
    h.update(size.to_bytes(8, "little"))
    h.update(head)
    h.update(tail)
    return h.hexdigest()


def fingerprint_of_bytes(data: bytes) -> str:
    return fingerprint(len(data), data[:EDGE_BYTES], data[-EDGE_BYTES:] if len(data) > EDGE_BYTES else b"")


def read_identity(path: str) -> FileIdentity | None:
    """The identity of the file at ``path`` now; None if it cannot be read or changes meanwhile."""
    try:
        with open(path, "rb") as fh:
            before = os.fstat(fh.fileno())
            head = fh.read(EDGE_BYTES)
            tail = b""
            if before.st_size > EDGE_BYTES:
                # The last 64 KiB, overlapping the head in files under 128 KiB, as
                # fingerprint_of_bytes takes them.
                fh.seek(before.st_size - EDGE_BYTES)
                tail = fh.read(EDGE_BYTES)
            after = os.fstat(fh.fileno())
    except OSError:
        return None
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        return None
    return FileIdentity(before.st_size, before.st_mtime_ns, fingerprint(before.st_size, head, tail))
