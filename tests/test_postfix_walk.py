"""docs/postfix.md walked as a new operator would, against a private Postfix and the test cluster:
`make install`, `make db`, `postfix start`, `bombom members add` as root, a message stored,
`postfix check` silent, every `bombom` command working or refusing in one line, `make uninstall`
refused while mail for the service domain is queued, then done, and installed again; then every
mode switch and the uninstall with mail held and in flight while a sender keeps sending: no
bounce, no member refused, every message stored once.

The domain is not the default one, and after the first `make install` every command is given no
variable but INSTALL_ENV (the test's path for /etc/bombom/install.env): what the operator set
once must hold. Only the paths differ from a real host (Postfix's config dir, /etc/bombom,
/usr/local/bin, the database's socket through PGHOST/PGPORT); the commands are the documented
ones, and the worker runs as install.sh says to run it without systemd.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from .conftest import EXAMPLES
from .dns_fixture import shared as shared_dns
from .postfix_fixture import ROOT, Postfix, available
from .sandbox import LocalPostgres, wait_for
from .test_postfix import install_env

pytestmark = [pytest.mark.postfix,
              pytest.mark.skipif(available() is not None, reason=str(available()))]

DATABASE = "bombom_walk"
DOMAIN = "walk.bombom.test"
ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
PIPE_USER = "bombom"


@pytest.fixture(scope="module")
def walk(pg: LocalPostgres, workdir: Path) -> Iterator[tuple[Postfix, dict[str, str]]]:
    """A private Postfix that nothing has been installed into yet, and the operator's settings."""
    base = workdir / "walk"
    base.mkdir(mode=0o755)
    p = Postfix(base / "instance")
    p.create()
    env = install_env(
        base, pg, shared_dns().address,  # DKIM/DMARC lookups: the loopback test server
        POSTFIX_CONFIG_DIR=str(p.etc), DATABASE=DATABASE,
        DELIVERY_DSN=pg.url(DATABASE, user="bombom_deliver"),
        LOOKUP_DSN=pg.url(DATABASE, user="bombom_lookup"),
        ADMIN_DSN=pg.url(DATABASE, user="bombom_admin"),
        DEADLINE="10", MAXPROC="2", DOMAINS=DOMAIN,
        PGHOST=str(pg.sock), PGPORT=str(pg.port))  # `make db`'s psql: the test cluster
    yield p, env
    p.stop()
    with psycopg.connect(pg.url("postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


def later(env: dict[str, str]) -> dict[str, str]:
    """What a later `make` is given: only where the test keeps /etc/bombom/install.env, and the
    test cluster's socket for psql."""
    return {k: env[k] for k in ("INSTALL_ENV", "PGHOST", "PGPORT")}


def make(target: str, env: dict[str, str], **extra: str) -> subprocess.CompletedProcess[str]:
    """`make TARGET` in the checkout, as root, with the operator's two passwords exported."""
    return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), target],
                          capture_output=True, text=True, timeout=600,
                          env={"PATH": os.environ["PATH"], **env, **extra})


def bombom(env: dict[str, str], *args: str, user: str | None = None,
           config: str = "ADMIN_CONFIG") -> subprocess.CompletedProcess[str]:
    """`bombom ...` from PATH (our BIN_DIR) as root, or as `user` through runuser. The config the
    command picks by default (/etc/bombom/admin.conf for root, else bombom.conf) is named
    explicitly here because the test's files live elsewhere."""
    path = f"{env['BIN_DIR']}:/usr/sbin:/usr/bin:/sbin:/bin"
    conf = env.get(config) or str(Path(env["CONFIG_FILE"]).with_name("admin.conf"))
    argv = ["bombom", *args]
    if user:  # runuser may reset PATH for the user; /usr/local/bin is in Debian's default
        argv = ["runuser", "-u", user, "--", f"{env['BIN_DIR']}/bombom", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120,
                          env={"PATH": path, "BOMBOM_CONFIG": conf})


def one_line(r: subprocess.CompletedProcess[str]) -> str:
    out = (r.stdout + r.stderr).strip()
    assert "Traceback" not in out and len(out.splitlines()) == 1, out
    return out


