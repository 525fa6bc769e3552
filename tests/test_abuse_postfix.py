"""Abuse controls through a real Postfix (issue: running our own MX): the operator's blocklist
refused at MAIL FROM and at the first command (550 5.7.1; the database down: 451, never let
through), a member's own block (kept, nothing shown, exit 0, never bounced), a client over its
anvil rate (4xx, never 5xx), the volume limit per sender domain (quarantined with its reason),
a spool or a database disk that is full (75: Postfix keeps the mail), and a backup restored
into a fresh database and spool, where `bombom replay --all` gives the same articles
(docs/operations.md's "Backup and restore", step by step).

One private Postfix instance (push mode, installed by install.sh) for the module, on loopback.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from .conftest import ALICE, BOB
from .dns_fixture import DnsServer
from .postfix_fixture import Postfix, available
from .sandbox import LocalPostgres, as_user, give, wait_for
from .test_postfix import (
    SENDER,
    bounces,
    connect,
    count,
    install_env,
    newsletter,
    pipe_lines,
    reinstall,
    reload,
    send,
    smtp,
    wait_articles,
    wait_queue_empty,
)

pytestmark = [pytest.mark.postfix,
              pytest.mark.skipif(available() is not None, reason=str(available()))]


@pytest.fixture(scope="module")
def postfix(pg: LocalPostgres, workdir: Path, dns_server: DnsServer) -> Iterator[Postfix]:
    base = workdir / "postfix-abuse"
    base.mkdir()
    base.chmod(0o755)
    p = Postfix(base / "instance")
    p.create()
    # postscreen in front of smtpd on the instance's listener (install.sh's SMTP_SERVICE)
    p.env = install_env(base, pg, dns_server.address, SMTP_SERVICE=f"127.0.0.1:{p.port}/inet")
    p.install()
    p.start()
    yield p
    p.stop()


@pytest.fixture
def mail(postfix: Postfix, pg: LocalPostgres) -> Iterator[int]:
    """Empty database with members alice and bob, no blocks, empty queue; the log offset."""
    if not pg.running():
        pg.start()
    with connect(pg) as conn:
        conn.execute("TRUNCATE members, newsletters, operator_blocks, domain_volume "
                     "RESTART IDENTITY CASCADE")
        conn.execute("INSERT INTO members (address) VALUES (%s), (%s)", (ALICE, BOB))
    postfix.empty_queue()
    offset = len(postfix.log())
    yield offset
    assert bounces(postfix, offset) == [], "Postfix bounced mail"


def bombom(postfix: Postfix, pg: LocalPostgres, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed `bombom` as root would run it, on the schema owner's connection."""
    env = {"PATH": os.environ["PATH"], "BOMBOM_CONFIG": postfix.env["CONFIG_FILE"],
           "BOMBOM_DATABASE_URL": pg.url()}
    return subprocess.run([f"{postfix.env['PREFIX']}/venv/bin/bombom", *args], text=True,
                          capture_output=True, env=env)


def letter(sender: str, n: int, tag: str) -> bytes:
    return newsletter(n, tag).replace(b"letter@news.example.kr", sender.encode())


# -- the operator's blocklist -------------------------------------------------------------------

@pytest.mark.parametrize("what", ["spam@junk.example", "junk.example"])
def test_a_blocked_sender_gets_550_at_mail_from(postfix: Postfix, pg: LocalPostgres, mail: int,
                                                 what: str) -> None:
    r = bombom(postfix, pg, "block", "add", what, "--reason", "test")
    assert r.returncode == 0 and "blocked" in r.stdout, r.stderr
    with smtp(postfix) as s:
        code, text = s.mail("spam@junk.example")
        assert (code, text[:5]) == (550, b"5.7.1"), text
        s.rset()
        assert s.mail("letter@other.example")[0] == 250  # others are not affected
        assert s.rcpt(ALICE)[0] == 250
    assert what in bombom(postfix, pg, "block", "list").stdout
    assert bombom(postfix, pg, "block", "remove", what).returncode == 0
    with smtp(postfix) as s:
        assert s.mail("spam@junk.example")[0] == 250
    assert bombom(postfix, pg, "block", "remove", what).returncode == 1  # not blocked: one line


