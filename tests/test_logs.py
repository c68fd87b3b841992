"""Structured logs: JSON lines with the documented keys, stdlib logging through the same
pipeline, and no password in any line, whatever carries it."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import asyncpg
import pytest

from reactor import config as cfg
from reactor import logs
from reactor.store import db

PASSWORD = "Tr0ub4dor&3"


class TtyStream(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    logs.configure(fmt="json", level="debug", stream=out)
    yield out
    logging.getLogger().handlers[:] = [h for h in logging.getLogger().handlers if not getattr(h, "_reactor", False)]


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_shape(stream: io.StringIO) -> None:
    logs.get("reactor.test").info("image_detected", path="a/b.jpg", faces=3, ms=41)
    (line,) = lines(stream)
    assert list(line)[:4] == ["timestamp", "level", "event", "logger"]
    assert line["event"] == "image_detected"
    assert line["logger"] == "reactor.test"
    assert line["level"] == "info"
    assert line["faces"] == 3 and line["path"] == "a/b.jpg"
    stamp = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00"))
    assert stamp.utcoffset() is not None and stamp.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_stdlib_logging_goes_through_the_pipeline(stream: io.StringIO) -> None:
    logging.getLogger("asyncpg.pool").warning("connection lost to %s", "db.lan")
    (line,) = lines(stream)
    assert line["event"] == "connection lost to db.lan"
    assert line["logger"] == "asyncpg.pool"
    assert line["level"] == "warning"


def test_dsn_password_is_masked_everywhere(stream: io.StringIO) -> None:
    dsn = f"postgresql://vision:{PASSWORD}@db.lan:5432/vision"
    log = logs.get("reactor.db")
    log.info("connecting", dsn=dsn, nested={"urls": [dsn]})
    log.info(f"connecting to {dsn}")
    logging.getLogger("asyncpg").error("connect failed: %s", dsn)
    log.info("libpq_style", conninfo=f"host=db.lan password={PASSWORD} dbname=vision")
    text = stream.getvalue()
    assert PASSWORD not in text
    assert "postgresql://vision:***@db.lan:5432/vision" in text
    assert len(lines(stream)) == 4


def test_registered_secret_is_masked_in_errors_and_tracebacks(stream: io.StringIO) -> None:
    """A password from the environment, echoed back inside an asyncpg error."""
    config = cfg.load(None, env={})
    env_password = "plain-" + PASSWORD
    logs.register_secret(env_password)
    error = asyncpg.InvalidPasswordError(f'password authentication failed: "{env_password}" rejected')
    log = logs.get("reactor.db")
    log.error("db_error", error=str(error), args=[env_password])
    try:
        raise error
    except asyncpg.PostgresError:
        log.exception("db_failed")
        logging.getLogger("asyncpg").exception("stdlib traceback")
    assert env_password not in stream.getvalue()
    assert "***" in stream.getvalue()
    assert config.database.dsn == ""


def test_unavailable_message_never_holds_the_password() -> None:
    config = cfg.load(None, env={})
    dsn = f"postgresql://vision:{PASSWORD}@127.0.0.1:9/vision"
    exc = db._unavailable(dsn, OSError(f"could not connect to {dsn}"), config)
    assert PASSWORD not in str(exc)
    assert "host=127.0.0.1 port=9 database=vision" in str(exc)
    assert config.embedded


def test_console_renderer_masks_tracebacks() -> None:
    out = TtyStream()
    logs.configure(fmt="auto", level="info", stream=out)
    try:
        secret = "console-" + PASSWORD
        logs.register_secret(secret)
        try:
            raise RuntimeError(f"bad password {secret}")
        except RuntimeError:
            logs.get("reactor.test").exception("failed", dsn=f"postgresql://u:{secret}@h/d")
        text = out.getvalue()
        assert "failed" in text and "RuntimeError" in text
        assert secret not in text
        assert not text.lstrip().startswith("{")
    finally:
        logging.getLogger().handlers[:] = [h for h in logging.getLogger().handlers if not getattr(h, "_reactor", False)]


def test_levels_filter(stream: io.StringIO) -> None:
    logs.configure(fmt="json", level="warning", stream=stream)
    log = logs.get("reactor.test")
    log.info("hidden")
    log.warning("shown")
    assert [line["event"] for line in lines(stream)] == ["shown"]


def test_short_passwords_do_not_garble_the_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "_secrets", set())
    for secret in ("a", "pw12", "a-long-secret"):
        logs.register_secret(secret)
    line = "a cat at pw12, not pw123; x-a-long-secret-y postgresql://u:a@db/v password=a"
    assert logs.mask(line) == "a cat at ***, not pw123; x-***-y postgresql://u:***@db/v password=***"
