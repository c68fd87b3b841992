"""Faults on a real SMB share (tests/smb_share.py): a file locked by another client, the file server stopping.

On SMB an open of a file that another client holds with no sharing fails, and smbnetfs
then reconnects its session: for about 3 s every path, the share's marker too, answers
EIO. Neither may take the share offline nor loop: the locked file is its own transient
failure. Skipped, with the reason, where Samba or smbnetfs cannot be set up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from reactor.config import Config
from tests.reactor_support import reported, wait_until
from tests.smb_reactor import photo_bytes, put, running, smb_config
from tests.smb_share import SmbShare


async def test_a_file_locked_by_another_client_fails_alone_and_the_share_stays_online(
    make_config: Callable[..., Config], dsn: str, smb: SmbShare, tmp_path: Path
) -> None:
    put(smb, "lock/held.jpg", photo_bytes(tmp_path, 4))
    put(smb, "lock/free.jpg", photo_bytes(tmp_path, 5))
    client = smb.client()
    release = client.hold_locked("lock/held.jpg")  # an open with no sharing, as an editor holds it
    config = smb_config(
        make_config,
        smb,
        retry={"base_seconds": 2.0, "multiplier": 1.0, "jitter": 0.0, "max_attempts": 20},
        sweep={"interval_seconds": 2.0, "poll_seconds": 3600.0},
    )
    try:
        async with running(config, dsn, smb) as r:

            async def failed_once() -> bool:
                return "lock/free.jpg" in await r.results() and ("lock/held.jpg", "unreadable") in await r.failures()

            await wait_until(failed_once, 90, "the locked file's failure and the free file's result")
            # Opening the locked file makes smbnetfs reconnect: the marker answers EIO
            # for a few seconds. One failed probe does not take the share offline.
            await r.scans(2)
            assert r.events("share_offline") == []
            assert r.reactor.watcher is not None and r.reactor.watcher.sessions == 1
            release()

            async def detected() -> bool:
                return await r.results() == ["lock/free.jpg", "lock/held.jpg"]

            await wait_until(detected, 90, "the file's result once the lock is gone")
            assert await r.failures() == []
            assert r.events("share_offline") == []
            tries = [e for e in r.events("image_failed") if e["path"] == "lock/held.jpg"]
            print(f"locked file: {len(tries)} failed tries, {r.reactor.share.blips} probe errors recovered from")
            # Tried again with the backoff, not in a loop (each try costs ~7 s of reconnect).
            assert 1 <= len(tries) <= 12
    finally:
        with contextlib.suppress(Exception):
            release()
        client.close()


async def test_smbd_stopped_and_restarted_records_nothing_and_catches_up(
    make_config: Callable[..., Config], dsn: str, smb: SmbShare, tmp_path: Path
) -> None:
    everything = [f"k{n}.jpg" for n in range(3)]
    for n, name in enumerate(everything):
        put(smb, name, photo_bytes(tmp_path, n))
    config = smb_config(make_config, smb)
    async with running(config, dsn, smb) as r:

        async def all_done() -> bool:
            return await r.results() == everything

        await wait_until(all_done, 90, "results for the library")
        stopped_at = time.monotonic()
        await asyncio.to_thread(smb.stop_smbd)
        put(smb, "during.jpg", photo_bytes(tmp_path, 7))  # written on the server meanwhile

        async def offline() -> bool:
            return not r.reactor.share.online

        await wait_until(offline, 60, "the share to go offline")
        offline_at = time.monotonic()
        print(f"share offline {offline_at - stopped_at:.1f} s after smbd stopped")
        await asyncio.to_thread(smb.start_smbd)

        async def caught_up() -> bool:
            return await r.results() == ["during.jpg", *everything]

        await wait_until(caught_up, 90, "the photo written while smbd was down")
        print(f"share back {time.monotonic() - offline_at:.1f} s after smbd restarted")
        assert await r.failures() == []
        await reported(r.detected, Counter(["during.jpg", *everything]), "the detections logged")
        assert r.events("image_deleted") == [] and r.events("folder_deleted") == []
