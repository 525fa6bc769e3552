"""End to end through a real Postfix: SMTP on 127.0.0.1 -> smtpd (pgsql recipient lookup) -> queue
-> pipe(8) -> bombom-deliver (installed by postfix-config/install.sh) -> the test PostgreSQL.

One private Postfix instance for the module (tests/postfix_fixture.py), stopped at the end.
Every wait is a bounded poll.
"""

from __future__ import annotations

import re
import smtplib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from pathlib import Path

import psycopg
import pytest

from .conftest import ALICE, BOB, EXAMPLES
from .dns_fixture import DnsServer
from .postfix_fixture import Postfix, available
from .sandbox import LocalPostgres, wait_for

pytestmark = [pytest.mark.postfix,
              pytest.mark.skipif(available() is not None, reason=str(available()))]

KOREAN = (EXAMPLES / "korean-weekly-cp949.eml").read_bytes()
SENDER = "bounce@news.example.kr"
DEADLINE = 5  # bombom-deliver's deadline in these tests; Postfix's time limit follows from it
# what Postfix logs for one pipe delivery
PIPE_LINE = re.compile(r"postfix/pipe\[\d+\]: (?P<qid>\w+): to=<(?P<to>[^>]*)>.*?, relay=bombom,"
                       r".*? dsn=(?P<dsn>[\d.]+), status=(?P<status>\w+) \((?P<text>.*)\)$")


# -- fixtures -------------------------------------------------------------------------------------

def install_env(base: Path, pg: LocalPostgres, dns: str, **overrides: str) -> dict[str, str]:
    """What `make install` would pass, with test paths and the test cluster's socket."""
    env = {
        "PREFIX": str(base / "opt"),
        "CONFIG_FILE": str(base / "etc-bombom" / "bombom.conf"),
        "INSTALL_ENV": str(base / "etc-bombom" / "install.env"),
        "SPOOL_DIR": str(base / "spool"),
        "LOG": str(base / "log" / "deliver.log"),
        "BIN_DIR": str(base / "bin"),
        "LOGROTATE_DIR": str(base / "logrotate.d"),
        "DELIVERY_DSN": pg.url(user="bombom_deliver"),
        "LOOKUP_DSN": pg.url(user="bombom_lookup"),
        "DEADLINE": str(DEADLINE),
        "MAXPROC": "4",
        "DOMAINS": "bombom.news",
        "DNS_SERVERS": dns,  # the loopback test server, never a real resolver
        # never the host's: /etc/systemd/system, /var/spool/bombom-maildir, /run/bombom
        "SYSTEMD_DIR": str(base / "systemd"),
        "MAILDIR_BASE": str(base / "maildir"),
        "WORKER_SOCKET": str(base / "run" / "worker.sock"),
        "LMTP_SOCKET": str(base / "run" / "lmtp.sock"),
    }
    return {**env, **overrides}


@pytest.fixture(scope="module")
def postfix(pg: LocalPostgres, workdir: Path, dns_server: DnsServer) -> Iterator[Postfix]:
    base = workdir / "postfix-e2e"
    base.mkdir()
    base.chmod(0o755)  # the pipe user must reach the venv, the config file and the spool
    p = Postfix(base / "instance")
    p.create()
    p.env = install_env(base, pg, dns_server.address)
    p.install()
    p.start()
    yield p
    p.stop()


def connect(pg: LocalPostgres) -> psycopg.Connection:
    return psycopg.connect(pg.url(), autocommit=True)


@pytest.fixture
def mail(postfix: Postfix, pg: LocalPostgres) -> Iterator[int]:
    """Empty database with members alice and bob, empty queue; yields the log offset."""
    if not pg.running():
        pg.start()
    with connect(pg) as conn:
        # CASCADE: every table that refers to these (articles, deliveries, ...) is emptied too
        conn.execute("TRUNCATE members, newsletters RESTART IDENTITY CASCADE")
        conn.execute("INSERT INTO members (address) VALUES (%s), (%s)", (ALICE, BOB))
    postfix.empty_queue()
    offset = len(postfix.log())
    yield offset
    assert bounces(postfix, offset) == [], "Postfix bounced mail"


# -- helpers --------------------------------------------------------------------------------------

