"""`reactor db init|check|sql`: set up the database, compare it with what the reactor
needs, and print the SQL a database owner runs for a role that may not create objects."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from reactor.config import Config
from reactor.errors import UsageError
from reactor.handlers.common import logs_to_stderr, whole
from reactor.ops import legacy_import
from reactor.store import advice, catalog, db, privileges, relations, schema
from reactor.store.errors import StoreError
from reactor.util.progress import Progress


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "db", help="set up and check the database", description="Set up and check the reactor's database."
    )
    actions = parser.add_subparsers(dest="db_action", metavar="ACTION")
    actions.required = True
    standalone_help = "this database has no upstream pipeline: create ai_metadata (implied on the embedded database)"

    init = actions.add_parser("init", help="apply schema and trigger (idempotent)")
    init.add_argument("--standalone", action="store_true", help=standalone_help)
    init.set_defaults(handler=init_command)

    check = actions.add_parser("check", help="report what is missing or different; exit 0 only when all is in order")
    check.add_argument("--standalone", action="store_true", help=standalone_help)
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(handler=check_command)

    imports = actions.add_parser(
        "import-legacy",
        help="copy the legacy worker's faces into face_detections (idempotent)",
        description="Copy the boxes and encodings of legacy face_metadata rows into face_detections, in pages. "
        "Rows that cannot be read are listed and left as they are.",
    )
    imports.add_argument("--page-size", type=whole(1), default=1000, help="rows per transaction (default 1000)")
    imports.add_argument(
        "--from-start",
        action="store_true",
        help="examine every legacy row again, not only those after the last one imported (rows fixed by hand)",
    )
    imports.add_argument("--json", action="store_true", help="print the report as JSON")
    imports.set_defaults(handler=import_legacy_command)

    owner = actions.add_parser("sql", help="print the SQL a database owner runs, with GRANTs for a role")
    owner.add_argument("--role", help="the role the reactor connects as (default: the configured user)")
    owner.add_argument(
        "--grants-only",
        action="store_true",
        help="only the GRANTs (the schema is in place; a privilege was revoked or the role is new)",
    )
    owner.set_defaults(handler=sql_command)


def init_command(args: argparse.Namespace, config: Config) -> int:
    logs_to_stderr(args, config)
    standalone = config.embedded or args.standalone
    with db.resolved_dsn(config) as dsn:
        report = asyncio.run(_init(dsn, config, standalone))
    state = "applied" if report.applied else "already current (this role cannot apply DDL; nothing changed)"
    mode = " (standalone: ai_metadata is created here)" if standalone else ""
    print(f"schema version {report.version} {state}{mode}; target {db.describe_target(dsn)}")
    for note in report.adapted:
        print(f"adapted: {note}")
    return 0


async def _init(dsn: str, config: Config, standalone: bool) -> schema.InitReport:
    async with db.connection(dsn, config) as conn:
        with Progress(None, "db init") as progress:
            return await schema.init_schema(
                conn, standalone=standalone, channel=config.database.channel, progress=progress
            )


def check_command(args: argparse.Namespace, config: Config) -> int:
    logs_to_stderr(args, config)
    standalone = config.embedded or args.standalone
    with db.resolved_dsn(config) as dsn:
        report, can_apply = asyncio.run(_check(dsn, config, standalone))
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(render(report, can_apply))
    return 0 if report.ok else 1


async def _check(dsn: str, config: Config, standalone: bool) -> tuple[catalog.CheckReport, bool]:
    async with db.connection(dsn, config) as conn:
        report = await catalog.check(conn, channel=config.database.channel, standalone=standalone)
        can_apply = not await privileges.missing_init_privileges(conn, standalone=standalone)
        return report, can_apply


def render(report: catalog.CheckReport, can_apply: bool) -> str:
    rows = [("STATUS", "KIND", "NAME", "DETAIL")]
    rows += [(f.status, f.kind, f.name, f.detail) for f in report.findings]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows]
    where = f"role {report.role}, database {report.database}"
    if report.ok:
        lines.append(f"all in order ({where})")
    else:
        step = advice.for_problems(report.role, report.problems, can_apply)
        lines.append(f"{len(report.problems)} problem(s) ({where}): {step}, then run `reactor db check` again")
    return "\n".join(line.rstrip() for line in lines)


def import_legacy_command(args: argparse.Namespace, config: Config) -> int:
    logs_to_stderr(args, config)
    with db.resolved_dsn(config) as dsn:
        report = asyncio.run(_import_legacy(dsn, config, args.page_size, args.from_start))
    if args.json:
        print(json.dumps(report.as_dict()))
        return 0
    if report.resumed_after is not None:
        print(f"resumed after {report.resumed_after}, the last legacy result imported")
    print(
        f"imported {report.faces} face(s) of {report.images} legacy result(s); "
        f"{report.rejected} row(s) left as they are"
    )
    for problem in report.problems:
        print(f"left\t{problem['image_path']}\t{problem['reason']}")
    if report.rejected > len(report.problems):
        print(f"... and {report.rejected - len(report.problems)} more (`reactor audit` lists legacy_not_imported)")
    if report.not_examined:
        print(
            f"{report.not_examined} legacy result(s) before that point are not imported (left by an earlier run): "
            "`--from-start` examines them again"
        )
    return 0


async def _import_legacy(dsn: str, config: Config, page_size: int, from_start: bool) -> legacy_import.ImportReport:
    try:
        async with db.connection(dsn, config) as conn:
            if await relations.missing(conn):
                raise UsageError("the reactor's tables are missing; run `reactor db init` first")
            with Progress(None, "db import-legacy") as progress:
                return await legacy_import.import_legacy(
                    conn, page_size=page_size, progress=progress, from_start=from_start
                )
    except StoreError as exc:
        # Not a row's values (those are reported and skipped): the pages committed stay.
        raise UsageError(
            f"the import stopped: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; the pages imported "
            "are kept, and `reactor db import-legacy` run again resumes after the last of them"
        ) from None


def sql_command(args: argparse.Namespace, config: Config) -> int:
    logs_to_stderr(args, config)
    role = args.role or db.configured_role(config)
    database = db.configured_database(config)
    if args.grants_only:
        text = schema.grants_sql(role, database)
    else:
        text = schema.owner_sql(role, config.database.channel, database)
    sys.stdout.write(text)
    return 0
