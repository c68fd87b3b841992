"""Configuration: defaults, the documented file, environment overrides, and one-line
rejections that name the file (or variable), the key and the expected type."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from reactor import config as cfg
from reactor.config import ConfigError, database_password, load

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "reactor.toml"
    path.write_text(text)
    return path


def test_defaults_match_the_documented_config_toml() -> None:
    documented = load(REPO / "config.toml", env={})
    assert documented == load(None, env={})
    assert documented.embedded


def test_config_toml_documents_every_key() -> None:
    with open(REPO / "config.toml", "rb") as fh:
        documented = tomllib.load(fh)
    for section, cls in cfg.SECTIONS.items():
        keys = {f for f in cls.__dataclass_fields__}
        assert set(documented[section]) == keys, section


def test_environment_overrides_every_type(tmp_path: Path) -> None:
    path = write(tmp_path, '[images]\nroot = "/from/file"\n[detector]\nmodel = "hog"\n')
    env = {
        "REACTOR_IMAGES__ROOT": "/mnt/vision_images",
        "REACTOR_DATABASE__POOL_SIZE": "7",
        "REACTOR_RETRY__JITTER": "0.5",
        "REACTOR_WATCHER__ENABLED": "off",
        "REACTOR_IMAGES__EXTENSIONS": "jpg, png",
        "REACTOR_DETECTOR__SCALES": "[1.0, 0.5]",
    }
    config = load(path, env=env)
    assert config.images.root == "/mnt/vision_images"
    assert config.detector.model == "hog"
    assert config.database.pool_size == 7
    assert config.retry.jitter == 0.5
    assert config.watcher.enabled is False
    assert config.images.extensions == ("jpg", "png")
    assert config.detector.scales == (1.0, 0.5)
    assert config.source == f"{path} + environment"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[database]\nfoo = 1\n", "reactor.toml: [database] foo: unknown key; known keys are channel,"),
        ('[database]\npool_size = "four"\n', "reactor.toml: [database] pool_size: expected integer, got str 'four'"),
        ("[database]\npool_size = true\n", "[database] pool_size: expected integer, got bool True"),
        ('[retry]\njitter = "high"\n', "[retry] jitter: expected number, got str 'high'"),
        ("[watcher]\nenabled = 1\n", "[watcher] enabled: expected boolean, got int 1"),
        ('[detector]\nmodel = "gpu"\n', "[detector] model: expected 'auto' or 'hog' or 'cnn', got str 'gpu'"),
        ('[images]\nextensions = "jpg"\n', "[images] extensions: expected list of string, got str 'jpg'"),
        ("[images]\nextensions = [1]\n", "[images] extensions: expected list of string, got int 1 at position 1"),
        ("[nope]\na = 1\n", "reactor.toml: [nope]: unknown section; known sections are database,"),
        ("database = 3\n", "reactor.toml: database: expected a [database] table"),
        ("[database\n", "reactor.toml: not valid TOML"),
        ('[database]\npassword = "hunter2"\n', "[database] password: a password never goes in the configuration"),
        ('[database]\nchannel = "Face-Reactor"\n', "[database] channel: expected a lower-case identifier"),
        ("[detector]\nscales = [0.5, 1.0]\n", "[detector] scales: expected a decreasing list"),
        ("[detector]\nhog_min_score = 0.2\n", "[detector] hog_min_score: expected 0.0 (dlib's own threshold) or below"),
        ("[service]\nshutdown_grace_seconds = 10.0\n", "[service] shutdown_grace_seconds: expected more than"),
    ],
)
def test_rejections_name_file_key_and_type(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, text), env={})
    assert message in str(err.value)
    assert str(tmp_path / "reactor.toml") in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("REACTOR_DATABASE__POOL_SIZE", "abc", "[database] pool_size): expected integer, got str 'abc'"),
        ("REACTOR_WATCHER__ENABLED", "maybe", "[watcher] enabled): expected boolean"),
        ("REACTOR_DETECTOR__SCALES", "[1, 0.5", "[detector] scales): expected list of number as JSON or a comma list"),
        ("REACTOR_LOGGING__LEVEL", "loud", "[logging] level): expected 'debug' or 'info'"),
    ],
)
def test_environment_rejections_name_the_variable(var: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(None, env={var: value})
    assert str(err.value).startswith(f"environment variable {var} (")
    assert message in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found; pass --config or set REACTOR_CONFIG"):
        load(tmp_path / "absent.toml", env={})


def test_config_path_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert cfg.config_path(None, {}) is None
    (tmp_path / "config.toml").write_text("")
    assert cfg.config_path(None, {}) == Path("config.toml")
    assert cfg.config_path(None, {"REACTOR_CONFIG": "/etc/r.toml"}) == Path("/etc/r.toml")
    assert cfg.config_path("x.toml", {"REACTOR_CONFIG": "/etc/r.toml"}) == Path("x.toml")


def test_password_sources(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\nignored\n")
    config = load(None, env={"REACTOR_DATABASE__PASSWORD_FILE": str(secret)})
    assert database_password(config, env={}) == "from-file"
    assert database_password(config, env={"REACTOR_DATABASE__PASSWORD": "from-env"}) == "from-env"
    assert database_password(load(None, env={}), env={"PGPASSWORD": "pg"}) == "pg"
    assert database_password(load(None, env={}), env={}) is None
    broken = load(None, env={"REACTOR_DATABASE__PASSWORD_FILE": str(tmp_path / "none")})
    with pytest.raises(ConfigError, match=r"\[database\] password_file: cannot read"):
        database_password(broken, env={})


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("REACTOR_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "reactor", *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=120
    )


def test_cli_rejects_bad_config_in_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[database]\npool_size = "four"\n')
    result = run_cli("--config", str(path), "db", "sql", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == f"reactor: {path}: [database] pool_size: expected integer, got str 'four'\n"
    unknown = run_cli("db", "sql", env={"REACTOR_CONFIG": str(write(tmp_path, "[images]\nroot_dir = 'x'\n"))})
    assert unknown.returncode == 2
    assert unknown.stderr.startswith(f"reactor: {path}: [images] root_dir: unknown key;")
    assert unknown.stderr.count("\n") == 1


def test_command_line_errors_share_one_root() -> None:
    """`cli.main` catches ReactorError once: every error a user can cause derives from it."""
    from reactor.core.instance_lock import InstanceTaken
    from reactor.errors import ReactorError, UsageError
    from reactor.ops.audit import SchemaMissing
    from reactor.ops.demo import DemoError
    from reactor.ops.legacy_import import NotLegacy
    from reactor.ops.repair import RepairBusy
    from reactor.ops.similar import SimilarError
    from reactor.store.catalog import SchemaUnusable
    from reactor.store.db import DatabaseUnavailable
    from reactor.store.schema import PrivilegeError, SchemaError

    user_errors = (
        UsageError,
        ConfigError,
        DemoError,
        DatabaseUnavailable,
        SchemaUnusable,
        SchemaError,
        PrivilegeError,
        SchemaMissing,
        RepairBusy,
        SimilarError,
        NotLegacy,
        InstanceTaken,
    )
    assert [e.__name__ for e in user_errors if not issubclass(e, ReactorError)] == []
    assert {e.exit_code for e in user_errors} == {2}