def test_the_operators_walk(walk: tuple[Postfix, dict[str, str]], pg: LocalPostgres) -> None:
    postfix, env = walk
    passwords = {"BOMBOM_DELIVERY_PASSWORD": secrets.token_hex(16),
                 "BOMBOM_LOOKUP_PASSWORD": secrets.token_hex(16)}
    admin_conf = Path(env["CONFIG_FILE"]).with_name("admin.conf")
    passfile = Path(env["CONFIG_FILE"]).with_name("postfix-lookup.pgpass")

    # 4. make install, make db, postfix start; no process shows a password in its argv meanwhile
    watcher = ArgvWatcher(list(passwords.values()))
    watcher.start()
    r = make("install", env, **passwords)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not warnings(r), r.stdout + r.stderr
    assert "next: make db" in r.stdout
    assert os.readlink(Path(env["BIN_DIR"]) / "bombom") == env["PREFIX"] + "/venv/bin/bombom"
    r = make("db", later(env), **passwords)  # no DOMAINS: the one install saved
    assert r.returncode == 0, r.stdout + r.stderr
    assert "lookup OK" in r.stdout and "could not change directory" not in r.stdout + r.stderr
    assert f'domains = "{DOMAIN}"' in admin_conf.read_text()  # what `bombom check` watches
    private = Path(env["INSTALL_ENV"]).parent / "root-home"  # a checkout under /root, say
    private.mkdir(mode=0o700, exist_ok=True)
    r = subprocess.run([str(ROOT / "postfix-config" / "install.sh"), "init-db"], cwd=private,
                       capture_output=True, text=True, timeout=300,
                       env={"PATH": os.environ["PATH"], **later(env)})
    assert r.returncode == 0 and "could not change directory" not in r.stdout + r.stderr, (
        r.stdout + r.stderr)
    assert (admin_conf.stat().st_mode & 0o777, admin_conf.owner()) == (0o600, "root")
    watcher.stop()
    assert watcher.scans > 10 and watcher.seen == [], watcher.seen
    postfix.start()

    # Postfix's directory holds only root's files: `postfix check` has nothing to say
    check = postfix.run("postfix", "check")
    assert check.stdout + check.stderr == ""
    assert {f.owner() for f in postfix.etc.iterdir()} == {"root"}

    # 5. a member, and a message
    r = bombom(env, "members", "add", f"Alice+Promo@{DOMAIN.title()}")
    assert r.returncode == 0 and f"added {ALICE}" in r.stdout, r.stdout + r.stderr
    r = bombom(env, "members", "add", "carol@bombom.news")  # not a service domain here
    assert r.returncode == 2 and "not in the service domains" in r.stderr, r.stdout + r.stderr
    raw = (EXAMPLES / "english-digest.eml").read_bytes()
    with postfix_smtp(postfix) as s:
        assert s.sendmail("letter@example.org", [f"alice+promo@{DOMAIN}"], raw) == {}
    wait_for("the article", lambda: articles(pg) == 1, timeout=60, interval=0.2)

    # every command as the documented user: works, or refuses in one line
    for args in (["members", "list"], ["quarantine", "list"], ["stats"],
                 ["prune", "--days", "30"], ["init-db"]):
        r = bombom(env, *args)
        assert r.returncode == 0, (args, r.stdout + r.stderr)
        assert "Traceback" not in r.stderr
    r = bombom(env, "check")
    assert r.returncode in (0, 1, 2, 3) and r.stdout.startswith("BOMBOM "), r.stdout + r.stderr
    r = bombom(env, "replay")  # as root: refused, naming the user and how
    assert r.returncode == 1 and f"runuser -u {PIPE_USER} -- bombom replay" in one_line(r)
    r = bombom(env, "replay", user=PIPE_USER, config="CONFIG_FILE")
    assert r.returncode == 0 and "replayed" in r.stdout, r.stdout + r.stderr
    r = bombom(env, "members", "add", BOB, user=PIPE_USER, config="CONFIG_FILE")
    assert r.returncode == 1 and "permission denied" in one_line(r)

    # a member's mail still queued: uninstall refuses (it would be routed elsewhere afterwards)
    postfix.postconf("defer_transports = bombom")
    reload(postfix)
    with postfix_smtp(postfix) as s:
        assert s.sendmail("letter@example.org", [ALICE], raw.replace(
            b"Message-ID: <", b"Message-ID: <queued.")) == {}
    wait_for("a queued message", postfix.queued, timeout=30)
    master_cf = (postfix.etc / "master.cf").read_text()
    r = make("uninstall", later(env))
    assert r.returncode != 0 and "still queued" in r.stderr, r.stdout + r.stderr
    assert (postfix.etc / "master.cf").read_text() == master_cf
    postfix.run("postconf", "-X", "defer_transports")
    reload(postfix)
    postfix.flush()
    wait_for("the queued message delivered", lambda: articles(pg) == 2, timeout=60)
    wait_for("an empty queue", lambda: not postfix.queued(), timeout=30)

    # now uninstall; Postfix is as it was, and the lookup password is kept for next time
    kept = passfile.read_bytes()
    r = make("uninstall", later(env))
    assert r.returncode == 0, r.stdout + r.stderr
    assert postfix.run("postconf", "-M", "bombom/unix").stdout == ""
    check = postfix.run("postfix", "check")
    assert check.stdout + check.stderr == ""
    assert passfile.read_bytes() == kept

    # installed again without the passwords in the environment: the same ones, lookup OK
    r = make("install", later(env))
    assert r.returncode == 0 and "lookup OK" in r.stdout, r.stdout + r.stderr
    assert passfile.read_bytes() == kept
    assert postfix.run("postconf", "-h", "virtual_mailbox_domains").stdout.strip() == DOMAIN
    conf = Path(env["CONFIG_FILE"]).read_text()
    assert passwords["BOMBOM_DELIVERY_PASSWORD"] in conf
    assert passwords["BOMBOM_LOOKUP_PASSWORD"] not in postfix.run(
        "postconf", "-n").stdout + (postfix.etc / "bombom-recipients.cf").read_text()


