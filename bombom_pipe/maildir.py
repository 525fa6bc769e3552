"""The Maildir pull mode: Postfix's virtual(8) writes each message, one file per recipient, into a
Maildir, and `bombom worker --maildir DIR` ingests it:

    new/<name>       written by virtual(8) (through tmp/, so complete when it appears)
    claimed/<name>   taken by the worker: a rename, so exactly one taker
    cur/<name>:2,    done: stored, duplicate, quarantined, or no such member
A tempfail (database down) puts the file back into new/ for a later try; at start-up the worker
puts back whatever a worker that died left in claimed/. One worker per Maildir (a lock file).
The recipient is the `Delivered-To:` virtual(8) prepends (after its own `Return-Path:` and
`X-Original-To:`), so it is read from the top of the file only; Postfix's queue id and the SMTP
client's address come from the topmost `Received:` (the one Postfix's cleanup added at receipt:
anything the sender wrote is below it).
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

HEAD = 1 << 16  # virtual(8)'s own headers are first; this is plenty to find them
#: Postfix's own Received: "from HELO (NAME [ADDRESS]) by HOST (Postfix[...]) [with PROTO] id QID"
_CLIENT = re.compile(r"^from\s+\S+\s+\([^()\[]*\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]\)", re.I)
_QUEUE_ID = re.compile(r"\(Postfix[^)]*\)(?:\s+with\s+\S+)?\s+id\s+([0-9A-Za-z]+)\b")


class Busy(Exception):
    """Another worker holds this Maildir."""


class Maildir:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.new, self.cur, self.claimed = root / "new", root / "cur", root / "claimed"

    def open(self) -> int:
        """Create what is missing, take the lock, and put back files a dead worker claimed.
        Returns how many were put back."""
        for d in (self.root, self.root / "tmp", self.new, self.cur, self.claimed):
            d.mkdir(mode=0o700, exist_ok=True)
        self._lock = os.open(self.root / ".bombom-worker.lock",
                             os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"another worker is draining {self.root}") from None
        names = os.listdir(self.claimed)
        for name in names:
            os.rename(self.claimed / name, self.new / name)
        return len(names)

    def claim(self, limit: int) -> list[Path]:
        """Up to `limit` files from new/, oldest name first, moved to claimed/."""
        taken: list[Path] = []
        for name in sorted(os.listdir(self.new)):
            if len(taken) >= limit:
                break
            try:
                os.rename(self.new / name, self.claimed / name)
            except FileNotFoundError:
                continue
            taken.append(self.claimed / name)
        return taken

    def done(self, path: Path) -> None:
        os.rename(path, self.cur / f"{path.name}:2,")

    def retry(self, path: Path) -> None:
        os.rename(path, self.new / path.name)


def envelope(path: Path) -> dict[str, str | None]:
    """What Postfix recorded at the top of the file: recipient, original recipient and sender
    (virtual(8)'s headers), queue id and client address (the topmost Received:). None when
    absent; the queue id is then `maildir:<file name>`."""
    with open(path, "rb") as f:
        head = f.read(HEAD)
    found: dict[str, str] = {}
    current = None  # the wanted field being read (its first occurrence only)
    for line in head.split(b"\n"):
        line = line.rstrip(b"\r")
        if not line:
            break
        if line[:1] in (b" ", b"\t"):  # a folded line continues the field above
            if current:
                found[current] += " " + line.strip().decode("utf-8", "replace")
            continue
        name, _, value = line.partition(b":")
        key = name.strip().lower().decode("ascii", "replace")
        current = None
        if key in ("delivered-to", "x-original-to", "return-path", "received") and key not in found:
            found[key], current = value.strip().decode("utf-8", "replace"), key
    received = found.get("received", "")
    client, qid = _CLIENT.search(received), _QUEUE_ID.search(received)
    return {"recipient": found.get("delivered-to", "").strip("<>") or None,
            "original_recipient": found.get("x-original-to", "").strip("<>") or None,
            "sender": found.get("return-path", "").strip("<>") or None,
            "queue_id": (qid[1] if qid else f"maildir:{path.name}")[:64],
            "client_address": client[1] if client else None}
