"""`reactor repair`: fix what the audit found, with a backup of every row it touches.

A dry run (the default) audits and returns the plan. ``--apply`` runs, in ONE
transaction: lock the reactor's tables (a running reactor waits, at most
``LOCK_TIMEOUT``), audit again under the lock so the plan matches the rows as they
are now, copy every affected row into timestamped backup tables
(``reactor_backup_<UTC time>_<table>``), delete, and re-queue. Either all of it
commits or nothing does.

What each finding becomes (``FIXES``). A result whose face_count disagrees with its
face rows is deleted and detected again rather than "recomputed": the count and the
rows are written in one transaction by the reactor, so a mismatch means something
else wrote them (a partial restore, a second store, seeds/003) and neither half can
be trusted. Detection is the source of truth; the backup keeps the old rows.

Re-queueing sends the ai_metadata trigger's own payload, ``{"type": "processed",
"path": ...}``, on database.channel, delivered at commit, for re-queued paths that are
processed and have no result. A reactor that is not running finds them at its next
sweep, since the sweep treats the database as the truth.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from reactor import logs
from reactor.config import Config
from reactor.errors import ReactorError
from reactor.failure_types import ErrorType
from reactor.ops.audit import AuditReport, run_audit
from reactor.store import orphans, relations
from reactor.store import repair as writes
from reactor.store.dbtypes import Conn
from reactor.store.repair import TablesBusy

log = logs.get("reactor.repair")

LOCK_TIMEOUT = "10s"
FIXES: dict[str, str] = {
    "orphan_faces": "delete the face rows; re-queue the image",
    "face_count_mismatch": "delete the result (its face rows go with it); re-queue the image",
    "invalid_paths": "delete the result, failure or claim; never re-queued (derived images are not photos)",
    "missing_files": "delete the result; re-queue (the reactor records `missing` if the row is still processed); "
    "a legacy result only with `--legacy-orphans`",
    "superseded_failures": "delete the failure: the result wins (a `blacklisted` failure wins: its result goes)",
    "pending_processed": "re-queue the image; no row changes",
    "dead_claims": "delete that claim (same fencing token only); re-queue the image",
    "legacy_orphans": "kept (another program's data) unless `--legacy-orphans`: then the legacy result is "
    "deleted (its face rows go with it); never re-queued",
}
# The reason recorded in the backup tables for orphans purged by `--purge-orphans --apply`.
PURGE_REASON = "purge_orphans"


class RepairBusy(ReactorError):
    """The tables stayed locked by other sessions; nothing was changed."""


@dataclass
class RepairPlan:
    # image_path -> the check that condemned it, per kind of change.
    results: dict[str, str] = field(default_factory=dict)
    orphan_faces: dict[str, str] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    claims: dict[tuple[str, int], str] = field(default_factory=dict)
    requeue: set[str] = field(default_factory=set)

    @property
    def empty(self) -> bool:
        return not (self.results or self.orphan_faces or self.failures or self.claims or self.requeue)

    def changes(self) -> list[dict[str, Any]]:
        """One entry per table the plan changes, with rows by reason."""
        out = []
        for table, items in (
            ("face_metadata", self.results),
            ("face_detections (orphaned)", self.orphan_faces),
            ("face_detection_failures", self.failures),
            ("reactor_claims", {path: reason for (path, _), reason in self.claims.items()}),
        ):
            if items:
                by_reason: dict[str, int] = defaultdict(int)
                for reason in items.values():
                    by_reason[reason] += 1
                out.append(
                    {
                        "table": table,
                        "action": "delete",
                        "images": len(items),
                        "by_reason": dict(by_reason),
                        "sample": sorted(items)[:5],
                    }
                )
        return out


@dataclass
class RepairResult:
    report: AuditReport
    plan: RepairPlan
    applied: bool = False
    # source table -> (backup table, rows copied)
    backups: dict[str, tuple[str, int]] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)
    requeued: int = 0
    # Path constraints that were NOT VALID and are enforced for every row now.
    validated: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "changes": self.plan.changes(),
            "requeue": len(self.plan.requeue),
            "requeue_sample": sorted(self.plan.requeue)[:5],
            "backups": {src: {"table": name, "rows": n} for src, (name, n) in self.backups.items()},
            "deleted": self.deleted,
            "requeued": self.requeued,
            "validated": self.validated,
            "skipped": {f.check: f.skipped for f in self.report.findings.values() if f.skipped},
        }


def build_plan(report: AuditReport, *, legacy_orphans: bool = False) -> RepairPlan:
    """What repair changes for this report; legacy results whose path left ai_metadata
    only with ``legacy_orphans`` (an operator's explicit choice: they are another
    program's rows)."""
    plan = RepairPlan()
    for path in report["orphan_faces"].paths:
        plan.orphan_faces.setdefault(path, "orphan_faces")
        plan.requeue.add(path)
    for row in report["invalid_paths"].rows:
        path, table = row["image_path"], row["table"]
        if table == "face_metadata":
            plan.results[path] = "invalid_paths"
        elif table == "face_detection_failures":
            plan.failures[path] = "invalid_paths"
        elif table == "reactor_claims":
            plan.claims[(path, int(row["token"]))] = "invalid_paths"
    for path in report["face_count_mismatch"].paths:
        plan.results.setdefault(path, "face_count_mismatch")
        plan.requeue.add(path)
    for row in report["missing_files"].rows:
        # A legacy result is another program's row even when its file is gone: it goes only
        # on the operator's explicit `--legacy-orphans`, like a legacy orphan.
        if legacy_orphans or not row.get("legacy"):
            plan.results.setdefault(row["image_path"], "missing_files")
            plan.requeue.add(row["image_path"])
    for row in report["superseded_failures"].rows:
        if row["last_error_type"] == ErrorType.BLACKLISTED:
            # The user's blacklist wins over a result written after it: an image is in
            # one state, and a blacklisted one keeps no results (`reactor blacklist`).
            plan.results.setdefault(row["image_path"], "superseded_failures")
        else:
            plan.failures.setdefault(row["image_path"], "superseded_failures")
    for row in report["dead_claims"].rows:
        plan.claims.setdefault((row["image_path"], int(row["token"])), "dead_claims")
        plan.requeue.add(row["image_path"])
    if legacy_orphans:
        # Their path is not in ai_metadata: nothing to re-queue.
        for path in report["legacy_orphans"].paths:
            plan.results.setdefault(path, "legacy_orphans")
    plan.requeue.update(report["pending_processed"].paths)
    # A derived or invalid path is never detected, whatever else is wrong with it;
    # a blacklisted image is never detected again.
    plan.requeue -= {row["image_path"] for row in report["invalid_paths"].rows}
    plan.requeue -= {
        r["image_path"] for r in report["superseded_failures"].rows if r["last_error_type"] == ErrorType.BLACKLISTED
    }
    return plan


async def repair(
    conn: Conn,
    config: Config,
    *,
    apply: bool,
    share_online: bool,
    share_reason: str | None = None,
    check_files: bool = True,
    legacy_orphans: bool = False,
) -> RepairResult:
    first = await run_audit(conn, config, share_online=share_online, share_reason=share_reason, check_files=check_files)
    if not apply or first.clean:
        return RepairResult(first, build_plan(first, legacy_orphans=legacy_orphans))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    try:
        async with writes.locked(conn, LOCK_TIMEOUT):
            # Under the lock: the plan is built from the rows as they are now. Only the
            # files found missing a moment ago are looked at again.
            report = await run_audit(
                conn,
                config,
                share_online=share_online,
                share_reason=share_reason,
                check_files=check_files,
                file_candidates=first["missing_files"].paths,
            )
            result = RepairResult(report, build_plan(report, legacy_orphans=legacy_orphans), applied=True)
            await _backup(conn, result, stamp)
            await _delete(conn, result)
            result.validated = await _validate_constraints(conn)
            result.requeued = await _requeue(conn, config, result.plan.requeue)
    except TablesBusy as exc:
        raise _busy(exc, "reactor repair --apply") from None
    log.info(
        "repair_applied",
        backups={s: n for s, (_, n) in result.backups.items()},
        deleted=result.deleted,
        requeued=result.requeued,
    )
    return result


def _busy(exc: TablesBusy, command: str) -> RepairBusy:
    return RepairBusy(
        f"the reactor's tables stayed locked by other sessions ({exc}); nothing was "
        f"changed; run `{command}` again, or stop the reactor first"
    )


@dataclass
class OrphanPurge:
    """What `reactor repair --purge-orphans --apply` did: rows purged per table, and
    the backup tables (source table -> (backup table, rows copied)) taken first."""

    purged: dict[str, int] = field(default_factory=dict)
    backups: dict[str, tuple[str, int]] = field(default_factory=dict)


async def purge_orphans(conn: Conn, config: Config) -> OrphanPurge:
    """Purge every orphan past its grace, whatever the sweep's bound (the operator
    confirmed it), after copying the rows into timestamped backup tables, in one
    transaction under repair's lock (no other writer changes them in between; the purge
    re-checks each row, so a row backed up may stay, and none goes without a backup)."""
    policy = orphans.OrphanPolicy.from_config(config.sweep)
    page = config.sweep.page_size
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    done = OrphanPurge()
    try:
        async with writes.locked(conn, LOCK_TIMEOUT):
            for table in await orphans.tables_with_marks(conn):
                paths = await orphans.due_paths(conn, table, policy, page)
                if not paths:
                    continue
                await writes.copy(conn, done.backups, table, stamp, "repair_backup_rows", paths, PURGE_REASON)
                if table == orphans.RESULTS:
                    await writes.copy(
                        conn, done.backups, "face_detections", stamp, "repair_backup_rows", paths, PURGE_REASON
                    )
                done.purged[table] = await orphans.purge_paths(conn, table, policy, paths, page)
    except TablesBusy as exc:
        raise _busy(exc, "reactor repair --purge-orphans --apply") from None
    log.info("orphans_purged_by_repair", purged=done.purged, backups={s: n for s, (_, n) in done.backups.items()})
    return done


def _by_reason(items: dict[str, str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = defaultdict(list)
    for path, reason in items.items():
        grouped[reason].append(path)
    return grouped


async def _backup(conn: Conn, result: RepairResult, stamp: str) -> None:
    plan = result.plan
    for reason, paths in _by_reason(plan.results).items():
        await writes.copy(conn, result.backups, "face_metadata", stamp, "repair_backup_rows", paths, reason)
        await writes.copy(conn, result.backups, "face_detections", stamp, "repair_backup_rows", paths, reason)
    for reason, paths in _by_reason(plan.orphan_faces).items():
        await writes.copy(conn, result.backups, "face_detections", stamp, "repair_backup_orphan_faces", paths, reason)
    for reason, paths in _by_reason(plan.failures).items():
        await writes.copy(conn, result.backups, "face_detection_failures", stamp, "repair_backup_rows", paths, reason)
    if plan.claims:
        keys = list(plan.claims)
        await writes.copy(
            conn,
            result.backups,
            "reactor_claims",
            stamp,
            "repair_backup_claims",
            [p for p, _ in keys],
            [t for _, t in keys],
            [plan.claims[k] for k in keys],
        )


async def _delete(conn: Conn, result: RepairResult) -> None:
    plan = result.plan
    if plan.claims:
        keys = list(plan.claims)
        result.deleted["reactor_claims"] = await writes.delete_claims(conn, [p for p, _ in keys], [t for _, t in keys])
    if plan.failures:
        result.deleted["face_detection_failures"] = await writes.delete_failures(conn, sorted(plan.failures))
    if plan.orphan_faces:
        result.deleted["face_detections"] = await writes.delete_orphan_faces(conn, sorted(plan.orphan_faces))
    if plan.results:
        result.deleted["face_metadata"] = await writes.delete_results(conn, sorted(plan.results))
    if "face_detections" in result.backups:
        # Face rows of deleted results go by ON DELETE CASCADE; under the lock they are
        # exactly the rows copied into the backup.
        result.deleted["face_detections"] = result.backups["face_detections"][1]


async def _validate_constraints(conn: Conn) -> list[str]:
    validated, refused = await writes.validate_constraints(conn)
    for constraint in refused:
        log.warning("constraint_still_not_valid", constraint=constraint)
    return validated


async def _requeue(conn: Conn, config: Config, paths: Iterable[str]) -> int:
    wanted = sorted(paths)
    if not wanted or await relations.missing(conn, ("ai_metadata",)):
        return 0
    return await writes.requeue(conn, config.database.channel, wanted)
