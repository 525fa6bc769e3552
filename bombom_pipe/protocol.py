"""The one wire between processes: one small JSON object per line, over a pipe (a forked child),
a socketpair (`bombom worker`'s delivery processes) or a unix socket (bombom-deliver handing a
message to the worker). Standard library only: bombom-deliver imports it for every message.

door -> delivering process, once:  a Job (below), built by `Job.make` at each door
delivering process -> door, in order:
    {"stage": "parse"} {"stage": "auth"} {"stage": "store"}   as each step begins (judge.py)
    {"outcome": "stored", "detail": "article 17", "rcpt": 0}  one verdict per recipient, in order
        (with "auth": the authentication verdict, once the message was authenticated)
bombom-deliver <-> worker (the pipe door): the Job, then {"accepted": true} once a delivery
process took it, the stages, and the verdict.
Anything else (bad JSON, an unknown stage or outcome, a line too long) is garbage, and the
reader treats the other side as failed.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, replace

from .judge import STAGES
from .outcomes import NAMES

MAX_LINE = 1 << 16  # a job with many recipients is the longest line; a verdict is short
MAX_RECIPIENTS = 1000
OUTCOMES = NAMES
DOORS = ("pipe", "lmtp", "maildir", "replay")
AUTH = ("pass", "fail", "none", "temperror")  # auth.py's verdicts
ENVELOPE = ("sender", "queue_id", "client_address")


class Garbage(Exception):
    """The other side said something that is not part of this protocol."""


@dataclass(frozen=True, slots=True)
class Recipient:
    address: str | None  # None: bombom-deliver run by hand, the recipient comes from the headers
    original: str | None = None


@dataclass(frozen=True, slots=True)
class Job:
    """One saved message to deliver to one or more recipients (parsed once)."""

    sha256: str
    size: int
    door: str
    started: float  # Unix time the door began on it (for `deliveries.started_at` and the lag)
    deadline: float  # Unix time by which the delivering process must have answered
    recipients: tuple[Recipient, ...]
    sender: str | None = None
    queue_id: str | None = None
    client_address: str | None = None
    quarantine: str | None = None  # skip parsing: record as quarantined with this reason

    @classmethod
    def make(cls, sha256: str, size: int, door: str, started: float, deadline: float,
             recipients: list[tuple[str | None, str | None]], **envelope: str | None) -> Job:
        return cls(sha256, size, door, started, deadline,
                   tuple(Recipient(a, o) for a, o in recipients),
                   **{k: v for k, v in envelope.items() if k in ENVELOPE})

    def to_wire(self) -> dict[str, object]:
        wire = asdict(self)
        wire["recipients"] = [[r.address, r.original] for r in self.recipients]
        return wire

    @classmethod
    def from_wire(cls, m: dict[str, object]) -> Job:
        try:
            sha = str(m["sha256"])
            if len(sha) != 64 or not all(c in "0123456789abcdef" for c in sha):
                raise Garbage(f"not a SHA-256: {sha[:70]!r}")
            rcpts = m["recipients"]
            if not isinstance(rcpts, list) or not 0 < len(rcpts) <= MAX_RECIPIENTS:
                raise Garbage("bad recipients")
            door = str(m["door"])
            if door not in DOORS:
                raise Garbage(f"unknown door {door!r}")
            return cls(sha, int(m["size"]), door, float(m["started"]),  # type: ignore[arg-type]
                       float(m["deadline"]),  # type: ignore[arg-type]
                       tuple(Recipient(_opt(a), _opt(o)) for a, o in rcpts),
                       *(_opt(m.get(k)) for k in (*ENVELOPE, "quarantine")))
        except (KeyError, TypeError, ValueError) as e:
            raise Garbage(f"bad job: {type(e).__name__} {e}"[:200]) from None

    def with_quarantine(self, reason: str, deadline: float) -> Job:
        return replace(self, quarantine=reason, deadline=deadline)

    def only(self, indices: list[int]) -> Job:
        """The same job for some of its recipients."""
        return replace(self, recipients=tuple(self.recipients[i] for i in indices))


def monotonic(epoch: float) -> float:
    """A Unix time of the wire (a job's deadline) on this process's monotonic clock."""
    return time.monotonic() + epoch - time.time()


def epoch(monotonic: float) -> float:
    """A point on this process's monotonic clock as a Unix time, for the wire."""
    return time.time() + monotonic - time.monotonic()


def peer(sock: object) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a unix socket (SO_PEERCRED)."""
    import socket
    import struct

    pid, uid, _ = struct.unpack("3i", sock.getsockopt(  # type: ignore[attr-defined]
        socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return pid, uid


def _opt(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


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
                                 or not isinstance(message.get("detail"), str)
                                 or not isinstance(message.get("rcpt", 0), int)):
        raise Garbage(f"bad verdict {line[:60]!r}")
    if "auth" in message and message["auth"] not in AUTH:
        raise Garbage(f"unknown authentication verdict {line[:60]!r}")
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
