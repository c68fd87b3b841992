"""Claims between their claim and their written outcome, shared by every detection lane.

One instance holds one claim row per path. Two lanes must never both hold a path: a
second claim would take over the first one's fencing token and fence its write. So a
lane reserves a path before it claims it, and waits while another lane holds or is
claiming it, until that claim's outcome is written or given back. The service's lease
loop renews every claim in here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from reactor.store.claims import Claim


class InFlight:
    def __init__(self) -> None:
        self._claims: dict[str, Claim] = {}
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
        self._notify()
        return claim

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
