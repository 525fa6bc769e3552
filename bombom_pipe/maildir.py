"""The Maildir pull mode: Postfix's virtual(8) writes each message, one file per recipient, into a
Maildir, and `bombom worker --maildir DIR` ingests it:

    new/<name>       written by virtual(8) (through tmp/, so complete when it appears)
    claimed/<name>   taken by the worker: a rename, so exactly one taker; the raw store of the
                     spool then holds the same file (a hard link), so when the delivery ends
                     (stored, duplicate, quarantined, no such member) the file is removed
A tempfail keeps the file in claimed/ and retries it after a backoff of its own (doubling up to
`MAX_BACKOFF`); no other file waits for it. new/ is read once per pass, in directory order,
without sorting: a backlog of 300,000 files costs no more per claim than an empty Maildir. At
start-up the worker puts back whatever a worker that died left in claimed/, and removes files a
former version left in cur/ once the spool holds their bytes. One worker per Maildir (a lock).
The recipient is the `Delivered-To:` virtual(8) prepends (after its own `Return-Path:` and
`X-Original-To:`), so it is read from the top of the file only.
"""

from __future__ import annotations

import contextlib
import fcntl
import heapq
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

HEAD = 1 << 16  # virtual(8)'s own headers are first; this is plenty to find them
FIRST_BACKOFF = 2.0
MAX_BACKOFF = 300.0
SCAN = 0.5  # an exhausted pass of new/ starts again no sooner than this


class Busy(Exception):
    """Another worker holds this Maildir."""


class Maildir:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.new, self.cur, self.claimed = root / "new", root / "cur", root / "claimed"
        self._pass: Iterator[os.DirEntry[str]] | None = None  # this pass over new/
        self._found = False  # whether it found a file
        self._next_pass = 0.0
        self._waiting: list[tuple[float, str]] = []  # (when, name) of files to retry
        self._tries: dict[str, int] = {}

    def open(self, spool_dir: Path | None = None) -> int:
        """Create what is missing, take the lock, put back files a dead worker claimed, and
        remove cur/ files whose bytes the spool holds. Returns how many were put back."""
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
        if spool_dir is not None:
            self._prune_cur(spool_dir)
        return len(names)

    def _prune_cur(self, spool_dir: Path) -> None:
        from . import spool

        for entry in os.scandir(self.cur):
            if entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    sha, _ = spool.sha256_of(Path(entry.path))
                    if spool.raw_path(spool_dir, sha).exists():
                        os.unlink(entry.path)

    def due(self, limit: int, now: float | None = None) -> list[Path]:
        """Up to `limit` files to deliver now: retries whose time has come, then files claimed
        from new/ (moved to claimed/)."""
        now = time.monotonic() if now is None else now
        taken: list[Path] = []
        while self._waiting and len(taken) < limit and self._waiting[0][0] <= now:
            taken.append(self.claimed / heapq.heappop(self._waiting)[1])
        while len(taken) < limit:
            name = self._next_name(now)
            if name is None:
                break
            try:
                os.rename(self.new / name, self.claimed / name)
            except FileNotFoundError:
                continue
            taken.append(self.claimed / name)
        return taken

    def _next_name(self, now: float) -> str | None:
        """The next name of this pass over new/; None when the pass is over (a new pass begins
        at once if this one found files, else after SCAN)."""
        while True:
            if self._pass is None:
                if now < self._next_pass:
                    return None
                self._pass, self._found = os.scandir(self.new), False
            entry = next(self._pass, None)
            if entry is None:
                self._pass.close()  # type: ignore[attr-defined]
                self._pass = None
                if not self._found:
                    self._next_pass = now + SCAN
                    return None
                continue
            if not entry.name.startswith("."):
                self._found = True
                return entry.name

    def done(self, path: Path) -> None:
        """Delivered (or refused for good): the spool holds the bytes."""
        self._tries.pop(path.name, None)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def retry(self, path: Path, now: float | None = None) -> float:
        """Try `path` again later, by its own backoff; returns the wait in seconds."""
        tries = self._tries.get(path.name, 0) + 1
        self._tries[path.name] = tries
        wait = min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** (tries - 1))
        heapq.heappush(self._waiting, ((time.monotonic() if now is None else now) + wait,
                                       path.name))
        return wait



def envelope(head: bytes) -> dict[str, str | None]:
    """What virtual(8) recorded at the top of a file (recipient, original recipient, sender),
    and Postfix's queue id and client address from the `Received:` header our smtpd wrote;
    `head`: the file's first bytes."""
    found: dict[str, str] = {}
    for line in head.split(b"\n"):
        line = line.rstrip(b"\r")
        if not line or line[:1] in (b" ", b"\t"):
            if not line:
                break
            continue
        name, _, value = line.partition(b":")
        key = name.strip().lower().decode("ascii", "replace")
        if key in ("delivered-to", "x-original-to", "return-path") and key not in found:
            found[key] = value.strip().decode("utf-8", "replace").strip("<>") or None
    queue_id, client = received(head)
    return {"recipient": found.get("delivered-to"),
            "original_recipient": found.get("x-original-to"),
            "sender": found.get("return-path"), "queue_id": queue_id, "client_address": client}


RECEIVED = re.compile(rb"^Received:((?:.*\r?\n[ \t])*.*)", re.MULTILINE | re.IGNORECASE)
QUEUE_ID = re.compile(rb"\bwith E?SMTPS?A?\w* id ([0-9A-Za-z]{6,20})\b|\bid ([0-9A-Za-z]{6,20})\b")
CLIENT = re.compile(rb"\((?:[^()\[]*)\[(?:IPv6:)?([0-9A-Fa-f.:]{2,45})\]\)")


def received(head: bytes) -> tuple[str | None, str | None]:
    """Postfix's queue id and the SMTP client's address from the topmost `Received:` header of
    a message's head, the one Postfix's smtpd wrote when it took the message in
    ("from host (name [192.0.2.1]) by mx (Postfix) with ESMTP id 4BqX1k2mZ for <...>")."""
    end = head.find(b"\n\n")
    m = RECEIVED.search(head[: end if end >= 0 else HEAD])
    if not m:
        return None, None
    text = m[1].replace(b"\r", b"").replace(b"\n", b" ")
    qid, addr = QUEUE_ID.search(text), CLIENT.search(text)
    return ((qid[1] or qid[2]).decode() if qid else None, addr[1].decode() if addr else None)
