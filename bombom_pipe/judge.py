"""The one judge: what a delivering process did (its stage, CPU used, time, how it ended) in, the
verdict out. Pure: no I/O, no clock of its own. Every door drives it the same way (bombom-deliver's
cold path, and `bombom worker` for the pipe, the Maildir and LMTP), so the same message on the same
machine ends the same way whichever door it came through.

The stages of a delivery and their budgets, all derived from `deadline_seconds` (here only):

    read    the door takes the bytes and spools them        until the deadline, then tempfail
    parse   CPU-bound, the message's own doing              CPU budget D/4 (>= 1 s) -> quarantine
    auth    CPU-bound (DNS waits are bounded in auth.py)    CPU budget D/8 (>= 1 s) -> quarantine
    store   the database: the only stage that may defer     deadline + GRACE, then tempfail

At the deadline a CPU-bound stage that used at least `WORKING` of the wall time since it began
overran (quarantine: every retry would burn the same time); one that did not was starved by a
loaded machine or stalled (tempfail). A process that dies or is killed without a verdict counts
against the message: after `MAX_DEATHS` of them it is quarantined instead of retried forever.
"""

from __future__ import annotations

from dataclasses import dataclass

#: after the deadline: time to record a quarantine or a tempfail before the process is killed
GRACE = 5.0
#: at the deadline, a CPU-bound stage that ran at least this share of the time overran
WORKING = 0.5
#: deaths or timeouts of its delivering process after which a message is quarantined
MAX_DEATHS = 3

STAGES = ("read", "parse", "auth", "store")
CPU_BOUND = ("parse", "auth")

#: why a message is quarantined when a CPU-bound stage ran out of time or memory (replayable)
PARSE_BUDGET = "unparsable: parse budget exceeded"
AUTH_BUDGET = "unauthenticated: authentication budget exceeded"
OVERRUN = {"parse": PARSE_BUDGET, "auth": AUTH_BUDGET}

SIGKILL, SIGXCPU = 9, 24  # Linux; the judge imports no `signal`


def overran(cpu_used: float, wall: float) -> bool:
    """At the deadline: a CPU-bound stage that used at least `WORKING` of its wall time was
    working (the message's doing); one that used less was starved or stalled."""
    return cpu_used >= WORKING * wall


@dataclass(frozen=True, slots=True)
class Budget:
    """Every stage's limit, from the one configured deadline."""

    deadline: float
    parse_cpu: float
    auth_cpu: float
    grace: float = GRACE

    @classmethod
    def of(cls, deadline_seconds: float) -> Budget:
        return cls(deadline_seconds, parse_cpu=max(1.0, deadline_seconds / 4),
                   auth_cpu=max(1.0, deadline_seconds / 8))

    def cpu(self, stage: str) -> float | None:
        return {"parse": self.parse_cpu, "auth": self.auth_cpu}.get(stage)


@dataclass(frozen=True, slots=True)
class Verdict:
    """How a delivery ends when its process gave none: `outcome` is "quarantined" or "tempfail";
    `counts`: a death or timeout of the delivering process, counted against the message;
    `elsewhere`: not the message's doing (a stopped process): try it again at once."""

    outcome: str
    reason: str
    counts: bool = False
    elsewhere: bool = False


class Watch:
    """The judge's view of one delivering process, fed with what the door observes."""

    def __init__(self, budget: Budget, end: float, now: float, cpu: float = 0.0) -> None:
        self.budget = budget
        self.end = end  # the deadline, on the caller's monotonic clock
        self.stage = "start"  # until the process says what it is doing
        self.entered = now
        self.cpu_at = cpu

    def enter(self, stage: str, now: float, cpu: float) -> None:
        self.stage, self.entered, self.cpu_at = stage, now, cpu

    def check(self, now: float, cpu: float | None, state: str = "R") -> Verdict | None:
        """None while the process may go on; else kill it, and this is how the delivery ends.
        `cpu`: its CPU seconds so far (None: gone); `state`: /proc's state letter."""
        used = (cpu - self.cpu_at) if cpu is not None else 0.0
        limit = self.budget.cpu(self.stage)
        if limit is not None and used > limit:
            return Verdict("quarantined", OVERRUN[self.stage], counts=True)
        if state in "Tt":
            return Verdict("tempfail", "delivery process stopped", elsewhere=True)
        if self.stage in CPU_BOUND and now >= self.end:
            if overran(used, now - self.entered):
                return Verdict("quarantined", OVERRUN[self.stage], counts=True)
            return Verdict("tempfail", f"deadline reached in stage {self.stage} (starved)",
                           counts=True)
        if now >= self.end + (self.budget.grace if self.stage == "store" else 0.0):
            return Verdict("tempfail", f"deadline reached in stage {self.stage}",
                           counts=self.stage == "store")
        return None

    def died(self, signal: int | None) -> Verdict:
        """The process ended without a verdict (`signal`: what killed it, if anything)."""
        if signal == SIGXCPU and self.stage in CPU_BOUND:  # the kernel's CPU backstop
            return Verdict("quarantined", OVERRUN[self.stage], counts=True)
        why = f"killed by signal {signal}" if signal else "ended without a verdict"
        return Verdict("tempfail", f"delivery process {why} in stage {self.stage}", counts=True)


def after_deaths(verdict: Verdict, deaths: int) -> Verdict:
    """`verdict` once the message's process has died or timed out `deaths` times in all (this
    time included): at `MAX_DEATHS` a would-be retry becomes a quarantine."""
    if verdict.counts and verdict.outcome == "tempfail" and deaths >= MAX_DEATHS:
        return Verdict("quarantined", f"unprocessable: delivery process died or timed out "
                                      f"{deaths} times; last: {verdict.reason}"[:300])
    return verdict
