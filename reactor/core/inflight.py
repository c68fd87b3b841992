"""Claims between their claim and their written outcome, shared by every detection lane.

One instance holds one claim row per path. Two lanes must never both hold a path: a
second claim would take over the first one's fencing token and fence its write. So a
lane reserves a path before it claims it, and waits while another lane holds or is
claiming it, until that claim's outcome is written or given back. The service's lease
loop renews every claim in here.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator

from reactor.store.claims import Claim

# Tokens of claims already out of here that the teardown still releases: a write that
# failed leaves its claim row until the lease runs out; older ones have expired anyway.
RECENT_TOKENS = 1024


class InFlight:
    def __init__(self) -> None:
        self._claims: dict[str, Claim] = {}
        self._recent: deque[int] = deque(maxlen=RECENT_TOKENS)
        self._reserved: set[str] = set()
        # Created on first wait, so that constructing one needs no event loop.
        self._changed: asyncio.Event | None = None

    def __contains__(self, path: object) -> bool:
        return path in self._claims

    def __len__(self) -> int:
        return len(self._claims)

    def __iter__(self) -> Iterator[str]:
        return iter(self._claims)

    def __setitem__(self, path: str, claim: Claim) -> None:
        self._claims[path] = claim

    def values(self) -> list[Claim]:
        return list(self._claims.values())

    def pop(self, path: str, default: Claim | None = None) -> Claim | None:
        claim = self._claims.pop(path, default)
        if claim is not None:
            self._recent.append(claim.token)
        self._notify()
        return claim

    def tokens(self) -> list[int]:
        """The fencing tokens of the claims this process may still hold: its fence at teardown."""
        return [*(c.token for c in self._claims.values()), *self._recent]

    async def reserve(self, path: str) -> None:
        """Wait until no lane holds or is claiming ``path``, then mark it as being claimed."""
        while path in self._claims or path in self._reserved:
            if self._changed is None:
                self._changed = asyncio.Event()
            await self._changed.wait()
        self._reserved.add(path)

    def unreserve(self, path: str) -> None:
        self._reserved.discard(path)
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()
