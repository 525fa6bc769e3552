"""The outcome table and the status line, without a process or a database: only 0, 67 and 75
ever reach Postfix, and what it reads is one line, within its limit, led by a matching code."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bombom_pipe.outcomes import EX_NOUSER, EX_OK, EX_TEMPFAIL, TABLE, Outcome, status_line

#: RFC 3463 class digit for each exit code Postfix pipe(8) acts on: 0 delivered, 67 bounce
#: (no such user), 75 defer
CLASS = {EX_OK: "2", EX_NOUSER: "5", EX_TEMPFAIL: "4"}


def test_the_table_holds_every_outcome_and_only_codes_postfix_does_not_bounce_by_accident() -> None:
    assert set(TABLE) == set(Outcome)
    assert {o.exit_code for o in Outcome} <= {0, 67, 75}
    assert Outcome.TEMPFAIL.exit_code == 75 and Outcome.NOUSER.exit_code == 67
    for o in (Outcome.STORED, Outcome.DUPLICATE, Outcome.QUARANTINED, Outcome.BLOCKED):
        assert o.exit_code == 0, o  # a quarantined message is kept: success for Postfix


@pytest.mark.parametrize("outcome", list(Outcome))
def test_the_enhanced_status_code_agrees_with_the_exit_code(outcome: Outcome) -> None:
    assert re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", outcome.status)
    assert outcome.status[0] == CLASS[outcome.exit_code]


def test_a_short_text_is_kept_as_it_is() -> None:
    assert status_line(Outcome.STORED, "article 12") == "2.0.0 article 12"
    assert status_line(Outcome.TEMPFAIL, "database down") == "4.3.0 database down"
    assert status_line(Outcome.NOUSER, "") == "5.1.1"


def test_line_breaks_and_runs_of_space_become_one_space() -> None:
    text = "parser error:\r\nValueError\u2028at\x85line\t 3\x0b\x0c\x1c\x1d\x1e\x1f!"
    assert status_line(Outcome.QUARANTINED, text) == \
        "2.0.0 parser error: ValueError at line 3 !"


def test_a_long_text_is_cut_to_the_limit_and_says_so() -> None:
    line = status_line(Outcome.TEMPFAIL, "x" * 500)
    assert len(line) == 100 and line.endswith("...") and line.startswith("4.3.0 xxx")
    assert len(status_line(Outcome.TEMPFAIL, "x" * 500, limit=40)) == 40
    assert status_line(Outcome.STORED, "y" * 94) == "2.0.0 " + "y" * 94  # exactly 100: kept


@given(st.sampled_from(list(Outcome)), st.text(), st.integers(min_value=10, max_value=300))
def test_any_text_gives_one_line_within_the_limit_led_by_the_code(outcome: Outcome, text: str,
                                                                  limit: int) -> None:
    line = status_line(outcome, text, limit)
    assert line.splitlines() == [line]
    assert len(line) <= limit
    assert line.split(" ", 1)[0] == outcome.status
    assert line == line.strip()
