"""docs/postfix.md walked as a new operator would, against a private Postfix and the test cluster:
`make install`, `make db`, `postfix start`, `bombom members add` as root, a message stored,
`postfix check` silent, every `bombom` command working or refusing in one line, `make uninstall`
refused while mail for the service domain is queued, then done, and installed again.

Only the paths differ from a real host (Postfix's config dir, /etc/bombom, /usr/local/bin, the
database's socket through PGHOST/PGPORT); the commands are the documented ones.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterator
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
ALICE = "alice@bombom.news"
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
        DEADLINE="10", MAXPROC="2",
        PGHOST=str(pg.sock), PGPORT=str(pg.port))  # `make db`'s psql: the test cluster
    yield p, env
    p.stop()
    with psycopg.connect(pg.url("postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


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
    r = make("db", env, **passwords)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "lookup OK" in r.stdout
    assert (admin_conf.stat().st_mode & 0o777, admin_conf.owner()) == (0o600, "root")
    watcher.stop()
    assert watcher.scans > 10 and watcher.seen == [], watcher.seen
    postfix.start()

    # Postfix's directory holds only root's files: `postfix check` has nothing to say
    check = postfix.run("postfix", "check")
    assert check.stdout + check.stderr == ""
    assert {f.owner() for f in postfix.etc.iterdir()} == {"root"}

    # 5. a member, and a message
    r = bombom(env, "members", "add", "Alice+Promo@Bombom.News")
    assert r.returncode == 0 and f"added {ALICE}" in r.stdout, r.stdout + r.stderr
    raw = (EXAMPLES / "english-digest.eml").read_bytes()
    with postfix_smtp(postfix) as s:
        assert s.sendmail("letter@example.org", ["alice+promo@bombom.news"], raw) == {}
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
    r = bombom(env, "members", "add", "bob@bombom.news", user=PIPE_USER, config="CONFIG_FILE")
    assert r.returncode == 1 and "permission denied" in one_line(r)

    # a member's mail still queued: uninstall refuses (it would be routed elsewhere afterwards)
    postfix.postconf("defer_transports = bombom")
    reload(postfix)
    with postfix_smtp(postfix) as s:
        assert s.sendmail("letter@example.org", [ALICE], raw.replace(
            b"Message-ID: <", b"Message-ID: <queued.")) == {}
    wait_for("a queued message", postfix.queued, timeout=30)
    master_cf = (postfix.etc / "master.cf").read_text()
    r = make("uninstall", env)
    assert r.returncode != 0 and "still queued" in r.stderr, r.stdout + r.stderr
    assert (postfix.etc / "master.cf").read_text() == master_cf
    postfix.run("postconf", "-X", "defer_transports")
    reload(postfix)
    postfix.flush()
    wait_for("the queued message delivered", lambda: articles(pg) == 2, timeout=60)
    wait_for("an empty queue", lambda: not postfix.queued(), timeout=30)

    # now uninstall; Postfix is as it was, and the lookup password is kept for next time
    kept = passfile.read_bytes()
    r = make("uninstall", env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert postfix.run("postconf", "-M", "bombom/unix").stdout == ""
    check = postfix.run("postfix", "check")
    assert check.stdout + check.stderr == ""
    assert passfile.read_bytes() == kept

    # installed again without the passwords in the environment: the same ones, lookup OK
    r = make("install", env)
    assert r.returncode == 0 and "lookup OK" in r.stdout, r.stdout + r.stderr
    assert passfile.read_bytes() == kept
    conf = Path(env["CONFIG_FILE"]).read_text()
    assert passwords["BOMBOM_DELIVERY_PASSWORD"] in conf
    assert passwords["BOMBOM_LOOKUP_PASSWORD"] not in postfix.run(
        "postconf", "-n").stdout + (postfix.etc / "bombom-recipients.cf").read_text()


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
