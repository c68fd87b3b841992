"""When a reactor instance counts as gone: the one rule for its heartbeat.

Every running instance rewrites its row in ``reactor_instances`` every
``health.heartbeat_seconds`` (reactor.core.service) and removes it when it stops. One whose
row is older than ``gone_after_seconds`` has missed ``MISSED_BEATS`` beats and is gone:
`reactor status` no longer lists it, `reactor sweep` and `reactor redetect` do not ask
it, and `reactor audit` calls its claims dead (reactor.ops.audit).
"""

from __future__ import annotations

MISSED_BEATS = 3
# A very short heartbeat interval (tests, a tuned deployment) must not call an
# instance gone after one busy moment of the event loop.
MIN_GONE_SECONDS = 5.0


def gone_after_seconds(heartbeat_seconds: float) -> float:
    """How old an instance's heartbeat may be before the instance counts as gone."""
    return max(MISSED_BEATS * heartbeat_seconds, MIN_GONE_SECONDS)
