"""`reactor doctor`: one ok/fail line per precondition, with the fix; exit 1 if any fails."""

from __future__ import annotations

import argparse
import contextlib

from reactor.config import Config
from reactor.handlers.common import logs_to_stderr
from reactor.ops import doctor
from reactor.store import db


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("doctor", help="check database, share, dlib, models, detector and GPU, with fixes")
    parser.add_argument("--skip-detector", action="store_true", help="do not start the detector on a sample photo")
    parser.set_defaults(handler=run)


async def run(args: argparse.Namespace, config: Config) -> int:
    logs_to_stderr(args, config)
    with contextlib.ExitStack() as stack:
        dsn: str | None = None
        startup_error: str | None = None
        try:
            dsn = stack.enter_context(db.resolved_dsn(config))
        except db.DatabaseUnavailable as exc:  # the embedded server did not start: a finding, not a crash
            startup_error = str(exc)
        checks = await doctor.run_checks(
            config,
            dsn,
            detector=not args.skip_detector,
            emit=lambda check: print(check.line(), flush=True),
            startup_error=startup_error,
        )
    failed = [c for c in checks if not c.ok]
    print(f"{len(failed)} check(s) failed" if failed else "all checks ok")
    return 1 if failed else 0
