"""The retry policy of a failed image (reactor.util.backoff) and what each failure type does
(reactor.failure_types.ErrorType): the numbers the policy computes are what the failure
write (sql/outcomes.sql record_failure) puts in face_detection_failures, on a real server."""

from __future__ import annotations

import datetime as dt
import random

import asyncpg
import pytest

from reactor.config import RetryConfig
from reactor.detector.types import DetectionFailure
from reactor.failure_types import FILE_ACCESS, PERMANENT, ErrorType
from reactor.store import outcomes
from reactor.store.schema import failure_columns
from reactor.util.backoff import MAX_EXPONENT, failure_retry, jitter_factor, retry_delays

RETRY = RetryConfig(
    base_seconds=10.0, multiplier=2.0, max_delay_seconds=35.0, jitter=0.3, max_attempts=4, max_attempts_permanent=2
)


def test_the_delays_grow_to_the_cap_and_stop_there() -> None:
    assert retry_delays(RETRY) == (10.0, 20.0, 35.0)
    assert retry_delays(RetryConfig()) == (60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 3600.0)
    assert retry_delays(RetryConfig(multiplier=1.0)) == (60.0,)
    # No cap reached: the exponent stops growing at MAX_EXPONENT, and nothing overflows.
    uncapped = retry_delays(RetryConfig(base_seconds=1.0, max_delay_seconds=float("inf")))
    assert len(uncapped) == MAX_EXPONENT + 1 and uncapped[-1] == 2.0**MAX_EXPONENT
    assert retry_delays(RetryConfig(multiplier=1e300)) == (60.0, 3600.0)


def test_the_jitter_spreads_each_write_within_its_fraction() -> None:
    rng = random.Random(7)
    factors = [jitter_factor(RETRY, rng) for _ in range(200)]
    assert all(0.7 <= f <= 1.3 for f in factors) and len(set(factors)) > 100
    assert jitter_factor(RetryConfig(jitter=0.0)) == 1.0
    assert jitter_factor(RetryConfig(jitter=-1.0)) == 1.0


def test_the_tries_are_the_types() -> None:
    for error_type in ErrorType:
        assert failure_retry(RETRY, error_type).tries == error_type.tries_allowed(RETRY)
    assert ErrorType.RUNTIME.tries_allowed(RETRY) == 4
    assert ErrorType.CORRUPT.tries_allowed(RETRY) == 2  # one confirmation
    assert ErrorType.INVALID_PATH.tries_allowed(RETRY) == 1  # none
    assert ErrorType.TIMEOUT.tries_allowed(RetryConfig(max_attempts=0)) == 1


def test_each_type_says_what_it_does() -> None:
    assert {t for t in ErrorType if t.permanent} == PERMANENT
    assert {t for t in ErrorType if t.file_access} == FILE_ACCESS == {"missing", "unreadable", "io_stall"}
    assert {t for t in ErrorType if t.scales_down} == {ErrorType.OOM, ErrorType.TIMEOUT}
    assert {t for t in ErrorType if t.settling} == {ErrorType.INCOMPLETE}
    assert {t for t in ErrorType if t.may_be_arriving} == {ErrorType.MISSING}
    assert {t: t.unchanged_becomes for t in ErrorType if t.unchanged_becomes} == {
        ErrorType.INCOMPLETE: ErrorType.CORRUPT
    }
    assert ErrorType.parse("oom") is ErrorType.OOM
    assert ErrorType.parse("a_legacy_type") is None and ErrorType.parse(None) is None


async def _delay_written(conn: asyncpg.Connection, path: str) -> tuple[dt.timedelta, int, bool]:
    row = await conn.fetchrow(
        "SELECT next_retry_after - last_failure_at AS delay, retry_count, permanently_failed"
        " FROM face_detection_failures WHERE image_path = $1",
        path,
    )
    assert row is not None
    return row["delay"], row["retry_count"], row["permanently_failed"]


async def test_the_numbers_in_are_what_sql_writes(conn: asyncpg.Connection) -> None:
    """The block gets the policy's numbers and only picks the delay for the row's tries."""
    statement = outcomes.failure_write_sql("record_failure", frozenset())  # no optional columns
    rng = random.Random(3)
    for tries in range(1, 7):
        policy = failure_retry(RETRY, ErrorType.TIMEOUT, rng)
        await conn.fetchrow(statement, "p/a.jpg", "slow", "timeout", list(policy.delays), policy.jitter, policy.tries)
        delay, count, permanent = await _delay_written(conn, "p/a.jpg")
        expected = policy.delays[min(tries, len(policy.delays)) - 1] * policy.jitter
        assert count == tries
        assert delay.total_seconds() == pytest.approx(expected, abs=1e-5)
        assert permanent == (tries >= RETRY.max_attempts)
    # A row tried thousands of times (by hand) takes the last delay.
    await conn.execute("UPDATE face_detection_failures SET retry_count = 5000 WHERE image_path = 'p/a.jpg'")
    policy = failure_retry(RETRY, ErrorType.TIMEOUT, rng)
    await conn.fetchrow(statement, "p/a.jpg", "slow", "timeout", list(policy.delays), policy.jitter, policy.tries)
    delay, count, _ = await _delay_written(conn, "p/a.jpg")
    assert count == 5001 and delay.total_seconds() == pytest.approx(35.0 * policy.jitter, abs=1e-5)


async def test_a_recorded_failure_follows_the_policy(conn: asyncpg.Connection) -> None:
    """End to end through outcomes.record_failure, without jitter: 10 s, 20 s, then the cap;
    a permanent type is permanent after its confirmation."""
    steady = RetryConfig(base_seconds=10.0, multiplier=2.0, max_delay_seconds=35.0, jitter=0.0, max_attempts=4)
    columns = await failure_columns(conn)
    for tries, expected in enumerate([10.0, 20.0, 35.0, 35.0], start=1):
        record = await outcomes.record_failure(
            conn, "p/b.jpg", DetectionFailure(ErrorType.CRASH, "boom"), steady, columns
        )
        delay, count, permanent = await _delay_written(conn, "p/b.jpg")
        assert (count, delay.total_seconds()) == (tries, expected)
        assert record.permanently_failed == permanent == (tries == 4)
    for tries in (1, 2):
        record = await outcomes.record_failure(
            conn, "p/c.jpg", DetectionFailure(ErrorType.CORRUPT, "cut"), steady, columns
        )
        assert record.permanently_failed == (tries == ErrorType.CORRUPT.tries_allowed(steady))
