"""Structured logging: JSON lines for a log shipper, a readable console on a TTY.

stdlib logging from libraries (asyncpg, watchdog) goes through the same structlog
pipeline. Every rendered event passes through ``redact`` last, so a DSN password
can never reach a log line, whichever field or message it hides in.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

# postgresql://user:secret@host -> postgresql://user:***@host
_DSN_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?=@)", re.IGNORECASE)
_KV_PASSWORD = re.compile(r"(?P<key>password\s*[=:]\s*)(?P<pw>'[^']*'|\"[^\"]*\"|\S+)", re.IGNORECASE)

_secrets: set[str] = set()


def register_secret(secret: str | None) -> None:
    """Remember a secret so that it is masked wherever it appears in a log line."""
    if secret:
        _secrets.add(secret)


# A registered secret at least this long is masked wherever it appears; a shorter one
# only as a whole word (a password "a" must not turn every "a" into "***"), and one
# shorter than MIN_WORD_SECRET only inside a DSN or a password=... pair.
MIN_FREE_SECRET = 8
MIN_WORD_SECRET = 4


def mask(text: str) -> str:
    text = _DSN_PASSWORD.sub(r"\g<scheme>***", text)
    text = _KV_PASSWORD.sub(r"\g<key>***", text)
    for secret in _secrets:
        if len(secret) >= MIN_FREE_SECRET:
            text = text.replace(secret, "***")
        elif len(secret) >= MIN_WORD_SECRET:
            text = re.sub(rf"(?<![\w]){re.escape(secret)}(?![\w])", "***", text)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(v) for v in value)
    return value


def redact(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    return {k: _redact_value(v) for k, v in event_dict.items()}


def _redact_line(_: WrappedLogger, __: str, rendered: Any) -> Any:
    """The last step: mask the rendered line too (tracebacks, renderer-added text)."""
    return mask(rendered) if isinstance(rendered, str) else rendered


def _logger_name(logger: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    record = event_dict.get("_record")
    if "logger" not in event_dict:
        event_dict["logger"] = record.name if record is not None else getattr(logger, "name", "reactor")
    return event_dict


def _order_keys(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    head = {k: event_dict.pop(k) for k in ("timestamp", "level", "event", "logger") if k in event_dict}
    return {**head, **event_dict}


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Set up structlog and route stdlib logging through it. Safe to call again."""
    stream = stream or sys.stdout
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        _logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Processor
    if use_json:
        renderer = structlog.processors.JSONRenderer(default=str)
        final: list[Processor] = [structlog.processors.format_exc_info, _order_keys, redact, renderer, _redact_line]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
        # The console renderer formats tracebacks itself, after `redact` has run.
        final = [redact, renderer, _redact_line]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_reactor", False):
            root.removeHandler(old)
    handler._reactor = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # asyncpg and watchdog are chatty at debug; their warnings still come through.
    for noisy in ("watchdog", "asyncio", "PIL"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
    # pgserver logs every pg_ctl command line at info; embedded_db_* events say enough.
    logging.getLogger("pgserver").setLevel(max(logging.WARNING, root.level))
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def get(name: str) -> structlog.stdlib.BoundLogger:
    # Positional: the stdlib factory names the logger; `logger=` would collide with wrap_logger's own argument.
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