def test_every_mode_switch_and_the_uninstall_bounce_nothing(
        walk: tuple[Postfix, dict[str, str]], pg: LocalPostgres) -> None:
    """docs/postfix.md's switches, push -> worker -> pull -> lmtp -> push, each a bare
    `make install MODE=...`, while a sender sends to two members without pause; in pull mode the
    database is stopped for a while (mail is still accepted, kept, stored after); then the
    documented uninstall with mail deferred and in flight (`postsuper -h ALL && make uninstall
    FORCE=1`, `make install && postsuper -H ALL`). Counted: 0 bounced, 0 members refused, every
    message stored once for each member."""
    postfix, env = walk
    installed_first(env)
    if postfix.run("postfix", "status", check=False).returncode != 0:
        postfix.start()
    for member in (ALICE, BOB):
        bombom(env, "members", "add", member)
    mark, before = len(postfix.log()), articles(pg)
    modes = ["worker", "pull", "lmtp", "push"]
    worker, previous = Loop(), "push"
    sender = Sender(postfix, [ALICE, BOB])
    sender.start()
    try:
        for mode in modes:
            r = switch(postfix, mode, env)
            assert postfix.run("postconf", "-h", "virtual_mailbox_domains").stdout.strip() == DOMAIN
            loop = loop_command(r.stdout)
            if previous == "pull":  # leaving pull: how many wait in new/; drained by the worker
                assert "Maildir/new" in r.stdout, r.stdout
                assert loop is None or "--maildir=" in loop, r.stdout
            if mode != "push":
                assert loop and (mode != "pull" or "--maildir=" in loop), r.stdout
            previous = mode
            worker.run(loop)
            if mode == "pull":  # the database stops: RCPT is answered from the members map
                pg.stop()
                try:
                    wait_for("mail accepted with the database down", sender.more(3), 60)
                    assert os.listdir(Path(installed(env, "MAILDIR_BASE")) / "Maildir" / "new")
                finally:
                    pg.start()
            wait_for(f"mail flowing in MODE={mode}", sender.more(3), 60)
            if mode == "lmtp":  # Postfix's lmtp(8) delivers to the worker itself
                wait_for("an LMTP delivery", lambda: re.search(
                    r"postfix/lmtp\[\d+\]: \w+: to=<.*status=sent", postfix.log()[mark:]), 60)
        sender.stop()
        assert sender.rejected == [], sender.rejected
        wait_stored(pg, before, sender)

        # the uninstall with mail deferred and in flight, as docs/postfix.md says
        with psycopg.connect(pg.url(DATABASE), autocommit=True) as locker:
            locker.execute("BEGIN")
            locker.execute("LOCK TABLE articles IN ACCESS EXCLUSIVE MODE")
            held = Sender(postfix, [ALICE, BOB], "held")
            held.send(2)
            since = len(postfix.log())  # the deadline passes: deferred (and retried)
            wait_for("deferred mail", lambda: postfix.log()[since:].count("status=deferred") >= 4,
                     timeout=60)
            held.send(2)
            wait_for("mail in flight", lambda: sum(
                q["queue_name"] == "active" for q in postfix.queued()) >= 1, timeout=30)
            postfix.run("postsuper", "-h", "ALL")
            r = make("uninstall", later(env), FORCE="1")
            assert r.returncode == 0, r.stdout + r.stderr
            locker.execute("ROLLBACK")  # the deliveries in flight now store their articles
        wait_for("the held mail parked", lambda: all(
            q["queue_name"] == "hold" for q in postfix.queued()), timeout=60)
        r = switch(postfix, None, env)
        assert postfix.run("postconf", "-h", "virtual_mailbox_domains").stdout.strip() == DOMAIN
        postfix.run("postsuper", "-H", "ALL")
        postfix.flush()
        wait_for("an empty queue", lambda: not postfix.queued(), timeout=120)
        sender.sent += held.sent
        wait_stored(pg, before, sender)
    finally:
        sender.stop()
        worker.run(None)
        pg.start() if not pg.running() else None
    assert bounced(postfix, mark) == []
    lmtp_warnings = [line for line in postfix.log_lines(mark)
                     if "postfix/lmtp" in line and "warning" in line]
    assert lmtp_warnings == [], lmtp_warnings[:5]  # e.g. the connection cache's destination


