"""`reactor status`: what the reactor has done, what failed, what is left, and what is running.

Everything is read from the database, which is the truth: results, failures, pending
rows, and the heartbeat rows running instances write into reactor_instances (their
`state` holds the health snapshot: queue depth, current image, detector, share and
listener state).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from reactor.core.instances import gone_after_seconds
from reactor.store import changes, orphans, status_reads
from reactor.store.dbtypes import Conn
from reactor.store.status_reads import FailureCount, Instance


@dataclass
class StatusReport:
    images: int
    faces: int
    last_detection: str | None
    pending: int
    failures_by_type: list[FailureCount] = field(default_factory=list)
    instances: list[Instance] = field(default_factory=list)
    # Adopted legacy results, those of them with zero faces, and re-detection requests.
    legacy: int = 0
    legacy_zero: int = 0
    redetect_requested: int = 0
    # Rows marked orphaned (their ai_metadata row is gone), per table, and whether held.
    orphans: list[orphans.TableOrphans] = field(default_factory=list)
    # Deletions held after a confirmed mass vanish, waiting for `reactor deletions --apply`.
    held_deletions: int = 0
    # The change log and the full walk's progress (None: no sweep has run on schema 5 yet).
    sweep: changes.SweepState | None = None

    @property
    def average_faces(self) -> float:
        return round(self.faces / self.images, 2) if self.images else 0.0

    @property
    def failures(self) -> int:
        return sum(f.failures for f in self.failures_by_type)

    @property
    def permanently_failed(self) -> int:
        return sum(f.permanent for f in self.failures_by_type)

    @property
    def due_for_retry(self) -> int:
        return sum(f.due for f in self.failures_by_type)

    def as_json(self) -> dict[str, Any]:
        return {
            "images_processed": self.images,
            "faces_found": self.faces,
            "average_faces_per_image": self.average_faces,
            "last_detection": self.last_detection,
            "pending": self.pending,
            "failures": self.failures,
            "permanently_failed": self.permanently_failed,
            "due_for_retry": self.due_for_retry,
            "failures_by_type": {f.error_type: asdict(f) for f in self.failures_by_type},
            "instances": [asdict(i) for i in self.instances],
            "legacy_results": self.legacy,
            "legacy_zero_face": self.legacy_zero,
            "redetect_requested": self.redetect_requested,
            "orphans": {o.table: o.as_dict() for o in self.orphans},
            "orphans_held": any(o.held for o in self.orphans),
            "held_deletions": self.held_deletions,
            "sweep": self.sweep.as_dict() if self.sweep else None,
        }


async def collect(
    conn: Conn,
    heartbeat_seconds: float,
    policy: orphans.OrphanPolicy | None = None,
    walk_interval_seconds: float = 24 * 3600.0,
) -> StatusReport:
    results = await status_reads.result_counts(conn)
    pending = await status_reads.pending(conn)
    by_type = await status_reads.failures_by_type(conn)
    instances = await status_reads.live_instances(conn, gone_after_seconds(heartbeat_seconds))
    last = results.last_detection
    return StatusReport(
        images=results.images,
        faces=results.faces,
        last_detection=last.isoformat() if last else None,
        pending=pending,
        failures_by_type=by_type,
        instances=instances,
        legacy=results.legacy,
        legacy_zero=results.legacy_zero,
        redetect_requested=results.redetect_requested,
        orphans=await status_reads.orphan_stats(conn, policy or orphans.OrphanPolicy()),
        held_deletions=results.held_deletions,
        sweep=await status_reads.sweep_state(conn, walk_interval_seconds),
    )


def _state_lines(state: dict[str, Any]) -> list[tuple[str, str]]:
    """The heartbeat state as label/value pairs; known keys first, in a fixed order."""
    known = [
        ("queue_depth", "queue depth"),
        ("queue_by_priority", "queue by priority"),
        ("queue_dropped", "queue dropped"),
        ("current_image", "current image"),
        ("detector", "detector"),
        ("detector_restarts", "detector restarts"),
        ("share_online", "share online"),
        ("write_blocked", "writes blocked"),
        ("held_deletions", "held deletions"),
        ("stalled_folders", "stalled folders"),
        ("listener", "listener"),
        ("database", "database"),
        ("processed", "processed since start"),
        ("loop_lag_seconds", "loop lag (s)"),
        ("tasks_failing", "tasks failing"),
    ]
    # Shown elsewhere: the instance id heads the block, the share's reason joins its state.
    hidden = {"instance_id", "share_reason"}
    out: list[tuple[str, str]] = []
    for key, label in known:
        if key not in state:
            continue
        if key == "write_blocked" and state[key] is None:
            value = "no"
        else:
            value = "-" if state[key] is None else _flat(state[key]) or "none"
        if key == "share_online" and state[key] is False and state.get("share_reason"):
            value += f" ({state['share_reason']})"
        out.append((label, value))
    labels = dict(known)
    hidden.add("detectors")
    out.extend(
        (key, "-" if value is None else _flat(value))
        for key, value in sorted(state.items())
        if key not in labels and key not in hidden
    )
    out.extend(_child_lines(state.get("detectors")))
    return out


def _child_lines(children: Any) -> list[tuple[str, str]]:
    """One line per detector child (reactor.core.lanes.Lanes.snapshot)."""
    if not isinstance(children, list):
        return []
    out = []
    for child in children:
        if not isinstance(child, dict):
            continue
        image = child.get("current_image") or "-"
        out.append(
            (
                f"detector {child.get('child')}",
                f"pid {child.get('pid') or '-'}, {child.get('state')}, "
                f"image {image}, {child.get('processed', 0)} processed, {child.get('restarts', 0)} restarts",
            )
        )
    return out


def _flat(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_flat(v)}" for k, v in value.items())
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(map(_flat, value))
    return str(value)


def _sweep_lines(state: changes.SweepState | None) -> list[tuple[str, str]]:
    if state is None:
        return []
    oldest = f", oldest {state.oldest_change.isoformat()}" if state.oldest_change else ""
    rows = [("changes waiting", f"{state.backlog} (read up to #{state.watermark}{oldest})")]
    if state.walk_phase is not None:
        started = state.walk_started_at.isoformat() if state.walk_started_at else "?"
        at = f" after {state.walk_after!r}" if state.walk_after else ""
        rows.append(("full walk", f"under way since {started}: {state.walk_phase}{at}, {state.walk_rows} rows"))
    else:
        last = state.walk_finished_at.isoformat() if state.walk_finished_at else "never"
        due = " (due)" if state.walk_due else ""
        rows.append(("full walk", f"last finished {last}{due}"))
    return rows


def render_table(report: StatusReport) -> str:
    rows: list[tuple[str, str]] = [
        ("images processed", str(report.images)),
        ("faces found", str(report.faces)),
        ("average faces/image", f"{report.average_faces:.2f}"),
        *(
            [("  from the legacy worker", f"{report.legacy} ({report.legacy_zero} with zero faces)")]
            if report.legacy
            else []
        ),
        *([("  re-detection requested", str(report.redetect_requested))] if report.redetect_requested else []),
        ("last detection", report.last_detection or "never"),
        ("pending", str(report.pending)),
        ("failures", str(report.failures)),
        ("  permanently failed", str(report.permanently_failed)),
        ("  due for retry", str(report.due_for_retry)),
        *(
            [("held deletions", f"{report.held_deletions} (review: `reactor deletions`; apply: --apply)")]
            if report.held_deletions
            else []
        ),
    ]
    for f in report.failures_by_type:
        rows.append((f"  {f.error_type}", f"{f.failures} ({f.permanent} permanent, {f.due} due)"))
    for o in report.orphans:
        if not o.marked:
            continue
        since = f", oldest {o.oldest.isoformat()}" if o.oldest else ""
        held = f"; HELD: {o.held_text()}, {orphans.RELEASE_HINT}" if o.held else ""
        rows.append((f"orphaned {o.table}", f"{o.marked} marked, {o.due} past grace{since}{held}"))
    rows.extend(_sweep_lines(report.sweep))
    if not report.instances:
        rows.append(("running reactors", "none (no fresh heartbeat)"))
    for inst in report.instances:
        rows.append(
            (
                "reactor",
                f"{inst.instance_id} on {inst.hostname} pid {inst.pid}, "
                f"heartbeat {inst.heartbeat_age_seconds:.0f} s ago",
            )
        )
        rows.extend((f"  {label}", value) for label, value in _state_lines(inst.state))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in rows)
