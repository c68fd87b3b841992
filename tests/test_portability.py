"""Linux CI cannot run Windows: make the difference visible. No API that one platform lacks
is used in ``reactor/`` outside a branch on the platform (tests/portability.py), and the package
type-checks as Windows sees it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.portability import check_paths, check_source
from tests.reactor_support import REPO


def findings(source: str) -> list[str]:
    return [f.api for f in check_source(textwrap.dedent(source), "planted.py")]


def test_the_package_uses_no_platform_only_api_outside_a_platform_branch() -> None:
    assert [str(f) for f in check_paths([REPO / "reactor"])] == []


def test_a_planted_add_reader_in_a_file_is_caught(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(
        "import asyncio\n\nasync def wait(fd: int) -> None:\n"
        "    loop = asyncio.get_running_loop()\n    loop.add_reader(fd, print)\n",
        encoding="utf-8",
    )
    [finding] = check_paths([tmp_path])
    assert (finding.path, finding.line, finding.api, finding.platform) == (str(planted), 5, "loop.add_reader", "posix")
    cli = subprocess.run(
        [sys.executable, "-m", "tests.portability", str(tmp_path)], cwd=REPO, capture_output=True, text=True
    )
    assert cli.returncode == 1
    assert f"{planted}:5: loop.add_reader exists on posix only" in cli.stdout


@pytest.mark.parametrize(
    ("source", "api"),
    [
        ("loop.add_signal_handler(signal.SIGTERM, stop)", "loop.add_signal_handler"),
        ("os.killpg(pgid, 15)", "os.killpg"),
        ("import fcntl", "import fcntl"),
        ("import resource", "import resource"),
        ("from resource import setrlimit", "from resource import ..."),
        ("libc.prctl(1, 9, 0, 0, 0)", "libc.prctl"),
        ("pid = os.fork()", "os.fork"),
        ("process.send_signal(signal.SIGKILL)", "signal.SIGKILL"),
        ("alive = os.kill(pid, 0)", "os.kill(pid, 0)"),
        ("ctx = multiprocessing.get_context('fork')", "get_context('fork')"),
        ("cores = len(os.sched_getaffinity(0))", "os.sched_getaffinity"),
        ("import winreg", "import winreg"),
        ("k32 = ctypes.WinDLL('kernel32')", "ctypes.WinDLL"),
        ("signal.signal(signal.SIGBREAK, handler)", "signal.SIGBREAK"),
    ],
)
def test_each_platform_only_api_is_caught(source: str, api: str) -> None:
    assert findings(f"def f():\n    {source}\n") == [api]


def test_platform_branches_are_understood() -> None:
    assert (
        findings("""
        import sys, os, signal, ctypes
        if sys.platform == "win32":
            signal.signal(signal.SIGBREAK, h)
        else:
            loop.add_signal_handler(signal.SIGTERM, h)
        if sys.platform != "win32":
            import fcntl
        if os.name == "nt":
            k = ctypes.WinDLL("kernel32")
        elif sys.platform.startswith("linux"):
            libc.prctl(1, signal.SIGKILL)

        def linux_only():
            if not sys.platform.startswith("linux"):
                return None
            return libc.malloc_trim(0)

        n = len(os.sched_getaffinity(0)) if sys.platform != "win32" else os.cpu_count()
        if sys.platform == "win32" or portable:
            signal.signal(signal.SIGINT, h)
        else:
            loop.add_signal_handler(signal.SIGINT, h)
        if sys.platform != "win32" and native:
            loop.add_reader(fd, cb)
        if hasattr(os, "killpg"):
            os.killpg(1, 15)
        try:
            import resource
        except ImportError:
            resource = None
        """)
        == []
    )


def test_a_branch_for_the_wrong_platform_is_caught() -> None:
    assert findings("""
        import sys
        if sys.platform == "win32":
            loop.add_reader(fd, cb)
        if sys.platform.startswith("linux"):
            pass
        else:
            libc.prctl(1, 9)
        def f():
            if sys.platform == "win32":
                return
            import winreg
        if sys.platform == "win32" or portable:
            loop.add_signal_handler(signal.SIGINT, h)
        """) == ["loop.add_reader", "libc.prctl", "import winreg", "loop.add_signal_handler"]


def test_the_package_type_checks_as_windows_sees_it(tmp_path: Path) -> None:
    """mypy narrows on sys.platform: the Windows branches are checked only with --platform win32."""
    pytest.importorskip("mypy")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--platform", "win32", "--cache-dir", str(tmp_path), "reactor"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
