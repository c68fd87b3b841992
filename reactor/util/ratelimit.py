"""Rate limiting of repeated identical log events (the legacy worker wrote 43 MB of one line).

The first occurrence of a key is logged; identical ones inside the window are only
counted, and the next one after the window is logged with how many were suppressed.

Keys often name one image (the failure message carries its path), so a long run sees
an unbounded number of them: once per window, keys whose window has passed with
nothing suppressed are forgotten. That changes nothing about what is logged (such a
key's next occurrence is logged with suppressed=0 either way) and keeps memory to the
keys seen within about one window, never more than ``max_keys``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable


class RateLimiter:
    def __init__(self, window_seconds: float, clock: Callable[[], float] = time.monotonic, max_keys: int = 10_000):
        self.window = window_seconds
        self._clock = clock
        self._max_keys = max_keys
        # key -> (time logged last, occurrences suppressed since)
        self._seen: dict[Hashable, tuple[float, int]] = {}
        self._pruned_at = clock()

    def __len__(self) -> int:
        """Keys remembered now."""
        return len(self._seen)

    def check(self, key: Hashable) -> tuple[bool, int]:
        """(log it?, how many identical events were suppressed since it was last logged)."""
        now = self._clock()
        if now - self._pruned_at >= self.window:
            self._prune(now)
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.window:
            self._seen[key] = (last[0], last[1] + 1)
            return False, 0
        if len(self._seen) >= self._max_keys:
            self._forget_old(now)
        self._seen[key] = (now, 0)
        return True, last[1] if last else 0

    def _prune(self, now: float) -> None:
        """Forget keys past their window with nothing suppressed (a count still owed is kept)."""
        self._pruned_at = now
        stale = [k for k, (at, suppressed) in self._seen.items() if suppressed == 0 and now - at >= self.window]
        for key in stale:
            del self._seen[key]

    def _forget_old(self, now: float) -> None:
        stale = [k for k, (at, _) in self._seen.items() if now - at >= self.window]
        for key in stale:
            del self._seen[key]
        if len(self._seen) >= self._max_keys:
            self._seen.clear()
