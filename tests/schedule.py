"""The order in which pytest-xdist hands the test files to its workers.

pyproject runs the suite with ``--dist loadfile --no-loadscope-reorder``: each file goes whole
to one worker, in collection order, the next file to whichever worker is free. The files
below start first, longest first; the many short files follow and fill the workers' ends, so
that the workers finish together (longest processing time first). Without this order xdist
sorts the files by their number of tests, which puts the few long end-to-end tests (Wine,
killed reactors, network shares) last, one worker running them alone at the end.

The list is of files whose tests take ~10 s or more on a quiet two-core machine
(``--durations``); a file not named here runs after them. A stale entry costs only balance.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

SLOWEST_FIRST: Sequence[str] = (
    "test_windows_wine.py",
    "test_faces.py",
    "test_detector_recall.py",
    "test_smb_faults.py",
    "test_network_share.py",
    "test_owner_path.py",
    "test_legacy.py",
    "test_reactor_crash.py",
    "test_windows_wine_run.py",
    "test_similar.py",
    "test_smb_share.py",
    "test_integrity.py",
    "test_detector_batching.py",
    "test_io_stall.py",
    "test_lint.py",
    "test_demo.py",
    "test_moves_vision.py",
    "test_windows_wine_detector.py",
    "test_detector_cli.py",
    "test_detector_faults.py",
    "test_reactor_processes.py",
    "test_orphans.py",
    "test_sql_blocks.py",
    "test_instance_lock.py",
    "test_portability.py",
    "test_production.py",
    "test_returns.py",
    "test_child_isolation.py",
    "test_watcher_standalone.py",
    "test_poison.py",
    "test_work_share.py",
)


def rank(path_name: str) -> int:
    """Where a file starts: its place in SLOWEST_FIRST, or after all of them."""
    try:
        return SLOWEST_FIRST.index(path_name)
    except ValueError:
        return len(SLOWEST_FIRST)


def order(items: list[pytest.Item]) -> None:
    """Sort in place, keeping the order of the tests inside each file (a stable sort)."""
    items.sort(key=lambda item: rank(item.path.name))
