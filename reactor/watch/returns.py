"""A file that comes back must be the file its result was detected from.

A held deletion or an orphan whose file returns, and a file overwritten while the
reactor was stopped, keep their path but may hold other content (a restore from another
backup, a replaced photo). Whenever a file (re)appears, and at start-up for every file,
its size and mtime are compared with the identity stored with its result
(reactor.util.identity): another size is other content; the same size with another
mtime is settled by the content fingerprint (two 64 KiB reads), so a restore that only
touched the mtime costs no detection. A file whose identity does not match is detected
again; one without a stored identity (a legacy result) is left as it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence

from reactor.util.identity import FileIdentity, read_identity

# paths -> the identity stored with their results (FileEventSink.result_identities).
StoredIdentities = Callable[[Sequence[str]], Awaitable[dict[str, FileIdentity]]]


async def changed_since_result(
    files: Mapping[str, tuple[int, int]], stored_identities: StoredIdentities, local: Callable[[str], str]
) -> list[str]:
    """Of ``files`` (path -> (size, mtime_ns) as seen now), those whose result was
    detected from other content."""
    if not files:
        return []
    stored = await stored_identities(list(files))
    changed: list[str] = []
    unsure: list[str] = []
    for path, was in stored.items():
        size, mtime_ns = files[path]
        if was.size != size:
            changed.append(path)
        elif was.mtime_ns is not None and was.mtime_ns != mtime_ns:
            unsure.append(path)
    if unsure:
        now = await asyncio.to_thread(lambda: {p: read_identity(local(p)) for p in unsure})
        for path in unsure:
            seen = now[path]
            # Unreadable just now: detected again, and the detection says what is wrong.
            if seen is None or seen.fingerprint != stored[path].fingerprint:
                changed.append(path)
    return sorted(changed)
