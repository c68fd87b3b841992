"""Shared pieces of the benchmarks: an embedded PostgreSQL in a temp dir, a config file,
the reactor as a real `reactor run` subprocess with its memory sampled, and timings
read from PostgreSQL commit timestamps (track_commit_timestamp is switched on, so
"when did this row become visible" needs no polling clock)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pgserver

from reactor.core.queue import ImageQueue
from reactor.core.sweep import Sweeper
from reactor.store import schema

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
BIN = Path(pgserver.__file__).parent / "pginstall" / "bin"


@dataclass
class Postgres:
    pgdata: Path
    server: Any

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.pgdata}"

    def psql(self, sql_text: str) -> str:
        out = subprocess.run(
            [
                str(BIN / "psql"),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.pgdata),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                sql_text,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout


@contextlib.contextmanager
def postgres(workdir: Path) -> Iterator[Postgres]:
    """pgserver in workdir, restarted once with track_commit_timestamp on; schema applied."""
    pgdata = workdir / "pgdata"
    # First start creates the cluster; the setting needs a restart, which pgserver does
    # (as its own system user when run as root) on the second get_server.
    pgserver.get_server(pgdata, cleanup_mode="stop").cleanup()
    with open(pgdata / "postgresql.conf", "a") as conf:
        conf.write("\ntrack_commit_timestamp = on\n")
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    pg = Postgres(pgdata, server)
    try:

        async def init() -> None:
            conn = await asyncpg.connect(pg.dsn)
            try:
                await schema.init_schema(conn, standalone=True)
            finally:
                await conn.close()

        asyncio.run(init())
        yield pg
    finally:
        server.cleanup()


@contextlib.contextmanager
def workdir(keep: bool = False) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="reactor-bench-"))
    try:
        yield path
    finally:
        if not keep:
            subprocess.run(["rm", "-rf", str(path)], check=False)


def write_config(path: Path, dsn: str, share: Path, **sections: dict[str, Any]) -> Path:
    """A TOML config: the bench database, the share, health and watcher off unless overridden."""
    values: dict[str, dict[str, Any]] = {
        "database": {"dsn": dsn},
        "images": {"root": str(share)},
        "health": {"enabled": False},
        "watcher": {"enabled": False},
        "logging": {"format": "json", "level": "info"},
    }
    for name, overrides in sections.items():
        values.setdefault(name, {}).update(overrides)
    lines = []
    for name, fields in values.items():
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {json.dumps(v)}" for k, v in fields.items())
    path.write_text("\n".join(lines) + "\n")
    return path


def sweeper(pool: asyncpg.Pool, **options: Any) -> Sweeper:
    """The sweep the sweep benchmarks measure: one instance, pages of 1,000, share online."""
    return Sweeper(
        pool,
        ImageQueue(10_000),
        page_size=1000,
        lease_seconds=60.0,
        instance_id="bench",
        share_online=lambda: True,
        **options,
    )


def make_share(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / ".reactor-share").write_text("bench share\n")
    return root


def link_copies(source: Path, share: Path, count: int, folder: str = "img", per_dir: int = 1000) -> list[str]:
    """``count`` database paths, each a hard link to ``source`` (cheap: a few inodes)."""
    paths = []
    current, copies = source, 0
    for i in range(count):
        rel = f"{folder}/{i // per_dir:04d}/{i:07d}{source.suffix}"
        target = share / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            try:
                os.link(current, target)
            except OSError as exc:
                if exc.errno != errno.EMLINK:
                    raise
                # ext4 allows 65,000 links per inode: start another copy.
                copies += 1
                current = source.with_name(f"{source.stem}_{copies}{source.suffix}")
                shutil.copyfile(source, current)
                os.link(current, target)
        paths.append(rel)
    return paths


# ---------------------------------------------------------------- memory


def _status(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return out


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


@dataclass
class MemorySampler:
    """Samples the reactor's RSS (and its detector child's) every ``interval`` seconds."""

    pid: int
    interval: float = 0.5
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, reactor, children)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.wait(self.interval):
            main = _status(self.pid).get("VmRSS", 0)
            kids = sum(_status(c).get("VmRSS", 0) for c in children(self.pid))
            self.samples.append((round(time.monotonic() - t0, 2), main, kids))

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def peak_hwm(self) -> int:
        return _status(self.pid).get("VmHWM", 0)


# ---------------------------------------------------------------- the reactor


class ReactorProcess:
    """`python -m reactor --config FILE run` with JSON logs captured to a file."""

    def __init__(self, config_file: Path, log_file: Path, env: dict[str, str] | None = None) -> None:
        self.config_file = config_file
        self.log_file = log_file
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_wall = 0.0
        self.sampler: MemorySampler | None = None

    def start(self, sample_interval: float = 0.5) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REACTOR_")}
        env.update(self.env or {})
        self.started_wall = time.time()
        self._log = open(self.log_file, "wb")  # noqa: SIM115 - closed in stop()
        # BENCH_PROFILE=FILE runs the reactor under cProfile, its stats written to FILE on exit.
        profile = os.environ.get("BENCH_PROFILE")
        runner = ["-m", "cProfile", "-o", profile] if profile else []
        self.proc = subprocess.Popen(
            [sys.executable, *runner, "-m", "reactor", "--config", str(self.config_file), "run"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
        )
        self.sampler = MemorySampler(self.proc.pid, sample_interval)
        self.sampler.start()

    def peak_rss(self) -> int:
        assert self.sampler is not None
        return self.sampler.peak_hwm()

    def stop(self, timeout: float = 60.0) -> int:
        assert self.proc is not None and self.sampler is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.sampler.stop()
        self._log.close()
        return self.proc.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        out = []
        for line in self.log_file.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if name is None or event.get("event") == name:
                out.append(event)
        return out

    def wait_event(self, name: str, timeout: float, count: int = 1) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(name)
            if len(found) >= count:
                return found
            if not self.alive():
                code = self.proc.returncode if self.proc else "?"
                raise RuntimeError(f"reactor exited ({code}); see {self.log_file}")
            time.sleep(0.1)
        raise TimeoutError(f"no {name!r} event within {timeout} s; see {self.log_file}")


async def wait_done(
    conn: asyncpg.Connection, expected: int, within: float, proc: ReactorProcess | None = None, poll: float = 0.5
) -> int:
    """Wait until results + failures reach ``expected``; return the count reached."""
    deadline = time.monotonic() + within
    done = 0
    while time.monotonic() < deadline:
        done = await conn.fetchval(
            "SELECT (SELECT count(*) FROM face_metadata) + (SELECT count(*) FROM face_detection_failures)"
        )
        if done >= expected:
            return int(done)
        if proc is not None and not proc.alive():
            raise RuntimeError(f"reactor exited; see {proc.log_file}")
        await asyncio.sleep(poll)
    return int(done)


async def commit_times(conn: asyncpg.Connection) -> list[float]:
    """Commit time (epoch seconds) of every face_metadata row, ascending."""
    rows = await conn.fetch(
        "SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8 AS t FROM face_metadata ORDER BY 1"
    )
    return [r["t"] for r in rows]


def steady_rate(times: list[float]) -> float:
    """Images per second between the first and the last completion."""
    if len(times) < 2 or times[-1] <= times[0]:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0])


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as fh:
        mem = int(fh.readline().split()[1]) * 1024
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem / 2**30, 1),
        "load_avg": os.getloadavg(),
        "python": sys.version.split()[0],
    }


def save(name: str, result: dict[str, Any]) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": name,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        **result,
    }
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    return path


def report(name: str, result: dict[str, Any], skip: tuple[str, ...] = ()) -> Path:
    """Save the result to bench/out/<name>.json and print its scalar figures, aligned.
    Keys in `skip` (long tables such as a timeline or EXPLAIN plans) are left to the caller."""
    path = save(name, result)
    shown = [key for key in result if key not in skip]
    width = max(map(len, shown), default=0)
    for key in shown:
        print(f"{key:>{width}}: {result[key]}")
    return path


def mib(n: int) -> float:
    return round(n / 2**20, 1)