def test_a_blocked_client_network_gets_550_at_connect(
        postfix: Postfix, pg: LocalPostgres, mail: int) -> None:
    assert bombom(postfix, pg, "block", "add", "127.0.0.0/30").returncode == 0
    try:
        with pytest.raises(smtplib.SMTPConnectError) as e:
            smtp(postfix)
        assert (e.value.smtp_code, e.value.smtp_error[:5]) == (550, b"5.7.1"), e.value
    finally:
        assert bombom(postfix, pg, "block", "remove", "127.0.0.0/30").returncode == 0
    with smtp(postfix) as s:
        assert s.mail(SENDER)[0] == 250


def test_the_blocklist_lookup_with_the_database_down_is_451_never_accepted(
        postfix: Postfix, pg: LocalPostgres, mail: int) -> None:
    """smtpd asks the client table at connect (smtpd_delay_reject = no): the greeting is 451."""
    pg.stop()
    try:
        with pytest.raises(smtplib.SMTPConnectError) as e:
            smtp(postfix)
        assert e.value.smtp_code == 451, e.value
    finally:
        pg.start()
        reinstall(postfix)  # proxymap remembers a dead database for a while: a fresh one
        reload(postfix)
    send(postfix, [newsletter(1, "after-down")], [ALICE])
    wait_articles(pg, 1, 60)


# -- a member's own block -----------------------------------------------------------------------

def test_a_members_block_keeps_the_mail_shows_nothing_and_answers_0(
        postfix: Postfix, pg: LocalPostgres, mail: int) -> None:
    r = bombom(postfix, pg, "block", "add", "--member", ALICE, "news.example.kr")
    assert r.returncode == 0, r.stderr
    assert "news.example.kr" in bombom(postfix, pg, "block", "list", "--member", ALICE).stdout
    send(postfix, [newsletter(1, "blocked")], [ALICE, BOB])
    wait_for("two deliveries", lambda: count(pg, "SELECT count(*) FROM deliveries") == 2, 60)
    wait_queue_empty(postfix, 30)
    with connect(pg) as conn:
        rows = dict(conn.execute("SELECT recipient, outcome FROM deliveries").fetchall())
        assert rows == {ALICE: "blocked", BOB: "stored"}
        assert conn.execute("SELECT m.address FROM articles a JOIN members m "
                            "ON m.id = a.member_id").fetchall() == [(BOB,)]
        sha = conn.execute("SELECT raw_sha256 FROM deliveries WHERE outcome = 'blocked'"
                           ).fetchone()[0]  # type: ignore[index]
    raw = Path(postfix.env["SPOOL_DIR"]) / "raw" / sha[:2] / f"{sha}.eml"
    assert raw.exists()  # kept, as every message
    lines = {m["to"]: m for m in pipe_lines(postfix, mail)}
    assert lines[ALICE]["status"] == "sent" and "blocked" in lines[ALICE]["text"]
    assert lines[BOB]["status"] == "sent"
    assert bombom(postfix, pg, "block", "remove", "--member", ALICE,
                  "news.example.kr").returncode == 0


# -- postscreen ---------------------------------------------------------------------------------

def replies(conn: socket.socket, wait: float = 1.0) -> bytes:
    """What the server said within `wait` seconds of silence."""
    conn.settimeout(wait)
    out = b""
    try:
        while chunk := conn.recv(4096):
            out += chunk
    except TimeoutError:
        pass
    return out


