"""`reactor audit`: prove the reactor's tables are sound, or name the rows that are not.

Each check yields a ``Finding`` holding every affected row (repair acts on them) and
shows a sample. The checks are read-only; ``run_audit`` also runs inside repair's
locked transaction, so that repair changes exactly what it has just re-checked.

Time reference for "pending": an ai_metadata row has no "became processed at" in
every vision database. The check uses the first timestamp column that exists among
``PENDING_TIME_COLUMNS`` (processed_at, updated_at, modified_at, created_at) and is
skipped, saying so, when there is none: without one, a photo processed a second ago
would look stuck.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from reactor.config import Config
from reactor.core.instances import gone_after_seconds
from reactor.errors import ReactorError
from reactor.paths import InvalidPath, PathMapper, gone_states
from reactor.store import audit as reads
from reactor.store import orphans, relations
from reactor.store.dbtypes import Conn
from reactor.watch import share

PENDING_TIME_COLUMNS = ("processed_at", "updated_at", "modified_at", "created_at")
# Checks in report order, with what each one means.
CHECKS: dict[str, str] = {
    "orphan_faces": "face rows whose image has no face_metadata row",
    "face_count_mismatch": "face_metadata.face_count differs from the number of face rows",
    "invalid_paths": "rows whose image_path is not a valid relative path or points into a derived folder",
    "missing_files": "results whose file is gone from the (online) share, not yet marked orphaned",
    "superseded_failures": "failure rows for images that also have a result",
    "pending_processed": "processed ai_metadata rows with neither result nor failure, older than the sweep interval",
    "dead_claims": "claims held by instances that are gone (lease expired or no fresh heartbeat)",
    # Adopted legacy results (reactor.store.legacy): reported with the command that deals
    # with them; repair leaves them alone.
    "legacy_not_imported": "legacy results whose faces are only in the legacy JSON columns; "
    "`reactor db import-legacy` imports them, or lists why it cannot",
    "legacy_orphans": "legacy results whose path is no longer in ai_metadata: the sweep keeps them (another "
    "program's data); `reactor repair --legacy-orphans --apply` backs them up and deletes them",
    "held_deletions": "deletions held after a confirmed mass vanish; `reactor deletions --apply` backs up and "
    "deletes the results of those still missing",
    "legacy_zero": "zero-face results the reactor did not write (the legacy worker saved failures as 0 faces); "
    "`reactor redetect --legacy-zero` re-detects them (requested: already asked)",
}
_STAT_BATCH = 2000


class SchemaMissing(ReactorError):
    """The reactor's tables are not there; the message says what to run."""


@dataclass
class Finding:
    check: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    # Why the check did not run (share offline, no timestamp column); None when it ran.
    skipped: str | None = None

    @property
    def count(self) -> int:
        return len(self.rows)

    @property
    def paths(self) -> list[str]:
        return sorted({str(r["image_path"]) for r in self.rows})

    def to_dict(self, sample: int) -> dict[str, Any]:
        return {
            "check": self.check,
            "description": CHECKS[self.check],
            "count": self.count,
            "skipped": self.skipped,
            "sample": [_jsonable(r) for r in self.rows[:sample]],
        }


@dataclass
class AuditReport:
    findings: dict[str, Finding]
    share_online: bool
    share_reason: str | None

    @property
    def clean(self) -> bool:
        return all(f.count == 0 for f in self.findings.values())

    @property
    def total(self) -> int:
        return sum(f.count for f in self.findings.values())

    def __getitem__(self, check: str) -> Finding:
        return self.findings[check]

    def to_dict(self, sample: int = 5) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "total": self.total,
            "share_online": self.share_online,
            "share_reason": self.share_reason,
            "checks": [f.to_dict(sample) for f in self.findings.values()],
        }


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime | date) else v for k, v in row.items()}


