"""`reactor audit`: check the reactor's tables; exit 1 when anything is found."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from reactor.config import Config
from reactor.handlers.common import add_report_options, share_and_database
from reactor.ops import audit


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "audit", help="check results, faces, failures, paths, files and claims for corruption (exit 1 if any)"
    )
    add_report_options(parser)
    parser.set_defaults(handler=run)


async def run(args: argparse.Namespace, config: Config) -> int:
    async with share_and_database(args, config) as here:
        report = await audit.run_audit(
            here.conn, config, share_online=here.online, share_reason=here.reason, check_files=not args.skip_files
        )
    if args.json:
        print(json.dumps(report.to_dict(args.sample), indent=2 if sys.stdout.isatty() else None))
    else:
        print(render(report, args.sample))
    return 0 if report.clean else 1


def _sample_text(row: dict[str, Any]) -> str:
    extra = ", ".join(f"{k}={v}" for k, v in row.items() if k != "image_path" and v is not None)
    return f"{row['image_path']}" + (f"  ({extra})" if extra else "")


def render(report: audit.AuditReport, sample: int) -> str:
    width = max(len(name) for name in audit.CHECKS)
    lines = [f"{'check':<{width}}  {'found':>7}  meaning"]
    for finding in report.findings.values():
        shown = "skipped" if finding.skipped else str(finding.count)
        lines.append(f"{finding.check:<{width}}  {shown:>7}  {audit.CHECKS[finding.check]}")
        if finding.skipped:
            lines.append(f"{'':<{width}}           why: {finding.skipped}")
        for row in finding.to_dict(sample)["sample"]:
            lines.append(f"{'':<{width}}           - {_sample_text(row)}")
        if finding.count > sample:
            lines.append(f"{'':<{width}}           ... and {finding.count - sample} more (--sample N, --json)")
    if report.clean:
        lines.append("audit: clean")
    else:
        lines.append(f"audit: {report.total} problem rows; `reactor repair` shows what it would change")
    return "\n".join(lines)
