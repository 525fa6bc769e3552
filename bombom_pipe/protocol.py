"""What bombom-deliver and the process doing a delivery say to each other: one small JSON object
per line, over a pipe (a forked child) or a unix socket (`bombom worker`). Standard library only.

bombom-deliver -> worker, once:  {"sha256": ..., "size": ..., "envelope": {...},
                                  "started": ..., "deadline": ...}  (times: Unix seconds)
delivering process -> bombom-deliver, in order:
    {"accepted": pid}                       the worker only: this process took the job
    {"stage": "parse"} {"stage": "store"}   as each step begins; a timeout is judged by it
    {"outcome": "stored", "detail": "article 17"}   the verdict, last
Anything else (bad JSON, an unknown outcome, end of stream before a verdict) is garbage, and
bombom-deliver treats the process as failed.
"""

from __future__ import annotations

import json
import os

#: why a message is quarantined when parsing it ran out of time or memory (replayable after a fix)
PARSE_BUDGET = "unparsable: parse budget exceeded"
#: at the deadline, a parser that ran at least this share of the time overran (quarantine); one
#: starved by a loaded machine did not (tempfail: Postfix retries)
WORKING = 0.5
MAX_LINE = 4096  # a verdict is one short line; more than this is garbage
STAGES = ("parse", "store")
OUTCOMES = ("stored", "duplicate", "quarantined", "nouser", "tempfail")


class Garbage(Exception):
    """The other side said something that is not part of this protocol."""


def encode(message: dict[str, object]) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"


def send(fd: int, message: dict[str, object]) -> bool:
    """Write one message; False when the other side is gone (never raises)."""
    data = encode(message)
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        return False
    return True


def decode(line: bytes) -> dict[str, object]:
    try:
        message = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise Garbage(f"not JSON: {line[:60]!r}") from None
    if not isinstance(message, dict):
        raise Garbage(f"not an object: {line[:60]!r}")
    if "stage" in message and message["stage"] not in STAGES:
        raise Garbage(f"unknown stage {message['stage']!r}")
    if "outcome" in message and (message["outcome"] not in OUTCOMES
                                 or not isinstance(message.get("detail"), str)):
        raise Garbage(f"bad verdict {line[:60]!r}")
    return message


class Lines:
    """Splits what arrives on a file descriptor into messages."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> list[dict[str, object]]:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        if len(self.buffer) > MAX_LINE:
            raise Garbage("line too long")
        return [decode(line) for line in lines if line.strip()]
