"""`reactor doctor`: one ok/fail line per precondition, with the fix; exit 1 if any fails."""

from __future__ import annotations

import argparse

from reactor import db, doctor
from reactor.config import Config
from reactor.handlers.status import logs_to_stderr


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("doctor", help="check database, share, dlib, models, detector and GPU, with fixes")
    parser.add_argument("--skip-detector", action="store_true", help="do not start the detector on a sample photo")
    parser.set_defaults(handler=run)


async def run(args: argparse.Namespace, config: Config) -> int:
    logs_to_stderr(args, config)
    with db.resolved_dsn(config) as dsn:
        checks = await doctor.run_checks(
            config, dsn, detector=not args.skip_detector, emit=lambda check: print(check.line(), flush=True)
        )
    failed = [c for c in checks if not c.ok]
    print(f"{len(failed)} check(s) failed" if failed else "all checks ok")
    return 1 if failed else 0
