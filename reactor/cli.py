"""The `reactor` command line: global options, then one handler module per subcommand.

Each module in reactor/handlers/ exposes ``register(subparsers)``; the parser it
adds sets ``handler`` to a callable ``(args, config) -> int`` (sync or async).
Errors a user can cause (``reactor.errors.ReactorError``) become one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import os
import sys
from collections.abc import Sequence

from reactor import config as config_mod
from reactor import logs
from reactor.errors import ReactorError
from reactor.handlers.common import database_problems
from reactor.util import hardening

# Subcommand modules under reactor.handlers, in the order `reactor --help` lists them.
HANDLERS: tuple[str, ...] = (
    "db",
    "run",
    "sweep",
    "redetect",
    "similar",
    "status",
    "failures",
    "doctor",
    "demo",
    "audit",
    "repair",
    "detect",
    "deletions",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reactor",
        description="face-reactor: finds every face in a photo library beside its PostgreSQL database.",
    )
    parser.add_argument("--config", help=f"config file (default: ${config_mod.CONFIG_ENV} or ./config.toml)")
    parser.add_argument("--log-format", choices=("auto", "json", "console"), help="override logging.format")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="override logging.level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in HANDLERS:
        importlib.import_module(f"reactor.handlers.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Every command may start detector children (run, sweep --once, detect, demo) and read
    # a database password from its environment: same-user processes cannot read that
    # environment (reactor.util.hardening).
    hardening.forbid_dumps()
    try:
        cfg = config_mod.load(config_mod.config_path(args.config, os.environ))
    except config_mod.ConfigError as exc:
        # Printed as it is: it names a file, key or variable, never a value, and the
        # password mask would take "REACTOR_DATABASE_PASSWORD: unknown" for a secret.
        print(f"reactor: {exc}", file=sys.stderr)
        return exc.exit_code
    try:
        logs.configure(
            fmt=args.log_format or cfg.logging.format,
            level=args.log_level or cfg.logging.level,
        )
        with database_problems(cfg):
            result = args.handler(args, cfg)
            if inspect.iscoroutine(result):
                result = asyncio.run(result)
        return int(result or 0)
    except ReactorError as exc:
        print(f"reactor: {logs.mask(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
