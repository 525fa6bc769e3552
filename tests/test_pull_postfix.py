"""The two worker modes end to end through a real Postfix on loopback, installed by install.sh:
`MODE=pull` (virtual(8) writes a Maildir, `bombom worker --maildir` ingests it) and
`MODE=worker` (pipe(8) runs bombom-deliver, which hands each message to `bombom worker`), each
with a burst during which the worker is killed: 0 lost, 0 duplicated, 0 bounced."""

from __future__ import annotations

import os
import re
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


class Installed:
    def __init__(self, postfix: Postfix, base: Path, mode: str) -> None:
        self.postfix, self.base, self.mode = postfix, base, mode
        self.worker: subprocess.Popen[bytes] | None = None

    def start_worker(self) -> None:
        env = self.postfix.env
        args = [f"{env['PREFIX']}/venv/bin/bombom", f"--config={env['CONFIG_FILE']}", "worker",
                f"--socket={env['WORKER_SOCKET']}", "--processes=2"]
        if self.mode == "pull":
            args.append(f"--maildir={env['MAILDIR_BASE']}/Maildir")
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


@pytest.fixture(scope="module", params=["pull", "worker"])
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
    p.env = install_env(base, pg, dns_server.address, MODE=mode, MAILDIR_BASE=str(base / "maildir"),
                        SYSTEMD_DIR=str(base / "systemd"), WORKER_SOCKET=str(run / "worker.sock"),
                        DEADLINE="10")
    p.install()
    subprocess.run(["chown", "bombom:bombom", str(run)], check=True)
    run.chmod(0o700)
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
    assert transport == ("virtual" if installed.mode == "pull" else "bombom")
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
    if installed.mode == "pull":  # nothing ingests while it is down; files wait in new/
        installed.start_worker()
    wait_for(f"{n + n // 2} articles", lambda: count(
        pg, "SELECT count(*) FROM articles") >= n + n // 2, 300, )
    wait_queue_empty(p, 60)
    assert count(pg, "SELECT count(*) FROM articles") == n + n // 2
    assert count(pg, "SELECT count(DISTINCT (member_id, message_id)) FROM articles") == n + n // 2
    assert count(pg, "SELECT count(*) FROM deliveries WHERE outcome NOT IN "
                     "('stored', 'duplicate')") == 0
    assert bounces(p, clean) == []
    if installed.mode == "pull":
        maildir = Path(p.env["MAILDIR_BASE"]) / "Maildir"
        wait_for("an empty new/", lambda: not os.listdir(maildir / "new"), 60)
        assert len(os.listdir(maildir / "cur")) == n + n // 2
        # each delivery row names the queue id virtual(8) logged for it, and the SMTP client
        logged = {m[1] for m in re.finditer(r"postfix/virtual\[\d+\]: (\w+): to=<",
                                           p.log()[clean:])}
        with psycopg.connect(pg.url()) as conn:
            rows = conn.execute("SELECT DISTINCT queue_id, client_address FROM deliveries"
                                ).fetchall()
        assert {q for q, _ in rows} == logged and {c for _, c in rows} == {"127.0.0.1"}
