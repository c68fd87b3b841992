"""Delays: the retry policy of a failed image, and reconnect attempts.

Both are exponential, capped and jittered, so that a thousand poison images or a
restarted database do not bring every retry back in the same second.

A failed image's policy is whole here: its numbers are ``[retry]``
(``config.RetryConfig``), ``retry_delays`` turns them into the delay before each try,
``jitter_factor`` spreads it, and the failure's type says how many tries it gets
(``ErrorType.tries_allowed``). ``failure_retry`` hands all three to the failure write
(sql/outcomes.sql ``record_failure``), which only picks the delay for the row's try
count and multiplies it by the factor: no formula lives in SQL.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass

from reactor.config import RetryConfig
from reactor.failure_types import ErrorType

# 2.0 ** 1024 overflows a float (OverflowError); no cap needs more than 2 ** 64 steps.
MAX_EXPONENT = 64


@functools.cache
def retry_delays(config: RetryConfig) -> tuple[float, ...]:
    """The delay in seconds after the 1st, 2nd, ... failed try: ``base_seconds *
    multiplier^(tries-1)``, capped at ``max_delay_seconds``. Once the delays stop changing
    (the cap, or the exponent at MAX_EXPONENT) the list ends: every later try takes its last."""
    delays: list[float] = []
    for exponent in range(MAX_EXPONENT + 1):
        try:
            raw = config.base_seconds * config.multiplier**exponent
        except OverflowError:
            raw = math.inf
        delays.append(min(config.max_delay_seconds, raw))
    while len(delays) > 1 and delays[-1] == delays[-2]:
        delays.pop()
    return tuple(delays)


def jitter_factor(config: RetryConfig, rng: random.Random | None = None) -> float:
    """The factor one failure's delay is multiplied by: 1 ± ``jitter``, drawn per write."""
    spread = max(0.0, config.jitter)
    return 1.0 + (rng or random).uniform(-spread, spread)


@dataclass(frozen=True)
class FailureRetry:
    """The numbers one failure write receives (sql/outcomes.sql record_failure)."""

    # Seconds until the next try after the n-th failed try, at index n-1 (retry_delays).
    delays: tuple[float, ...]
    # This write's spread of the delay (jitter_factor).
    jitter: float
    # Failed tries that make the image permanently failed (ErrorType.tries_allowed).
    tries: int


def failure_retry(config: RetryConfig, error_type: ErrorType, rng: random.Random | None = None) -> FailureRetry:
    return FailureRetry(retry_delays(config), jitter_factor(config, rng), error_type.tries_allowed(config))


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