def newsletter(n: int, tag: str = "burst") -> bytes:
    return (f"From: Bombom Letter <letter@news.example.kr>\r\nTo: {ALICE}\r\n"
            f"Subject: {tag} {n}\r\nDate: {formatdate()}\r\n"
            f"Message-ID: <{tag}-{n}@news.example.kr>\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/html; charset=utf-8\r\n\r\n"
            f"<html><body><p>{tag} issue {n}: 봄봄</p></body></html>\r\n").encode()


def smtp(postfix: Postfix) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", postfix.port, local_hostname="sender.example", timeout=30)


def rcpt_in_new_session(postfix: Postfix, rcpt: str) -> tuple[int, bytes]:
    """MAIL and RCPT in a fresh session. Right after a reload a session can be cut by an smtpd
    of the old generation; like any SMTP client, try again (and show Postfix's log for it)."""
    for _ in range(5):
        mark = len(postfix.log())
        try:
            with smtp(postfix) as s:
                s.mail(SENDER)
                return s.rcpt(rcpt)
        except smtplib.SMTPServerDisconnected:
            print("\nsession cut after reload; Postfix logged:\n" + postfix.log()[mark:][-2000:])
            time.sleep(1)
    raise AssertionError("smtpd kept cutting the session")


def send(postfix: Postfix, messages: list[bytes], rcpts: list[str]) -> None:
    """All messages in one SMTP session; every recipient must be accepted."""
    with smtp(postfix) as s:
        for raw in messages:
            refused = s.sendmail(SENDER, rcpts, raw)
            assert refused == {}, refused


def count(pg: LocalPostgres, sql: str, *params: object) -> int:
    with connect(pg) as conn:
        return conn.execute(sql, params).fetchone()[0]  # type: ignore[index]


def wait_articles(pg: LocalPostgres, n: int, timeout: float) -> None:
    wait_for(f"{n} articles", lambda: count(pg, "SELECT count(*) FROM articles") >= n,
             timeout, interval=0.2)


def pipe_lines(postfix: Postfix, since: int) -> list[re.Match[str]]:
    return [m for line in postfix.log_lines(since) if (m := PIPE_LINE.search(line))]


def bounces(postfix: Postfix, since: int) -> list[str]:
    return [line for line in postfix.log_lines(since)
            if "status=bounced" in line or "sender non-delivery notification" in line]


def wait_queue_empty(postfix: Postfix, timeout: float) -> None:
    try:
        wait_for("an empty queue", lambda: not postfix.queued(), timeout, interval=0.2)
    except AssertionError as e:
        left = [(q["queue_id"], q["queue_name"], [r.get("delay_reason") for r in q["recipients"]])
                for q in postfix.queued()]
        ids = {q[0] for q in left}
        log = [line for line in postfix.log_lines() if any(i in line for i in ids)]
        raise AssertionError(f"{e}; still queued: {left[:5]}; log:\n" + "\n".join(log[-30:])
                             ) from None


def reinstall(postfix: Postfix, **overrides: str) -> None:
    """install.sh again with other settings, waiting for the reload it triggers."""
    before = postfix.reload_count()
    if "reloaded Postfix" in postfix.install(**overrides).stdout:
        postfix.wait_reloaded(before)


def reload(postfix: Postfix) -> None:
    before = postfix.reload_count()
    postfix.run("postfix", "reload")
    postfix.wait_reloaded(before)


# -- the tests ------------------------------------------------------------------------------------

def test_newsletter_to_a_member_is_one_article(postfix: Postfix, pg: LocalPostgres,
                                               mail: int) -> None:
    send(postfix, [KOREAN], [ALICE])
    wait_articles(pg, 1, 30)
    wait_queue_empty(postfix, 10)
    with connect(pg) as conn:
        row = conn.execute(
            """SELECT m.address, a.id, a.message_id, a.subject, a.from_address, a.envelope_sender,
                      d.queue_id, d.outcome, d.client_address
               FROM articles a JOIN members m ON m.id = a.member_id
               JOIN deliveries d ON d.article_id = a.id""").fetchone()
    address, article, mid, subject, from_addr, env_sender, qid, outcome, client = row
    assert (address, mid, subject) == (ALICE, "weekly-42@news.example.kr",
                                       "봄봄 위클리 42호: 똠양꿍과 햏")
    assert (from_addr, env_sender, outcome, client) == ("letter@news.example.kr", SENDER,
                                                        "stored", "127.0.0.1")
    [line] = pipe_lines(postfix, mail)
    assert (line["qid"], line["to"], line["status"], line["dsn"]) == (qid, ALICE, "sent", "2.0.0")
    # our status line rides in Postfix's log line: queue id <-> article for the operator
    ours = re.fullmatch(r"delivered via bombom service \((.*)\)", line["text"])
    assert ours and ours[1].startswith(f"2.0.0 stored article {article} sha256=")
    assert len(ours[1]) <= 100


