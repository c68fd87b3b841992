"""Typed, frozen configuration loaded from TOML, with environment overrides.

Every key lives in a frozen dataclass. Unknown keys and wrong types are rejected
with one line that names the file, the key and the expected type. Any key can be
overridden with ``REACTOR_<SECTION>__<KEY>``; the loop over dataclass fields does
that, so adding a key never needs new plumbing.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from reactor.errors import ReactorError
from reactor.util import dsn as dsn_mod

ENV_PREFIX = "REACTOR_"
CONFIG_ENV = "REACTOR_CONFIG"
DEFAULT_CONFIG_FILE = "config.toml"
PASSWORD_ENV = "REACTOR_DATABASE__PASSWORD"
# Test hooks read by engines under tests/ (e.g. REACTOR_TEST_STARTUP_CRASHES), never by the reactor.
TEST_ENV_PREFIX = "REACTOR_TEST_"
# NOTIFY channels are written into the trigger's DDL (reactor.store.schema): plain
# lower-case identifiers only, within PostgreSQL's 63-byte limit.
_CHANNEL = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
CHANNEL_RULE = "a lower-case identifier (letters, digits, _; at most 63)"


def is_channel_name(channel: str) -> bool:
    """Whether ``channel`` is a NOTIFY channel the reactor accepts (CHANNEL_RULE)."""
    return _CHANNEL.match(channel) is not None


class ConfigError(ReactorError):
    """A configuration problem; its message is the one line shown to the user."""


@dataclass(frozen=True)
class DatabaseConfig:
    # Empty dsn: start the embedded PostgreSQL under embedded_dir (standalone mode).
    dsn: str = ""
    # The password never lives in a committed file: REACTOR_DATABASE__PASSWORD,
    # PGPASSWORD, or the first line of password_file.
    password_file: str = ""
    embedded_dir: str = ".reactor/pgdata"
    connect_timeout_seconds: float = 10.0
    pool_size: int = 4
    channel: str = "face_reactor"
    control_channel: str = "face_reactor_control"
    probe_interval_seconds: float = 15.0
    probe_timeout_seconds: float = 5.0
    reconnect_max_seconds: float = 30.0
    # Roles, besides the reactor's own, whose `reactor sweep` requests and `manual`
    # notifications are honoured (reactor.core.gate). Hints are honoured from anyone.
    control_roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImagesConfig:
    # The share root as this machine sees it: /mnt/vision_images or \\server\share.
    root: str = "photos"
    # Relative to root; the share counts as online only while this file exists.
    marker: str = ".reactor-share"
    require_mount: bool = False
    # fnmatch patterns matched against every folder of a path, case-insensitively.
    derived_folders: tuple[str, ...] = ("face_crops", "thumbnails", "thumbs", ".thumbnails")
    extensions: tuple[str, ...] = (
        "jpg",
        "jpeg",
        "png",
        "heic",
        "heif",
        "webp",
        "tif",
        "tiff",
        "bmp",
        "gif",
    )
    max_path_length: int = 1024
    # auto: register files found on the share into ai_metadata in standalone mode only.
    register_files: Literal["auto", "always", "never"] = "auto"
    # Deadline of each file-system call on the share (a folder listing, a stat, a photo's
    # read); past it the folder is stalled: io_stall for its photos (reactor.util.shareio).
    io_timeout_seconds: float = 60.0


@dataclass(frozen=True)
class DetectorConfig:
    model: Literal["auto", "hog", "cnn"] = "auto"
    scales: tuple[float, ...] = (1.0, 0.75, 0.5, 0.33, 0.25)
    # The detection image is the original resized once, so that a face this size reaches
    # the model's smallest (HOG 68 px, CNN 80 px), within a pixel budget per model
    # (see cascade.choose_resolution).
    min_face_px: int = 40
    # Where the budget has room, a photo is enlarged up to this factor even past what
    # min_face_px needs (x2: faces down to 34 px in a 500x375 photo); 1.0: only as far as
    # min_face_px needs.
    max_enlargement: float = 2.0
    # HOG: 2560x1920 for a 4000x3000 photo, where the smallest face found is 100 px.
    max_detect_pixels: int = 4_915_200
    # CNN on a GPU: its memory grows with the pixels; 4 Mpx fits a 4 GB card.
    cnn_max_detect_pixels: int = 4_000_000
    # What the GPU was learned to hold, kept per card across restarts (a JSON file, relative
    # to the working directory like database.embedded_dir); "": kept in memory only.
    gpu_budget_file: str = ".reactor/gpu-budget.json"
    # Detector children: "auto" is one per core on a CPU-only dlib, one per GPU on CUDA.
    workers: int | Literal["auto"] = "auto"
    # Images of one detection size scanned in one CNN call (reactor.detector.batching):
    # "auto" fits as many as the CNN pixel budget holds, at most 8, on a GPU, and is off
    # on a CPU-only dlib; a number forces that many, on a CPU too.
    batch_size: int | Literal["auto"] = "auto"
    # One new photo with lanes idle: those lanes detect parts of it side by side (overlapping
    # tiles, faces merged across the seams: reactor.detector.tiles), for its latency.
    share_idle_lanes: bool = True
    # Cards with less memory than this (MiB) make dlib choose its smallest cuDNN
    # algorithms (dlib issue 1126: slower, but a 4 GB card then fits); 0: never.
    prefer_smallest_algorithms_below_mb: int = 6144
    # HOG boxes scoring below this are confirmed by CNN on a crop, or dropped.
    weak_score: float = 0.5
    # HOG boxes scoring from this up to 0.0 (dlib's own threshold) are scored again at the
    # other thirds of a pyramid step and kept if they reach 0.0 there (then checked as any
    # weak box): a face near the threshold scores up to 0.4 higher or lower as its size
    # falls between HOG's pyramid levels (cascade.rescore_factors). 0.0: never.
    hog_min_score: float = -0.25
    encode_jitters: int = 1
    timeout_seconds: float = 120.0
    startup_timeout_seconds: float = 120.0
    max_start_failures: int = 3
    # Decompression-bomb guard, in pixels of the original image.
    max_pixels: int = 150_000_000
    # A file larger than this is too_large before a byte of it is read.
    max_file_bytes: int = 200 * 1024 * 1024
    # Address-space limit of a CPU detector child (RLIMIT_AS, Linux), so a bomb fails its
    # image (oom) instead of waking the OOM killer; 0 = no limit. Not applied on CUDA,
    # whose driver reserves far more address space than it uses.
    max_memory_mb: int = 8192
    # Import path of the engine run in the child. Only tests point this elsewhere.
    engine: str = "reactor.detector.engine"


@dataclass(frozen=True)
class RetryConfig:
    base_seconds: float = 60.0
    multiplier: float = 2.0
    max_delay_seconds: float = 3600.0
    jitter: float = 0.2
    max_attempts: int = 5
    # Permanent error types (corrupt, unsupported, too_large) get fewer tries.
    max_attempts_permanent: int = 2


@dataclass(frozen=True)
class WatcherConfig:
    enabled: bool = True
    observer: Literal["auto", "native", "polling"] = "auto"
    stability_seconds: float = 2.0
    network_stability_seconds: float = 15.0
    # How long the network client may show stale sizes and mtimes; -1: read it from the
    # mount options (actimeo, acregmax) or use the filesystem type's default (mounts.py).
    attribute_cache_seconds: float = -1.0
    scan_interval_seconds: float = 60.0
    # More than this fraction of known files vanishing at once is treated as an outage.
    vanish_fraction: float = 0.2
    vanish_min_files: int = 20
    ignore_patterns: tuple[str, ...] = (
        ".*",
        "@eaDir",
        "#recycle",
        "#snapshot",
        "._*",
        "*.part",
        "*.tmp",
        "*.crdownload",
        "~$*",
    )


@dataclass(frozen=True)
class SweepConfig:
    interval_seconds: float = 300.0
    page_size: int = 1000
    # How often to look for work while the listener is disconnected.
    poll_seconds: float = 30.0
    # Orphans (results and failures whose ai_metadata row is gone) are marked, and
    # purged only after this long, if still orphaned (reactor.store.orphans).
    orphan_grace_hours: float = 72.0
    # The sweeps purge at most this many orphans per table in any window of
    # orphan_purge_window_hours, and no more than this fraction of the table once more
    # than orphan_purge_min are due (reactor_orphan_purges keeps the count); past the
    # bound a sweep purges nothing and holds them until `reactor repair --purge-orphans`.
    orphan_purge_max: int = 1000
    orphan_purge_max_fraction: float = 0.05
    orphan_purge_min: int = 20
    orphan_purge_window_hours: float = 24.0
    # The full walk (every row of ai_metadata and every result, reactor.core.sweep) runs
    # this often; the regular sweep reads only the change log in between.
    walk_interval_hours: float = 24.0
    # Keyset pages per chunk of the walk, and the pause between chunks (it yields the
    # sweep lock and the database to everything else).
    walk_chunk_pages: int = 10
    walk_pause_seconds: float = 1.0


@dataclass(frozen=True)
class LoggingConfig:
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"
    # Identical failures inside this window are counted, not logged again.
    rate_limit_seconds: float = 60.0


@dataclass(frozen=True)
class HealthConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9478
    heartbeat_seconds: float = 10.0


@dataclass(frozen=True)
class ServiceConfig:
    # Empty: hostname and pid.
    instance_id: str = ""
    queue_size: int = 10_000
    # Longer than detector.timeout_seconds, so the image in flight can finish.
    shutdown_grace_seconds: float = 150.0
    lease_seconds: float = 60.0


@dataclass(frozen=True)
class Config:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    watcher: WatcherConfig = field(default_factory=WatcherConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    # Where the values came from, for messages; not a key.
    source: str = field(default="<defaults>", compare=False)

    @property
    def embedded(self) -> bool:
        return not self.database.dsn

    @property
    def register_files(self) -> bool:
        mode = self.images.register_files
        return mode == "always" or (mode == "auto" and self.embedded)


SECTIONS: dict[str, type[Any]] = {
    f.name: typing.get_type_hints(Config)[f.name] for f in dataclasses.fields(Config) if f.name != "source"
}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if isinstance(tp, type):
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(tp.__name__, tp.__name__)
    return str(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check one TOML value against a field type; return the typed value."""
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise bad
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise bad
        item = typing.get_args(tp)[0]
        items = []
        for i, v in enumerate(value):
            try:
                items.append(_coerce(v, item, where))
            except ConfigError:
                raise ConfigError(
                    f"{where}: expected {_type_name(tp)}, got {type(v).__name__} {v!r} at position {i + 1}"
                ) from None
        return tuple(items)
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(tp)
        for member in members:
            try:
                return _coerce(value, member, where)
            except ConfigError:
                continue
        raise ConfigError(
            f"{where}: expected {' or '.join(_type_name(m) for m in members)}, got {type(value).__name__} {value!r}"
        )
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise TypeError(f"unsupported config type {tp}")


