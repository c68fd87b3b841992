"""`reactor repair`: show what would be fixed (default), or fix it with `--apply`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from reactor.config import Config
from reactor.errors import UsageError
from reactor.handlers.common import add_report_options, share_and_database
from reactor.ops import repair as repair_mod
from reactor.store import orphans
from reactor.store.dbtypes import Conn


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "repair", help="fix what `reactor audit` finds: dry run by default, --apply to change (with backups)"
    )
    add_report_options(parser)
    parser.add_argument(
        "--apply",
        action="store_true",
        help="back up the affected rows, then change them in one transaction and re-queue images",
    )
    parser.add_argument(
        "--purge-orphans",
        action="store_true",
        help="release held orphans: with --apply, purge every orphan past its grace period "
        "(sweep.orphan_grace_hours), whatever the purge bound, after backing them up",
    )
    parser.add_argument(
        "--legacy-orphans",
        action="store_true",
        help="also remove legacy results (the legacy worker's) whose path is no longer in ai_metadata; "
        "the sweep never does: with --apply they are backed up, then deleted",
    )
    parser.set_defaults(handler=run)


async def run(args: argparse.Namespace, config: Config) -> int:
    async with share_and_database(args, config) as here:
        result = await repair_mod.repair(
            here.conn,
            config,
            apply=args.apply,
            share_online=here.online,
            share_reason=here.reason,
            check_files=not args.skip_files,
            legacy_orphans=args.legacy_orphans,
        )
        held = await _orphans(here.conn, config, args, here.online, here.reason)
    if args.json:
        print(json.dumps({**result.to_dict(), "orphans": held}, indent=2 if sys.stdout.isatty() else None))
    else:
        print(render(result, legacy_orphans=args.legacy_orphans))
        print(render_orphans(held, args))
    return 0


async def _orphans(
    conn: Conn, config: Config, args: argparse.Namespace, online: bool, reason: str | None
) -> dict[str, Any]:
    """The orphans marked, due and held per table; with --purge-orphans --apply, purge the due ones."""
    policy = orphans.OrphanPolicy.from_config(config.sweep)
    before = await orphans.stats(conn, policy)
    out: dict[str, Any] = {"tables": {o.table: o.as_dict() for o in before}, "purged": {}}
    if not args.purge_orphans:
        return out
    if not online:
        raise UsageError(
            f"the share is offline ({reason}); orphans are purged only while it is online: "
            "mount the share, then run `reactor repair --purge-orphans --apply` again"
        )
    if args.apply:
        done = await repair_mod.purge_orphans(conn, config)
        out["purged"] = done.purged
        out["backups"] = {src: {"table": name, "rows": n} for src, (name, n) in done.backups.items()}
    else:
        for o in before:
            out.setdefault("would_purge", {})[o.table] = await orphans.due_paths(
                conn, o.table, policy, config.sweep.page_size
            )
    return out


def render_orphans(held: dict[str, Any], args: argparse.Namespace) -> str:
    lines = []
    for table, o in held["tables"].items():
        if not o["marked"]:
            continue
        spent = f" with {o['purged_in_window']} purged in the window" if o["purged_in_window"] else ""
        state = f"HELD ({o['due']} due{spent} > bound {o['bound']})" if o["held"] else "within the bound"
        lines.append(f"orphaned {table}: {o['marked']} marked, {o['due']} past the grace period, {state}")
    for table, paths in held.get("would_purge", {}).items():
        lines.append(f"would purge {table}: {len(paths)} orphans")
        lines.extend(f"    - {path}" for path in paths[:10])
    for source, backup in held.get("backups", {}).items():
        lines.append(f"backed up {backup['rows']} {source} rows into {backup['table']}")
    for table, rows in held["purged"].items():
        lines.append(f"purged {table}: {rows} orphans")
    if any(o["held"] for o in held["tables"].values()) and not args.purge_orphans:
        lines.append(f"held orphans are kept until you {orphans.RELEASE_HINT}")
    elif args.purge_orphans and not args.apply:
        lines.append("dry run: run `reactor repair --purge-orphans --apply` to purge them")
    return "\n".join(lines) or "orphans: none marked"


def render(result: repair_mod.RepairResult, *, legacy_orphans: bool = False) -> str:
    plan = result.plan
    if plan.empty:
        kept = result.report["legacy_orphans"].count
        if kept:
            return (
                f"repair: nothing to do; {kept} legacy results whose path left ai_metadata are kept "
                "(`reactor repair --legacy-orphans` lists them, with --apply backs them up and deletes them)"
            )
        return "repair: nothing to do; the audit is clean"
    verb = "deleted" if result.applied else "would delete"
    lines = []
    for change in plan.changes():
        reasons = ", ".join(f"{n} {reason}" for reason, n in change["by_reason"].items())
        lines.append(f"{verb} {change['table']}: {change['images']} images ({reasons})")
        lines.extend(f"    - {path}" for path in change["sample"])
    for check, fix in repair_mod.FIXES.items():
        if result.report[check].count:
            lines.append(f"  {check}: {fix}")
    for finding in result.report.findings.values():
        if finding.skipped:
            lines.append(f"  {finding.check} not checked: {finding.skipped}")
    if not result.applied:
        lines.append(f"would re-queue {len(plan.requeue)} images")
        command = "reactor repair --legacy-orphans --apply" if legacy_orphans else "reactor repair --apply"
        lines.append(f"dry run: nothing changed; run `{command}` to back up and change these rows")
        return "\n".join(lines)
    for source, (table, rows) in result.backups.items():
        lines.append(f"backed up {rows} {source} rows into {table}")
    if result.validated:
        lines.append(f"validated constraints {', '.join(result.validated)} (old rows now obey them too)")
    lines.append(f"re-queued {result.requeued} images (NOTIFY on database.channel; the sweep finds them too)")
    lines.append("repair applied in one transaction; run `reactor audit` to confirm")
    return "\n".join(lines)