def test_unknown_recipient_is_refused_at_rcpt_time(postfix: Postfix, pg: LocalPostgres,
                                                   mail: int) -> None:
    with smtp(postfix) as s:
        s.mail(SENDER)
        code, text = s.rcpt("nobody@bombom.news")
        assert (code, text[:5]) == (550, b"5.1.1"), text
        code, text = s.rcpt("someone@elsewhere.example")  # no relaying, not even from 127.0.0.1
        assert code == 554, text
        assert s.docmd("DATA")[0] == 554  # no valid recipients: nothing can be queued
    log = postfix.log_lines(mail)
    assert not [line for line in log if "postfix/cleanup" in line]  # never entered the queue
    assert postfix.queued() == []
    assert bounces(postfix, mail) == []


def test_plus_address_is_delivered_to_the_member(postfix: Postfix, pg: LocalPostgres,
                                                 mail: int) -> None:
    send(postfix, [newsletter(1, "plus")], ["Alice+Promo@bombom.news"])
    wait_articles(pg, 1, 30)
    with connect(pg) as conn:
        row = conn.execute("""SELECT m.address, d.recipient FROM articles a
                              JOIN members m ON m.id = a.member_id
                              JOIN deliveries d ON d.article_id = a.id""").fetchone()
    assert row == (ALICE, "Alice+Promo@bombom.news")


def test_two_member_recipients_are_two_articles(postfix: Postfix, pg: LocalPostgres,
                                                mail: int) -> None:
    send(postfix, [KOREAN], [ALICE, BOB])
    wait_articles(pg, 2, 30)
    wait_queue_empty(postfix, 10)
    with connect(pg) as conn:
        rows = conn.execute("""SELECT m.address, a.message_id, a.raw_sha256
                               FROM articles a JOIN members m ON m.id = a.member_id
                               ORDER BY m.address""").fetchall()
    assert [r[:2] for r in rows] == [(ALICE, "weekly-42@news.example.kr"),
                                     (BOB, "weekly-42@news.example.kr")]
    assert rows[0][2] == rows[1][2]  # flags without R/O/D: the same bytes, one spool file
    lines = pipe_lines(postfix, mail)
    assert sorted(m["to"] for m in lines) == [ALICE, BOB]  # one pipe run per recipient
    assert len({m["qid"] for m in lines}) == 1 and {m["status"] for m in lines} == {"sent"}


def test_deadline_exceeded_is_deferred_then_delivered_once(postfix: Postfix, pg: LocalPostgres,
                                                           mail: int) -> None:
    with connect(pg) as locker:
        locker.execute("BEGIN")
        locker.execute("LOCK TABLE articles IN ACCESS EXCLUSIVE MODE")
        send(postfix, [newsletter(1, "locked")], [ALICE])
        deferred = wait_for("a deferral", lambda: [m for m in pipe_lines(postfix, mail)
                                                   if m["status"] == "deferred"],
                            timeout=DEADLINE + 30)
        locker.execute("ROLLBACK")
    assert deferred[0]["dsn"].startswith("4.")  # type: ignore[index]
    assert "deadline" in deferred[0]["text"]  # type: ignore[index]
    postfix.flush()
    wait_articles(pg, 1, 30)
    wait_queue_empty(postfix, 30)
    assert count(pg, "SELECT count(*) FROM articles") == 1
    assert [m["status"] for m in pipe_lines(postfix, mail)][-1] == "sent"


