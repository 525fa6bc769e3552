"""The judge alone (judge.py, pure): every stage's budget from one deadline, the overrun of a
CPU-bound stage quarantines, only the store stage may defer, deaths are counted."""

from __future__ import annotations

import pytest

from bombom_pipe.judge import (
    AUTH_BUDGET,
    MAX_DEATHS,
    PARSE_BUDGET,
    SIGKILL,
    SIGXCPU,
    Budget,
    Verdict,
    Watch,
    after_deaths,
)

B = Budget.of(60)  # parse 15 s CPU, auth 7.5 s CPU, store until deadline + 5 s


def watch(stage: str, cpu: float = 0.0) -> Watch:
    w = Watch(B, end=60.0, now=0.0)
    w.enter(stage, now=1.0, cpu=cpu)
    return w


def test_budgets_come_from_the_deadline() -> None:
    assert (B.parse_cpu, B.auth_cpu) == (15.0, 7.5)
    assert Budget.of(2).parse_cpu == Budget.of(2).auth_cpu == 1.0  # never below a second


@pytest.mark.parametrize(("stage", "limit", "reason"), [("parse", 15.0, PARSE_BUDGET),
                                                         ("auth", 7.5, AUTH_BUDGET)])
def test_a_cpu_bound_stage_over_its_budget_is_quarantined(stage: str, limit: float,
                                                          reason: str) -> None:
    w = watch(stage, cpu=3.0)
    assert w.check(10.0, 3.0 + limit) is None  # at the budget: still going
    assert w.check(10.0, 3.0 + limit + 0.1) == Verdict("quarantined", reason, counts=True)


@pytest.mark.parametrize("stage", ["parse", "auth"])
def test_at_the_deadline_a_working_stage_overran_and_a_starved_one_is_retried(stage: str
                                                                              ) -> None:
    assert watch(stage).check(60.0, 30.0).outcome == "quarantined"  # 30 s CPU of 59 s: working
    v = watch(stage).check(60.0, 1.0)  # 1 s CPU in 59 s: a loaded machine, not the message
    assert v.outcome == "tempfail" and "starved" in v.reason and v.counts


def test_only_the_store_stage_runs_past_the_deadline_and_then_defers() -> None:
    w = watch("store")
    assert w.check(60.0, 0.5) is None and w.check(64.9, 0.5) is None  # the database's grace
    v = w.check(65.0, 0.5)
    assert v.outcome == "tempfail" and v.counts
    assert watch("start").check(60.0, 0.0).outcome == "tempfail"  # never began: not counted
    assert not watch("start").check(60.0, 0.0).counts


def test_a_stopped_process_is_not_the_message_s_doing() -> None:
    v = watch("parse").check(5.0, 0.1, state="T")
    assert v.elsewhere and not v.counts


def test_how_a_process_died() -> None:
    assert watch("parse").died(SIGXCPU) == Verdict("quarantined", PARSE_BUDGET, counts=True)
    assert watch("auth").died(SIGXCPU).reason == AUTH_BUDGET
    v = watch("store").died(SIGXCPU)  # the backstop in the store stage is no overrun of ours
    assert v.outcome == "tempfail" and v.counts
    assert "signal 9 in stage parse" in watch("parse").died(SIGKILL).reason
    assert "ended without a verdict" in watch("store").died(None).reason


def test_deaths_end_in_quarantine_not_retries_forever() -> None:
    death = watch("store").died(SIGKILL)
    assert [after_deaths(death, n).outcome for n in range(1, MAX_DEATHS + 2)] == [
        "tempfail"] * (MAX_DEATHS - 1) + ["quarantined"] * 2
    assert after_deaths(death, MAX_DEATHS).reason.startswith(
        f"unprocessable: delivery process died or timed out {MAX_DEATHS} times; last: ")
    uncounted = Verdict("tempfail", "database down")
    assert after_deaths(uncounted, 99) is uncounted
