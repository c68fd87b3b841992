import configparser
from pathlib import Path

from reactor.config import load

ROOT = Path(__file__).resolve().parent.parent


def _seconds(value: str) -> float:
    value = value.strip()
    if value.endswith("min"):
        return float(value[:-3]) * 60
    return float(value.rstrip("s"))


def test_systemd_unit_restarts_and_outlasts_the_shutdown_grace() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(ROOT / "deploy" / "face-reactor.service")
    service = unit["Service"]
    assert service["Restart"] == "on-failure"
    assert service["KillMode"] == "mixed"
    config = load(ROOT / "config.toml", env={})
    stop_timeout = _seconds(service["TimeoutStopSec"])
    assert stop_timeout > config.service.shutdown_grace_seconds > config.detector.timeout_seconds
    assert service["ExecStart"].endswith(" run")


def test_windows_doc_waits_longer_than_the_grace() -> None:
    text = (ROOT / "deploy" / "windows-service.md").read_text()
    config = load(ROOT / "config.toml", env={})
    line = next(line for line in text.splitlines() if "AppStopMethodConsole" in line)
    assert int(line.split()[-1]) / 1000 > config.service.shutdown_grace_seconds
    assert "AppStdout" in text and "AppStderr" in text


def test_the_service_files_pass_the_password_as_a_file() -> None:
    """systemd: a credential read as database.password_file, no environment file; NSSM: a
    file only the service account reads, never AppEnvironmentExtra with the password."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(ROOT / "deploy" / "face-reactor.service")
    service = unit["Service"]
    assert service["LoadCredential"] == "db-password:/etc/face-reactor/db-password"
    assert service["Environment"] == "REACTOR_DATABASE__PASSWORD_FILE=%d/db-password"
    assert "EnvironmentFile" not in service and "PASSWORD=" not in service["Environment"]
    # The variable names a real key: the reactor reads the file it points at.
    config = load(None, env={"REACTOR_DATABASE__PASSWORD_FILE": "/run/credentials/face-reactor.service/db-password"})
    assert config.database.password_file.endswith("/db-password")
    text = (ROOT / "deploy" / "windows-service.md").read_text()
    assert "password_file" in text and "AppEnvironmentExtra REACTOR_DATABASE__PASSWORD" not in text