def test_postscreen_is_in_front_and_refuses_a_client_that_talks_first(
        postfix: Postfix, pg: LocalPostgres, mail: int) -> None:
    """127.0.0.x is tested here like any client (the shipped postscreen_access_list lets
    mynetworks through); a shorter greet wait keeps the test short. Each client comes from an
    address of its own (127.0.0.2, .3), which postscreen has not seen (it remembers passes)."""
    entry = postfix.run("postconf", "-M", f"127.0.0.1:{postfix.port}/inet").stdout
    assert "postscreen" in entry.split(), entry
    assert "pass" in postfix.run("postconf", "-M", "smtpd/pass").stdout
    postfix.postconf("postscreen_access_list =", "postscreen_greet_wait = 2s")
    reload(postfix)
    try:
        with socket.create_connection(("127.0.0.1", postfix.port), timeout=30,
                                      source_address=("127.0.0.2", 0)) as conn:
            conn.sendall(b"EHLO spam.example\r\n")  # before the greeting: spamware
            time.sleep(3)
            conn.sendall(b"MAIL FROM:<spam@junk.example>\r\n")
            time.sleep(0.5)
            conn.sendall(b"RCPT TO:<alice@bombom.news>\r\n")
            said = replies(conn, 3)
        assert said.startswith(b"220-") and b"\r\n550 5.5.1 Protocol error" in said, said
        wait_for("postscreen's log line", lambda: "PREGREET" in postfix.log()[mail:], 10)
        # a client that waits its turn: after the deep protocol tests it is told to come back
        # (4xx), and is then handed to smtpd
        codes = []
        for _ in range(2):
            with smtplib.SMTP("127.0.0.1", postfix.port, local_hostname="sender.example",
                              timeout=30, source_address=("127.0.0.3", 0)) as s:
                s.mail(SENDER)
                codes.append(s.rcpt(ALICE)[0])
        assert codes[0] // 100 == 4 and codes[1] == 250, codes
        assert "PASS NEW [127.0.0.3]" in postfix.log()[mail:]
    finally:
        postfix.run("postconf", "-X", "postscreen_greet_wait")
        reinstall(postfix)
        reload(postfix)


# -- rates --------------------------------------------------------------------------------------

def test_a_client_over_its_connection_rate_gets_4xx_never_5xx(
        postfix: Postfix, pg: LocalPostgres, mail: int) -> None:
    """The shipped limits with a low connection rate (3 a minute, the shipped one is 300) and the
    test's own 127.0.0.1 counted (it is in the test instance's mynetworks, exempt by default)."""
    postfix.postconf("smtpd_client_connection_rate_limit = 3",
                     "smtpd_client_event_limit_exceptions =")
    reload(postfix)
    try:
        codes = []
        for _ in range(6):
            try:
                with smtp(postfix) as s:
                    codes.append(s.mail(SENDER)[0])
            except smtplib.SMTPConnectError as e:
                codes.append(e.smtp_code)
            except smtplib.SMTPServerDisconnected:
                codes.append(0)
        assert 250 in codes and any(400 <= c < 500 for c in codes), codes
        assert not any(c >= 500 for c in codes), codes
        assert "Connection rate limit exceeded" in postfix.log()[mail:]
    finally:
        postfix.run("postconf", "-X", "smtpd_client_event_limit_exceptions")
        reinstall(postfix)
        reload(postfix)


# -- volume and disks ---------------------------------------------------------------------------

def test_past_the_daily_limit_of_a_sender_domain_mail_is_quarantined_never_bounced(
        postfix: Postfix, pg: LocalPostgres, mail: int) -> None:
    conf = Path(postfix.env["CONFIG_FILE"])
    text = conf.read_text()
    conf.write_text(text + "domain_daily_limit = 2\n")
    try:
        send(postfix, [newsletter(i, "volume") for i in range(4)], [ALICE])
        send(postfix, [letter("news@other.example", 1, "volume")], [ALICE])
        wait_for("5 deliveries", lambda: count(pg, "SELECT count(*) FROM deliveries") == 5, 60)
        wait_queue_empty(postfix, 30)
    finally:
        conf.write_text(text)
    with connect(pg) as conn:
        outcomes = conn.execute("SELECT outcome, detail FROM deliveries ORDER BY id").fetchall()
        assert [o for o, _ in outcomes] == ["stored", "stored", "quarantined", "quarantined",
                                            "stored"], outcomes
        assert outcomes[2][1] == ("volume: sender domain news.example.kr over its limit of 2 "
                                  "messages a day")
        assert conn.execute("SELECT domain, messages, quarantined FROM domain_volume ORDER BY "
                            "domain").fetchall() == [("news.example.kr", 4, 2),
                                                     ("other.example", 1, 0)]
    assert {m["status"] for m in pipe_lines(postfix, mail)} == {"sent"}  # 0: kept, not bounced
    quarantine = bombom(postfix, pg, "quarantine", "list").stdout
    assert quarantine.count("volume: sender domain news.example.kr") == 2
    stats = bombom(postfix, pg, "stats").stdout
    assert "quarantined" in stats and "news.example.kr" in stats, stats


