"""The detector child process: load the engine once, then serve one job at a time.

Started by ``Detector`` with the multiprocessing spawn context, so it shares no state with
the reactor (no asyncpg sockets, no threads, no CUDA context). The protocol on the pipe:

    child -> parent   ("ready", {"cuda": bool, "gpus": int, "pid": int, "gpu_memory_mb": int | None,
                      "smallest_algorithms": bool, "card": str | None, "card_pixels": int | None})
                      once the models are loaded
                      ("failed", "reason") when the engine could not be built
    parent -> child   (DetectionJob, bytes | None), or None to exit; the bytes are the
                      file's content when the parent read it ahead (see prefetch.py);
                      or (DetectionJob, "stream") followed by raw chunks of the file and
                      an empty one (a file over the read-ahead limit);
                      or a list of such pairs: a batch (see batching.py)
    child -> parent   ("result", Outcome) for each job, in the order of the batch

Child to parent, every message is JSON checked field by field (reactor.detector.wire),
never a pickle: the parent holds the database and must not run what the child sends.
The child starts without the database's secrets in its environment (the supervisor
spawns it with them removed) and, on Linux with a CPU engine, under RLIMIT_AS
(detector.max_memory_mb): an image that needs more fails as ``oom``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import traceback
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

from reactor.config import DetectorConfig
from reactor.detector import lifetime, wire
from reactor.detector.types import DETAIL_ALONE, DetectionFailure, DetectionJob, Engine, Outcome
from reactor.failure_types import ErrorType

# In place of a job's bytes: the parent streams them next, in chunks, until an empty one
# (a file too large for the parent to hold; every read of the share stays in the parent).
STREAM = "stream"
# Exit status when the engine cannot be built; the parent counts it as a start-up failure.
# Not 3: that is how abort() (a failed dlib assertion) ends a process on Windows, which
# would then be described as an engine that could not load (seen under Wine).
EXIT_ENGINE_FAILED = 78


def serve(conn: Connection, config: DetectorConfig, device: int | None = None) -> None:
    """Entry point of the child process; ``device``: the CUDA device this child must use."""
    lifetime.prepare_child()
    if device is not None:
        select_cuda_device(device)
    try:
        engine = _build(config)
    except BaseException as exc:  # anything, even SystemExit from a library, is a start-up failure
        _send(conn, ("failed", f"{config.engine}: {type(exc).__name__}: {exc}"))
        sys.exit(EXIT_ENGINE_FAILED)
    limit_memory(config, engine.cuda)
    ready = {
        "cuda": engine.cuda,
        "gpus": int(getattr(engine, "gpus", 0)),
        "pid": os.getpid(),
        "gpu_memory_mb": getattr(engine, "gpu_memory_mb", None),
        "smallest_algorithms": bool(getattr(engine, "smallest_algorithms", False)),
        "card": getattr(engine, "card", None),
        "card_pixels": getattr(engine, "card_pixels", None),
    }
    _send(conn, ("ready", ready))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        if message is None:
            return
        if isinstance(message, list):
            for outcome in run_batch(engine, message):
                _send(conn, ("result", outcome))
            continue
        job, data = message
        if isinstance(data, str) and data == STREAM:
            data = _receive_stream(conn)
        _send(conn, ("result", run_one(engine, job, data)))


def _receive_stream(conn: Connection) -> bytes:
    """A large file's bytes, sent by the parent in chunks until an empty one."""
    chunks: list[bytes] = []
    while chunk := conn.recv_bytes():
        chunks.append(chunk)
    return b"".join(chunks)


def select_cuda_device(device: int) -> None:
    """Show this child only the one GPU it serves (set before dlib is imported), so that
    several children on a multi-GPU machine do not all fill device 0."""
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    os.environ["CUDA_VISIBLE_DEVICES"] = visible[device % len(visible)] if visible else str(device)


def _build(config: DetectorConfig) -> Engine:
    module = importlib.import_module(config.engine)
    factory: Any = module.create_engine
    engine: Engine = factory(config)
    return engine


def run_one(engine: Engine, job: DetectionJob, data: bytes | None = None) -> Outcome:
    """The engine's outcome; an exception it lets escape becomes a typed failure, not a dead child."""
    with_bytes = getattr(engine, "detect_prefetched", None)
    try:
        if data is not None and with_bytes is not None:
            outcome: Outcome = with_bytes(job, data)
            return outcome
        return engine.detect(job)
    except Exception as exc:  # MemoryError included
        return failure_of(exc)


def run_batch(engine: Engine, items: list[tuple[DetectionJob, bytes | None]]) -> list[Outcome]:
    """Each photo's outcome; an exception that escapes the batch sends every photo back alone."""
    together = getattr(engine, "detect_batch", None)
    if together is None:
        return [run_one(engine, job, data) for job, data in items]
    try:
        outcomes: list[Outcome] = together(items)
        return outcomes
    except Exception as exc:
        failure = failure_of(exc)
        alone = DetectionFailure(failure.error_type, failure.message, details={DETAIL_ALONE: "1"})
        return [alone for _ in items]


def failure_of(exc: BaseException) -> DetectionFailure:
    """What an exception that escaped the engine becomes."""
    if isinstance(exc, MemoryError):
        return DetectionFailure(ErrorType.OOM, "out of memory in the detector process")
    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    origin = f" at {where[0].filename}:{where[0].lineno}" if where else ""
    return DetectionFailure(ErrorType.RUNTIME, f"{type(exc).__name__}: {exc}{origin}")


def _send(conn: Connection, message: tuple[str, Any]) -> None:
    try:
        conn.send_bytes(wire.encode(*message))
    except (BrokenPipeError, EOFError, OSError):
        sys.exit(0)  # the parent is gone; nobody is left to tell


# Environment variables the child must not inherit: libpq's (PGPASSWORD, ...), the
# reactor's database settings (a DSN may embed a password), anything named like a secret.
_SECRET_PREFIXES = ("PG", "REACTOR_DATABASE__", "DATABASE_URL")
_SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "PASSFILE")


def is_secret(name: str) -> bool:
    upper = name.upper()
    return upper.startswith(_SECRET_PREFIXES) or any(word in upper for word in _SECRET_WORDS)


@contextlib.contextmanager
def without_secrets() -> Iterator[None]:
    """os.environ without the secrets while the child is spawned (it copies the environment)."""
    removed = {k: os.environ.pop(k) for k in [k for k in os.environ if is_secret(k)]}
    try:
        yield
    finally:
        os.environ.update(removed)


def limit_memory(config: DetectorConfig, cuda: bool) -> bool:
    """RLIMIT_AS for this process (Linux, CPU engine); True if a limit was set."""
    if not sys.platform.startswith("linux") or cuda or config.max_memory_mb <= 0:
        return False
    import resource  # POSIX only: imported inside the platform branch

    limit = config.max_memory_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    return True