def test_hand_edits_of_the_config_are_kept_or_refused(walk: tuple[Postfix, dict[str, str]]
                                                      ) -> None:
    """An edit the installer's change does not touch is kept; one it does is refused, with
    the difference shown and the file left as it was."""
    _, env = walk
    installed_first(env)
    conf = Path(env["CONFIG_FILE"])
    text = conf.read_text()
    assert "dns_timeout_seconds = 4\n" in text and 'deadline_seconds = 10\n' in text
    conf.write_text(text.replace("dns_timeout_seconds = 4\n", "dns_timeout_seconds = 3\n"))
    r = make("install", later(env), DEADLINE="11")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"kept your edits to {conf}" in r.stdout
    text = conf.read_text()
    assert "dns_timeout_seconds = 3\n" in text and "deadline_seconds = 11\n" in text
    conf.write_text(text.replace("deadline_seconds = 11\n", "deadline_seconds = 12\n"))
    edited = conf.read_text()
    r = make("install", later(env), DEADLINE="10")
    assert r.returncode != 0 and "edited by hand" in r.stderr, r.stdout + r.stderr
    yours, theirs = re.search(r"^<<<<<<< .*? \(yours\)\n(.*?)^=======\n(.*?)^>>>>>>> this install",
                              r.stderr, re.M | re.S).groups()  # type: ignore[union-attr]
    assert "deadline_seconds = 12\n" in yours and "deadline_seconds = 10\n" in theirs
    assert "dns_timeout" not in yours + theirs  # only where both changed
    assert conf.read_text() == edited
    assert installed(env, "DEADLINE") == "11"  # a refused install saves nothing
    # the operator takes this install's lines: accepted, the other edit kept
    edited = edited.replace(yours, theirs)
    conf.write_text(edited)
    r = make("install", later(env), DEADLINE="10")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "dns_timeout_seconds = 3\n" in conf.read_text()


