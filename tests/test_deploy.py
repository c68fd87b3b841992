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
