"""What counts as a move (reactor.core.moved), on the real database and real files: the
same content at a new path whose old path vanished. A copy, a changed photo, and a file
behind a folder that cannot be looked at are not moves."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import asyncpg

from reactor.core.moved import MoveFinder
from reactor.paths import PathMapper
from reactor.store import claims
from reactor.store.dbtypes import Conn
from reactor.util.identity import read_identity
from reactor.util.shareio import ShareIO

T = TypeVar("T")


async def record(conn: asyncpg.Connection, share: Path, path: str, *, registered: bool = True) -> None:
    """A result for ``path`` with its file's identity, as a detection writes it."""
    identity = read_identity(str(share / path))
    assert identity is not None
    if registered:
        await conn.execute("INSERT INTO ai_metadata (image_path, is_processed) VALUES ($1, TRUE)", path)
    await conn.execute(
        "INSERT INTO face_metadata (image_path, face_count, model, scale) VALUES ($1, 1, 'hog', 1)", path
    )
    await conn.execute(
        "INSERT INTO face_detections (image_path, face_index, box_top, box_right, box_bottom, box_left, encoding, "
        "model) VALUES ($1, 0, 1, 2, 3, 0, array_fill(0.0::real, ARRAY[128]), 'hog')",
        path,
    )
    await conn.execute(
        "INSERT INTO reactor_file_identity VALUES ($1, $2, $3, $4)",
        path,
        identity.size,
        identity.mtime_ns,
        identity.fingerprint,
    )


async def adopt(conn: asyncpg.Connection, share: Path, path: str, online: bool = True) -> str | None:
    await conn.execute(
        "INSERT INTO ai_metadata (image_path, is_processed) VALUES ($1, TRUE) ON CONFLICT DO NOTHING", path
    )
    claim = await claims.claim(conn, path, "test", 60)
    assert isinstance(claim, claims.Claim)

    async def run(op: Callable[[Conn], Awaitable[T]]) -> T:
        return await op(conn)

    mapper = PathMapper(str(share))
    local, seen = mapper.look_in_share(path)  # the one look on the way in, as the loop takes it
    moved = await MoveFinder(mapper, lambda: online, ShareIO(10)).adopt(claim, str(local), run, seen)
    return moved.src if moved else None


def photo(share: Path, path: str, content: bytes = b"one photo's bytes " * 500) -> None:
    (share / path).parent.mkdir(parents=True, exist_ok=True)
    (share / path).write_bytes(content)


async def test_a_copy_is_not_a_move_until_its_original_is_gone(conn: asyncpg.Connection, share: Path) -> None:
    photo(share, "a/x.jpg")
    await record(conn, share, "a/x.jpg")
    face_id = await conn.fetchval("SELECT face_id FROM face_detections")
    (share / "b").mkdir()
    (share / "b" / "x.jpg").write_bytes((share / "a" / "x.jpg").read_bytes())
    st = os.stat(share / "a" / "x.jpg")
    os.utime(share / "b" / "x.jpg", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert await adopt(conn, share, "b/x.jpg") is None  # the original is still there: a copy
    await conn.execute("DELETE FROM reactor_claims")
    # Offline, a missing file proves nothing.
    (share / "a" / "x.jpg").unlink()
    assert await adopt(conn, share, "b/x.jpg", online=False) is None
    await conn.execute("DELETE FROM reactor_claims")
    assert await adopt(conn, share, "b/x.jpg") == "a/x.jpg"
    assert await conn.fetchval("SELECT face_id FROM face_detections WHERE image_path = 'b/x.jpg'") == face_id
    assert await conn.fetchval("SELECT count(*) FROM reactor_claims") == 0
    assert await conn.fetchval("SELECT count(*) FROM face_metadata WHERE image_path = 'a/x.jpg'") == 0


async def test_changed_content_or_an_unreadable_folder_is_not_a_move(conn: asyncpg.Connection, share: Path) -> None:
    photo(share, "a/x.jpg")
    await record(conn, share, "a/x.jpg", registered=False)
    st = os.stat(share / "a" / "x.jpg")
    # Same size and mtime, other bytes: another photo.
    photo(share, "b/x.jpg", b"another photo, same size" + (share / "a" / "x.jpg").read_bytes()[24:])
    os.utime(share / "b" / "x.jpg", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert await adopt(conn, share, "b/x.jpg") is None
    # A registered result whose folder cannot be looked at (a file where the folder was):
    # not certainly gone, so its same-content copy elsewhere is not a move.
    photo(share, "c/y.jpg", b"third photo " * 300)
    await record(conn, share, "c/y.jpg")
    data = (share / "c" / "y.jpg").read_bytes()
    st = os.stat(share / "c" / "y.jpg")
    photo(share, "d/y.jpg", data)
    os.utime(share / "d" / "y.jpg", ns=(st.st_atime_ns, st.st_mtime_ns))
    (share / "c" / "y.jpg").unlink()
    (share / "c").rmdir()
    (share / "c").write_bytes(b"not a folder")
    assert await adopt(conn, share, "d/y.jpg") is None
    assert await conn.fetchval("SELECT count(*) FROM face_metadata WHERE image_path = 'c/y.jpg'") == 1
