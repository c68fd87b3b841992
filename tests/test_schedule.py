"""The order the test files go to pytest-xdist's workers (tests/schedule.py) names real files."""

from __future__ import annotations

from pathlib import Path

from tests import schedule

TESTS = Path(__file__).resolve().parent


def test_every_file_in_the_schedule_exists_once() -> None:
    names = list(schedule.SLOWEST_FIRST)
    assert sorted(set(names)) == sorted(names)
    assert [name for name in names if not (TESTS / name).is_file()] == []


def test_the_files_named_go_first_in_their_order_and_the_rest_after() -> None:
    first, second = schedule.SLOWEST_FIRST[:2]
    assert schedule.rank(first) < schedule.rank(second) < schedule.rank("test_not_named.py")
