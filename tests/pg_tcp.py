"""A second PostgreSQL for the operator's-path tests: TCP on 127.0.0.1 with scram-sha-256
password authentication, as a production server would be, started from pgserver's
binaries on a free port (the suite's own server listens on a unix socket, trusted).

Administration goes over the unix socket in its data directory (trusted, as
`postgres`); every role under test connects over TCP with its password.
"""

from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pgserver import utils as pg_utils

from tests.pg import BIN, SYSTEM_USER, run_psql

ADMIN_PASSWORD = "adm1n-Pw!"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class TcpServer:
    pgdata: Path
    port: int
    system_user: str | None

    def dsn(self, user: str, database: str) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser over the trusted unix socket; raises on any error."""
        return run_psql(str(self.pgdata), database, sql, "-tA", port=self.port)

    def psql_file(
        self, path: Path, user: str, password: str, database: str, *options: str
    ) -> subprocess.CompletedProcess[str]:
        """`psql -h 127.0.0.1 -U user -d database -f path`, as an owner runs the printed SQL."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGPASSWORD"] = password
        return subprocess.run(
            [
                str(BIN / "psql"),
                "-X",
                *options,
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                user,
                "-d",
                database,
                "-f",
                str(path),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    def _pg_ctl(self, *args: str) -> None:
        result = subprocess.run(
            [str(BIN / "pg_ctl"), "-D", str(self.pgdata), "-w", "-l", str(self.pgdata / "server.log"), *args],
            check=False,
            capture_output=True,
            text=True,
            user=self.system_user,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl {args[0]}: {result.stdout}{result.stderr}")

    def stop(self) -> None:
        try:
            self._pg_ctl("stop", "-m", "fast")
        except RuntimeError:
            if (self.pgdata / "postmaster.pid").exists():
                raise


def start_tcp_server(base: Path) -> TcpServer:
    # PostgreSQL refuses to run as root; pgserver then runs it as its own system user.
    system_user = None
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        system_user = SYSTEM_USER
        pg_utils.ensure_user_exists(system_user)
        pg_utils.ensure_prefix_permissions(base)
    pgdata = base / "data"
    pgdata.mkdir()
    pwfile = base / "pwfile"
    pwfile.write_text(ADMIN_PASSWORD + "\n")
    if system_user is not None:
        import pwd

        entry = pwd.getpwnam(system_user)
        for path in (base, pgdata, pwfile):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    subprocess.run(
        [
            str(BIN / "initdb"),
            "-D",
            str(pgdata),
            "-U",
            "postgres",
            "-E",
            "utf8",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={pwfile}",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
        text=True,
        user=system_user,
        timeout=120,
    )
    for _attempt in range(3):
        server = TcpServer(pgdata=pgdata, port=free_port(), system_user=system_user)
        try:
            server._pg_ctl("start", "-o", f"-p {server.port} -k {pgdata} -c listen_addresses=127.0.0.1 -c fsync=off")
            return server
        except RuntimeError:
            continue  # another suite took the port between the probe and the start
    raise RuntimeError(f"cannot start PostgreSQL on TCP: {(pgdata / 'server.log').read_text()[-2000:]}")