def share_state(config: Config) -> tuple[bool, str | None]:
    """Whether the share is online now (root, directory, marker, mount) and why not.

    The same probe as ShareMonitor.check, without its transition log line: a one-shot
    command has no transitions, and its --json output owns stdout."""
    reason = share.probe(config.images)
    return reason is None, reason


def dead_claim_after_seconds(config: Config) -> float:
    """A claim is dead once its instance is gone (reactor.core.instances), and never before a
    lease could have run out: a claim is not called dead while it could be valid."""
    return max(gone_after_seconds(config.health.heartbeat_seconds), config.service.lease_seconds)


async def pending_time_column(conn: Conn) -> str | None:
    """The ai_metadata column that tells how long a row has been waiting, if any."""
    columns = await reads.table_columns(conn, "ai_metadata")
    for name in PENDING_TIME_COLUMNS:
        if name in columns and ("timestamp" in columns[name] or columns[name] == "date"):
            return name
    return None


async def run_audit(
    conn: Conn,
    config: Config,
    *,
    share_online: bool,
    share_reason: str | None = None,
    check_files: bool = True,
    file_candidates: Iterable[str] | None = None,
) -> AuditReport:
    """Run every check. ``file_candidates`` limits the file check to those paths
    (repair re-checks only what the first audit found missing)."""
    missing = await relations.missing(conn)
    if missing:
        raise SchemaMissing(
            f"the reactor's tables are missing ({', '.join(missing)}); run `reactor db init` "
            "(or `reactor db sql` for the SQL a database owner must run)"
        )
    mapper = PathMapper.for_images(config.images)
    findings = {name: Finding(name) for name in CHECKS}
    findings["orphan_faces"].rows = await reads.finding_rows(conn, "orphan_faces")
    findings["face_count_mismatch"].rows = await reads.finding_rows(conn, "face_count_mismatch")
    judge = PathJudge(mapper)
    findings["invalid_paths"].rows = await _invalid_paths(conn, judge)
    findings["superseded_failures"].rows = await reads.finding_rows(conn, "superseded_failures")
    findings["dead_claims"].rows = await reads.finding_rows(conn, "dead_claims", dead_claim_after_seconds(config))
    for check in ("legacy_not_imported", "legacy_zero", "held_deletions"):
        findings[check].rows = await reads.finding_rows(conn, check)
    if await relations.missing(conn, ("ai_metadata",)):
        findings["legacy_orphans"].skipped = "no ai_metadata table in this database"
    else:
        findings["legacy_orphans"].rows = await reads.finding_rows(conn, "legacy_orphans")
    await _pending(conn, config, judge, findings["pending_processed"])
    files = findings["missing_files"]
    if not check_files:
        files.skipped = "not checked (--skip-files)"
    elif not share_online:
        files.skipped = f"share offline ({share_reason or 'unknown'}): a missing file cannot be believed"
    elif mapper.windows and os.name != "nt":
        files.skipped = f"the share root {mapper.root} is a Windows path; run the audit on that machine"
    else:
        await _missing_files(conn, config, judge, files, file_candidates)
    return AuditReport(findings, share_online, share_reason)


async def _invalid_paths(conn: Conn, judge: PathJudge) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    async for r in reads.reactor_paths(conn):
        reason = judge.reason(r.image_path)
        if reason is None and not r.sql_valid:
            reason = "database_rule"
        if reason is not None:
            rows.append({"table": r.table, "image_path": r.image_path, "reason": reason, "token": r.token})
    return sorted(rows, key=lambda row: (row["table"], row["image_path"]))