def test_database_down_defers_everything_then_drains_once(postfix: Postfix, pg: LocalPostgres,
                                                          mail: int) -> None:
    """50 messages accepted while the database is up (RCPT needs the lookup), delivered while it
    is down: all deferred, none bounced; database back + `postqueue -f`: exactly 50 articles.

    `defer_transports = bombom` keeps the accepted messages from being delivered until the
    database is stopped; then deliveries are released and really attempted against the stopped
    database (each bombom-deliver retries until its deadline, exits 75, Postfix defers).
    """
    n = 50
    reinstall(postfix, DEADLINE="2")  # each attempt against a dead database lasts the deadline
    try:
        postfix.postconf("defer_transports = bombom")
        reload(postfix)
        send(postfix, [newsletter(i, "down") for i in range(n)], [ALICE])
        wait_for(f"{n} messages in the deferred queue", lambda: len(
            [q for q in postfix.queued() if q["queue_name"] == "deferred"]) == n, 30)

        pg.stop()
        # with the database down the connection is answered 451 (the operator's blocklist of
        # clients is asked at connect; before it, RCPT was answered 451): senders retry
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            smtp(postfix)
        assert refused.value.smtp_code == 451, refused.value
        postfix.run("postconf", "-X", "defer_transports")
        reload(postfix)
        postfix.flush()
        wait_for(f"{n} deliveries tried against the stopped database", lambda: len(
            {m["qid"] for m in pipe_lines(postfix, mail) if m["status"] == "deferred"
             and "database unavailable" in m["text"]}) == n, timeout=120, interval=0.5)
        assert len(postfix.queued()) == n
        assert bounces(postfix, mail) == []

        # No `postfix reload` here: a reload while deliveries run leaves their queue files for
        # the next queue scan (qmgr: "skipped, still being delivered"). The reload in `finally`
        # (reinstall) also makes proxymap forget that the database was down (it waits 60 s).
        pg.start()
        t0 = time.monotonic()
        postfix.flush()
        wait_articles(pg, n, 120)
        wait_queue_empty(postfix, 60)
        drained = time.monotonic() - t0
    finally:
        pg.start()
        postfix.run("postconf", "-X", "defer_transports")
        reinstall(postfix)
    print(f"\n  database down: {n} deferred, none bounced; drained in {drained:.1f} s after "
          f"the database came back ({n / drained:.1f} msg/s)")
    assert count(pg, "SELECT count(*) FROM articles") == n
    assert count(pg, "SELECT count(DISTINCT message_id) FROM articles") == n
    assert count(pg, "SELECT count(*) FROM deliveries WHERE outcome = 'duplicate'") == 0
    assert bounces(postfix, mail) == []


def test_burst_of_500_messages(postfix: Postfix, pg: LocalPostgres, mail: int) -> None:
    sessions, per_session = 5, 100
    n = sessions * per_session
    batches = [[newsletter(s * per_session + i) for i in range(per_session)]
               for s in range(sessions)]
    t0 = time.monotonic()
    with ThreadPoolExecutor(sessions) as pool:
        list(pool.map(lambda batch: send(postfix, batch, [ALICE]), batches))
    accepted = time.monotonic() - t0
    wait_articles(pg, n, 300)
    elapsed = time.monotonic() - t0
    wait_queue_empty(postfix, 30)
    print(f"\n  burst: {n} messages over {sessions} SMTP sessions, accepted in {accepted:.1f} s, "
          f"stored in {elapsed:.1f} s: {n / elapsed:.1f} msg/s end to end")
    assert count(pg, "SELECT count(*) FROM articles") == n
    assert count(pg, "SELECT count(DISTINCT message_id) FROM articles") == n
    assert count(pg, "SELECT count(*) FROM deliveries WHERE outcome <> 'stored'") == 0
    # every Postfix log line names the article its queue id became
    lines = pipe_lines(postfix, mail)
    assert len(lines) == n and {m["status"] for m in lines} == {"sent"}
    with connect(pg) as conn:
        by_qid = dict(conn.execute("SELECT queue_id, article_id FROM deliveries").fetchall())
    for m in lines:
        article = re.search(r"\(2\.0\.0 stored article (\d+) sha256=\w+\)", m["text"])
        assert article and by_qid[m["qid"]] == int(article[1]), m.group(0)
    assert bounces(postfix, mail) == []


def test_install_twice_changes_nothing(postfix: Postfix, mail: int) -> None:
    files = [postfix.etc / "main.cf", postfix.etc / "master.cf",
             postfix.etc / "bombom-recipients.cf",
             Path(postfix.env["CONFIG_FILE"])]
    before = {f: (f.read_bytes(), f.stat().st_mtime_ns) for f in files}
    out = postfix.install().stdout
    assert {f: (f.read_bytes(), f.stat().st_mtime_ns) for f in files} == before
    assert "Postfix settings unchanged" in out and "wrote" not in out
    conf = Path(postfix.env["CONFIG_FILE"])
    assert conf.stat().st_mode & 0o777 == 0o640 and conf.owner() == "root"
    assert conf.group() == "bombom"


