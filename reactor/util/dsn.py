"""database.dsn: a libpq URL (`postgresql://user@host:port/db`) or key/value pairs
(`host=db.lan port=5432 dbname=vision user=vision`), parsed and validated once.

Every error is one line that names host, port and database as parsed and never
contains the password. A password in the DSN is refused: it would end up in a file
or a process listing; it belongs in REACTOR_DATABASE__PASSWORD, PGPASSWORD or
database.password_file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlencode

SCHEMES = ("postgresql", "postgres")
PASSWORD_ADVICE = (
    "a password never goes in the configuration; set REACTOR_DATABASE__PASSWORD, PGPASSWORD "
    "or database.password_file instead"
)
EXAMPLE = "postgresql://vision@db.lan:5432/vision or host=db.lan port=5432 dbname=vision user=vision"
_KEY = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*")
_BRACKETED = re.compile(r"^\[([^\]]*)\](?::(.*))?$")


class DsnError(ValueError):
    """An unusable DSN; the message is one line without the password."""


@dataclass(frozen=True)
class Dsn:
    hosts: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    database: str = ""
    user: str = ""
    password: str = ""
    # Everything else (sslmode, application_name, ...), passed on as it is.
    options: dict[str, str] = field(default_factory=dict)
    form: str = "url"

    def describe(self) -> str:
        """host=... port=... database=..., as libpq would resolve them; no user, no password."""
        host = ",".join(self.hosts) or os.environ.get("PGHOST", "localhost")
        port = ",".join(self.ports) or os.environ.get("PGPORT", "5432")
        database = self.database or os.environ.get("PGDATABASE") or self.user or os.environ.get("PGUSER") or "postgres"
        return f"host={host} port={port} database={database}"

    def url(self) -> str:
        """The same target as a postgresql:// URL (what asyncpg reads), without any password."""
        query = dict(self.options)
        netloc = quote(self.user, safe="") + "@" if self.user else ""
        if any(h.startswith("/") for h in self.hosts):
            # A unix socket directory: libpq's URL form carries it in the query.
            query["host"] = ",".join(self.hosts)
            if self.ports:
                query["port"] = ",".join(self.ports)
        else:
            hosts = [f"[{h}]" if ":" in h else h for h in self.hosts] or [""]
            ports = list(self.ports) or [""] * len(hosts)
            if len(ports) == 1 and len(hosts) > 1:
                ports = ports * len(hosts)
            netloc += ",".join(h + (f":{p}" if p else "") for h, p in zip(hosts, ports, strict=False))
        text = f"postgresql://{netloc}/{quote(self.database, safe='')}"
        return text + ("?" + urlencode(query) if query else "")


def parse(text: str) -> Dsn:
    stripped = text.strip()
    if "://" in stripped:
        parsed = _parse_url(stripped)
    elif _KEY.match(stripped):
        parsed = _parse_pairs(stripped)
    else:
        guess = _parse_url("postgresql://" + stripped, check_scheme=False)
        extra = f"; and leave the password out: {PASSWORD_ADVICE}" if guess.password else ""
        raise DsnError(f"not a URL nor key=value pairs ({guess.describe()} as parsed); write it as {EXAMPLE}{extra}")
    _validate(parsed)
    return parsed


def peek(text: str) -> Dsn:
    """The DSN as read, without validating it: for messages and masking only."""
    stripped = text.strip()
    try:
        if "://" in stripped:
            return _parse_url(stripped, check_scheme=False)
        if _KEY.match(stripped):
            return _parse_pairs(stripped)
        return _parse_url("postgresql://" + stripped, check_scheme=False)
    except DsnError:
        return Dsn()


def _parse_url(text: str, *, check_scheme: bool = True) -> Dsn:
    scheme, _, rest = text.partition("://")
    if check_scheme and scheme.lower() not in SCHEMES:
        guess = _parse_url("postgresql://" + rest, check_scheme=False)
        raise DsnError(f"scheme {scheme!r} is not postgresql:// ({guess.describe()} as parsed); write it as {EXAMPLE}")
    rest, _, query_text = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hostspec = netloc.rpartition("@")
    user, _, password = userinfo.partition(":") if at else ("", "", "")
    hosts: list[str] = []
    ports: list[str] = []
    for spec in hostspec.split(",") if hostspec else []:
        bracketed = _BRACKETED.match(spec)
        host, port = (bracketed.group(1), bracketed.group(2) or "") if bracketed else spec.partition(":")[::2]
        hosts.append(unquote(host))
        ports.append(unquote(port))
    if not any(ports):
        ports = []
    values: dict[str, object] = {
        "hosts": tuple(hosts),
        "ports": tuple(ports),
        "database": unquote(path),
        "user": unquote(user),
        "password": unquote(password),
    }
    options: dict[str, str] = {}
    for key, value in parse_qsl(query_text, keep_blank_values=True):
        _set(values, options, key, value)
    return _build(values, options, "url")


def _build(values: dict[str, object], options: dict[str, str], form: str) -> Dsn:
    def text(key: str) -> str:
        return str(values.get(key, ""))

    def items(key: str) -> tuple[str, ...]:
        value = values.get(key, ())
        return tuple(str(v) for v in value) if isinstance(value, tuple) else ()

    return Dsn(
        hosts=items("hosts"),
        ports=items("ports"),
        database=text("database"),
        user=text("user"),
        password=text("password"),
        options=options,
        form=form,
    )


def _set(values: dict[str, object], options: dict[str, str], key: str, value: str) -> None:
    if key == "host":
        values["hosts"] = tuple(h for h in value.split(",") if h)
    elif key == "port":
        values["ports"] = tuple(p for p in value.split(",") if p)
    elif key in ("dbname", "database"):
        values["database"] = value
    elif key == "user":
        values["user"] = value
    elif key == "password":
        values["password"] = value
    else:
        options[key] = value


def _parse_pairs(text: str) -> Dsn:
    """libpq's keyword/value form: `key = value`, values optionally single-quoted with \\ escapes."""
    values: dict[str, object] = {}
    options: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _KEY.match(text, pos)
        if not match:
            got = text[pos:].split()[0].split("=")[0]
            raise DsnError(f"expected key=value at {got!r}; write it as {EXAMPLE}")
        key, pos = match.group(1), match.end()
        chars: list[str] = []
        if pos < len(text) and text[pos] == "'":
            pos += 1
            while pos < len(text) and text[pos] != "'":
                if text[pos] == "\\" and pos + 1 < len(text):
                    pos += 1
                chars.append(text[pos])
                pos += 1
            if pos >= len(text):
                raise DsnError(f"unterminated quoted value for {key}; write it as {EXAMPLE}")
            pos += 1
        else:
            while pos < len(text) and not text[pos].isspace():
                if text[pos] == "\\" and pos + 1 < len(text):
                    pos += 1
                chars.append(text[pos])
                pos += 1
        _set(values, options, key, "".join(chars))
    return _build(values, options, "key/value")


def _validate(dsn: Dsn) -> None:
    where = dsn.describe()
    if dsn.password:
        raise DsnError(f"holds a password ({where}): {PASSWORD_ADVICE}")
    for port in dsn.ports:
        if port and (not port.isdigit() or not 0 < int(port) < 65536):
            raise DsnError(f"port {port!r} is not a number from 1 to 65535 ({where}); fix the port in it")
    if len(dsn.ports) > 1 and len(dsn.ports) != len(dsn.hosts):
        raise DsnError(f"{len(dsn.hosts)} hosts but {len(dsn.ports)} ports ({where}); give one port, or one per host")