def _parse_env(raw: str, tp: Any) -> Any:
    """Environment values are strings; read lists as JSON or comma lists."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        stripped = raw.strip()
        if stripped.startswith("["):
            return json.loads(stripped)
        return [_parse_env(p.strip(), typing.get_args(tp)[0]) for p in stripped.split(",") if p.strip()]
    if tp is bool:
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        return raw
    if tp is int or (typing.get_origin(tp) in (typing.Union, types.UnionType) and int in typing.get_args(tp)):
        try:
            return int(raw)
        except ValueError:
            return raw
    if tp is float:
        try:
            return float(raw)
        except ValueError:
            return raw
    return raw


# Keys that earlier versions had, and what to set instead.
_REPLACED_KEYS = {
    ("detector", "max_dimension"): "no longer used; the detection size comes from detector.min_face_px and "
    "detector.max_detect_pixels (remove the key)",
    ("detector", "max_upsample"): "no longer used; the photo is resized once to the size detector.min_face_px "
    "needs, within detector.max_detect_pixels (remove the key)",
}


def _build_section(name: str, cls: type[Any], values: Mapping[str, Any], origin: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    if name == "database" and "password" in values:
        raise ConfigError(f"{origin}: [database] password: {dsn_mod.PASSWORD_ADVICE}")
    for key in values:
        if (name, key) in _REPLACED_KEYS:
            raise ConfigError(f"{origin}: [{name}] {key}: {_REPLACED_KEYS[name, key]}")
        if key not in known:
            raise ConfigError(f"{origin}: [{name}] {key}: unknown key; known keys are {', '.join(sorted(known))}")
    kwargs = {k: _coerce(v, hints[k], f"{origin}: [{name}] {k}") for k, v in values.items()}
    return cls(**kwargs)


def known_env() -> list[str]:
    """Every REACTOR_* variable the reactor reads."""
    names = [CONFIG_ENV, PASSWORD_ENV]
    for section, cls in SECTIONS.items():
        names += [f"{ENV_PREFIX}{section.upper()}__{f.name.upper()}" for f in dataclasses.fields(cls)]
    return names


def _check_env_names(env: Mapping[str, str]) -> None:
    """A mistyped variable would be ignored silently (and, without a dsn, an embedded database
    started in place of the real one): refuse it like an unknown key in the file."""
    known = known_env()
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX) or var in known or var.startswith(TEST_ENV_PREFIX):
            continue
        close = difflib.get_close_matches(var, known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "see config.toml for the keys"
        raise ConfigError(
            f"environment variable {var}: unknown; {hint} (variables are REACTOR_<SECTION>__<KEY>, "
            f"with two underscores)"
        )


def _env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Typed values from REACTOR_<SECTION>__<KEY>; an error names the variable."""
    out: dict[str, dict[str, Any]] = {}
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            var = f"{ENV_PREFIX}{section.upper()}__{f.name.upper()}"
            if var in env:
                where = f"environment variable {var} ([{section}] {f.name})"
                try:
                    raw = _parse_env(env[var], hints[f.name])
                except json.JSONDecodeError:
                    raise ConfigError(
                        f"{where}: expected {_type_name(hints[f.name])} as JSON or a comma list, got {env[var]!r}"
                    ) from None
                out.setdefault(section, {})[f.name] = _coerce(raw, hints[f.name], where)
    return out


