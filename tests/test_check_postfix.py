"""`bombom check` pointed at a private Postfix (MAIL_CONFIG, as for any second instance): OK with
an empty queue, then WARNING and CRITICAL as mail for our domain waits in the deferred queue.

The instance (tests/postfix_fixture.py) routes bombom.news to Postfix's `discard` transport and
holds that transport back (`defer_transports`), so accepted mail for our domain stays deferred:
the queue's state is what is under test, not the delivery.
"""

from __future__ import annotations

import os
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from .conftest import ALICE, EXAMPLES, Env
from .postfix_fixture import Postfix, available
from .sandbox import LocalPostgres, wait_for

pytestmark = [pytest.mark.postfix,
              pytest.mark.skipif(available() is not None, reason=str(available()))]

DIGEST = (EXAMPLES / "english-digest.eml").read_bytes()


@pytest.fixture(scope="module")
def postfix(workdir: Path) -> Iterator[Postfix]:
    base = workdir / "postfix-check"
    base.mkdir()
    base.chmod(0o755)
    p = Postfix(base / "instance")
    p.create()
    p.postconf("relay_domains = bombom.news",
               "transport_maps = inline:{ bombom.news=discard }",
               "defer_transports = discard")
    p.start()
    yield p
    p.stop()


def check(env: Env, pg: LocalPostgres, postfix: Postfix, *options: str
          ) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "BOMBOM_ADMIN_DATABASE_URL": pg.url(), "BOMBOM_LOG": str(env.log),
               "MAIL_CONFIG": str(postfix.etc)}
    r = subprocess.run([sys.executable, "-m", "bombom_pipe.admin", "--config", str(env.config),
                        "check", *options], capture_output=True, text=True, env=environ,
                       timeout=120)
    assert r.stdout.startswith("BOMBOM ") and r.stdout.count("\n") == 1, r
    return r


def test_check_is_ok_then_warns_and_goes_critical_on_deferred_mail(
        env: Env, pg: LocalPostgres, db: psycopg.Connection, postfix: Postfix) -> None:
    postfix.empty_queue()
    r = check(env, pg, postfix)
    assert r.returncode == 0 and r.stdout.startswith("BOMBOM OK - "), r.stdout
    assert " deferred=0 " in r.stdout

    with smtplib.SMTP("127.0.0.1", postfix.port, local_hostname="sender.example",
                      timeout=30) as s:
        assert s.sendmail("letter@news.example.kr", [ALICE], DIGEST) == {}
    wait_for("the message in the deferred queue",
             lambda: [q for q in postfix.queued() if q["queue_name"] == "deferred"], 30)
    r = check(env, pg, postfix)  # one deferred, young: under the default thresholds
    assert r.returncode == 0 and " deferred=1 " in r.stdout, r.stdout
    r = check(env, pg, postfix, "--deferred-warn", "0")
    assert r.returncode == 1, r.stdout
    assert r.stdout.startswith("BOMBOM WARNING - 1 deferred, oldest "), r.stdout
    r = check(env, pg, postfix, "--deferred-warn", "0", "--deferred-crit", "0")
    assert r.returncode == 2 and r.stdout.startswith("BOMBOM CRITICAL - 1 deferred"), r.stdout
    postfix.empty_queue()
