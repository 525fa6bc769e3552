"""Fault matrix: each fault injected into the real command and a real PostgreSQL.

For each: the exit code is 0 or 75 (never one Postfix bounces), the raw message is kept, and once
the fault clears a retry stores it exactly once. A module-scoped cluster of its own is stopped,
restarted and starved here without disturbing the other tests.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bombom_pipe.spool import raw_path

from .conftest import ALICE, EXAMPLES, Env, fresh_schema, new_env
from .sandbox import DELIVER_USER, LocalPostgres, give, wait_for

DIGEST = (EXAMPLES / "english-digest.eml").read_bytes()
ALLOWED = {0, 75}


def message(i: int) -> bytes:
    return DIGEST.replace(b"<digest-2026-11-30@", f"<fault-{i}@".encode())


@pytest.fixture(scope="module")
def cluster(workdir: Path) -> Iterator[LocalPostgres]:
    c = LocalPostgres(workdir / "pg-faults", port=5433)
    c.start()
    c.createdb("bombom")
    yield c
    c.stop("immediate")


@pytest.fixture
def fenv(cluster: LocalPostgres, runner: list[str], workdir: Path) -> Iterator[Env]:
    cluster.start()
    fresh_schema(cluster.url())
    e = new_env(workdir, runner, cluster.url(user="bombom_deliver"))
    e.extra_env = {"BOMBOM_DEADLINE_SECONDS": "4"}
    yield e
    cluster.start()
    shutil.rmtree(e.base, ignore_errors=True)


def articles(cluster: LocalPostgres) -> list[str]:
    with psycopg.connect(cluster.url()) as conn:
        return [r[0] for r in conn.execute("SELECT message_id FROM articles ORDER BY 1")]


def kept(e: Env, raw: bytes) -> bool:
    return raw_path(e.spool, hashlib.sha256(raw).hexdigest()).read_bytes() == raw


def test_postgres_stopped_then_started(fenv: Env, cluster: LocalPostgres) -> None:
    cluster.stop()
    r = fenv.deliver(DIGEST)
    assert r.returncode == 75 and r.stdout.startswith(b"4.3.0 ")
    assert kept(fenv, DIGEST)
    log = fenv.log.read_text() if fenv.log.exists() else ""
    assert "Traceback" not in log, log  # an expected outage is its one outcome line
    assert "outcome=tempfail" in log and "database unavailable" in log, log
    cluster.start()
    assert fenv.deliver(DIGEST).returncode == 0
    assert fenv.deliver(DIGEST).returncode == 0
    assert articles(cluster) == ["digest-2026-11-30@digest.example.com"]


def test_postgres_restarted_mid_burst(fenv: Env, cluster: LocalPostgres) -> None:
    n = 40
    fenv.extra_env = {"BOMBOM_DEADLINE_SECONDS": "2"}

    down: list[float] = []

    def restart() -> None:
        wait_for("the burst to be under way", lambda: len(articles(cluster)) >= 3, 30)
        down.append(time.monotonic())
        cluster.stop("immediate")
        time.sleep(1.0)
        cluster.start()
        down.append(time.monotonic())

    t = threading.Thread(target=restart)
    t.start()
    codes, spans = [], []
    for i in range(n):
        t0 = time.monotonic()
        codes.append(fenv.deliver(message(i)).returncode)
        spans.append((t0, time.monotonic()))
    t.join()
    assert set(codes) <= ALLOWED, codes
    # the restart fell inside the burst, and at least one delivery met the database down
    assert len(down) == 2 and spans[0][0] < down[0] and down[1] < spans[-1][1], (down, spans)
    hit = [i for i, (a, b) in enumerate(spans) if a < down[1] and b > down[0]]
    assert hit, (down, spans)
    log = fenv.log.read_text()
    assert "transient database error" in log or 75 in codes, log[-2000:]
    retry = [i for i, c in enumerate(codes) if c == 75]
    print(f"\nrestart mid-burst: {len(hit)} deliveries during the restart, {len(retry)} of {n} "
          f"deferred, retried")
    fenv.extra_env = {}
    assert all(fenv.deliver(message(i)).returncode == 0 for i in retry)
    assert len(articles(cluster)) == n == len(set(articles(cluster)))


def test_max_connections_reached(fenv: Env, cluster: LocalPostgres) -> None:
    hogs = []
    try:
        while True:  # take every slot the delivery role could get
            hogs.append(psycopg.connect(cluster.url(user="bombom_deliver"), connect_timeout=2))
    except psycopg.OperationalError as e:
        assert "too many" in str(e) or "remaining connection slots" in str(e)
    t0 = time.monotonic()
    r = fenv.deliver(DIGEST)
    assert r.returncode == 75, r
    assert time.monotonic() - t0 < 4 + 5
    for h in hogs:
        h.close()
    assert fenv.deliver(DIGEST).returncode == 0
    assert len(articles(cluster)) == 1


def kill(proc: subprocess.Popen) -> None:
    proc.kill()  # it may have exited already: either way Postfix would run it again
    proc.wait(10)


def retried_once(fenv: Env, cluster: LocalPostgres, raw: bytes) -> None:
    """After a kill: nothing partial under a final name; two retries make one article."""
    for p in (fenv.spool / "raw").rglob("*.eml"):
        assert hashlib.sha256(p.read_bytes()).hexdigest() == p.name.removesuffix(".eml")
    assert fenv.deliver(raw).returncode == 0
    assert fenv.deliver(raw).returncode == 0
    assert len(articles(cluster)) == 1


def start(fenv: Env, raw: bytes) -> subprocess.Popen:
    p = fenv.popen("--recipient", ALICE)
    p.stdin.write(raw)
    p.stdin.close()
    return p


def test_sigkill_after_reading_part_of_stdin(fenv: Env, cluster: LocalPostgres) -> None:
    p = fenv.popen("--recipient", ALICE)
    p.stdin.write(DIGEST[:300])
    p.stdin.flush()
    time.sleep(0.5)
    kill(p)
    assert p.returncode == -signal.SIGKILL
    assert list((fenv.spool / "raw").rglob("*")) == []
    retried_once(fenv, cluster, DIGEST)


def test_sigkill_after_the_spool_write(fenv: Env, cluster: LocalPostgres) -> None:
    with psycopg.connect(cluster.url()) as locker:  # keeps it from getting further meanwhile
        locker.execute("LOCK TABLE members IN ACCESS EXCLUSIVE MODE")
        p = start(fenv, DIGEST)
        wait_for("the raw file", lambda: raw_path(fenv.spool, hashlib.sha256(DIGEST).hexdigest())
                 .exists(), 20, interval=0.005)
        kill(p)
    assert p.returncode == -signal.SIGKILL
    assert kept(fenv, DIGEST)
    retried_once(fenv, cluster, DIGEST)


def test_sigkill_inside_the_transaction(fenv: Env, cluster: LocalPostgres) -> None:
    with psycopg.connect(cluster.url(), autocommit=True) as watcher, \
            psycopg.connect(cluster.url()) as locker:
        locker.execute("LOCK TABLE articles IN ACCESS EXCLUSIVE MODE")
        p = start(fenv, DIGEST)

        def waiting_on_lock() -> bool:
            return bool(watcher.execute(
                "SELECT 1 FROM pg_stat_activity WHERE application_name = 'bombom-deliver' "
                "AND wait_event_type = 'Lock'").fetchone())

        wait_for("a wait on the lock", waiting_on_lock, 20, interval=0.005)
        kill(p)
        assert p.returncode == -signal.SIGKILL
        locker.rollback()
    assert articles(cluster) == []
    retried_once(fenv, cluster, DIGEST)


def test_sigkill_after_commit_before_exit(fenv: Env, cluster: LocalPostgres) -> None:
    with psycopg.connect(cluster.url(), autocommit=True) as watcher:
        p = start(fenv, DIGEST)
        wait_for("the commit", lambda: watcher.execute("SELECT count(*) FROM articles")
                 .fetchone()[0] == 1, 20, interval=0.005)
        kill(p)
    retried_once(fenv, cluster, DIGEST)


@pytest.fixture
def tiny_spool(fenv: Env) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    spool = fenv.spool
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k,mode=0755", "tmpfs", str(spool)],
                       capture_output=True)
    if r.returncode != 0:  # as root (CI) a missing kernel feature is a failure, not a skip
        pytest.fail(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    give(spool, DELIVER_USER)
    yield spool
    subprocess.run(["umount", str(spool)], check=True)


def test_spool_full_is_75_and_leaves_no_partial_file(fenv: Env, tiny_spool: Path,
                                                     cluster: LocalPostgres) -> None:
    big = DIGEST + b"x" * 64_000
    r = fenv.deliver(big)
    assert r.returncode == 75, r
    assert r.stdout.startswith(b"4.3.0 spool: ")
    assert list(tiny_spool.rglob("*.eml")) == []
    assert list((tiny_spool / "tmp").iterdir()) == []
    assert articles(cluster) == []


def test_spool_directory_missing_and_parent_closed(fenv: Env, workdir: Path) -> None:
    closed = workdir / "closed-parent"
    closed.mkdir(exist_ok=True)
    os.chmod(closed, 0o555)
    fenv.extra_env["BOMBOM_SPOOL_DIR"] = str(closed / "spool")
    r = fenv.deliver(DIGEST)
    if os.geteuid() != 0 and os.access(closed, os.W_OK):
        pytest.skip("cannot make a directory unwritable for ourselves")
    assert r.returncode == 75 and r.stdout.startswith(b"4.3.0 spool: ")


def test_config_unreadable_is_75(fenv: Env) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to make the file unreadable to the delivery user")
    give(fenv.config, "root")
    os.chmod(fenv.config, 0o600)
    r = fenv.deliver(DIGEST)
    assert r.returncode == 75 and b"not readable" in r.stdout