def config_path(explicit: str | None, env: Mapping[str, str]) -> Path | None:
    """--config wins, then REACTOR_CONFIG, then ./config.toml if it exists."""
    if explicit:
        return Path(explicit)
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def load(path: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    file_values: dict[str, Any] = {}
    origin = "<defaults>"
    if path is not None:
        origin = str(path)
        try:
            with open(path, "rb") as fh:
                file_values = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{origin}: config file not found; pass --config or set {CONFIG_ENV}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{origin}: not valid TOML: {exc}") from None
    for section, value in file_values.items():
        if section not in SECTIONS:
            raise ConfigError(f"{origin}: [{section}]: unknown section; known sections are {', '.join(SECTIONS)}")
        if not isinstance(value, dict):
            raise ConfigError(f"{origin}: {section}: expected a [{section}] table")
    _check_env_names(env)
    overrides = _env_overrides(env)
    sections: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        # The file's values are checked on their own so that an error names the file;
        # environment values were checked (naming the variable) by _env_overrides.
        built = _build_section(section, cls, dict(file_values.get(section, {})), origin)
        sections[section] = dataclasses.replace(built, **overrides.get(section, {}))
    config = Config(**sections, source=f"{origin} + environment" if overrides else origin)
    _validate(config)
    _validate_dsn(config, "dsn" in overrides.get("database", {}), origin)
    return config


def _validate_dsn(config: Config, from_env: bool, origin: str) -> None:
    if not config.database.dsn:
        return
    where = "environment variable REACTOR_DATABASE__DSN" if from_env else f"{origin}: [database] dsn"
    try:
        dsn_mod.parse(config.database.dsn)
    except dsn_mod.DsnError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _validate(config: Config) -> None:
    where = config.source
    det = config.detector
    if not det.scales or any(not 0 < s <= 1 for s in det.scales):
        raise ConfigError(f"{where}: [detector] scales: expected numbers in (0, 1], got {list(det.scales)}")
    if list(det.scales) != sorted(det.scales, reverse=True):
        raise ConfigError(f"{where}: [detector] scales: expected a decreasing list, got {list(det.scales)}")
    _validate_detector(det, where)
    if config.service.shutdown_grace_seconds <= det.timeout_seconds:
        raise ConfigError(
            f"{where}: [service] shutdown_grace_seconds: expected more than detector.timeout_seconds "
            f"({det.timeout_seconds}), so the image in flight can finish"
        )
    for key in ("channel", "control_channel"):
        channel = getattr(config.database, key)
        if not is_channel_name(channel):
            raise ConfigError(f"{where}: [database] {key}: expected {CHANNEL_RULE}, got {channel!r}")
    cache = config.watcher.attribute_cache_seconds
    if cache != -1.0 and cache < 0:
        raise ConfigError(
            f"{where}: [watcher] attribute_cache_seconds: expected -1 (read it from the mount) or seconds >= 0, "
            f"got {cache}"
        )
    for name, value in (("queue_size", config.service.queue_size), ("lease_seconds", config.service.lease_seconds)):
        if value <= 0:
            raise ConfigError(f"{where}: [service] {name}: expected a positive number, got {value}")
    sweep = config.sweep
    for name, number in (
        ("orphan_grace_hours", sweep.orphan_grace_hours),
        ("orphan_purge_max", sweep.orphan_purge_max),
        ("orphan_purge_min", sweep.orphan_purge_min),
    ):
        if number < 0:
            raise ConfigError(f"{where}: [sweep] {name}: expected zero or more, got {number}")
    if not 0 <= sweep.orphan_purge_max_fraction <= 1:
        raise ConfigError(
            f"{where}: [sweep] orphan_purge_max_fraction: expected a number in [0, 1], "
            f"got {sweep.orphan_purge_max_fraction}"
        )
    if sweep.orphan_purge_window_hours <= 0:
        raise ConfigError(
            f"{where}: [sweep] orphan_purge_window_hours: expected a positive number of hours, "
            f"got {sweep.orphan_purge_window_hours}"
        )


def cpu_cores() -> int:
    """The cores this process may run on (its affinity where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


# More photos in one CNN call than this only adds GPU memory, not speed.
MAX_BATCH_SIZE = 64


def _validate_detector(det: DetectorConfig, where: str) -> None:
    for key in ("min_face_px", "max_detect_pixels", "cnn_max_detect_pixels", "max_enlargement"):
        if getattr(det, key) <= 0:
            raise ConfigError(f"{where}: [detector] {key}: expected a positive number, got {getattr(det, key)}")
    if det.hog_min_score > 0.0:
        raise ConfigError(
            f"{where}: [detector] hog_min_score: expected 0.0 (dlib's own threshold) or below, "
            f"got {det.hog_min_score}; HOG boxes between it and 0.0 are scored again"
        )
    if det.batch_size != "auto" and not 1 <= det.batch_size <= MAX_BATCH_SIZE:
        raise ConfigError(
            f'{where}: [detector] batch_size: expected "auto" or 1 to {MAX_BATCH_SIZE}, got {det.batch_size}; '
            "it is how many photos of one size the CNN scans in one call"
        )
    if det.prefer_smallest_algorithms_below_mb < 0:
        raise ConfigError(
            f"{where}: [detector] prefer_smallest_algorithms_below_mb: expected 0 (never) or a size in MiB, "
            f"got {det.prefer_smallest_algorithms_below_mb}"
        )
    if det.workers == "auto":
        return
    cores = cpu_cores()
    if not 1 <= det.workers <= cores:
        raise ConfigError(
            f'{where}: [detector] workers: expected "auto" or 1 to {cores} (the cores of this machine), '
            f"got {det.workers}; each worker is a detector process that keeps one core busy"
        )


def database_password(config: Config, env: Mapping[str, str] | None = None) -> str | None:
    """The password from the environment or the password file; None when neither is set."""
    env = os.environ if env is None else env
    if env.get(PASSWORD_ENV):
        return env[PASSWORD_ENV]
    if config.database.password_file:
        try:
            return Path(config.database.password_file).read_text().splitlines()[0].strip()
        except (OSError, IndexError) as exc:
            raise ConfigError(
                f"[database] password_file: cannot read {config.database.password_file}: {exc}; "
                "point it at a readable file whose first line is the password"
            ) from None
    return env.get("PGPASSWORD") or None
