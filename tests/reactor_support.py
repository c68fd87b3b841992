"""Helpers for the reactor's end-to-end tests: small real photos, ai_metadata rows,
deadline-bounded polling of the database, and `python -m reactor run` subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
from PIL import Image

from reactor.ops import samples
from reactor.store.dbtypes import Conn

REPO = Path(__file__).resolve().parent.parent
# Small photos keep the suite fast: a 256 px astronaut still has a findable face.
PHOTO_SIZE = 256

_photo_cache: dict[int, Image.Image] = {}


def small_astronaut() -> Image.Image:
    if PHOTO_SIZE not in _photo_cache:
        _photo_cache[PHOTO_SIZE] = samples.astronaut().resize((PHOTO_SIZE, PHOTO_SIZE))
    return _photo_cache[PHOTO_SIZE]


def write_photos(share: Path, names: Iterable[str]) -> list[str]:
    """Copies of one small face photo under distinct names; returns the database paths."""
    paths = []
    for name in names:
        target = share / name
        samples.write_jpeg(small_astronaut(), target.parent, target.name)
        paths.append(name)
    return paths


async def add_processed(conn: Conn | asyncpg.Pool, paths: Iterable[str]) -> None:
    await conn.executemany(
        "INSERT INTO ai_metadata (image_path, is_processed) VALUES ($1, TRUE) "
        "ON CONFLICT (image_path) DO UPDATE SET is_processed = TRUE",
        [(p,) for p in paths],
    )


async def wait_until(check: Callable[[], Awaitable[bool]], seconds: float = 90.0, what: str = "condition") -> None:
    """Poll ``check`` until it is true; fail the test after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        await asyncio.sleep(0.1)


async def reported(read: Callable[[], object], expected: object, what: str, seconds: float = 15.0) -> None:
    """Wait until ``read()`` (a counter, the logged detections, a scrape; awaited if it is a
    coroutine) equals ``expected``.

    The reactor counts and logs a result just after its commit (and its sweeps count
    themselves after their last statement), so a test that has seen the row in the database
    can run before the report: it waits for the report instead of racing it, and fails with
    the last value read."""
    deadline = time.monotonic() + seconds
    while True:
        value = read()
        if inspect.isawaitable(value):
            value = await value
        if value == expected:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: {value!r} after {seconds} s, expected {expected!r}")
        await asyncio.sleep(0.1)


async def outcomes(conn: asyncpg.Connection) -> dict[str, list[str]]:
    """path -> the outcomes recorded for it ("result", "failure:<type>")."""
    rows = await conn.fetch(
        "SELECT image_path, 'result' AS o FROM face_metadata "
        "UNION ALL SELECT image_path, 'failure:' || last_error_type FROM face_detection_failures"
    )
    out: dict[str, list[str]] = {}
    for r in rows:
        out.setdefault(r["image_path"], []).append(r["o"])
    return out


async def count_results(conn: asyncpg.Connection, paths: list[str]) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM face_metadata WHERE image_path = ANY($1)", paths))


async def wait_watching(reactor: Any, task: asyncio.Task[Any], seconds: float = 60.0) -> None:
    """Wait until an in-process Reactor's watcher is watching; raise what the run raised."""

    async def watching() -> bool:
        if task.done():
            task.result()
        return reactor.watcher is not None and reactor.watcher.state == "watching"

    await wait_until(watching, seconds, "the watcher to start")