def test_log_file_gets_rotated(walk: tuple[Postfix, dict[str, str]]) -> None:
    """Without syslog the log is a file: a logrotate snippet comes with it (checked by logrotate
    itself when it is installed)."""
    postfix, env = walk
    snippet = Path(env["LOGROTATE_DIR"]) / "bombom"
    if not snippet.exists():
        assert make("install", env).returncode == 0
    text = snippet.read_text()
    assert f"{env['LOG']} {{" in text and f"su {PIPE_USER} {PIPE_USER}" in text
    if shutil.which("logrotate"):
        r = subprocess.run(["logrotate", "--debug", "--state", "/dev/null", str(snippet)],
                           capture_output=True, text=True)
        assert r.returncode == 0 and "error" not in r.stderr.lower(), r.stderr


# -- helpers --------------------------------------------------------------------------------------

class ArgvWatcher(threading.Thread):
    """Scans every process's argv (what any local user can read in /proc) for the secrets."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__(daemon=True)
        self.secrets = [s.encode() for s in secrets]
        self.seen: list[str] = []
        self.scans = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for proc in Path("/proc").glob("[0-9]*"):
                try:
                    argv = (proc / "cmdline").read_bytes()
                except OSError:
                    continue
                if any(s in argv for s in self.secrets):
                    self.seen.append(argv.replace(b"\0", b" ").decode(errors="replace")[:200])
            self.scans += 1
            self.done.wait(0.005)  # a process lives far longer than this (interpreter start-up)

    def stop(self) -> None:
        self.done.set()
        self.join()


def postfix_smtp(postfix: Postfix):  # noqa: ANN201
    import smtplib

    return smtplib.SMTP("127.0.0.1", postfix.port, local_hostname="sender.example", timeout=30)


def warnings(r: subprocess.CompletedProcess[str]) -> list[str]:
    """The installer's and Postfix's warnings (pip's own chatter about its index is not ours)."""
    return [line for line in (r.stdout + r.stderr).splitlines()
            if line.startswith(("bombom install", "post")) and "warning" in line.lower()]


def articles(pg: LocalPostgres) -> int:
    with psycopg.connect(pg.url(DATABASE)) as conn:
        return conn.execute("SELECT count(*) FROM articles").fetchone()[0]  # type: ignore[index]


def reload(postfix: Postfix) -> None:
    before = postfix.reload_count()
    postfix.run("postfix", "reload")
    postfix.wait_reloaded(before)


class Sender(threading.Thread):
    """Sends a new message to `rcpts` every 0.2 s, each in its own SMTP session, as a mail
    server would: a 4xx answer or a cut session is tried again, a 5xx is recorded (for a
    member, that is a bounce at the publisher's side)."""

    def __init__(self, postfix: Postfix, rcpts: list[str], tag: str = "walk") -> None:
        super().__init__(daemon=True)
        self.postfix, self.rcpts, self.tag = postfix, rcpts, tag
        self.sent: list[int] = []
        self.rejected: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.send(1)
            self.done.wait(0.2)

    def send(self, n: int) -> None:
        for _ in range(n):
            i = len(self.sent) + len(self.rejected)
            while not self.done.is_set():
                answer = self._one(i)
                if answer is None:
                    time.sleep(0.5)  # try again, as a sender would
                    continue
                (self.sent if answer == "sent" else self.rejected).append(
                    i if answer == "sent" else answer)  # type: ignore[arg-type]
                break

    def _one(self, i: int) -> str | None:
        import smtplib

        try:
            with postfix_smtp(self.postfix) as s:
                s.ehlo()
                s.mail("letter@news.example.kr")
                for rcpt in self.rcpts:
                    code, text = s.rcpt(rcpt)
                    if code >= 500:
                        return f"{rcpt}: {code} {text.decode(errors='replace')}"
                    if code >= 400:
                        return None
                code, text = s.data(newsletter(i, self.tag))
                return "sent" if code == 250 else (None if code < 500 else f"DATA {code} {text!r}")
        except (OSError, smtplib.SMTPException):
            return None

    def more(self, n: int) -> Callable[[], bool]:
        """A check: `n` more messages accepted than now."""
        target = len(self.sent) + n
        return lambda: len(self.sent) >= target

    def stop(self) -> None:
        self.done.set()
        if self.is_alive():
            self.join(60)


class Loop:
    """The worker, run as install.sh prints it for a host without systemd (its restart loop)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None

    def run(self, loop: str | None) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the worker finishes what it runs
            self.proc.wait(120)
        self.proc = None
        if loop:
            self.proc = subprocess.Popen(["sh", "-c", loop], start_new_session=True,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)


def loop_command(out: str) -> str | None:
    """The restart loop `make install` prints on a host without systemd."""
    m = re.search(r"^bombom install:   (while :; do .*; done)$", out, re.M)
    return m[1] if m else None


def installed_first(env: dict[str, str]) -> None:
    """The walk's first steps, for a test run alone."""
    if not Path(env["INSTALL_ENV"]).exists():
        r = make("install", env, BOMBOM_DELIVERY_PASSWORD=secrets.token_hex(16),
                 BOMBOM_LOOKUP_PASSWORD=secrets.token_hex(16))
        assert r.returncode == 0, r.stdout + r.stderr
        assert make("db", later(env)).returncode == 0


def installed(env: dict[str, str], name: str) -> str:
    """A setting as install.env remembers it."""
    for line in Path(env["INSTALL_ENV"]).read_text().splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1]
    raise KeyError(name)


