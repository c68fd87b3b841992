"""The tree stays as the style guide says: ruff's lint and format, and mypy --strict over
the package, the tests and the benchmarks (pyproject's [tool.mypy] files)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True)


def test_ruff_finds_nothing_and_the_tree_is_formatted() -> None:
    pytest.importorskip("ruff")
    lint = _run("ruff", "check", "--no-cache", ".")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    formatted = _run("ruff", "format", "--check", "--no-cache", ".")
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr


def test_the_package_tests_and_benchmarks_type_check(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    result = _run("mypy", "--cache-dir", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