def reactor_cli(config: Path, *args: str, timeout: float = 170) -> subprocess.CompletedProcess[str]:
    """One `python -m reactor` command with this config file, to its end; no REACTOR_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REACTOR_")}
    return subprocess.run(
        [sys.executable, "-m", "reactor", "--config", str(config), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        env=env,
    )


def toml_config(**sections: dict[str, Any]) -> str:
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in values.items())
    return "\n".join(lines) + "\n"


def process_config(tmp: Path, dsn: str, share: Path, name: str, **overrides: dict[str, Any]) -> Path:
    sections: dict[str, dict[str, Any]] = {
        "database": {"dsn": dsn, "probe_interval_seconds": 2.0, "reconnect_max_seconds": 2.0},
        "images": {"root": str(share)},
        # One detector child, not one per core: every `reactor` command starts all its
        # children and waits for each to load the models (~1.5 CPU seconds) whatever its work.
        # The lanes side by side run in the in-process tests (conftest's make_config), and
        # here where a test asks for them.
        "detector": {"model": "hog", "timeout_seconds": 60.0, "workers": 1},
        "health": {"enabled": False, "heartbeat_seconds": 1.0},
        "service": {"shutdown_grace_seconds": 90.0},
        "watcher": {"enabled": False},
    }
    for section, values in overrides.items():
        sections.setdefault(section, {}).update(values)
    path = tmp / f"{name}.toml"
    path.write_text(toml_config(**sections))
    return path


class ReactorProcess:
    """`python -m reactor run` with JSON logs captured to a file."""

    def __init__(
        self, config: Path, log: Path, *command: str, env: dict[str, str] | None = None, prefix: Sequence[str] = ()
    ) -> None:
        self.config = config
        self.log = log
        self.command = command or ("run",)
        self.extra_env = env or {}
        # A command the reactor runs under (e.g. `unshare --user`).
        self.prefix = tuple(prefix)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ReactorProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REACTOR_")} | self.extra_env
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    *self.prefix,
                    sys.executable,
                    "-m",
                    "reactor",
                    "--config",
                    str(self.config),
                    "--log-format",
                    "json",
                    *self.command,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=env,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        if not self.log.exists():
            return found
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and (name is None or event.get("event") == name):
                    found.append(event)
        return found

    async def wait_event(self, name: str, seconds: float = 90.0) -> dict[str, Any]:
        async def seen() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"reactor exited with {self.proc.returncode}:\n{self.tail()}")
            return bool(self.events(name))

        await wait_until(seen, seconds, f"log event {name}")
        return self.events(name)[0]

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self, seconds: float = 120.0, sig: signal.Signals = signal.SIGTERM) -> int:
        """SIGTERM (or ``sig``) and wait; the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(seconds)

    def ensure_dead(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


def detections_per_path(*procs: ReactorProcess) -> Counter[str]:
    """How many times each image was detected, from the processes' own log lines.

    Every detection ends in exactly one of these events: a result written
    (image_detected), a failure written, or a result discarded by fencing.
    """
    counted: Counter[str] = Counter()
    for proc in procs:
        for name in ("image_detected", "image_failed", "permanently_failed", "result_fenced"):
            for event in proc.events(name):
                counted[event["path"]] += 1
    return counted


def phone_sized(
    folder: Path,
    count: int = 1,
    size: tuple[int, int] = (4000, 3000),
    prefix: str = "phone",
    quality: int = 90,
) -> list[samples.Sample]:
    """Phone-camera-sized JPEGs (default 4000x3000), each with one face.

    The astronaut is upscaled to the photo's height and placed at a different offset on an
    upscaled coffee-cup background in each file, so no two files are identical.
    """
    width, height = size
    face = samples.astronaut().resize((height, height), Image.Resampling.BICUBIC)
    background = samples.coffee().resize(size, Image.Resampling.BILINEAR)
    span = max(width - height, 0)
    made = []
    for i in range(count):
        canvas = background.copy()
        offset = (i * 997) % (span + 1) if span else 0
        canvas.paste(face, (offset, 0))
        name = f"{prefix}_{i:04d}.jpg"
        path = samples.write_jpeg(canvas, folder, name, quality=quality)
        made.append(samples.Sample(name, path, faces=1, note=f"{width}x{height} phone-sized JPEG"))
    return made


async def cli_json(config: Path, *args: str) -> Any:
    done = await asyncio.to_thread(reactor_cli, config, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def faces_of(conn: asyncpg.Connection, path: str) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT face_id, face_index, box_top, box_right, box_bottom, box_left FROM face_detections "
            "WHERE image_path = $1 ORDER BY face_index",
            path,
        )
    )
