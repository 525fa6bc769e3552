"""The delivery's own deadline, shorter than Postfix's `bombom_time_limit`.

Postfix SIGKILLs a pipe command that outlives its time limit and then *bounces* the message, so we
must give up first and exit 75. `bombom-deliver` enforces the deadline from outside the process
that parses and stores (supervisor.py): that process is killed, never waited for, so even code
that never gives the interpreter back (a regular expression holding the GIL) cannot make us late.
Inside a process, SIGALRM raises `DeadlineExceeded` in the main thread (interrupting a slow read,
query or connect); in bombom-deliver, whose own waits all have timeouts, a last SIGALRM exits 75.
"""

from __future__ import annotations

import os
import signal
import time


class DeadlineExceeded(BaseException):  # BaseException: no `except Exception` eats it
    """The delivery ran out of time."""


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def check(self) -> None:
        if self.remaining() <= 0:
            raise DeadlineExceeded(f"deadline of {self.seconds:g}s reached")

    def alarm(self) -> None:
        """SIGALRM raises `DeadlineExceeded` in the main thread when the deadline passes."""

        def alarm(signum: int, frame: object) -> None:
            raise DeadlineExceeded(f"deadline of {self.seconds:g}s reached")

        signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, max(self.remaining(), 0.001))

    def watchdog(self, after: float, last_words: bytes) -> None:
        """`after` seconds past the deadline, print `last_words` and `os._exit(75)`: replaces the
        alarm; for a process (bombom-deliver) whose waits all give the interpreter back."""

        def watchdog(signum: int, frame: object) -> None:
            try:  # noqa: SIM105 - a closed stdout must not change the status
                os.write(1, last_words)
            except OSError:
                pass
            os._exit(75)

        signal.signal(signal.SIGALRM, watchdog)
        signal.setitimer(signal.ITIMER_REAL, self.remaining() + after)

    @staticmethod
    def disarm() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
