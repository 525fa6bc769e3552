"""The Maildir pull mode: `bombom worker --maildir` ingests what virtual(8) writes, against the real
PostgreSQL. Files are written the way virtual(8) writes them (tmp/ then new/, with Return-Path,
X-Original-To and Delivered-To on top); tests/test_postfix.py runs it behind a real Postfix."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from .builders import Worker, message, misbehaving, with_parser_hooks
from .conftest import ALICE, BOB, Env
from .sandbox import DELIVER_USER, give


def drop(maildir: Path, raw: bytes, rcpt: str = ALICE, name: str | None = None) -> Path:
    """One file as virtual(8) delivers it."""
    name = name or f"{time.time_ns()}.V1I{os.getpid()}M{len(raw)}.mx"
    tmp = maildir / "tmp" / name
    tmp.write_bytes(f"Return-Path: <bounce@news.example.kr>\nX-Original-To: {rcpt}\n"
                    f"Delivered-To: {rcpt}\n".encode() + raw.replace(b"\r\n", b"\n"))
    give(tmp, DELIVER_USER)
    final = maildir / "new" / name
    os.rename(tmp, final)
    return final


def wait_for(what: str, check, timeout: float = 60) -> None:  # noqa: ANN001
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def maildir(env: Env) -> Path:
    d = env.base / "Maildir"
    for sub in ("", "tmp", "new", "cur"):
        (d / sub).mkdir(mode=0o700, exist_ok=True)
    give(d, DELIVER_USER)
    return d


@pytest.fixture
def puller(env: Env, maildir: Path) -> Iterator[Worker]:
    w = Worker(env, "--no-socket", "--maildir", str(maildir), "--processes", "2").start()
    w.wait_ready()
    yield w
    w.stop()


def articles(db: psycopg.Connection) -> int:
    return db.execute("SELECT count(*) FROM articles").fetchone()[0]


def test_files_are_delivered_and_moved_to_cur(env: Env, db: psycopg.Connection, maildir: Path,
                                              puller: Worker) -> None:
    for i in range(10):
        drop(maildir, message(i, "pull"), rcpt=ALICE if i % 2 else BOB)
    wait_for("10 files in cur/", lambda: len(os.listdir(maildir / "cur")) == 10)
    assert os.listdir(maildir / "new") == [] and os.listdir(maildir / "claimed") == []
    assert articles(db) == 10
    rows = db.execute("SELECT d.recipient, d.envelope_sender, d.queue_id FROM deliveries d "
                      "ORDER BY d.id").fetchall()
    assert {r[0] for r in rows} == {ALICE, BOB}
    assert {r[1] for r in rows} == {"bounce@news.example.kr"}
    assert all(r[2].startswith("maildir:") for r in rows)  # no Received: in these files


def test_database_down_leaves_files_for_later(env: Env, db: psycopg.Connection, maildir: Path,
                                              workdir: Path) -> None:
    dead = workdir / "no-server-here"
    dead.mkdir(exist_ok=True)
    env.extra_env = {"BOMBOM_DATABASE_URL": f"postgresql://bombom_deliver@/bombom?host={dead}",
                     "BOMBOM_DEADLINE_SECONDS": "2"}
    w = Worker(env, "--no-socket", "--maildir", str(maildir), "--processes", "2").start()
    try:
        w.wait_ready()
        files = [drop(maildir, message(i, "down")) for i in range(3)]
        wait_for("a tempfail", lambda: "left in new/" in env.log.read_text())
    finally:
        w.stop()
    # every file is in new/ or claimed/ (a stopped worker's claims are put back at start)
    left = os.listdir(maildir / "new") + os.listdir(maildir / "claimed")
    assert sorted(left) == sorted(f.name for f in files)
    env.extra_env = {}
    w = Worker(env, "--no-socket", "--maildir", str(maildir), "--processes", "2").start()
    try:
        wait_for("3 files in cur/", lambda: len(os.listdir(maildir / "cur")) == 3)
    finally:
        w.stop()
    assert articles(db) == 3


def test_files_claimed_by_a_dead_worker_are_delivered(env: Env, db: psycopg.Connection,
                                                      maildir: Path) -> None:
    claimed = maildir / "claimed"
    claimed.mkdir(mode=0o700)
    give(claimed, DELIVER_USER)
    f = drop(maildir, message(1, "orphan"))
    os.rename(f, claimed / f.name)
    w = Worker(env, "--no-socket", "--maildir", str(maildir)).start()
    try:
        wait_for("the orphan in cur/", lambda: len(os.listdir(maildir / "cur")) == 1)
    finally:
        w.stop()
    assert articles(db) == 1
    assert "put back 1 files" in env.log.read_text()


def test_gil_spinning_file_is_quarantined(env: Env, db: psycopg.Connection, maildir: Path,
                                          workdir: Path) -> None:
    with_parser_hooks(env, workdir, deadline=6)
    w = Worker(env, "--no-socket", "--maildir", str(maildir), "--processes", "2").start()
    try:
        w.wait_ready()
        drop(maildir, misbehaving("spin", "pull"))
        drop(maildir, message(1, "next"))
        wait_for("2 files in cur/", lambda: len(os.listdir(maildir / "cur")) == 2)
    finally:
        w.stop()
    assert db.execute("SELECT outcome, detail FROM deliveries ORDER BY outcome").fetchall() == [
        ("quarantined", "unparsable: parse budget exceeded"), ("stored", "article 1")]


def test_envelope_reads_postfix_headers_only(tmp_path: Path) -> None:
    """Queue id and client address from the topmost Received: (Postfix's, folded as cleanup
    folds it); a sender's own Received: below it never counts."""
    from bombom_pipe.maildir import envelope

    path = tmp_path / "1796646987.V801I2M3.mx"
    path.write_bytes(
        b"Return-Path: <bounce@news.example.kr>\nX-Original-To: alice+x@bombom.news\n"
        b"Delivered-To: alice@bombom.news\n"
        b"Received: from sender.example (unknown [127.0.0.1])\n"
        b"\tby mx.bombom.test (Postfix) with ESMTP id 4BqX1k2mZ9\n"
        b"\tfor <alice+x@bombom.news>; Mon,  7 Dec 2026 13:00:00 +0000 (UTC)\n"
        b"Received: from forged (forged [10.9.9.9]) by x (Postfix) with ESMTP id FORGED\n"
        b"Subject: hi\n\nReceived: from body [10.1.1.1]\n")
    assert envelope(path) == {
        "recipient": "alice@bombom.news", "original_recipient": "alice+x@bombom.news",
        "sender": "bounce@news.example.kr", "queue_id": "4BqX1k2mZ9",
        "client_address": "127.0.0.1"}
    path.write_bytes(b"Delivered-To: alice@bombom.news\nReceived: by mx.bombom.test (Postfix, "
                     b"from userid 0)\n\tid 4BqX2; Mon, 7 Dec 2026\nReceived: from a (b [10.0.0.1])"
                     b" by c (Postfix) id X\n\n")
    assert (envelope(path)["queue_id"], envelope(path)["client_address"]) == ("4BqX2", None)
    path.write_bytes(b"Delivered-To: alice@bombom.news\nReceived: from x (y [IPv6:::1]) by z "
                     b"(Other MTA) id ABC\n\n")
    assert (envelope(path)["queue_id"], envelope(path)["client_address"]) == (
        f"maildir:{path.name}", "::1")
