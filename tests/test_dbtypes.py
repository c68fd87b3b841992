"""The row count of a command tag (reactor.store.dbtypes.rows_affected)."""

from __future__ import annotations

import pytest

from reactor.store.dbtypes import rows_affected


@pytest.mark.parametrize(
    ("tag", "rows"),
    [("UPDATE 3", 3), ("DELETE 0", 0), ("INSERT 0 12", 12), ("SELECT 1", 1), ("CREATE TABLE", 0), ("LOCK", 0), ("", 0)],
)
def test_rows_affected(tag: str, rows: int) -> None:
    # A tag without a count (DDL, LOCK) is 0 rows, never a ValueError.
    assert rows_affected(tag) == rows
