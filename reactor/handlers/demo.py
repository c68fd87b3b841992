"""`reactor demo`: sample library, embedded database, the reactor until done, a contact sheet."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from reactor.config import Config
from reactor.handlers.common import above_zero, logs_to_stderr
from reactor.ops import demo


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "demo",
        help="run the reactor on sample photos and draw a contact sheet",
        description="Build a small sample library, run the reactor on an embedded database until every photo "
        "has a result or a failure, print a summary and write a contact sheet PNG.",
    )
    parser.add_argument("--out", default="demo-out", help="demo folder, replaced on each run (default: demo-out)")
    parser.add_argument("--timeout", type=above_zero, default=900.0, help="give up after this many seconds")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, config: Config) -> int:
    # The reactor's own events would drown the summary; warnings still show.
    logs_to_stderr(args, config, level="warning")
    out = Path(os.path.abspath(args.out))
    report = asyncio.run(demo.run_demo(config, out, args.timeout))
    print(demo.render_summary(report, out))
    if report.done < report.images:
        print(
            f"reactor demo: only {report.done} of {report.images} images done after {args.timeout:.0f} s; "
            "see the log lines above (rerun with --log-level info)"
        )
        return 1
    return 0