def test_uninstall_restores_postfix_then_install_again(postfix: Postfix, pg: LocalPostgres,
                                                       mail: int) -> None:
    original = (postfix.etc / "main.cf.bombom-orig").read_text()
    before = postfix.reload_count()
    postfix.install("uninstall")
    postfix.wait_reloaded(before)
    try:
        assert (postfix.etc / "main.cf").read_text() == original
        assert postfix.run("postconf", "-M", "bombom/unix").stdout == ""
        # bombom.news is no longer ours: refused (the test instance's default_transport is
        # error:), never queued for bombom
        code, text = rcpt_in_new_session(postfix, ALICE)
        assert code // 100 == 5 and b"virtual mailbox" not in text, text
    finally:
        reinstall(postfix)
    send(postfix, [newsletter(1, "again")], [ALICE])
    wait_articles(pg, 1, 30)


PULL_ONLY = ("virtual_mailbox_base", "virtual_uid_maps", "virtual_gid_maps", "virtual_minimum_uid",
             "virtual_mailbox_limit")


def test_uninstall_after_switching_modes_puts_back_what_every_mode_changed(
        postfix: Postfix, workdir: Path) -> None:
    """push → pull → worker → push → pull, then uninstall: main.cf and master.cf (postscreen in
    front of smtpd) as they were before the first install, also when the record of that state
    was written by an earlier version for push mode's settings only. Each install in between
    carries only its own mode's settings (switching back to push leaves no virtual(8) settings
    behind). A second instance, never started; the venv is the module's."""
    base = workdir / "postfix-modes"
    base.mkdir()
    base.chmod(0o755)
    p = Postfix(base / "instance")
    p.create()
    p.env = {**postfix.env, **{name: str(base / path) for name, path in (
        ("CONFIG_FILE", "etc-bombom/bombom.conf"), ("SPOOL_DIR", "spool"),
        ("INSTALL_ENV", "etc-bombom/install.env"),
        ("LOG", "log/deliver.log"), ("LOGROTATE_DIR", "logrotate.d"),
        ("SYSTEMD_DIR", "systemd"), ("MAILDIR_BASE", "maildir"),
        ("WORKER_SOCKET", "run/worker.sock"))},
             "SMTP_SERVICE": f"127.0.0.1:{p.port}/inet"}  # postscreen goes in front of it
    p.postconf("virtual_mailbox_base = /srv/mail")  # the operator's own, changed by pull mode
    master_cf = (p.etc / "master.cf").read_text()

    def settings() -> str:  # main.cf itself: postconf hides what it does not know (bombom_*)
        return (p.etc / "main.cf").read_text()

    original = settings()
    modes: dict[str, str] = {}
    for mode in ("push", "pull", "lmtp", "worker", "push", "pull"):
        p.install(MODE=mode)
        if not modes:  # as an earlier version recorded it: push mode's keys only
            prior = p.etc / "bombom-prior-settings"
            prior.write_text("".join(line for line in prior.read_text().splitlines(True)
                                     if not line.startswith(PULL_ONLY)))
        modes.setdefault(mode, settings())
        assert settings() == modes[mode], mode  # the same mode, the same main.cf
    assert modes["push"] == modes["worker"]
    assert "bombomlmtp_destination_concurrency_limit" in modes["lmtp"]
    assert "virtual_uid_maps" in modes["pull"] and "virtual_uid_maps" not in modes["push"]
    assert "virtual_mailbox_base = /srv/mail" in modes["push"]
    assert "postscreen" in p.run("postconf", "-M", f"127.0.0.1:{p.port}/inet").stdout.split()
    p.install("uninstall", FORCE="1")  # never started: no queue to read
    assert settings() == original
    assert (p.etc / "master.cf").read_text() == master_cf  # smtpd again, no postscreen
    assert p.run("postconf", "-M", "bombom/unix").stdout == ""
    assert p.run("postconf", "-M", "bombomlmtp/unix").stdout == ""
