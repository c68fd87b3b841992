"""A file that comes back must be the file its result was detected from (reactor.watch.returns).

On any disk, not only on SMB (tests/test_smb_share.py does the same on a Samba share):
the rule that compares a (re)appearing file with the identity stored with its result,
and a photo overwritten while the reactor was stopped, detected again at start-up.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import asyncpg
from structlog.testing import capture_logs

from reactor.config import Config
from reactor.core.service import Reactor
from reactor.util.identity import FileIdentity, fingerprint_of_bytes, read_identity
from reactor.watch.returns import changed_since_result
from tests.reactor_support import wait_until, wait_watching
from tests.smb_reactor import photo_bytes


async def test_only_other_content_counts_as_changed(tmp_path: Path) -> None:
    files: dict[str, bytes] = {
        "same.jpg": b"a" * 100,
        "bigger.jpg": b"b" * 120,
        "touched.jpg": b"c" * 100,
        "rewritten.jpg": b"X" * 100,
        "legacy.jpg": b"e" * 100,
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    now = {name: read_identity(str(tmp_path / name)) for name in files}
    assert all(now.values())

    def was(name: str, data: bytes, mtime_ns: int | None) -> FileIdentity:
        return FileIdentity(len(data), mtime_ns, fingerprint_of_bytes(data))

    stored = {
        "same.jpg": was("same.jpg", files["same.jpg"], now["same.jpg"].mtime_ns),  # type: ignore[union-attr]
        "bigger.jpg": was("bigger.jpg", b"b" * 100, 1),
        "touched.jpg": was("touched.jpg", files["touched.jpg"], 1),  # the same bytes, another mtime
        "rewritten.jpg": was("rewritten.jpg", b"d" * 100, 1),  # the same size, other bytes
        "gone.jpg": was("gone.jpg", b"f" * 100, 1),  # unreadable now: detected again
    }

    async def identities(paths: Sequence[str]) -> dict[str, FileIdentity]:
        return {p: stored[p] for p in paths if p in stored}

    seen = {name: (i.size, i.mtime_ns or 0) for name, i in now.items() if i is not None}
    seen["gone.jpg"] = (100, 2)
    changed = await changed_since_result(seen, identities, lambda p: str(tmp_path / p))
    assert changed == ["bigger.jpg", "gone.jpg", "rewritten.jpg"]
    assert await changed_since_result({}, identities, str) == []


async def test_a_photo_overwritten_while_stopped_is_detected_again(
    make_config: Callable[..., Config], dsn: str, share: Path, tmp_path: Path
) -> None:
    config = make_config(
        detector={"model": "hog", "timeout_seconds": 60.0, "workers": 1},
        images={"register_files": "always"},
        watcher={"observer": "native", "stability_seconds": 0.5},
        sweep={"interval_seconds": 3600.0, "poll_seconds": 3600.0},
    )
    (share / "a").mkdir()
    for n in range(2):
        (share / "a" / f"p{n}.jpg").write_bytes(photo_bytes(tmp_path, n))
    newer = photo_bytes(tmp_path, 9)
    conn = await asyncpg.connect(dsn)

    async def fingerprint(path: str) -> str | None:
        value = await conn.fetchval("SELECT fingerprint FROM reactor_file_identity WHERE image_path = $1", path)
        return str(value) if value is not None else None

    try:
        for run in range(2):
            reactor = Reactor(config, dsn)
            stop = asyncio.Event()
            with capture_logs() as logs:
                task = asyncio.create_task(reactor.run(stop))
                try:
                    await wait_watching(reactor, task)
                    if run == 0:

                        async def both() -> bool:
                            return (
                                await fingerprint("a/p0.jpg") is not None and await fingerprint("a/p1.jpg") is not None
                            )

                        await wait_until(both, 120, "results for both photos")
                    else:

                        async def again() -> bool:
                            return await fingerprint("a/p1.jpg") == fingerprint_of_bytes(newer)

                        await wait_until(again, 120, "the overwritten photo to be detected again")
                finally:
                    stop.set()
                    await asyncio.wait_for(task, 150)
            detected = Counter(e["path"] for e in logs if e["event"] == "image_detected")
            if run == 0:
                assert detected == Counter(["a/p0.jpg", "a/p1.jpg"])
                # Overwritten in place while nobody watches (another mtime, other bytes).
                (share / "a" / "p1.jpg").write_bytes(newer)
                os.utime(share / "a" / "p1.jpg", (1_600_000_000, 1_600_000_000))
            else:
                assert detected == Counter(["a/p1.jpg"])
                assert [e["files"] for e in logs if e["event"] == "files_changed_while_away"] == [1]
    finally:
        await conn.close()