@pytest.fixture
def tmpfs(workdir: Path) -> Iterator[Path]:
    """A 1 MB tmpfs, unmounted afterwards."""
    d = workdir / f"tmpfs-{os.getpid()}-{len(list(workdir.glob('tmpfs-*')))}"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(d)],
                   check=True, capture_output=True)
    yield d
    subprocess.run(["umount", str(d)], check=True)


def fill(directory: Path) -> Path:
    """Fill the file system of `directory` to the last byte; the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def deferred_then_delivered(postfix: Postfix, pg: LocalPostgres, mail: int, tag: str,
                            free: Path) -> None:
    """A newsletter to alice is deferred (75) with the reason, kept in the queue, and stored
    once `free` is removed and the queue flushed."""
    send(postfix, [newsletter(1, tag)], [ALICE])
    wait_for("a deferral", lambda: [m for m in pipe_lines(postfix, mail)
                                    if m["status"] == "deferred"], 60)
    line = next(m for m in pipe_lines(postfix, mail) if m["status"] == "deferred")
    assert line["dsn"].startswith("4."), line.group(0)
    assert len(postfix.queued()) == 1 and count(pg, "SELECT count(*) FROM articles") == 0
    free.unlink()
    postfix.flush()
    wait_articles(pg, 1, 60)
    wait_queue_empty(postfix, 30)


def test_spool_disk_full_is_75_and_postfix_keeps_the_mail(
        postfix: Postfix, pg: LocalPostgres, mail: int, tmpfs: Path) -> None:
    spool = Path(postfix.env["SPOOL_DIR"])
    subprocess.run(["mount", "--bind", str(tmpfs), str(spool)], check=True)
    try:
        subprocess.run(["chown", "bombom:bombom", str(spool)], check=True)
        os.chmod(spool, 0o700)
        filler = fill(spool)
        deferred_then_delivered(postfix, pg, mail, "spool-full", filler)
        assert "spool:" in next(m for m in pipe_lines(postfix, mail)
                                if m["status"] == "deferred")["text"]
    finally:
        subprocess.run(["umount", str(spool)], check=True)


def test_database_disk_full_is_75_and_postfix_keeps_the_mail(
        postfix: Postfix, pg: LocalPostgres, mail: int, tmpfs: Path) -> None:
    """The articles table in a tablespace on a 1 MB tmpfs, filled: PostgreSQL cannot extend the
    table (SQLSTATE 53100, disk full), which is transient: retried to the deadline, then 75."""
    subprocess.run(["chown", "postgres:postgres", str(tmpfs)], check=True)
    with connect(pg) as conn:
        conn.execute(f"CREATE TABLESPACE tiny LOCATION '{tmpfs}'")
        conn.execute("ALTER TABLE articles SET TABLESPACE tiny")
    try:
        filler = fill(tmpfs)
        deferred_then_delivered(postfix, pg, mail, "db-full", filler)
        assert "database out of resources (DiskFull 53100)" in next(
            m for m in pipe_lines(postfix, mail) if m["status"] == "deferred")["text"]
        with connect(pg) as conn:
            assert conn.execute("SELECT count(*) FROM deliveries WHERE outcome = 'tempfail' "
                                "AND detail LIKE '%%DiskFull%%'").fetchone()[0] >= 1
    finally:
        with connect(pg) as conn:
            conn.execute("ALTER TABLE articles SET TABLESPACE pg_default")
            conn.execute("DROP TABLESPACE tiny")


# -- backup and restore --------------------------------------------------------------------------

#: what an article shows and how it is keyed: the same after a restore and after a replay
SAME = ("m.address", "a.dedup_key", "a.message_id", "a.subject", "a.from_address", "a.html",
        "a.text_content", "a.display_html", "a.preview", "a.raw_sha256", "a.content_sha256",
        "n.sender_address")


def articles_of(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            f"SELECT {', '.join(SAME)} FROM articles a JOIN members m ON m.id = a.member_id "
            "LEFT JOIN newsletters n ON n.id = a.newsletter_id ORDER BY 1, 2").fetchall()


def test_a_backup_restored_into_a_fresh_database_and_spool_replays_to_the_same_articles(
        postfix: Postfix, pg: LocalPostgres, mail: int, workdir: Path) -> None:
    from bombom_pipe.schema import grant, upgrade
    from bombom_pipe.schema.owner import make_owner

    send(postfix, [newsletter(i, "backup") for i in range(3)], [ALICE, BOB])
    send(postfix, [letter("news@other.example", 1, "backup")], [ALICE])
    wait_articles(pg, 7, 60)
    wait_queue_empty(postfix, 30)
    before = articles_of(pg.url())
    assert len(before) == 7

    # the backup: pg_dump (custom format), then the spool (after the dump: every raw file the
    # dump names is in the copy)
    backup = workdir / "backup"
    backup.mkdir()
    give(backup, "postgres")
    dump = backup / "bombom.dump"
    subprocess.run(as_user("postgres", [str(pg.bindir / "pg_dump"), "-Fc", "-f", str(dump),
                                        pg.url()]), check=True)
    shutil.copytree(postfix.env["SPOOL_DIR"], backup / "spool", symlinks=True)

    # the restore: a fresh database (pg_restore, then what `make db` does: owner, roles,
    # grants) and a fresh spool from the copy, owned by the pipe user
    pg.createdb("restored")
    subprocess.run(as_user("postgres", [str(pg.bindir / "pg_restore"), "--no-owner",
                                        "--no-privileges", "-d", pg.url("restored"),
                                        str(dump)]), check=True)
    with psycopg.connect(pg.url("restored"), autocommit=True) as conn:
        assert upgrade(conn) == []  # the dump's schema is current
        make_owner(conn, "bombom_admin")
        grant(conn, "delivery", "bombom_deliver")
        grant(conn, "lookup", "bombom_lookup")
    spool = workdir / "restored-spool"
    shutil.copytree(backup / "spool", spool, symlinks=True)
    give(spool, "bombom")
    os.chmod(spool, 0o700)
    assert articles_of(pg.url("restored")) == before

    conf = workdir / "restored.conf"
    conf.write_text(f'database_url = "{pg.url("restored", user="bombom_deliver")}"\n'
                    f'spool_dir = "{spool}"\nlog = "stderr"\ndeadline_seconds = 20\n'
                    f'dns_servers = "{postfix.env["DNS_SERVERS"]}"\n')
    shutil.chown(conf, "root", "bombom")
    conf.chmod(0o640)

    def replay() -> str:
        r = subprocess.run(["runuser", "-u", "bombom", "--", f"{postfix.env['PREFIX']}/venv/bin/"
                            "bombom", "--config", str(conf), "replay", "--all"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert "replayed 7: duplicate 7" in replay()  # the spool holds what the database names
    # and the articles come back from the raw messages alone
    with psycopg.connect(pg.url("restored"), autocommit=True) as conn:
        conn.execute("UPDATE deliveries SET article_id = NULL")  # the audit stays
        for table in ("attachments", "subscriptions", "articles"):
            conn.execute(f"DELETE FROM {table}")
    assert "replayed 7: stored 7" in replay()
    assert articles_of(pg.url("restored")) == before
