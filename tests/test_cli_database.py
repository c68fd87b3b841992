"""What the database does to a command (a missing privilege, a missing table, a server that
goes away) ends it with one line that says what to do next, never a traceback: every
command runs inside handlers.common.database_problems (reactor.cli.main). Real processes,
a real server, a role without grants."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from reactor.config import Config
from reactor.handlers.common import database_problems
from reactor.store import status_reads
from reactor.store.db import DatabaseUnavailable
from tests.pg import PgServer
from tests.reactor_support import process_config, reactor_cli

# Each reads tables the role may not: the operator commands that printed a traceback
# (audit, repair, sweep, deletions: its repository did not translate the driver's error)
# and those that already said it in one line.
COMMANDS = (
    ("audit",),
    ("repair",),
    ("sweep", "--dry-run"),
    ("deletions",),
    ("status",),
    ("failures", "list"),
    ("blacklist", "--reason", "test", "a.jpg"),
)


@pytest.fixture
def no_grants(pg: PgServer, database: str) -> Iterator[str]:
    """A login role with no privilege on the reactor's tables."""
    role = f"nogrant_{os.getpid()}"
    pg.psql(f"CREATE ROLE {role} LOGIN")
    yield role
    pg.psql(f"DROP OWNED BY {role}", database)
    pg.psql(f"DROP ROLE {role}")


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_missing_privilege_is_one_line_with_the_grants(
    pg: PgServer, database: str, no_grants: str, share: Path, tmp_path: Path, command: tuple[str, ...]
) -> None:
    config = process_config(tmp_path, pg.dsn(database, user=no_grants), share, "nogrants")
    done = reactor_cli(config, *command)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("reactor: permission denied for table "), done.stderr
    assert last.endswith(f"`reactor db sql --grants-only --role {no_grants}` (`reactor doctor` lists what is missing)")


def test_one_table_without_grants_is_one_line_too(
    pg: PgServer, database: str, no_grants: str, share: Path, tmp_path: Path
) -> None:
    """Every other grant given: `reactor repair` meets the one missing in the orphans'
    repository (it printed asyncpg's traceback: its statements were not translated)."""
    pg.psql(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {no_grants}", database)
    pg.psql(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {no_grants}", database)
    pg.psql(f"REVOKE ALL ON reactor_orphan_purges FROM {no_grants}", database)
    config = process_config(tmp_path, pg.dsn(database, user=no_grants), share, "onetable")
    done = reactor_cli(config, "repair")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("reactor: permission denied for table reactor_orphan_purges; "), done.stderr


async def test_a_server_gone_mid_command_is_one_line_to_run_it_again(
    pg: PgServer, dsn: str, make_config: Callable[..., Config]
) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        pid = conn.get_server_pid()
        pg.psql(f"SELECT pg_terminate_backend({pid})")
        with pytest.raises(DatabaseUnavailable) as info, database_problems(make_config()):
            await status_reads.result_counts(conn)
    finally:
        await conn.close()
    message = str(info.value)
    assert message.startswith("the database connection broke or stopped answering during the command (")
    assert message.endswith("check the server (`reactor doctor`), then run the command again")
    assert "\n" not in message
