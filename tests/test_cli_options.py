"""A number option out of its range is refused by the parser, naming the option, before
anything starts (handlers.common.whole / above_zero / zero_or_more: one home for them)."""

from __future__ import annotations

import pytest

from reactor import cli

REFUSED = (
    (["audit", "--sample", "-5"], "argument --sample: must be at least 0, not -5"),
    (["repair", "--sample", "x"], "argument --sample: 'x' is not a whole number"),
    (["deletions", "--sample", "-1"], "argument --sample: must be at least 0, not -1"),
    (["db", "import-legacy", "--page-size", "0"], "argument --page-size: must be at least 1, not 0"),
    (["similar", "a.jpg", "--limit", "0"], "argument --limit: must be at least 1, not 0"),
    (["similar", "a.jpg", "--face", "-1"], "argument --face: must be at least 0, not -1"),
    (["similar", "a.jpg", "--max-distance", "nan"], "argument --max-distance: must be a finite number, not nan"),
    (["similar", "a.jpg", "--max-distance", "0"], "argument --max-distance: must be above 0, not 0"),
    (["demo", "--timeout", "-1"], "argument --timeout: must be above 0, not -1"),
    (["sweep", "--timeout", "0"], "argument --timeout: must be above 0, not 0"),
    (["redetect", "--refresh", "--all", "--timeout", "-1"], "argument --timeout: must be 0 or more, not -1"),
)


@pytest.mark.parametrize(("argv", "message"), REFUSED, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_an_option_out_of_range_is_one_line_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"reactor {argv[0] if argv[0] != 'db' else 'db import-legacy'}: error: {message}"


def test_zero_is_no_limit_where_the_option_says_so() -> None:
    args = cli.build_parser().parse_args(["redetect", "--refresh", "--all", "--timeout", "0"])
    assert args.timeout == 0.0
