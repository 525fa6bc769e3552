"""The delivery's own deadline, shorter than Postfix's `bombom_time_limit`.

Postfix SIGKILLs a pipe command that outlives its time limit and then *bounces* the message, so we
must give up first and exit 75. Two layers: SIGALRM raises `DeadlineExceeded` in the main thread
(interrupting a slow query or connect), and a watchdog thread hard-exits with 75 `GRACE` seconds
later in case the main thread is stuck where a signal cannot reach it.
"""

from __future__ import annotations

import os
import signal
import threading
import time

GRACE = 5.0


class DeadlineExceeded(BaseException):  # BaseException: no `except Exception` eats it
    """The delivery ran out of time; it will be retried by Postfix."""


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def check(self) -> None:
        if self.remaining() <= 0:
            raise DeadlineExceeded(f"deadline of {self.seconds:g}s reached")

    def arm(self, last_words: bytes) -> None:
        """Start both layers; `last_words` is what the watchdog prints before `os._exit(75)`."""

        def alarm(signum: int, frame: object) -> None:
            raise DeadlineExceeded(f"deadline of {self.seconds:g}s reached")

        signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, self.remaining())

        def watchdog() -> None:
            os.write(1, last_words)
            os._exit(75)

        timer = threading.Timer(self.remaining() + GRACE, watchdog)
        timer.daemon = True
        timer.start()

    @staticmethod
    def disarm() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
