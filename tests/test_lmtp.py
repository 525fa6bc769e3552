"""The LMTP door: first the conversation alone (lmtp.py, no server), then `bombom worker
--lmtp-socket` against a real PostgreSQL of this module's own (stopped and started here), spoken
to by a client that reads one reply per accepted recipient after DATA, as Postfix's lmtp(8) does
(smtplib.LMTP reads only one). tests/test_lmtp_postfix.py puts a real Postfix in front."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bombom_pipe import lmtp

from .builders import DIGEST, Worker, message, misbehaving, with_parser_hooks
from .conftest import ALICE, BOB, Env, fresh_schema, new_env
from .sandbox import DELIVER_USER, LocalPostgres, give, wait_for
from .test_faults import cluster as own_cluster

# -- the conversation alone ----------------------------------------------------------------------


def session(check: str = "member", busy: bool = False) -> tuple[lmtp.Session, list]:
    got: list = []
    s = lmtp.Session("mx.test", 1000, lambda a: "unknown" if a.startswith("nobody") else check,
                     lambda: busy, lambda sess, sender, rcpts, body: got.append(
                         (sender, rcpts, body)))
    return s, got


def test_a_pipelined_transaction_gets_its_replies_in_order() -> None:
    s, got = session()
    out = s.feed(b"LHLO postfix\r\nMAIL FROM:<b@news.example> BODY=8BITMIME SMTPUTF8\r\n"
                 b"RCPT TO:<alice@bombom.news>\r\nRCPT TO:<nobody@bombom.news>\r\n"
                 b"RCPT TO:<bob@bombom.news> NOTIFY=NEVER\r\nDATA\r\nSubject: x\r\n\r\n"
                 b"..leading dot\r\nline\r\n.\r\nQUIT\r\n")
    codes = [line[:3] for line in out.split(b"\r\n") if line and line[3:4] == b" "]
    assert codes == [b"250", b"250", b"250", b"550", b"250", b"354"]
    assert b"250 SIZE 1000" in out and b"250-PIPELINING" in out
    assert got == [("b@news.example", ["alice@bombom.news", "bob@bombom.news"],
                    b"Subject: x\n\n.leading dot\nline\n")]
    # QUIT waits behind the two replies owed, which go out in order, then the goodbye
    assert s.answer(lmtp.reply_for("stored", "article 1")).startswith(b"250 2.0.0 stored")
    last = s.answer(lmtp.reply_for("tempfail", "database down"))
    assert last == b"451 4.3.0 tempfail database down\r\n221 2.0.0 bye\r\n" and s.closed


@pytest.mark.parametrize(("check", "busy", "reply"), [
    ("down", False, b"451 4.3.0"), ("member", True, b"451 4.3.2")])
def test_database_down_or_too_busy_is_451_before_any_data(check: str, busy: bool,
                                                          reply: bytes) -> None:
    s, got = session(check, busy)
    out = s.feed(b"LHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<alice@bombom.news>\r\nDATA\r\n")
    assert reply in out and b"503 5.5.1" in out and b"354" not in out and not got


def test_after_data_only_250_or_451_never_a_bounce() -> None:
    for outcome in ("stored", "duplicate", "quarantined"):
        assert lmtp.reply_for(outcome, "x").startswith(b"250 2.0.0")
    for outcome in ("nouser", "tempfail", "anything"):
        assert lmtp.reply_for(outcome, "x\r\n550 forged").startswith(b"451 4.3.0")
        assert lmtp.reply_for(outcome, "x\r\n550 forged").count(b"\r\n") == 1


def test_a_message_over_the_size_is_deferred_not_bounced() -> None:
    s, got = session()
    out = s.feed(b"LHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"
                 + b"y" * 2000 + b"\r\n.\r\n")
    assert out.count(b"452 4.3.4") == 2 and not got


# -- the worker's LMTP door ----------------------------------------------------------------------


class Client:
    """The few lines of LMTP client a test needs: one reply per accepted recipient after DATA."""

    def __init__(self, path: Path) -> None:
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(60)
        self.s.connect(str(path))
        self.buf = b""
        assert self.reply().startswith(b"220")
        self.s.sendall(b"LHLO test\r\n")
        while not self.reply().startswith(b"250 "):
            pass

    def reply(self) -> bytes:
        while b"\r\n" not in self.buf:
            data = self.s.recv(4096)
            if not data:
                raise ConnectionError("closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def send(self, sender: str, rcpts: list[str], body: bytes, before_data=None  # noqa: ANN001
             ) -> tuple[list[bytes], list[bytes]]:
        """(RCPT replies, replies after DATA); `before_data()` runs once RCPTs are answered."""
        self.s.sendall(f"MAIL FROM:<{sender}>\r\n".encode())
        assert self.reply().startswith(b"250")
        at_rcpt = []
        for r in rcpts:
            self.s.sendall(f"RCPT TO:<{r}>\r\n".encode())
            at_rcpt.append(self.reply())
        if before_data:
            before_data()
        self.s.sendall(b"DATA\r\n")
        if not any(r.startswith(b"250") for r in at_rcpt):
            assert self.reply().startswith(b"503")
            return at_rcpt, []
        assert self.reply().startswith(b"354")
        lines = body.replace(b"\r\n", b"\n").split(b"\n")
        self.s.sendall(b"".join((b"." + x if x.startswith(b".") else x) + b"\r\n" for x in lines)
                       + b".\r\n")
        return at_rcpt, [self.reply() for r in at_rcpt if r.startswith(b"250")]

    def close(self) -> None:
        self.s.close()


cluster = own_cluster  # a cluster of this module's own, stopped and started here


@pytest.fixture
def lenv(cluster: LocalPostgres, runner: list[str], workdir: Path) -> Iterator[Env]:
    cluster.start()
    fresh_schema(cluster.url())
    e = new_env(workdir, runner, cluster.url(user="bombom_deliver"))
    run = e.base / "run"
    run.mkdir(mode=0o700)
    give(run, DELIVER_USER)
    yield e
    cluster.start()
    shutil.rmtree(e.base, ignore_errors=True)


def start(e: Env, processes: int = 2) -> Worker:
    w = Worker(e, "--no-socket", "--lmtp-socket", str(e.base / "run" / "lmtp.sock"),
               "--processes", str(processes)).start()
    w.wait_ready()
    return w


@pytest.fixture
def served(lenv: Env) -> Iterator[tuple[Env, Client]]:
    w = start(lenv)
    c = Client(lenv.base / "run" / "lmtp.sock")
    yield lenv, c
    c.close()
    w.stop()


def q(cluster: LocalPostgres, sql: str) -> list[tuple]:
    with psycopg.connect(cluster.url()) as conn:
        return conn.execute(sql).fetchall()


def test_several_members_in_one_transaction_parsed_once_stored_once_each(
        lenv: Env, cluster: LocalPostgres, workdir: Path) -> None:
    with_parser_hooks(lenv, workdir, deadline=20)
    parses = lenv.base / "parses"
    parses.touch()
    give(parses, DELIVER_USER)
    lenv.extra_env["BOMBOM_TEST_PARSES"] = str(parses)
    w = start(lenv)
    c = Client(lenv.base / "run" / "lmtp.sock")
    try:
        at_rcpt, after = c.send("bounce@news.example.kr", [ALICE, "nobody@bombom.news", BOB],
                                message(1, "lmtp"))
        assert [r[:9] for r in at_rcpt] == [b"250 2.1.5", b"550 5.1.1", b"250 2.1.5"]
        assert [r[:16] for r in after] == [b"250 2.0.0 stored"] * 2, after
        # again on the same connection (Postfix caches it): the same message is a duplicate
        _, again = c.send("bounce@news.example.kr", [ALICE], message(1, "lmtp"))
        assert again[0].startswith(b"250 2.0.0 duplicate")
    finally:
        c.close()
        w.stop()
    assert parses.read_bytes() == b"xx"  # one parse per transaction, not per recipient
    rows = q(cluster, "SELECT d.recipient, d.outcome, d.raw_sha256 FROM deliveries d ORDER BY id")
    assert [(r[0], r[1]) for r in rows] == [(ALICE, "stored"), (BOB, "stored"),
                                            (ALICE, "duplicate")]
    assert len({r[2] for r in rows}) == 1  # saved once
    assert q(cluster, "SELECT count(*) FROM articles") == [(2,)]


def test_database_down_at_rcpt_is_451_and_then_recovers(served: tuple[Env, Client],
                                                        cluster: LocalPostgres) -> None:
    e, c = served
    cluster.stop()
    at_rcpt, after = c.send("b@news.example.kr", [ALICE], DIGEST)
    assert at_rcpt[0].startswith(b"451 4.3.0") and after == []
    cluster.start()
    deadline = time.monotonic() + 30
    while True:  # the lookup pauses a moment after a failure, then asks again
        at_rcpt, after = c.send("b@news.example.kr", [ALICE], DIGEST)
        if at_rcpt[0].startswith(b"250") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert after and after[0].startswith(b"250 2.0.0 stored"), (at_rcpt, after)


def test_database_stopped_during_data_is_451_for_each_then_stored_once(
        served: tuple[Env, Client], cluster: LocalPostgres) -> None:
    e, c = served
    e.extra_env = {}
    at_rcpt, after = c.send("b@news.example.kr", [ALICE, BOB], message(2, "down"),
                            before_data=cluster.stop)
    assert [r[:3] for r in at_rcpt] == [b"250", b"250"]
    assert [r[:9] for r in after] == [b"451 4.3.0"] * 2, after
    cluster.start()
    wait_for("the database", lambda: q(cluster, "SELECT 1") == [(1,)])
    time.sleep(2.5)  # past the lookup's pause after the failure
    _, after = c.send("b@news.example.kr", [ALICE, BOB], message(2, "down"))
    assert [r[:16] for r in after] == [b"250 2.0.0 stored"] * 2, after
    assert q(cluster, "SELECT count(*) FROM articles") == [(2,)]


def test_hostile_messages_end_in_250_or_451_within_the_deadline(
        lenv: Env, cluster: LocalPostgres, workdir: Path) -> None:
    """A parser spinning with the GIL held is quarantined at its budget; a message that kills
    its process each time is deferred until its third death, then quarantined; the normal
    message beside them is stored."""
    with_parser_hooks(lenv, workdir, deadline=8)
    w = start(lenv)
    c = Client(lenv.base / "run" / "lmtp.sock")
    try:
        t0 = time.monotonic()
        _, spin = c.send("b@x.example", [ALICE], misbehaving("spin"))
        took = time.monotonic() - t0
        assert spin[0].startswith(b"250 2.0.0 quarantined unparsable: parse budget exceeded"), spin
        assert took < 8 + 5, took
        dies = [c.send("b@x.example", [ALICE], misbehaving("die"))[1][0] for _ in range(3)]
        assert [d[:9] for d in dies] == [b"451 4.3.0"] * 2 + [b"250 2.0.0"], dies
        assert b"died or timed out 3 times" in dies[2]
        _, normal = c.send("b@x.example", [ALICE], message(3, "beside"))
        assert normal[0].startswith(b"250 2.0.0 stored")
    finally:
        c.close()
        w.stop()
    assert q(cluster, "SELECT outcome, count(*) FROM deliveries GROUP BY 1 ORDER BY 1") == [
        ("quarantined", 2), ("stored", 1)]


def test_other_users_may_not_speak_lmtp(served: tuple[Env, Client]) -> None:
    e, c = served
    sock = e.base / "run" / "lmtp.sock"
    for d in (e.base, e.base / "run"):  # let the other user reach the socket: SO_PEERCRED decides
        os.chmod(d, 0o711)
    probe = ("import socket,sys; s=socket.socket(socket.AF_UNIX); s.settimeout(10); "
             f"s.connect({str(sock)!r}); sys.stdout.write(repr(s.recv(100)))")
    r = subprocess.run(["setpriv", "--reuid=1", "--regid=1", "--clear-groups",
                        "/usr/bin/python3", "-c", probe], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0 and r.stdout == "b''", r  # connected, closed before any greeting
    assert "refused a connection from uid 1" in e.log.read_text()
    assert c.send("b@x.example", [ALICE], message(4, "after"))[1][0].startswith(b"250")
