"""Every way a delivery can end, and what Postfix is told: the one table of exit codes.

Postfix pipe(8) defers on 75 (EX_TEMPFAIL) and bounces every other non-zero status, including the
1 of an uncaught Python exception. So the table holds only 0, 67 and 75, and anything outside it
is a tempfail: a retry is always safer than a bounce to a publisher.
"""

from __future__ import annotations

import enum

EX_OK = 0
EX_NOUSER = 67
EX_TEMPFAIL = 75


class Outcome(enum.Enum):
    """How one delivery ended; the value is what `deliveries.outcome` stores."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    QUARANTINED = "quarantined"
    BLOCKED = "blocked"
    NOUSER = "nouser"
    TEMPFAIL = "tempfail"

    @property
    def exit_code(self) -> int:
        return TABLE[self][0]

    @property
    def status(self) -> str:
        return TABLE[self][1]


#: outcome -> (sysexits code, RFC 3463 enhanced status code)
TABLE: dict[Outcome, tuple[int, str]] = {
    Outcome.STORED: (EX_OK, "2.0.0"),
    Outcome.DUPLICATE: (EX_OK, "2.0.0"),
    Outcome.QUARANTINED: (EX_OK, "2.0.0"),
    Outcome.BLOCKED: (EX_OK, "2.0.0"),  # a member's block: kept, not shown, never bounced
    Outcome.NOUSER: (EX_NOUSER, "5.1.1"),
    Outcome.TEMPFAIL: (EX_TEMPFAIL, "4.3.0"),
}


#: the outcomes that end a delivery for good (exit 0, LMTP 250): every door reads them here
DONE: tuple[str, ...] = tuple(o.value for o in Outcome if TABLE[o][0] == EX_OK)
#: every outcome's name, as `deliveries.outcome` and the wire between processes carry it
NAMES: tuple[str, ...] = tuple(o.value for o in Outcome)


def status_line(outcome: Outcome, text: str, limit: int = 100) -> str:
    """One line for Postfix to log (success) or act on (failure), e.g. `4.3.0 database down`.

    Postfix logs at most 100 characters of a successful command's output and reads the leading
    enhanced status code of a failed one; newlines would be flattened, so none are written.
    """
    line = " ".join(f"{outcome.status} {text}".split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