class PathJudge:
    """PathMapper.validate for millions of rows: a folder's verdict is computed once.

    Of validate's rules only the file name's own (empty, '.', '..', a backslash) and the
    total length depend on more than the folder, so a path in a valid folder is judged
    by those alone; anything else goes through validate itself, which names the reason.
    """

    MAX_FOLDERS = 100_000

    def __init__(self, mapper: PathMapper) -> None:
        self.mapper = mapper
        self._folders: dict[str, bool] = {}

    def reason(self, path: str) -> str | None:
        folder, slash, name = path.rpartition("/")
        if slash and self._folder_ok(folder) and self._name_ok(path, name):
            return None
        try:
            self.mapper.validate(path)
        except InvalidPath as exc:
            return exc.reason
        return None

    def valid(self, path: str) -> bool:
        return self.reason(path) is None

    def _folder_ok(self, folder: str) -> bool:
        ok = self._folders.get(folder)
        if ok is None:
            if len(self._folders) >= self.MAX_FOLDERS:
                self._folders.clear()
            try:
                self.mapper.validate(folder + "/x")
                ok = True
            except InvalidPath:
                ok = False
            self._folders[folder] = ok
        return ok

    def _name_ok(self, path: str, name: str) -> bool:
        return (
            name not in ("", ".", "..")
            and "\\" not in name
            and "\x00" not in name
            and len(path.encode("utf-8", "surrogateescape")) <= self.mapper.max_length
        )


async def _pending(conn: Conn, config: Config, judge: PathJudge, finding: Finding) -> None:
    if await relations.missing(conn, ("ai_metadata",)):
        finding.skipped = "no ai_metadata table in this database"
        return
    column = await pending_time_column(conn)
    if column is None:
        finding.skipped = (
            f"ai_metadata has none of the columns {', '.join(PENDING_TIME_COLUMNS)}, so the time a row "
            "has waited is unknown; the sweep still finds these rows"
        )
        return
    rows = await reads.pending_processed(conn, config.sweep.interval_seconds, column)
    # Derived or invalid paths in ai_metadata are never detected by design: not pending.
    finding.rows = [
        {"image_path": r["image_path"], "since": r["since"], "column": column}
        for r in rows
        if judge.valid(r["image_path"])
    ]


def _absent(mapper: PathMapper, paths: list[str]) -> list[str]:
    """Paths whose file is certainly gone: EACCES, EIO or a vanished parent folder are
    unknown, not missing (reactor.paths.certainly_gone), and a name stored in the other
    Unicode normalization (NFC/NFD) is the same file."""
    states = gone_states(paths, mapper.to_local)
    return [p for p in paths if states[p] is True]


async def _missing_files(
    conn: Conn,
    config: Config,
    judge: PathJudge,
    finding: Finding,
    candidates: Iterable[str] | None,
) -> None:
    gone: list[str] = []
    # A result already marked orphaned is known to be gone: not reported again.
    marked = "face_metadata" in await orphans.tables_with_marks(conn)
    # stat() on a network share can block for a long time: keep it off the loop.
    if candidates is not None:
        present = await reads.results_present(conn, sorted(set(candidates)), unorphaned=marked)
        gone = await asyncio.to_thread(_absent, judge.mapper, [p for p in present if judge.valid(p)])
        await _rows_with_legacy(conn, finding, gone)
        return
    known = 0
    batch: list[str] = []
    # Paths are stat'ed batch by batch while the cursor streams, so memory stays flat.
    async for path in reads.result_paths(conn, unorphaned=marked):
        known += 1
        # An invalid path is reported by invalid_paths and is never opened.
        if judge.valid(path):
            batch.append(path)
        if len(batch) >= _STAT_BATCH:
            gone.extend(await asyncio.to_thread(_absent, judge.mapper, batch))
            batch = []
    gone.extend(await asyncio.to_thread(_absent, judge.mapper, batch))
    if share.is_mass_vanish(config.watcher, len(gone), known):
        finding.skipped = (
            f"{len(gone)} of {known} result files are missing at once: that looks like a share outage "
            "or the wrong mount, not deletions; check images.root and the marker"
        )
        return
    await _rows_with_legacy(conn, finding, gone)


async def _rows_with_legacy(conn: Conn, finding: Finding, gone: list[str]) -> None:
    """The missing files' rows, each saying whether the legacy worker wrote its result."""
    legacy = await reads.legacy_among(conn, gone) if gone else set()
    finding.rows = [{"image_path": p, "legacy": p in legacy} for p in sorted(gone)]
