"""The package's layers: every import goes down, and no CLI handler imports another.

From the bottom: the helpers every layer may use (``util`` and the top-level ``config``,
``errors``, ``failure_types``, ``logs`` and ``paths``), the detector, the store, watching the share, the core
loop, the operator's tools, the CLI handlers, and the CLI itself. A module may import its
own layer and the layers below it; a handler may import ``handlers.common`` and no other
handler. The rule is read from the source, so a new module cannot slip past it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "reactor"

# Lowest first. The top-level modules are named by their own name.
LAYERS: list[set[str]] = [
    {"util", "config", "errors", "failure_types", "logs", "paths"},
    {"detector"},
    {"store"},
    {"watch"},
    {"core"},
    {"ops"},
    {"handlers"},
    {"cli", "__main__"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
TOP_LEVEL = {"cli", "config", "errors", "failure_types", "logs", "paths", "__init__", "__main__"}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _room(path: Path) -> str:
    """The layer a file belongs to: its subpackage, or its own name at the top."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) for every reactor module this file imports."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "reactor":
                found.extend((node.lineno, f"reactor.{alias.name}") for alias in node.names)
            elif node.module.startswith("reactor."):
                found.append((node.lineno, node.module))
                found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names if alias.name.startswith("reactor."))
    return found


def _violations() -> list[str]:
    """One line per offending import statement."""
    bad: dict[str, str] = {}
    for path in _modules():
        room = _room(path)
        if room == "__init__":
            continue
        for line, module in _imports(path):
            parts = module.split(".")
            target = parts[1]
            if target not in RANK:
                continue  # a name imported from a package (``from reactor.store import db`` lists both)
            where = f"{path.relative_to(PACKAGE.parent)}:{line}"
            if RANK[target] > RANK[room]:
                bad.setdefault(where, f"{where} imports {module}: upwards ({room} -> {target})")
            if room == "handlers" and target == "handlers" and len(parts) > 2:
                own = path.stem
                if parts[2] not in ("common", own) and (PACKAGE / "handlers" / f"{parts[2]}.py").exists():
                    bad.setdefault(where, f"{where} imports {module}: a handler imports another handler")
    return list(bad.values())


def test_every_import_goes_down_the_layers() -> None:
    assert _violations() == []


def _database_access(path: Path) -> list[str]:
    """What a module does that only the store may: import the driver, load SQL blocks."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, "imports asyncpg") for a in node.names if a.name.split(".")[0] == "asyncpg")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "asyncpg":
                found.append((node.lineno, "imports asyncpg"))
            elif node.module == "reactor.store.sql" or (
                node.module == "reactor.store" and any(a.name == "sql" for a in node.names)
            ):
                found.append((node.lineno, "loads SQL blocks (reactor.store.sql)"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Queries":
            found.append((node.lineno, "builds Queries(...)"))
    return [f"{line} {what}" for line, what in sorted(found)]


def _outside_the_store() -> list[str]:
    """One line per place above the store that runs SQL its own way; the store's modules,
    the database bootstrap (reactor.store.db) among them, are the way in."""
    bad: list[str] = []
    for path in _modules():
        where = path.relative_to(PACKAGE.parent).as_posix()
        if _room(path) == "store":
            continue
        bad.extend(f"{where}:{what}" for what in _database_access(path))
    return bad


def test_only_the_store_imports_asyncpg_and_loads_sql_blocks() -> None:
    assert _outside_the_store() == []


def test_the_check_sees_sql_and_asyncpg_above_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "reactor"
    for room in ("store", "core"):
        (fake / room).mkdir(parents=True)
        (fake / room / "__init__.py").write_text("")
    source = 'import asyncpg\nfrom reactor.store.sql import Queries\n\nQ = Queries("x.sql")\n'
    (fake / "store" / "repo.py").write_text(source)
    (fake / "core" / "loop.py").write_text(source + "from reactor.store import db, sql\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert _outside_the_store() == [
        "reactor/core/loop.py:1 imports asyncpg",
        "reactor/core/loop.py:2 loads SQL blocks (reactor.store.sql)",
        "reactor/core/loop.py:4 builds Queries(...)",
        "reactor/core/loop.py:5 loads SQL blocks (reactor.store.sql)",
    ]


def test_every_module_lives_in_a_layer() -> None:
    """Only the CLI, the configuration, errors, failure types, logs and paths live at the top."""
    strays = [p.name for p in PACKAGE.glob("*.py") if p.stem not in TOP_LEVEL]
    assert strays == []
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert rooms - {"handlers"} <= {name for names in LAYERS for name in names}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from reactor.ops import audit\n", "upwards (store -> ops)"),
        ("from reactor.core.queue import ImageQueue\n", "upwards (store -> core)"),
    ],
)
def test_the_check_sees_an_upward_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, expected: str
) -> None:
    """The rule itself, on a stand-in package with one module that imports upwards."""
    fake = tmp_path / "reactor"
    (fake / "store").mkdir(parents=True)
    (fake / "store" / "__init__.py").write_text("")
    (fake / "store" / "x.py").write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    [violation] = _violations()
    assert expected in violation


def test_the_check_sees_a_handler_importing_another(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "reactor"
    (fake / "handlers").mkdir(parents=True)
    for name in ("common", "status", "doctor"):
        (fake / "handlers" / f"{name}.py").write_text("")
    (fake / "handlers" / "doctor.py").write_text(
        "from reactor.handlers.common import x\nfrom reactor.handlers.status import y\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    [violation] = _violations()
    assert "a handler imports another handler" in violation and ":2 " in violation
