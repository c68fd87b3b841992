"""`reactor repair`: show what would be fixed (default), or fix it with `--apply`."""

from __future__ import annotations

import argparse
import json
import sys

from reactor import audit, db
from reactor import repair as repair_mod
from reactor.cli import UsageError
from reactor.config import Config
from reactor.handlers.audit import add_common


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "repair", help="fix what `reactor audit` finds: dry run by default, --apply to change (with backups)"
    )
    add_common(parser)
    parser.add_argument("--apply", action="store_true",
                        help="back up the affected rows, then change them in one transaction and re-queue images")
    parser.set_defaults(handler=run)


async def run(args: argparse.Namespace, config: Config) -> int:
    online, reason = audit.share_state(config)
    with db.resolved_dsn(config) as dsn:
        async with db.connection(dsn, config) as conn:
            try:
                result = await repair_mod.repair(
                    conn, config, apply=args.apply, share_online=online, share_reason=reason,
                    check_files=not args.skip_files,
                )
            except (audit.SchemaMissing, repair_mod.RepairBusy) as exc:
                raise UsageError(str(exc)) from None
    if args.json:
        print(json.dumps(result.to_dict(), indent=2 if sys.stdout.isatty() else None))
    else:
        print(render(result))
    return 0


def render(result: repair_mod.RepairResult) -> str:
    plan = result.plan
    if plan.empty:
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
        lines.append("dry run: nothing changed; run `reactor repair --apply` to back up and change these rows")
        return "\n".join(lines)
    for source, (table, rows) in result.backups.items():
        lines.append(f"backed up {rows} {source} rows into {table}")
    if result.validated:
        lines.append(f"validated constraints {', '.join(result.validated)} (old rows now obey them too)")
    lines.append(f"re-queued {result.requeued} images (NOTIFY on database.channel; the sweep finds them too)")
    lines.append("repair applied in one transaction; run `reactor audit` to confirm")
    return "\n".join(lines)
