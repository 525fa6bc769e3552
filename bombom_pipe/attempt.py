"""One delivering process working on one job, seen from the door that watches it: what it said
(stages, one verdict per recipient), its CPU time and state from /proc, and how to stop it. The
decisions are the judge's (judge.py); this only feeds it. Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

from . import judge, protocol, spool

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_stat(pid: int) -> tuple[str, float] | None:
    """(state letter, CPU seconds) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    return fields[0].decode(), (int(fields[11]) + int(fields[12])) / CLK_TCK


class Attempt:
    """`pid` works on `job`, talking on `fd`; `forked`: our own child (else a sibling's)."""

    def __init__(self, fd: int, pid: int, job: protocol.Job, budget: judge.Budget,
                 end: float, forked: bool) -> None:
        self.fd, self.pid, self.job, self.forked = fd, pid, job, forked
        self.lines = protocol.Lines()
        now = self.begun = time.monotonic()
        self.watch = judge.Watch(budget, end, now, self.cpu() or 0.0)
        self.results: list[tuple[str, str] | None] = [None] * len(job.recipients)
        self.auth: str | None = None  # the authentication verdict it reported
        self.stages: list[tuple[str, float]] = []  # (stage, monotonic time it began)

    def cpu(self) -> float | None:
        st = proc_stat(self.pid)
        return st[1] if st else None

    @property
    def done(self) -> bool:
        return all(r is not None for r in self.results)

    def feed(self, data: bytes) -> list[int]:
        """What arrived from the process; returns the recipients answered by it. Raises
        protocol.Garbage."""
        answered = []
        for m in self.lines.feed(data):
            if "stage" in m:
                now = time.monotonic()
                self.stages.append((str(m["stage"]), now))
                self.watch.enter(str(m["stage"]), now, self.cpu() or 0.0)
            elif "outcome" in m:
                i = int(m.get("rcpt", 0))  # type: ignore[arg-type]
                if not 0 <= i < len(self.results) or self.results[i] is not None:
                    raise protocol.Garbage(f"verdict for recipient {i}")
                self.results[i] = (str(m["outcome"]), str(m["detail"]))
                self.auth = str(m["auth"]) if "auth" in m else self.auth
                answered.append(i)
        return answered

    def check(self, now: float) -> judge.Verdict | None:
        st = proc_stat(self.pid)
        return self.watch.check(now, st[1] if st else None, st[0] if st else "R")

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)

    def died_of(self) -> int | None:
        """The signal that ended our forked child (waits a moment for it to be reapable)."""
        if not self.forked:
            return None
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return None
            if pid:
                return os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
            time.sleep(0.01)
        return None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = -1


def settle(spool_dir: os.PathLike[str], sha256: str, verdict: judge.Verdict) -> judge.Verdict:
    """The judge's verdict once this death or timeout is counted against the message (in the
    spool, so every door and every process sees the same count)."""
    if not verdict.counts:
        return verdict
    return judge.after_deaths(verdict, spool.count_death(spool_dir, sha256))
