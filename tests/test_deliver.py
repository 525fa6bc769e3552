"""The delivery contract, through the real `bombom-deliver` process and a real PostgreSQL."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from bombom_pipe.spool import raw_path

from .conftest import ALICE, BOB, EXAMPLES, Env
from .sandbox import give

KOREAN = (EXAMPLES / "korean-weekly-cp949.eml").read_bytes()
DIGEST = (EXAMPLES / "english-digest.eml").read_bytes()
NO_MID = (EXAMPLES / "no-message-id.eml").read_bytes()


def count(db: psycopg.Connection, sql: str, *params: object) -> int:
    return db.execute(sql, params).fetchone()[0]


def outcomes(db: psycopg.Connection) -> list[str]:
    return [r[0] for r in db.execute("SELECT outcome FROM deliveries ORDER BY id")]


def line(r: subprocess.CompletedProcess[bytes]) -> str:
    out = r.stdout.decode()
    assert out.count("\n") == 1, f"expected one status line, got {out!r} / {r.stderr!r}"
    assert "Traceback" not in out
    return out.strip()


def test_stores_a_korean_newsletter_with_all_fields(env: Env, db: psycopg.Connection) -> None:
    r = env.deliver(KOREAN, "--sender", "bounce@news.example.kr", "--queue-id", "4XyZ1",
                    "--client-address", "127.0.0.1")
    assert r.returncode == 0, r
    assert line(r).startswith("2.0.0 stored article 1")
    row = db.execute(
        """SELECT m.address, a.message_id, a.subject, a.from_address, a.from_name, a.sent_at,
                  a.date_header, a.html, a.text_content, a.list_id, a.raw_sha256, a.raw_path,
                  a.envelope_sender, n.sender_address, n.display_name, n.list_id
           FROM articles a JOIN members m ON m.id = a.member_id
           JOIN newsletters n ON n.id = a.newsletter_id""").fetchone()
    (member, mid, subject, from_addr, from_name, sent_at, date_header, html, text, list_id,
     sha, path, env_sender, n_addr, n_name, n_list) = row
    assert member == ALICE
    assert mid == "weekly-42@news.example.kr"
    assert subject == "봄봄 위클리 42호: 똠양꿍과 햏"
    assert (from_addr, from_name) == ("letter@news.example.kr", "봄봄 뉴스")
    assert sent_at.isoformat() == "2026-11-28T23:00:00+00:00"
    assert date_header == "Sun, 29 Nov 2026 08:00:00 +0900"
    assert "똠양꿍 맛집" in html and "<table" in html
    assert "똠양꿍 맛집을 소개합니다" in text and "<p>" not in text
    assert list_id == "weekly.news.example.kr"
    assert env_sender == "bounce@news.example.kr"
    assert (n_addr, n_name, n_list) == ("letter@news.example.kr", "봄봄 뉴스",
                                        "weekly.news.example.kr")
    assert sha == hashlib.sha256(KOREAN).hexdigest()
    assert Path(path) == raw_path(env.spool, sha)
    assert Path(path).read_bytes() == KOREAN
    d = db.execute("SELECT queue_id, recipient, outcome, client_address, finished_at >= "
                   "started_at FROM deliveries").fetchone()
    assert d == ("4XyZ1", ALICE, "stored", "127.0.0.1", True)
    assert "outcome=stored" in env.log.read_text() and "4XyZ1" in env.log.read_text()


def test_raw_file_is_private_and_no_temp_file_is_left(env: Env, db: psycopg.Connection) -> None:
    assert env.deliver(DIGEST).returncode == 0
    path = raw_path(env.spool, hashlib.sha256(DIGEST).hexdigest())
    assert path.stat().st_mode & 0o777 == 0o600
    assert list((env.spool / "tmp").iterdir()) == []


def test_same_message_twice_is_one_article(env: Env, db: psycopg.Connection) -> None:
    assert env.deliver(DIGEST).returncode == 0
    r = env.deliver(DIGEST)
    assert r.returncode == 0
    assert line(r).startswith("2.0.0 duplicate article 1")
    assert count(db, "SELECT count(*) FROM articles") == 1
    assert outcomes(db) == ["stored", "duplicate"]


def test_same_message_id_with_other_bytes_is_a_duplicate(env: Env, db: psycopg.Connection
                                                         ) -> None:
    assert env.deliver(DIGEST).returncode == 0
    resent = b"Received: from relay2 by mx; Mon, 30 Nov 2026 07:00:00 +0000\r\n" + DIGEST
    assert env.deliver(resent).returncode == 0
    assert count(db, "SELECT count(*) FROM articles") == 1


def test_no_message_id_twice_is_one_article(env: Env, db: psycopg.Connection) -> None:
    assert env.deliver(NO_MID).returncode == 0
    assert env.deliver(NO_MID).returncode == 0
    assert count(db, "SELECT count(*) FROM articles") == 1
    key = db.execute("SELECT dedup_key, sent_at FROM articles").fetchone()
    assert key[0] == f"from:tiny@letters.example.org sha256:{hashlib.sha256(NO_MID).hexdigest()}"
    assert key[1].date().isoformat() == "2026-11-29"  # fuzzy-read from a broken Date


def test_same_message_to_two_members_is_two_articles(env: Env, db: psycopg.Connection) -> None:
    assert env.deliver(DIGEST, recipient=ALICE).returncode == 0
    assert env.deliver(DIGEST, recipient=BOB).returncode == 0
    rows = db.execute("SELECT m.address FROM articles a JOIN members m ON m.id = a.member_id "
                      "ORDER BY 1").fetchall()
    assert rows == [(ALICE,), (BOB,)]
    assert count(db, "SELECT count(*) FROM newsletters") == 1


def test_plus_extension_and_case_reach_the_member(env: Env, db: psycopg.Connection) -> None:
    assert env.deliver(DIGEST, recipient="Alice+Promo@Bombom.News").returncode == 0
    assert count(db, "SELECT count(*) FROM articles a JOIN members m ON m.id = a.member_id "
                     "WHERE m.address = %s", ALICE) == 1


@pytest.mark.parametrize("recipient", ["nobody@bombom.news", "+alice@bombom.news"])
def test_unknown_recipient_is_67(env: Env, db: psycopg.Connection, recipient: str) -> None:
    """A tag alone is no local part (as in Postfix's recipient_delimiter): nobody."""
    r = env.deliver(DIGEST, recipient=recipient)
    assert r.returncode == 67
    assert line(r).startswith("5.1.1 ")
    assert outcomes(db) == ["nouser"]
    assert db.execute("SELECT detail FROM deliveries").fetchone()[0] == f"no member {recipient}"
    assert count(db, "SELECT count(*) FROM articles") == 0
    assert raw_path(env.spool, hashlib.sha256(DIGEST).hexdigest()).exists()


def test_recipient_from_headers_when_not_given(env: Env, db: psycopg.Connection) -> None:
    msg = b"X-Original-To: bob@bombom.news\r\n" + DIGEST  # To: says demo@, which is unknown
    r = env.deliver(msg, recipient=None)
    assert r.returncode == 0, r
    assert count(db, "SELECT count(*) FROM articles a JOIN members m ON m.id = a.member_id "
                     "WHERE m.address = %s", BOB) == 1
    assert "(from x-original-to header)" in env.log.read_text()


def test_unparsable_message_is_quarantined_and_kept(env: Env, db: psycopg.Connection) -> None:
    r = env.deliver(b"")
    assert r.returncode == 0, r
    assert "quarantined" in line(r)
    detail = db.execute("SELECT outcome, detail FROM deliveries").fetchone()
    assert detail[0] == "quarantined" and detail[1]
    assert raw_path(env.spool, hashlib.sha256(b"").hexdigest()).exists()


def test_database_down_is_75(env: Env, db: psycopg.Connection, workdir: Path) -> None:
    dead = workdir / "no-server-here"
    dead.mkdir(exist_ok=True)
    env.extra_env = {"BOMBOM_DATABASE_URL": f"postgresql://postgres@/bombom?host={dead}",
                     "BOMBOM_DEADLINE_SECONDS": "3"}
    t0 = time.monotonic()
    r = env.deliver(DIGEST)
    assert r.returncode == 75, r
    assert line(r).startswith("4.3.0 ")
    assert "password" not in r.stdout.decode()
    assert time.monotonic() - t0 < 15
    assert raw_path(env.spool, hashlib.sha256(DIGEST).hexdigest()).read_bytes() == DIGEST


@pytest.mark.parametrize("dsn", [
    "postgresql://u:s3cr3t@/x?sslmode=bogus",
    "host=/nonexistent user=u password=s3cr3t bogus",
    "postgresql://u:s3cr3t@bad host/x",
    "postgresql://bombom_deliver:s3cr3t@/nodb?host=/nonexistent",
])
def test_bad_dsn_is_75_and_the_password_is_not_shown(env: Env, db: psycopg.Connection,
                                                     dsn: str) -> None:
    env.extra_env = {"BOMBOM_DATABASE_URL": dsn, "BOMBOM_DEADLINE_SECONDS": "2"}
    r = env.deliver(DIGEST)
    assert r.returncode == 75, r
    assert line(r).startswith("4.3.0 ")
    assert "s3cr3t" not in r.stdout.decode() + env.log.read_text()


def test_unwritable_spool_is_75(env: Env, db: psycopg.Connection) -> None:
    give(env.spool, "root" if os.geteuid() == 0 else os.getlogin())
    os.chmod(env.spool, 0o555)
    r = env.deliver(DIGEST)
    assert r.returncode == 75, r
    assert line(r).startswith("4.3.0 spool: ")
    assert count(db, "SELECT count(*) FROM deliveries") == 0


def test_attachments_unsavable_is_75_and_logged(env: Env, db: psycopg.Connection) -> None:
    """The raw message is kept but its attachment cannot be (the spool's att/ is not a
    directory): 75, Postfix retries, and the delivery still writes its one outcome line."""
    (env.spool / "att").write_text("not a directory")
    give(env.spool / "att", "nobody")
    raw = (b"From: Letter <letter@news.example.kr>\r\nSubject: with a file\r\n"
           b"Message-ID: <att-1@news.example.kr>\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
           b"Content-Type: text/plain\r\n\r\nhello\r\n--b\r\nContent-Type: application/pdf"
           b"\r\nContent-Disposition: attachment; filename=a.pdf\r\n\r\n%PDF-1.4 x\r\n--b--\r\n")
    r = env.deliver(raw)
    assert r.returncode == 75 and line(r).startswith("4.3.0 tempfail spool: "), r
    assert f"outcome=tempfail recipient={ALICE} orig_to=- message_id=<att-1@news.example.kr>" \
        in env.log.read_text()


@pytest.mark.parametrize("text, mode, why", [
    (None, 0o604, "world-readable"),
    ('database_url = "dbname=x"\nspool_dri = "/tmp"\n', 0o600, "unknown key(s) spool_dri"),
    ('database_url = "dbname=x"\ndeadline_seconds = "soon"\n', 0o600, "deadline_seconds"),
    ("database_url = \n", 0o600, "bombom.conf"),
])
def test_bad_config_is_75_with_a_reason(env: Env, db: psycopg.Connection, text: str | None,
                                        mode: int, why: str) -> None:
    env.write_config(text, mode)
    r = env.deliver(DIGEST)
    assert r.returncode == 75, r
    assert line(r).startswith("4.3.0 configuration: ") and why in line(r)


def test_missing_config_is_75(env: Env, db: psycopg.Connection) -> None:
    env.config.unlink()
    r = env.deliver(DIGEST)
    assert r.returncode == 75
    assert "not found" in line(r)


def test_broken_dependency_import_is_75_with_one_line(env: Env, db: psycopg.Connection,
                                                      workdir: Path) -> None:
    broken = workdir / "broken-psycopg"
    (broken / "psycopg").mkdir(parents=True, exist_ok=True)
    (broken / "psycopg" / "__init__.py").write_text("raise ImportError('shadowed psycopg')\n")
    os.chmod(broken, 0o755)
    os.chmod(broken / "psycopg", 0o755)
    os.chmod(broken / "psycopg" / "__init__.py", 0o644)
    env.extra_env = {"PYTHONPATH": f"{broken}:{env.src}"}
    r = env.deliver(DIGEST)
    assert r.returncode == 75, r
    assert line(r).startswith("4.3.0 ")
    assert raw_path(env.spool, hashlib.sha256(DIGEST).hexdigest()).exists()


def test_deadline_while_a_lock_is_held_is_75_then_delivers_once(
        env: Env, db: psycopg.Connection, pg) -> None:  # noqa: ANN001
    env.extra_env = {"BOMBOM_DEADLINE_SECONDS": "3"}
    with psycopg.connect(pg.url()) as locker:
        # newsletters, not articles: deliveries references articles, so the audit row would wait
        locker.execute("LOCK TABLE newsletters IN ACCESS EXCLUSIVE MODE")
        t0 = time.monotonic()
        r = env.deliver(DIGEST)
        took = time.monotonic() - t0
        assert r.returncode == 75, r
        assert line(r).startswith("4.3.0 ")
        assert took < 3 + 5  # own deadline plus the watchdog's grace, far below Postfix's limit
        assert outcomes(db) == ["tempfail"]  # audited while the lock is still held
    assert env.deliver(DIGEST).returncode == 0
    assert env.deliver(DIGEST).returncode == 0
    assert count(db, "SELECT count(*) FROM articles") == 1
    assert outcomes(db) == ["tempfail", "stored", "duplicate"]


def test_refuses_to_run_as_root(env: Env, db: psycopg.Connection, runner: list[str]) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to check that root is refused")
    argv = runner[runner.index("env"):]  # the same command without the setpriv prefix
    r = subprocess.run([*argv, "--config", str(env.config), "--recipient", ALICE],
                       input=DIGEST, capture_output=True)
    assert r.returncode == 75
    assert "root" in line(r)


@pytest.mark.parametrize("runs", [2, 20])
def test_concurrent_runs_of_one_message_make_one_article(env: Env, db: psycopg.Connection,
                                                         runs: int) -> None:
    procs = [env.popen("--recipient", ALICE) for _ in range(runs)]
    with ThreadPoolExecutor(runs) as pool:
        results = list(pool.map(lambda p: p.communicate(DIGEST, timeout=60), procs))
    assert [p.returncode for p in procs] == [0] * runs, results
    assert count(db, "SELECT count(*) FROM articles") == 1
    assert sorted(outcomes(db)) == ["duplicate"] * (runs - 1) + ["stored"]


def test_help_exits_0(env: Env) -> None:
    r = subprocess.run(env.argv("--help", config=False), capture_output=True)
    assert r.returncode == 0 and b"--recipient" in r.stdout


def test_unknown_option_is_75_not_2(env: Env) -> None:
    r = subprocess.run(env.argv("--bogus"), input=b"", capture_output=True)
    assert r.returncode == 75
    assert r.stdout.startswith(b"4.3.0 ")
