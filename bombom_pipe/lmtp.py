"""The LMTP door (RFC 2033): Postfix's lmtp(8) hands messages to `bombom worker` on a unix
socket. This module is the conversation only, bytes in and replies out; the worker does the I/O.

What Postfix gets, by rule (never a 5xx after DATA, which would bounce a publisher's mail):
    LHLO                      250, with PIPELINING, ENHANCEDSTATUSCODES, 8BITMIME, SMTPUTF8, SIZE
    MAIL                      250; 451 4.3.2 when the worker is too busy to take more
    RCPT, a member            250 2.1.5
    RCPT, no such member      550 5.1.1 (the only hard "no", before any data)
    RCPT, database down       451 4.3.0
    after DATA, per accepted recipient, in order:
        stored, duplicate, quarantined, blocked  250 2.0.0 (outcomes.DONE)
        anything else (database, deadline...)    451 4.3.0
The raw bytes are in the spool (fsynced) before any 250 after DATA, and every accepted recipient
gets exactly one reply; the worker answers any the judge left open with 451 before its deadline,
far inside Postfix's `lmtp_data_done_timeout`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from .outcomes import DONE
from .protocol import MAX_RECIPIENTS

MAX_COMMAND = 4096
ADDRESS = re.compile(rb"<([^<>]*)>")


def reply_for(outcome: str, detail: str) -> bytes:
    """The reply to one recipient after DATA."""
    text = " ".join(detail.split())[:200].encode("ascii", "replace")
    if outcome in DONE:
        return b"250 2.0.0 " + outcome.encode() + b" " + text + b"\r\n"
    return b"451 4.3.0 " + outcome.encode() + b" " + text + b"\r\n"


@dataclass
class Transaction:
    sender: str = ""
    recipients: list[str] = field(default_factory=list)


class Session:
    """One LMTP connection. `feed` takes what arrived and returns what to send; `check(rcpt)`
    says "member", "unknown" or "down"; `busy()` refuses new transactions; `data(sender,
    recipients, body)` is called with each complete message (dot-unstuffed, LF line ends) and
    must eventually call `answer` once per recipient, in order."""

    def __init__(self, hostname: str, size_limit: int, check: Callable[[str], str],
                 busy: Callable[[], bool],
                 data: Callable[[Session, str, list[str], bytes], None]) -> None:
        self.hostname, self.size_limit = hostname, size_limit
        self.check, self.busy, self.data = check, busy, data
        self.buffer = b""
        self.tx: Transaction | None = None
        self.body: list[bytes] | None = None  # collecting DATA
        self.body_size = 0
        self.waiting = 0  # replies owed after DATA; commands wait meanwhile
        self.closed = False
        self.out = bytearray()

    def greeting(self) -> bytes:
        return f"220 {self.hostname} LMTP bombom ready\r\n".encode()

    def feed(self, data: bytes) -> bytes:
        self.buffer += data
        self._run()
        out, self.out = bytes(self.out), bytearray()
        return out

    def answer(self, reply: bytes) -> bytes:
        """One recipient's reply after DATA; returns what to send (with any commands that were
        waiting behind it)."""
        self.out += reply
        self.waiting -= 1
        self._run()
        out, self.out = bytes(self.out), bytearray()
        return out

    def _run(self) -> None:
        while not self.closed and not self.waiting:
            end = self.buffer.find(b"\n")
            if end < 0:
                if self.body is None and len(self.buffer) > MAX_COMMAND:
                    self._say(b"500 5.5.2 line too long")
                    self.buffer = b""
                return
            line, self.buffer = self.buffer[:end + 1], self.buffer[end + 1:]
            if self.body is not None:
                self._body_line(line)
            else:
                self._command(line.rstrip(b"\r\n"))

    def _say(self, line: bytes) -> None:
        self.out += line + b"\r\n"

    def _body_line(self, line: bytes) -> None:
        assert self.body is not None and self.tx is not None
        stripped = line.rstrip(b"\r\n")
        if stripped == b".":
            body, self.body = b"".join(self.body), None
            tx, self.tx = self.tx, None
            if self.body_size > self.size_limit:  # Postfix checks first; never a 5xx here
                for _ in tx.recipients:
                    self._say(b"452 4.3.4 message larger than the advertised SIZE")
                return
            self.waiting = len(tx.recipients)
            self.data(self, tx.sender, tx.recipients, body)
            return
        if stripped.startswith(b"."):
            stripped = stripped[1:]
        self.body_size += len(stripped) + 1
        if self.body_size <= self.size_limit:
            self.body.append(stripped + b"\n")

    def _command(self, line: bytes) -> None:
        verb, _, arg = line.partition(b" ")
        verb = verb.upper()
        if verb == b"LHLO":
            self.tx = None
            self._say(b"250-" + self.hostname.encode() + b"\r\n250-PIPELINING\r\n"
                      b"250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
                      b"250 SIZE " + str(self.size_limit).encode())
        elif verb == b"MAIL":
            m = ADDRESS.search(arg)
            if self.tx is not None:
                self._say(b"503 5.5.1 nested MAIL command")
            elif not arg.upper().startswith(b"FROM:") or m is None:
                self._say(b"501 5.5.4 syntax: MAIL FROM:<address>")
            elif self.busy():
                self._say(b"451 4.3.2 too busy; try again later")
            else:
                self.tx = Transaction(m[1].decode("utf-8", "replace"))
                self._say(b"250 2.1.0 OK")
        elif verb == b"RCPT":
            m = ADDRESS.search(arg)
            if self.tx is None:
                self._say(b"503 5.5.1 need MAIL first")
            elif not arg.upper().startswith(b"TO:") or m is None or not m[1]:
                self._say(b"501 5.5.4 syntax: RCPT TO:<address>")
            elif len(self.tx.recipients) >= MAX_RECIPIENTS:
                self._say(b"452 4.5.3 too many recipients")
            else:
                address = m[1].decode("utf-8", "replace")
                state = self.check(address)
                if state == "member":
                    self.tx.recipients.append(address)
                    self._say(b"250 2.1.5 OK")
                elif state == "unknown":
                    self._say(b"550 5.1.1 no such member")
                else:
                    self._say(b"451 4.3.0 member lookup unavailable; try again later")
        elif verb == b"DATA":
            if self.tx is None or not self.tx.recipients:
                self._say(b"503 5.5.1 need RCPT first")
                self.tx = None
            else:
                self.body, self.body_size = [], 0
                self._say(b"354 go ahead; end with <CRLF>.<CRLF>")
        elif verb == b"RSET":
            self.tx = None
            self._say(b"250 2.0.0 OK")
        elif verb == b"NOOP":
            self._say(b"250 2.0.0 OK")
        elif verb == b"QUIT":
            self._say(b"221 2.0.0 bye")
            self.closed = True
        elif verb == b"VRFY":
            self._say(b"252 2.5.0 try RCPT")
        else:
            self._say(b"500 5.5.1 command not recognized")
