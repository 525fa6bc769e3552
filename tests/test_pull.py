"""The Maildir pull mode: `bombom worker --maildir` ingests what virtual(8) writes, against the real
PostgreSQL. Files are written the way virtual(8) writes them (tmp/ then new/, with Return-Path,
X-Original-To and Delivered-To on top, then our smtpd's Received:); tests/test_pull_postfix.py
runs it behind a real Postfix."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bombom_pipe import spool

from .builders import Worker, message, misbehaving, with_parser_hooks
from .conftest import ALICE, BOB, Env
from .sandbox import DELIVER_USER, give


def drop(maildir: Path, raw: bytes, rcpt: str = ALICE, name: str | None = None,
         qid: str = "4BqX1k2mZ") -> Path:
    """One file as virtual(8) delivers it, after our smtpd took it in from 192.0.2.7."""
    name = name or f"{time.time_ns()}.V1I{os.getpid()}M{len(raw)}.mx"
    tmp = maildir / "tmp" / name
    tmp.write_bytes(f"Return-Path: <bounce@news.example.kr>\nX-Original-To: {rcpt}\n"
                    f"Delivered-To: {rcpt}\nReceived: from mail.news.example.kr (mail.news."
                    f"example.kr [192.0.2.7])\n\tby mx.bombom.news (Postfix) with ESMTP id {qid}"
                    f"\n\tfor <{rcpt}>; Mon,  7 Dec 2026 13:00:00 +0000 (UTC)\n".encode()
                    + raw.replace(b"\r\n", b"\n"))
    give(tmp, DELIVER_USER)
    final = maildir / "new" / name
    os.rename(tmp, final)
    return final


def wait_for(what: str, check, timeout: float = 60) -> None:  # noqa: ANN001
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.1)


def drained(maildir: Path) -> bool:
    return not any(os.listdir(maildir / d) for d in ("new", "claimed", "cur"))


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


def test_files_are_delivered_kept_in_the_spool_and_removed(
        env: Env, db: psycopg.Connection, maildir: Path, puller: Worker) -> None:
    files = [drop(maildir, message(i, "pull"), rcpt=ALICE if i % 2 else BOB, qid=f"4BqX1k{i:03d}")
             for i in range(10)]
    drop(maildir, message(10, "pull"), rcpt="nobody@bombom.news", qid="4BqX1kNOPE")
    wait_for("11 deliveries", lambda: db.execute(
        "SELECT count(*) FROM deliveries").fetchone()[0] == 11)
    wait_for("an empty Maildir", lambda: drained(maildir))
    assert articles(db) == 10
    rows = db.execute("SELECT recipient, envelope_sender, queue_id, client_address::text, "
                      "raw_sha256, outcome FROM deliveries ORDER BY id").fetchall()
    assert {r[0] for r in rows} == {ALICE, BOB, "nobody@bombom.news"}
    assert {r[1] for r in rows} == {"bounce@news.example.kr"}
    # the log and the table name Postfix's queue id and the client, as the mail log does
    assert sorted(r[2] for r in rows) == sorted([f"4BqX1k{i:03d}" for i in range(10)]
                                                + ["4BqX1kNOPE"])
    assert {r[3].split("/")[0] for r in rows} == {"192.0.2.7"}
    assert "4BqX1k003: outcome=stored" in env.log.read_text()
    assert [r[5] for r in rows].count("nouser") == 1  # removed too: never retried
    for f, row in zip(files, rows, strict=False):  # the spool holds every message's bytes
        assert spool.raw_path(env.spool, row[4]).stat().st_size > 0
        assert not f.exists()


def test_database_down_keeps_files_and_retries_each_by_itself(
        env: Env, db: psycopg.Connection, maildir: Path, workdir: Path) -> None:
    dead = workdir / "no-server-here"
    dead.mkdir(exist_ok=True)
    env.extra_env = {"BOMBOM_DATABASE_URL": f"postgresql://bombom_deliver@/bombom?host={dead}",
                     "BOMBOM_DEADLINE_SECONDS": "2"}
    w = Worker(env, "--no-socket", "--maildir", str(maildir), "--processes", "2").start()
    try:
        w.wait_ready()
        files = [drop(maildir, message(i, "down")) for i in range(3)]
        wait_for("each file retried", lambda: env.log.read_text().count("retried in") >= 3)
    finally:
        w.stop()
    # every file is in new/ or claimed/ (a stopped worker's claims are put back at start)
    left = os.listdir(maildir / "new") + os.listdir(maildir / "claimed")
    assert sorted(left) == sorted(f.name for f in files)
    env.extra_env = {}
    w = Worker(env, "--no-socket", "--maildir", str(maildir), "--processes", "2").start()
    try:
        wait_for("an empty Maildir", lambda: drained(maildir) and articles(db) == 3)
    finally:
        w.stop()
    assert "put back" in env.log.read_text()


def test_files_claimed_by_a_dead_worker_are_delivered(env: Env, db: psycopg.Connection,
                                                      maildir: Path) -> None:
    claimed = maildir / "claimed"
    claimed.mkdir(mode=0o700)
    give(claimed, DELIVER_USER)
    f = drop(maildir, message(1, "orphan"))
    os.rename(f, claimed / f.name)
    w = Worker(env, "--no-socket", "--maildir", str(maildir)).start()
    try:
        wait_for("the orphan delivered", lambda: drained(maildir) and articles(db) == 1)
    finally:
        w.stop()
    assert "put back 1 files" in env.log.read_text()


def test_cur_left_by_an_earlier_version_is_pruned_once_spooled(
        env: Env, db: psycopg.Connection, maildir: Path) -> None:
    kept, unknown = maildir / "cur" / "1.kept:2,", maildir / "cur" / "2.unknown:2,"
    kept.write_bytes(message(1, "cur"))
    unknown.write_bytes(message(2, "cur"))
    spool.save_bytes(env.spool, "raw", kept.read_bytes(), ".eml")
    for p in (kept, unknown, *env.spool.rglob("*")):
        give(p, DELIVER_USER)
    w = Worker(env, "--no-socket", "--maildir", str(maildir)).start()
    try:
        w.wait_ready()
    finally:
        w.stop()
    assert not kept.exists() and unknown.exists()  # never delete the only copy


def test_a_message_that_kills_its_process_stops_nothing_and_ends_quarantined(
        env: Env, db: psycopg.Connection, maildir: Path, workdir: Path) -> None:
    """Retries are per file: two messages whose delivering process dies every time wait on
    their own backoff while the others go through, and are quarantined after MAX_DEATHS."""
    with_parser_hooks(env, workdir, deadline=10)
    w = Worker(env, "--no-socket", "--maildir", str(maildir), "--processes", "2").start()
    try:
        w.wait_ready()
        for i in range(2):
            drop(maildir, misbehaving("die", f"pull{i}"))
        for i in range(10):
            drop(maildir, message(i, "beside"))
        wait_for("the others stored", lambda: articles(db) == 10, timeout=30)
        wait_for("an empty Maildir", lambda: drained(maildir), timeout=60)
    finally:
        w.stop()
    rows = db.execute("SELECT outcome, detail FROM deliveries WHERE outcome <> 'stored'"
                      ).fetchall()
    assert len(rows) == 2 and all(
        o == "quarantined" and d.startswith("unprocessable: delivery process died or timed out "
                                            "3 times") for o, d in rows), rows


def test_gil_spinning_file_is_quarantined(env: Env, db: psycopg.Connection, maildir: Path,
                                          workdir: Path) -> None:
    with_parser_hooks(env, workdir, deadline=6)
    w = Worker(env, "--no-socket", "--maildir", str(maildir), "--processes", "2").start()
    try:
        w.wait_ready()
        drop(maildir, misbehaving("spin", "pull"))
        drop(maildir, message(1, "next"))
        wait_for("2 deliveries", lambda: drained(maildir) and db.execute(
            "SELECT count(*) FROM deliveries").fetchone()[0] == 2)
    finally:
        w.stop()
    assert db.execute("SELECT outcome, detail FROM deliveries ORDER BY outcome").fetchall() == [
        ("quarantined", "unparsable: parse budget exceeded"), ("stored", "article 1")]
