"""Prometheus metrics on a dedicated registry (served by reactor.core.health at /metrics).

A dedicated ``REGISTRY`` keeps the default process collectors and any other
library's metrics out, and lets tests read exact values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

from reactor.core.queue import ImageQueue, Priority

REGISTRY = CollectorRegistry(auto_describe=True)

QUEUE_DEPTH = Gauge(
    "reactor_queue_depth", "Images waiting in the in-memory queue, by priority.", ["priority"], registry=REGISTRY
)
QUEUE_DROPPED = Counter(
    "reactor_queue_dropped",
    "Entries dropped because the queue was full (the sweep finds them again).",
    registry=REGISTRY,
)
IMAGES_PROCESSED = Counter(
    "reactor_images_processed",
    "Images with a recorded outcome, by outcome (detected, failed, fenced, moved).",
    ["outcome"],
    registry=REGISTRY,
)
FAILURES = Counter("reactor_failures", "Recorded detection failures, by type.", ["type"], registry=REGISTRY)
DETECTION_SECONDS = Histogram(
    "reactor_detection_seconds",
    "Wall time of one detection, including the child round trip.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
    registry=REGISTRY,
)
FACES_FOUND = Counter("reactor_faces_found", "Faces found in successfully detected images.", registry=REGISTRY)
LAST_SUCCESS = Gauge(
    "reactor_last_success_timestamp_seconds", "Unix time of the last recorded result.", registry=REGISTRY
)
LISTENER_RECONNECTS = Counter(
    "reactor_listener_reconnects", "Times the LISTEN connection was re-established.", registry=REGISTRY
)
LISTENER_CONNECTED = Gauge("reactor_listener_connected", "1 while the LISTEN connection is up.", registry=REGISTRY)
SHARE_ONLINE = Gauge(
    "reactor_share_online", "1 while the share is online (root and marker present).", registry=REGISTRY
)
DETECTOR_RESTARTS = Gauge("reactor_detector_restarts", "Detector child processes replaced so far.", registry=REGISTRY)
TASK_RESTARTS = Counter(
    "reactor_task_restarts",
    "Supervised tasks restarted after dying or returning, by task.",
    ["task"],
    registry=REGISTRY,
)
TASKS_FAILING = Gauge("reactor_tasks_failing", "Supervised tasks that keep dying (see /healthz).", registry=REGISTRY)
SWEEPS = Counter("reactor_sweeps", "Sweeps run, by result (done, skipped).", ["result"], registry=REGISTRY)


def bind_queue(queue: ImageQueue) -> None:
    """Read queue gauges from the live queue at scrape time; count its drops."""
    for priority in Priority:
        QUEUE_DEPTH.labels(priority.name.lower()).set_function(_depth(queue, priority))
    queue.on_drop = QUEUE_DROPPED.inc


def _depth(queue: ImageQueue, priority: Priority) -> Callable[[], float]:
    return lambda: float(queue.depth_by_priority()[priority.name.lower()])


class _ChildCollector:
    """Per-child gauges, read from the live detection lanes at scrape time."""

    def __init__(self) -> None:
        self.source: Callable[[], list[dict[str, Any]]] = list

    def collect(self) -> Iterator[GaugeMetricFamily]:
        children = self.source()
        busy = GaugeMetricFamily(
            "reactor_detector_child_busy", "1 while this detector child is detecting an image.", labels=["child"]
        )
        up = GaugeMetricFamily(
            "reactor_detector_child_up", "1 while this detector child is started (ready or busy).", labels=["child"]
        )
        done = GaugeMetricFamily(
            "reactor_detector_child_processed", "Outcomes written by this child's lane so far.", labels=["child"]
        )
        restarts = GaugeMetricFamily(
            "reactor_detector_child_restarts", "Times this detector child was replaced.", labels=["child"]
        )
        for child in children:
            label = [str(child["child"])]
            busy.add_metric(label, float(child["state"] == "busy"))
            up.add_metric(label, float(child["state"] in ("ready", "busy")))
            done.add_metric(label, float(child["processed"]))
            restarts.add_metric(label, float(child["restarts"]))
        yield from (busy, up, done, restarts)


_CHILDREN = _ChildCollector()
REGISTRY.register(_CHILDREN)


def bind_children(snapshot: Callable[[], list[dict[str, Any]]]) -> None:
    """Read the per-child gauges from ``snapshot`` (reactor.core.lanes.Lanes.snapshot)."""
    _CHILDREN.source = snapshot
