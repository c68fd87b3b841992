"""A static check that code runs on Linux and Windows: no platform-only API outside a platform branch.

CI runs on Linux only, so a call Windows lacks (``loop.add_reader``, ``os.killpg``, ``fcntl``)
would pass every test and fail on the GPU box. This walks the syntax tree of each module and
reports every use of such an API that is not inside a branch on the platform:

    if sys.platform == "win32": ...          else: ...        (also !=, startswith, os.name)
    if not sys.platform.startswith("linux"):
        return                                # the rest of the block is Linux only
    x if sys.platform == "win32" else y
    if hasattr(os, "killpg"): ...             try: import fcntl / except ImportError: ...

``python -m tests.portability [PATH ...]`` prints the findings (default: the reactor package).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

POSIX, WINDOWS = "posix", "windows"
ANY = frozenset({POSIX, WINDOWS})

# Modules that do not exist on the other platform.
MODULES = {
    **dict.fromkeys(
        (
            "fcntl",
            "resource",
            "termios",
            "pwd",
            "grp",
            "pty",
            "tty",
            "posix",
            "syslog",
            "crypt",
            "spwd",
            "nis",
            "asyncio.unix_events",
        ),
        POSIX,
    ),
    **dict.fromkeys(("winreg", "msvcrt", "_winapi", "winsound", "_overlapped", "asyncio.windows_events"), WINDOWS),
}
# module.attribute that exists on one platform only (or, for signal 0, means something else).
MODULE_ATTRIBUTES = {
    **{
        ("os", a): POSIX
        for a in (
            "killpg",
            "fork",
            "forkpty",
            "setsid",
            "setpgid",
            "getpgid",
            "setpgrp",
            "getuid",
            "geteuid",
            "getgid",
            "getegid",
            "pidfd_open",
            "mkfifo",
            "sysconf",
            "statvfs",
            "fstatvfs",
            "wait3",
            "wait4",
            "WNOHANG",
            "nice",
            "getloadavg",
            "sched_getaffinity",
            "sched_setaffinity",
            "fchown",
            "chown",
            "lchown",
            "posix_spawn",
            "register_at_fork",
            "getpriority",
            "setpriority",
            "O_NONBLOCK",
            "sync",
        )
    },
    **{
        ("signal", a): POSIX
        for a in (
            "SIGKILL",
            "SIGHUP",
            "SIGQUIT",
            "SIGUSR1",
            "SIGUSR2",
            "SIGCHLD",
            "SIGALRM",
            "SIGPIPE",
            "SIGSTOP",
            "SIGCONT",
            "SIGWINCH",
            "SIGTSTP",
            "alarm",
            "setitimer",
            "getitimer",
            "pause",
            "pthread_kill",
            "pthread_sigmask",
            "sigwait",
            "sigtimedwait",
            "sigwaitinfo",
            "siginterrupt",
            "sigpending",
            "SIG_BLOCK",
        )
    },
    **{("select", a): POSIX for a in ("epoll", "poll", "kqueue", "devpoll")},
    **{("asyncio", a): POSIX for a in ("get_child_watcher", "set_child_watcher", "ThreadedChildWatcher")},
    **{
        ("ctypes", a): WINDOWS
        for a in (
            "windll",
            "WinDLL",
            "oledll",
            "OleDLL",
            "WinError",
            "get_last_error",
            "set_last_error",
            "FormatError",
            "HRESULT",
        )
    },
    **{("signal", a): WINDOWS for a in ("SIGBREAK", "CTRL_C_EVENT", "CTRL_BREAK_EVENT")},
    **{("os", a): WINDOWS for a in ("startfile", "add_dll_directory", "O_BINARY")},
    **{
        ("subprocess", a): WINDOWS
        for a in ("STARTUPINFO", "CREATE_NEW_PROCESS_GROUP", "CREATE_NO_WINDOW", "DETACHED_PROCESS")
    },
    **{
        ("asyncio", a): WINDOWS
        for a in ("ProactorEventLoop", "WindowsSelectorEventLoopPolicy", "WindowsProactorEventLoopPolicy")
    },
}
# Methods by name, whatever the object: event-loop calls the Windows loops lack, libc calls.
METHODS = {
    **dict.fromkeys(
        (
            "add_reader",
            "remove_reader",
            "add_writer",
            "remove_writer",
            "add_signal_handler",
            "remove_signal_handler",
            "prctl",
            "malloc_trim",
            "mallopt",
        ),
        POSIX,
    ),
}


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    api: str
    platform: str  # the only platform that has it

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.api} exists on {self.platform} only; put it in a platform branch"


def _platform_test(test: ast.expr) -> tuple[frozenset[str], frozenset[str]]:
    """The platforms on which ``test`` can be true, and those on which it can be false.

    A test that says nothing about the platform can be either anywhere: (ANY, ANY).
    """
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        true, false = _platform_test(test.operand)
        return false, true
    if isinstance(test, ast.BoolOp):
        parts = [_platform_test(v) for v in test.values]
        if isinstance(test.op, ast.And):  # true only where every part can be; false where any can be
            return frozenset.intersection(*(t for t, _ in parts)), frozenset.union(*(f for _, f in parts))
        return frozenset.union(*(t for t, _ in parts)), frozenset.intersection(*(f for _, f in parts))
    where = _platform_of(test)
    if where is None:
        return ANY, ANY
    if isinstance(test, ast.Compare) and isinstance(test.ops[0], ast.NotEq | ast.IsNot):
        return ANY - where, where
    return where, ANY - where


def _platform_of(test: ast.expr) -> frozenset[str] | None:
    """For ``sys.platform == "win32"`` and its kin: where the comparison (as ==) holds."""
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.comparators[0], ast.Constant):
        if not isinstance(test.ops[0], ast.Eq | ast.Is | ast.NotEq | ast.IsNot):
            return None
        subject, value = ast.unparse(test.left), test.comparators[0].value
        windows = {("sys.platform", "win32"), ("os.name", "nt"), ("platform.system()", "Windows")}
        posix = {
            ("os.name", "posix"),
            ("sys.platform", "linux"),
            ("sys.platform", "darwin"),
            ("platform.system()", "Linux"),
        }
        if (subject, value) in windows:
            return frozenset({WINDOWS})
        if (subject, value) in posix:
            return frozenset({POSIX})
        return None
    if (
        isinstance(test, ast.Call)
        and isinstance(test.func, ast.Attribute)
        and test.func.attr == "startswith"
        and ast.unparse(test.func.value) == "sys.platform"
        and test.args
        and isinstance(test.args[0], ast.Constant)
    ):
        return frozenset({WINDOWS}) if str(test.args[0].value).startswith("win") else frozenset({POSIX})
    return None


def _feature_test(test: ast.expr) -> bool:
    """``hasattr(os, "killpg")`` (or ``and`` of such): the body runs only where the API exists."""
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        return any(_feature_test(v) for v in test.values)
    return isinstance(test, ast.Call) and isinstance(test.func, ast.Name) and test.func.id == "hasattr"


def _ends_block(body: list[ast.stmt]) -> bool:
    return bool(body) and isinstance(body[-1], ast.Return | ast.Raise | ast.Continue | ast.Break)


class _Walker:
    def __init__(self, path: str) -> None:
        self.path = path
        self.findings: list[Finding] = []

    def block(self, stmts: Iterable[ast.stmt], where: frozenset[str]) -> None:
        for stmt in stmts:
            if isinstance(stmt, ast.If) and (cond := _platform_test(stmt.test)) != (ANY, ANY):
                true, false = cond
                self.node(stmt.test, where)
                self.block(stmt.body, where & true)
                self.block(stmt.orelse, where & false)
                if _ends_block(stmt.body) and not stmt.orelse:
                    where = where & false  # `if not linux: return` narrows the rest of the block
                continue
            if isinstance(stmt, ast.If) and _feature_test(stmt.test):
                self.block(stmt.body, frozenset())
                self.block(stmt.orelse, where)
                continue
            if isinstance(stmt, ast.Try) and _catches_import_error(stmt):
                self.block(stmt.body, frozenset())  # an optional import, and its fallback below
                for handler in stmt.handlers:
                    self.block(handler.body, where)
                self.block(stmt.orelse, where)
                self.block(stmt.finalbody, where)
                continue
            self.node(stmt, where)

    def node(self, node: ast.AST, where: frozenset[str]) -> None:
        """Check ``node`` and its children, following nested blocks and conditional expressions."""
        self.check(node, where)
        for field, value in ast.iter_fields(node):
            if isinstance(value, list) and value and all(isinstance(v, ast.stmt) for v in value):
                self.block(value, where)
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, ast.AST):
                        self.node(item, where)
            elif isinstance(value, ast.AST):
                if isinstance(node, ast.IfExp) and field in ("body", "orelse"):
                    true, false = _platform_test(node.test)
                    self.node(value, where & (true if field == "body" else false))
                    continue
                self.node(value, where)

    def check(self, node: ast.AST, where: frozenset[str]) -> None:
        for api, platform in _uses(node):
            if where - {platform}:  # reachable on a platform that lacks it
                self.findings.append(Finding(self.path, getattr(node, "lineno", 0), api, platform))


def _catches_import_error(stmt: ast.Try) -> bool:
    names = {ast.unparse(h.type) for h in stmt.handlers if h.type is not None}
    return bool(names & {"ImportError", "ModuleNotFoundError", "(ImportError, AttributeError)"})


def _uses(node: ast.AST) -> Iterator[tuple[str, str]]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name in MODULES:
                yield f"import {alias.name}", MODULES[alias.name]
    elif isinstance(node, ast.ImportFrom) and node.module:
        if node.module in MODULES:
            yield f"from {node.module} import ...", MODULES[node.module]
        for alias in node.names:
            if (node.module, alias.name) in MODULE_ATTRIBUTES:
                yield f"{node.module}.{alias.name}", MODULE_ATTRIBUTES[(node.module, alias.name)]
    elif isinstance(node, ast.Attribute):
        owner = ast.unparse(node.value)
        if (owner, node.attr) in MODULE_ATTRIBUTES:
            yield f"{owner}.{node.attr}", MODULE_ATTRIBUTES[(owner, node.attr)]
        elif node.attr in METHODS:
            yield f"{owner}.{node.attr}", METHODS[node.attr]
    elif isinstance(node, ast.Call) and ast.unparse(node.func) == "os.kill" and len(node.args) == 2:
        sig = node.args[1]
        if isinstance(sig, ast.Constant) and sig.value == 0:
            # A liveness probe on POSIX; on Windows signal 0 is CTRL_C_EVENT, sent to a console group.
            yield "os.kill(pid, 0)", POSIX
    elif isinstance(node, ast.Call) and ast.unparse(node.func).endswith("get_context") and node.args:
        method = node.args[0]
        if isinstance(method, ast.Constant) and method.value in ("fork", "forkserver"):
            yield f"get_context({method.value!r})", POSIX


def check_source(source: str, path: str) -> list[Finding]:
    walker = _Walker(path)
    walker.block(ast.parse(source, path).body, ANY)
    return walker.findings


def check_paths(paths: Iterable[Path]) -> list[Finding]:
    findings: list[Finding] = []
    for root in paths:
        files = sorted(root.rglob("*.py")) if root.is_dir() else [root]
        for file in files:
            findings.extend(check_source(file.read_text(encoding="utf-8"), str(file)))
    return findings


def main(argv: list[str]) -> int:
    roots = [Path(a) for a in argv] or [Path(__file__).resolve().parent.parent / "reactor"]
    findings = check_paths(roots)
    for finding in findings:
        print(finding)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
