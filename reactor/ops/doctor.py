"""`reactor doctor`: every precondition of a working reactor, one line each, with the fix.

Database reachable, schema and trigger in place and the role's privileges (the same
comparison as `reactor db check`, reused from reactor.store.catalog), the share online with
its marker, the observer its filesystem gets, dlib and its models, a detector that
starts and finds the face in a sample photo, and GPU memory when CUDA is present.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from reactor.config import Config
from reactor.detector import gpu
from reactor.detector.types import Detection, DetectionJob
from reactor.store import advice, catalog, db
from reactor.store.errors import StoreError
from reactor.watch import mounts, share

# The CNN detector needs this much free GPU memory at the smallest scales; less and
# every image ends in oom (a 4 GB card shared with a desktop often has ~2 GB free).
MIN_FREE_MIB = 512


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{'ok' if self.ok else 'fail':<5} {self.name:<11} {self.detail}"
        return text if self.ok or not self.fix else f"{text}; fix: {self.fix}"


def _ok(name: str, detail: str) -> Check:
    return Check(name, True, detail)


def _fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, False, detail, fix)


# -- database --------------------------------------------------------------------------


def _unreachable(detail: str, fix: str) -> list[Check]:
    skipped = "not checked: the database is unreachable"
    return [
        _fail("database", detail, fix),
        _fail("schema", skipped, "fix the database line above first"),
        _fail("privileges", skipped, "fix the database line above first"),
    ]


async def database_checks(config: Config, dsn: str | None, startup_error: str | None = None) -> list[Check]:
    if dsn is None:
        # DatabaseUnavailable's message is "what happened; what to do".
        detail, _, fix = (startup_error or "the embedded PostgreSQL did not start").partition("; ")
        return _unreachable(detail, fix or "set [database] dsn to a running server")
    try:
        conn = await db.connect(dsn, config)
    except db.DatabaseUnavailable as exc:
        detail, _, fix = str(exc).partition("; ")
        return _unreachable(detail, fix or "check [database] dsn, that the server runs, the password")
    try:
        report = await catalog.check(conn, channel=config.database.channel, standalone=config.embedded)
    finally:
        await conn.close()
    where = db.describe_target(dsn)
    checks = [_ok("database", f"reachable: {where} as role {report.role}")]
    problems = [f for f in report.problems if f.kind != "privilege"]
    if problems:
        listed = ", ".join(f"{f.kind} {f.name} {f.status}" for f in problems)
        checks.append(_fail("schema", listed, f"run `reactor db init`, or {advice.owner_sql(report.role)}"))
    else:
        checks.append(
            _ok("schema", f"tables, indexes, constraints, trigger and version {catalog.SCHEMA_VERSION} in place")
        )
    lacking = [f.name for f in report.problems if f.kind == "privilege"]
    if lacking:
        checks.append(_fail("privileges", f"role {report.role} lacks {', '.join(lacking)}", advice.grants(report.role)))
    else:
        checks.append(_ok("privileges", f"role {report.role} has every privilege the reactor uses"))
    return checks


# -- share -----------------------------------------------------------------------------


def share_check(config: Config) -> Check:
    images = config.images
    marker = os.path.join(images.root, images.marker)
    reason = share.probe(images)
    if reason is None:
        return _ok("share", f"{images.root} is online (marker {images.marker} present)")
    if reason == "marker_missing":
        return _fail(
            "share",
            f"marker {marker} is missing",
            f"mount the share, then create the marker file {marker} on it (README: Watching the share)",
        )
    if reason == "root_missing":
        return _fail("share", f"root {images.root} does not exist", "mount the share there, or set images.root")
    if reason == "root_not_directory":
        return _fail("share", f"root {images.root} is not a directory", "point images.root at the share's folder")
    if reason == "not_mounted":
        return _fail("share", f"root {images.root} is not on a mounted share", share.not_mounted_advice(images.root))
    return _fail(
        "share", f"cannot read {images.root} ({reason})", "check that the share is mounted and readable by this user"
    )


def observer_check(config: Config) -> Check:
    choice = mounts.choose_observer(config)
    if choice.kind == "polling":
        where = f"{choice.fstype} at {choice.mount_point}" if choice.fstype else choice.reason
        why = "forced by watcher.observer" if choice.reason == "configured" else "inotify misses other clients' writes"
        return _ok("observer", f"polling scanner: {where} ({why})")
    where = f"{choice.fstype} at {choice.mount_point}" if choice.fstype else choice.reason
    return _ok("observer", f"native (inotify/OS events): {where}")


# -- dlib, models, detector, GPU ------------------------------------------------------------


def dlib_check() -> tuple[Check, bool]:
    try:
        import dlib
    except ImportError as exc:
        return _fail("dlib", f"cannot import dlib: {exc}", "run `uv sync --frozen` (installs dlib-bin)"), False
    cuda = bool(getattr(dlib, "DLIB_USE_CUDA", False))
    devices = ""
    if cuda:
        try:
            devices = f", {dlib.cuda.get_num_devices()} device(s)"
        except Exception as exc:  # a CUDA build without a usable driver
            return _fail(
                "dlib",
                f"dlib {dlib.__version__} has CUDA but no device: {exc}",
                'install the NVIDIA driver, or set detector.model = "hog"',
            ), False
    return _ok("dlib", f"dlib {dlib.__version__}, CUDA {'yes' + devices if cuda else 'no (HOG on the CPU)'}"), cuda


def models_check() -> Check:
    try:
        with warnings.catch_warnings():
            # face_recognition_models imports pkg_resources, which warns on import (as in the engine).
            warnings.simplefilter("ignore")
            import face_recognition_models as frm
    except ImportError as exc:
        return _fail(
            "models",
            f"cannot import face_recognition_models: {exc}",
            "run `uv sync --frozen` (installs face-recognition-models)",
        )
    files = [
        frm.pose_predictor_model_location(),
        frm.pose_predictor_five_point_model_location(),
        frm.face_recognition_model_location(),
        frm.cnn_face_detector_model_location(),
    ]
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        return _fail(
            "models",
            f"missing model files: {', '.join(missing)}",
            "reinstall it: `uv sync --frozen --reinstall-package face-recognition-models`",
        )
    return _ok("models", f"face_recognition_models: {len(files)} model files present")


async def detector_check(config: Config) -> Check:
    from reactor.detector import Detector, DetectorUnavailable
    from reactor.ops import samples

    with tempfile.TemporaryDirectory(prefix="reactor-doctor-") as tmp:
        photo = samples.write_jpeg(samples.astronaut(), Path(tmp), "astronaut.jpg")
        detector = Detector(config.detector)
        started = time.monotonic()
        try:
            await detector.start()
            elapsed = time.monotonic() - started
            outcome = await detector.detect(DetectionJob(local_path=str(photo)))
        except DetectorUnavailable as exc:
            return _fail(
                "detector",
                f"cannot start: {exc}",
                "run `reactor doctor` again after the dlib and models "
                "lines are ok; see the log above for the child's error",
            )
        finally:
            await detector.close()
    if not isinstance(outcome, Detection):
        return _fail(
            "detector",
            f"failed on the sample photo: {outcome.error_type} {outcome.message}",
            "see the failure type in README 'Failure types'",
        )
    if len(outcome.faces) != 1:
        return _fail(
            "detector",
            f"found {len(outcome.faces)} faces in astronaut.jpg, expected 1",
            "check detector.scales, min_face_px and weak_score in the config",
        )
    return _ok(
        "detector",
        f"started in {elapsed:.1f} s; found 1 face in the sample photo astronaut.jpg "
        f"({outcome.model}, {outcome.detect_ms:.0f} ms)",
    )


def gpu_check(cuda: bool) -> Check:
    if not cuda:
        return _ok("gpu", "not used: this dlib has no CUDA, so detection runs HOG on the CPU")
    try:
        found = gpu.query()
    except gpu.GpuQueryFailed as exc:
        return _fail("gpu", f"nvidia-smi failed: {exc}", "check the NVIDIA driver with `nvidia-smi`")
    if found is None:
        return _ok("gpu", "CUDA present; nvidia-smi not found, free memory unknown")
    gpus = [f"{g.name}: {g.free_mib} MiB free of {g.total_mib} MiB" for g in found]
    low = [g.name for g in found if g.free_mib is not None and g.free_mib < MIN_FREE_MIB]
    if not gpus:
        return _fail("gpu", "dlib has CUDA but nvidia-smi lists no GPU", "check the NVIDIA driver with `nvidia-smi`")
    if low:
        return _fail(
            "gpu",
            "; ".join(gpus),
            f"free GPU memory (under {MIN_FREE_MIB} MiB on {', '.join(low)}): stop "
            'other GPU programs, or set detector.model = "hog"',
        )
    return _ok("gpu", "; ".join(gpus))


# -- all of it -------------------------------------------------------------------------


async def run_checks(
    config: Config,
    dsn: str | None,
    *,
    detector: bool = True,
    emit: Callable[[Check], None] | None = None,
    startup_error: str | None = None,
) -> list[Check]:
    """Run every check in order; `emit` sees each as soon as it is known. `dsn` is None
    when the embedded database failed to start (`startup_error` says why)."""
    checks: list[Check] = []

    def add(check: Check) -> None:
        checks.append(check)
        if emit is not None:
            emit(check)

    for check in await database_checks(config, dsn, startup_error):
        add(check)
    add(await asyncio.to_thread(share_check, config))
    add(observer_check(config))
    dlib_line, cuda = dlib_check()
    add(dlib_line)
    add(models_check())
    if detector:
        add(await _guard("detector", detector_check(config)))
    add(await asyncio.to_thread(gpu_check, cuda))
    return checks


async def _guard(name: str, check: Awaitable[Check]) -> Check:
    try:
        return await check
    except (OSError, StoreError, RuntimeError) as exc:
        return _fail(name, f"{type(exc).__name__}: {exc}", "see the log for details")