def switch(postfix: Postfix, mode: str | None, env: dict[str, str]
           ) -> subprocess.CompletedProcess[str]:
    """`make install MODE=mode` (or bare), waiting for the reload it starts."""
    before = postfix.reload_count()
    r = make("install", later(env), **({"MODE": mode} if mode else {}))
    assert r.returncode == 0, r.stdout + r.stderr
    assert not warnings(r), r.stdout + r.stderr
    if "reloaded Postfix" in r.stdout:  # the sender retries what a reload interrupts
        wait_for("postfix reload", lambda: postfix.reload_count() > before, 60)
    return r


def newsletter(n: int, tag: str) -> bytes:
    return (f"From: Walk Letter <letter@news.example.kr>\r\nTo: {ALICE}\r\n"
            f"Subject: {tag} {n}\r\nMessage-ID: <{tag}-{n}@news.example.kr>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
            f"<html><body><p>{tag} issue {n}</p></body></html>\r\n").encode()


def wait_stored(pg: LocalPostgres, before: int, *senders: Sender) -> None:
    """Every message each sender got accepted is one article for each of its recipients."""
    expected = before + sum(len(s.sent) * len(s.rcpts) for s in senders)
    try:
        wait_for(f"{expected} articles", lambda: articles(pg) >= expected, 300, interval=0.5)
    except AssertionError:
        with psycopg.connect(pg.url(DATABASE)) as conn:
            print("DEBUG articles", articles(pg), "deliveries", conn.execute(
                "SELECT outcome, count(*) FROM deliveries GROUP BY 1").fetchall())
            have = {r[0] for r in conn.execute("SELECT message_id FROM articles")}
        for s in senders:
            print("DEBUG missing", sorted(i for i in s.sent if f"{s.tag}-{i}@news.example.kr"
                                          not in have)[:50])
        raise
    with psycopg.connect(pg.url(DATABASE)) as conn:
        n, distinct = conn.execute("SELECT count(*), count(DISTINCT (member_id, message_id)) "
                                   "FROM articles").fetchone()  # type: ignore[misc]
        bad = conn.execute("SELECT count(*) FROM deliveries WHERE outcome NOT IN "
                           "('stored', 'duplicate', 'tempfail')").fetchone()[0]  # type: ignore
    assert (n, distinct, bad) == (expected, expected, 0)


def bounced(postfix: Postfix, since: int) -> list[str]:
    return [line for line in postfix.log_lines(since)
            if "status=bounced" in line or "sender non-delivery notification" in line]
