"""The whole reactor on a real SMB share: Samba on loopback, mounted with smbnetfs (tests/smb_share.py).

The twin of tests/test_network_share.py (sshfs) for the protocol production uses. Other
clients write on the server folder or through SMB itself (smbprotocol, as Windows does):
new files and a rename, a copy that sets its final size first, deletions and files that
come back with other content. The share root is a folder below the FUSE mount point, as
on a real smbnetfs mount, with images.require_mount on. Locks and the file server
stopping are in tests/test_smb_faults.py. Skipped, with the reason, where Samba or
smbnetfs cannot be set up.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from reactor.config import Config
from reactor.util.identity import fingerprint_of_bytes
from reactor.watch.mounts import ATTRIBUTE_CACHE_DEFAULTS
from tests.reactor_support import reported, wait_until
from tests.smb_reactor import photo_bytes, put, running, smb_config
from tests.smb_share import SmbShare


def measure_attribute_cache(share: SmbShare, tries: int = 3) -> float:
    """Seconds until a change made on the server shows through the mount (the client's cache)."""
    probe = share.server / "cache-probe.bin"
    seen = share.root / "cache-probe.bin"
    probe.write_bytes(b"x")
    longest = 0.0
    for n in range(tries):
        os.stat(seen)  # cached now
        with open(probe, "ab") as fh:
            fh.write(b"y" * (n + 1))
        size = probe.stat().st_size
        started = time.monotonic()
        while os.stat(seen).st_size != size:
            if time.monotonic() - started > 30:
                raise AssertionError("the mount never showed the server's change")
            time.sleep(0.01)
        longest = max(longest, time.monotonic() - started)
    probe.unlink()
    return longest


async def test_new_files_and_a_rename_under_a_window_that_follows_the_measured_cache(
    make_config: Callable[..., Config], dsn: str, smb: SmbShare, tmp_path: Path
) -> None:
    cache = await asyncio.to_thread(measure_attribute_cache, smb)
    print(f"fuse.smbnetfs attribute cache measured: {cache:.2f} s")
    # The entry in reactor.watch.mounts covers what was measured (the FUSE default of 1 s),
    # with the scheduling slack of a loaded machine.
    assert cache <= ATTRIBUTE_CACHE_DEFAULTS["fuse.smbnetfs"] + 2.0
    for n in range(3):
        put(smb, f"album/n{n}.jpg", photo_bytes(tmp_path, n))
    config = smb_config(make_config, smb)
    async with running(config, dsn, smb) as r:
        watcher = r.reactor.watcher
        assert watcher is not None and watcher.choice is not None
        assert watcher.choice.fstype == "fuse.smbnetfs" and not watcher.scanner.use_inode
        assert watcher.window == ATTRIBUTE_CACHE_DEFAULTS["fuse.smbnetfs"] + 2.0  # not the 90 s of an unknown type
        assert r.reactor.share.online  # require_mount: the mount point is above the root
        put(smb, "album/later.jpg", photo_bytes(tmp_path, 7))
        everything = ["album/later.jpg", "album/n0.jpg", "album/n1.jpg", "album/n2.jpg"]

        async def all_done() -> bool:
            return await r.results() == everything

        await wait_until(all_done, 90, "results for the new files")
        assert await r.failures() == []
        await reported(r.detected, Counter(everything), "the detections logged")
        # A folder renamed on the server: new paths, the same files, nothing detected again.
        os.rename(smb.server / "album", smb.server / "renamed")

        async def moved() -> bool:
            return await r.results() == [p.replace("album/", "renamed/") for p in everything]

        await wait_until(moved, 60, "the results to follow the server-side rename")
        await r.scans(2)
        await reported(r.detected, Counter(everything), "the detections logged")


async def test_an_explorer_copy_gets_no_result_until_it_is_closed(
    make_config: Callable[..., Config], dsn: str, smb: SmbShare, tmp_path: Path
) -> None:
    data = photo_bytes(tmp_path, 3)
    config = smb_config(make_config, smb)
    async with running(config, dsn, smb) as r:
        window = r.reactor.watcher.window if r.reactor.watcher else 0.0
        loop = asyncio.get_running_loop()
        (smb.server / "in").mkdir()
        before_close: list[list[str]] = []

        def look() -> None:
            before_close.append(asyncio.run_coroutine_threadsafe(r.results(), loop).result(30))

        # Through the share the size is final from the start and the mtime stays frozen
        # until the close: the stability window passes in the middle of the copy.
        client = smb.client()
        try:
            await asyncio.to_thread(client.explorer_copy, "in/copy.jpg", data, window + 8.0, look)
        finally:
            client.close()
        assert before_close == [[]], "a result was recorded from a copy still being written"

        async def done() -> bool:
            return await r.results() == ["in/copy.jpg"]

        await wait_until(done, 60, "the result of the closed copy")
        assert await r.fingerprint("in/copy.jpg") == fingerprint_of_bytes(data)
        assert await r.failures() == []
        assert [e for e in r.logs if e["event"] in ("image_failed", "permanently_failed")] == []
        # It was read mid-copy (the window passed while the size and mtime were frozen)
        # and found incomplete, not recorded.
        assert r.events("image_incomplete"), "the copy was never read before it was closed"
        print(f"incomplete reads of the copy: {len(r.events('image_incomplete'))}")


def test_smb_fixture_reports_why_it_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests import smb_share

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(smb_share, "SMBD", None)
    reason = smb_share.unavailable()
    assert reason is not None and "not installed" in reason and "\n" not in reason


async def test_deletions_held_or_orphaned_and_files_returning_with_other_content(
    make_config: Callable[..., Config], dsn: str, smb: SmbShare, tmp_path: Path
) -> None:
    names = [f"lib/m{n}.jpg" for n in range(8)]
    for n, name in enumerate(names):
        put(smb, name, photo_bytes(tmp_path, n))
    config = smb_config(make_config, smb, watcher={"vanish_min_files": 3})
    async with running(config, dsn, smb) as r:

        async def all_done() -> bool:
            return await r.results() == names

        await wait_until(all_done, 90, "results for the library")
        gone = names[:4]  # half: more than watcher.vanish_fraction
        for name in gone:
            (smb.server / name).unlink()

        async def held_rows() -> list[str]:
            return [x["image_path"] for x in await r.conn.fetch("SELECT image_path FROM reactor_held_deletions")]

        async def four_held() -> bool:
            return sorted(await held_rows()) == gone

        await wait_until(four_held, 60, "the mass deletion to be held")
        await r.scans(2)
        assert len(r.events("deletions_held")) == 1 and r.reactor.share.online
        assert set(gone) <= set(await r.results())
        # One comes back as it was (kept), one with other content (detected again).
        put(smb, "lib/m0.jpg", photo_bytes(tmp_path, 0))
        other = photo_bytes(tmp_path, 30)
        put(smb, "lib/m1.jpg", other)

        async def released() -> bool:
            return sorted(await held_rows()) == gone[2:] and await r.fingerprint("lib/m1.jpg") == fingerprint_of_bytes(
                other
            )

        await wait_until(released, 60, "the returned files to be released, the changed one detected again")
        # A single deletion (its result orphaned), then a restore with other content.
        (smb.server / "lib/m5.jpg").unlink()

        async def orphaned() -> bool:
            return any(e["path"] == "lib/m5.jpg" for e in r.events("image_deleted"))

        await wait_until(orphaned, 60, "the deletion")
        restored = photo_bytes(tmp_path, 31)
        put(smb, "lib/m5.jpg", restored)

        async def redetected() -> bool:
            return await r.fingerprint("lib/m5.jpg") == fingerprint_of_bytes(restored)

        await wait_until(redetected, 60, "the restored file's new result")
        await r.scans(2)
        await reported(r.detected, Counter([*names, "lib/m1.jpg", "lib/m5.jpg"]), "the detections logged")
    # Overwritten while the reactor was stopped: found at start-up, detected again.
    newer = photo_bytes(tmp_path, 32)
    put(smb, "lib/m6.jpg", newer)
    async with running(config, dsn, smb) as r:

        async def found() -> bool:
            return await r.fingerprint("lib/m6.jpg") == fingerprint_of_bytes(newer)

        await wait_until(found, 90, "the file overwritten while stopped to be detected again")
        await r.scans(2)
        await reported(r.detected, Counter(["lib/m6.jpg"]), "the detections logged")
        assert await r.failures() == []
