"""Delays: a failed image's next try, and reconnect attempts.

Both are exponential, capped and jittered, so that a thousand poison images or a
restarted database do not bring every retry back in the same second.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from reactor.config import RetryConfig
from reactor.failure_types import ErrorType


def max_attempts(config: RetryConfig, error_type: ErrorType) -> int:
    """How many failed tries make the image permanently failed."""
    if error_type is ErrorType.INVALID_PATH:
        return 1
    if error_type.permanent:
        return max(1, config.max_attempts_permanent)
    return max(1, config.max_attempts)


# 2.0 ** 1024 overflows a float (OverflowError); no cap needs more than 2 ** 64 steps.
MAX_EXPONENT = 64


@dataclass
class Backoff:
    """Capped, jittered doubling for reconnect loops: 0.5, 1, 2, ... up to ``cap``.

    It never overflows: the exponent stops growing at MAX_EXPONENT, so the thousandth
    (or millionth) attempt waits ``cap`` like the tenth.
    """

    cap: float
    first: float = 0.5
    jitter: float = 0.25
    attempt: int = 0

    def next_delay(self) -> float:
        raw = min(self.cap, self.first * 2.0 ** min(self.attempt, MAX_EXPONENT))
        self.attempt += 1
        return raw * random.uniform(1.0 - self.jitter, 1.0)

    def reset(self) -> None:
        self.attempt = 0
