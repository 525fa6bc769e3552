"""Every door end to end through a real Postfix on loopback, installed by install.sh: `MODE=push`
(pipe(8) runs bombom-deliver, which delivers in a child of its own), `MODE=worker` (bombom-deliver
hands each message to `bombom worker`), `MODE=pull` (virtual(8) writes a Maildir, `bombom worker
--maildir` ingests it) and the LMTP door (Postfix's lmtp(8) speaks to `bombom worker
--lmtp-socket`). Each gets a burst during which the worker is killed, and the same hostile set
(a parser spinning with the GIL held, one that stalls, a process killed in the parse and in the
store stage, authentication that never ends, a flood of DKIM signatures): 0 lost, 0 duplicated,
0 bounced, each hostile message quarantined and nothing retried forever."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from .conftest import ALICE, BOB
from .dns_fixture import DnsServer
from .postfix_fixture import Postfix, available, wait_for
from .sandbox import LocalPostgres, as_user
from .test_postfix import bounces, count, install_env, newsletter, send, smtp, wait_queue_empty

pytestmark = [pytest.mark.postfix,
              pytest.mark.skipif(available() is not None, reason=str(available()))]


HOOKS = Path(__file__).resolve().parent / "hooks"


class Installed:
    def __init__(self, postfix: Postfix, base: Path, mode: str) -> None:
        self.postfix, self.base, self.mode = postfix, base, mode
        self.worker: subprocess.Popen[bytes] | None = None

    @property
    def lmtp_socket(self) -> Path:
        return self.base / "run" / "lmtp.sock"

    def start_worker(self) -> None:
        if self.mode == "push":
            return
        env = self.postfix.env
        args = [f"{env['PREFIX']}/venv/bin/bombom", f"--config={env['CONFIG_FILE']}", "worker",
                f"--socket={env['WORKER_SOCKET']}", "--processes=2"]
        if self.mode == "pull":
            args.append(f"--maildir={env['MAILDIR_BASE']}/Maildir")
        if self.mode == "lmtp":
            args.append(f"--lmtp-socket={self.lmtp_socket}")
        mark = len(self.log())
        self.worker = subprocess.Popen(as_user("bombom", args), start_new_session=True,
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
        wait_for("the worker", lambda: "worker started" in self.log()[mark:], 60)

    def kill_worker(self) -> None:
        if self.worker and self.worker.poll() is None:
            os.killpg(self.worker.pid, signal.SIGKILL)
            self.worker.wait(10)

    def log(self) -> str:
        path = Path(self.postfix.env["LOG"])
        return path.read_text(errors="replace") if path.exists() else ""


def hooks_into(prefix: Path, base: Path) -> None:
    """The test-only misbehaving hooks (tests/hooks) in the installed venv, run by a .pth file's
    import line: Postfix cleans the environment of what it runs, so PYTHONPATH cannot carry them,
    and Debian's own sitecustomize comes first on the path."""
    hooks = base / "hooks"
    shutil.copytree(HOOKS, hooks, ignore=shutil.ignore_patterns("__pycache__"))
    for path in [hooks, *hooks.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    [site] = (prefix / "venv" / "lib").glob("python3*/site-packages")
    (site / "bombom-test-hooks.pth").write_text(
        f"import runpy; runpy.run_path({str(hooks / 'sitecustomize.py')!r})\n")


@pytest.fixture(scope="module", params=["push", "worker", "pull", "lmtp"])
def installed(request: pytest.FixtureRequest, pg: LocalPostgres, workdir: Path,
              dns_server: DnsServer) -> Iterator[Installed]:
    mode = request.param
    base = workdir / f"postfix-{mode}"
    base.mkdir()
    base.chmod(0o755)
    run = base / "run"
    run.mkdir()
    p = Postfix(base / "instance")
    p.create()
    p.env = install_env(base, pg, dns_server.address, MODE=mode,
                        MAILDIR_BASE=str(base / "maildir"), SYSTEMD_DIR=str(base / "systemd"),
                        WORKER_SOCKET=str(run / "worker.sock"),
                        LMTP_SOCKET=str(run / "lmtp.sock"), DEADLINE="10")
    p.install()
    hooks_into(Path(p.env["PREFIX"]), base)
    # the worker's runtime directory, made by install.sh: its own, and Postfix's lmtp(8) may
    # pass through to the LMTP socket (the worker checks the peer's uid too)
    if mode != "push":
        assert (run.owner(), run.group(), run.stat().st_mode & 0o777) == (
            "bombom", "postfix", 0o750)
    p.start()
    i = Installed(p, base, mode)
    i.start_worker()
    yield i
    i.kill_worker()
    p.stop()


@pytest.fixture
def clean(installed: Installed, pg: LocalPostgres) -> Iterator[int]:
    import psycopg

    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute("TRUNCATE members, newsletters RESTART IDENTITY CASCADE")
        conn.execute("INSERT INTO members (address) VALUES (%s), (%s)", (ALICE, BOB))
    installed.postfix.members_map(pg.url())  # added with SQL: docs/postfix.md says to run it
    installed.postfix.empty_queue()
    if installed.worker is None or installed.worker.poll() is not None:
        installed.start_worker()
    offset = len(installed.postfix.log())
    yield offset
    assert bounces(installed.postfix, offset) == [], "Postfix bounced mail"


def test_install_sets_the_mode(installed: Installed) -> None:
    p = installed.postfix
    transport = p.run("postconf", "-h", "virtual_transport").stdout.strip()
    assert transport == {"pull": "virtual", "lmtp": f"bombomlmtp:unix:{installed.lmtp_socket}"
                         }.get(installed.mode, "bombom")
    if installed.mode == "push":
        return
    conf = Path(p.env["CONFIG_FILE"]).read_text()
    assert f'worker_socket = "{p.env["WORKER_SOCKET"]}"' in conf
    unit = (installed.base / "systemd" / "bombom-worker.service").read_text()
    assert "User=bombom" in unit and "@" not in unit.split("[Service]")[1].split("ExecStart")[0]
    assert "Postfix settings unchanged" in p.install().stdout  # idempotent in this mode too


def test_unknown_recipient_is_refused(installed: Installed, clean: int) -> None:
    with smtp(installed.postfix) as s:
        s.mail("bounce@news.example.kr")
        code, text = s.rcpt("nobody@bombom.news")
    assert (code, text[:5]) == (550, b"5.1.1"), text


def test_burst_with_the_worker_killed_midway(installed: Installed, pg: LocalPostgres,
                                             clean: int) -> None:
    n = 60
    p = installed.postfix
    send(p, [newsletter(i, installed.mode) for i in range(n // 2)], [ALICE])
    wait_for("some articles", lambda: count(pg, "SELECT count(*) FROM articles") >= 5, 120)
    installed.kill_worker()
    send(p, [newsletter(i, installed.mode) for i in range(n // 2, n)], [ALICE, BOB])
    if installed.mode in ("pull", "lmtp"):  # nothing ingests while it is down; Postfix
        installed.start_worker()  # defers (LMTP) or files wait in new/ (pull)
    wait_for(f"{n + n // 2} articles", lambda: count(
        pg, "SELECT count(*) FROM articles") >= n + n // 2, 300, )
    wait_queue_empty(p, 60)
    assert count(pg, "SELECT count(*) FROM articles") == n + n // 2
    assert count(pg, "SELECT count(DISTINCT (member_id, message_id)) FROM articles") == n + n // 2
    assert count(pg, "SELECT count(*) FROM deliveries WHERE outcome NOT IN "
                     "('stored', 'duplicate')") == 0
    assert bounces(p, clean) == []
    if installed.mode == "pull":  # each file removed once the spool holds it
        maildir = Path(p.env["MAILDIR_BASE"]) / "Maildir"
        wait_for("an empty Maildir", lambda: not any(
            os.listdir(maildir / d) for d in ("new", "claimed", "cur")), 60)


HOSTILE = {  # the first lines of each hostile message, and how its delivery must end
    "spin": (b"X-Test-Parser: spin\r\n", "unparsable: parse budget exceeded"),
    "stall": (b"X-Test-Parser: sleep\r\n", "unprocessable: delivery process died or timed out 3 "
                                           "times; last: deadline reached in stage parse"),
    "die-parse": (b"X-Test-Parser: die\r\n", "unprocessable: delivery process died or timed "
                                             "out 3 times; last: delivery process killed by "
                                             "signal 9 in stage parse"),
    "die-store": (b"X-Test-Store: die\r\n", "unprocessable: delivery process died or timed "
                                            "out 3 times; last: delivery process killed by "
                                            "signal 9 in stage store"),
    "auth": (b"X-Test-Auth: spin\r\n", "unauthenticated: authentication budget exceeded"),
}
FLOOD = b"DKIM-Signature: v=1\r\n" * 8000


def test_hostile_messages_are_quarantined_and_nothing_else_waits(
        installed: Installed, pg: LocalPostgres, clean: int) -> None:
    """The same hostile set through every door: each one ends quarantined with its reason
    (the stalling parser and the killed processes after their third try), the DKIM flood is
    delivered or quarantined, the calm letters beside them are stored; no bounce, nothing
    left in the queue or the Maildir."""
    p = installed.postfix
    hostile = [head + newsletter(i, f"hostile-{kind}") for i, (kind, (head, _)) in
               enumerate(HOSTILE.items())]
    calm = [newsletter(i, "calm") for i in range(6)]
    send(p, [*hostile, FLOOD + newsletter(0, "flood"), *calm], [ALICE])
    try:
        wait_for("every message settled", lambda: count(
            pg, "SELECT count(*) FROM deliveries WHERE outcome IN ('stored', 'quarantined')")
            >= len(HOSTILE) + 1 + len(calm), 240)
    except AssertionError:
        with psycopg.connect(pg.url()) as conn:
            print(conn.execute("SELECT outcome, detail FROM deliveries").fetchall())
        print(installed.log()[-6000:])
        print(p.log()[-4000:])
        raise
    wait_queue_empty(p, 60)
    with psycopg.connect(pg.url()) as conn:
        quarantined = sorted(r[0] for r in conn.execute(
            "SELECT detail FROM deliveries WHERE outcome = 'quarantined'"))
        subjects = [r[0] for r in conn.execute("SELECT subject FROM articles ORDER BY 1")]
    expected = sorted(why for _, why in HOSTILE.values())
    flood_kept = "flood 0" in " ".join(subjects)
    if not flood_kept:  # no cap in front of the verifier: its budget quarantined it
        expected = sorted([*expected, "unauthenticated: authentication budget exceeded"])
    assert [q for q in quarantined if not q.startswith("unprocessable")] == [
        e for e in expected if not e.startswith("unprocessable")], (quarantined, subjects)
    assert sorted(q.split(" in stage ")[-1][:5] for q in quarantined
                  if q.startswith("unprocessable")) == ["parse", "parse", "store"], quarantined
    assert sum(s.startswith("calm") for s in subjects) == len(calm)
    assert bounces(p, clean) == []
    if installed.mode == "pull":
        maildir = Path(p.env["MAILDIR_BASE"]) / "Maildir"
        wait_for("an empty Maildir", lambda: not any(
            os.listdir(maildir / d) for d in ("new", "claimed")), 30)
