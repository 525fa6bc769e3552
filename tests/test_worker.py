"""`bombom worker` behind the real `bombom-deliver`, against the real PostgreSQL: the warm path
delivers, and every way the worker can fail (killed, stopped, a message that spins the parser)
ends in the cold path or a quarantine: 0 lost, 0 duplicated, only exit codes Postfix defers on
or accepts."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from bombom_pipe import store

from .builders import (
    DIGEST,
    Worker,
    by_worker,
    message,
    misbehaving,
    with_parser_hooks,
    with_worker_socket,
)
from .conftest import Env


@pytest.fixture
def worker(env: Env) -> Iterator[Worker]:
    with_worker_socket(env)
    w = Worker(env, "--processes", "2").start()
    w.wait_ready()
    yield w
    w.stop()


def count(db: psycopg.Connection, sql: str) -> int:
    return db.execute(sql).fetchone()[0]


def test_the_worker_delivers(env: Env, db: psycopg.Connection, worker: Worker) -> None:
    before = by_worker(env)
    r = env.deliver(DIGEST)
    assert r.returncode == 0, r
    assert r.stdout.startswith(b"2.0.0 stored article 1") and r.stdout.count(b"\n") == 1
    assert by_worker(env) > before  # the delivery line came from a worker process
    assert env.deliver(DIGEST).stdout.startswith(b"2.0.0 duplicate article 1")
    assert count(db, "SELECT count(*) FROM articles") == 1


def test_without_the_worker_the_cold_path_delivers(env: Env, db: psycopg.Connection) -> None:
    with_worker_socket(env)  # configured, but nobody listens
    r = env.deliver(DIGEST)
    assert r.returncode == 0 and r.stdout.startswith(b"2.0.0 stored")
    assert by_worker(env) == 0


def burst(env: Env, n: int, fault: callable, at: int, tag: str) -> list[int]:
    """n deliveries, 4 at a time; `fault()` runs once `at` of them have finished."""
    done = threading.Semaphore(0)
    codes: list[int] = [0] * n

    def one(i: int) -> None:
        codes[i] = env.deliver(message(i, tag), timeout=120).returncode
        done.release()

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(one, i) for i in range(n)]
        for _ in range(at):
            done.acquire()
        fault()
        for f in futures:
            f.result()
    return codes


@pytest.mark.parametrize("fault", ["SIGKILL", "SIGSTOP"])
def test_worker_failing_mid_burst_loses_and_duplicates_nothing(
        env: Env, db: psycopg.Connection, worker: Worker, fault: str) -> None:
    n = 40
    env.extra_env = {"BOMBOM_DEADLINE_SECONDS": "10"}
    sig = getattr(signal, fault)
    t0 = time.monotonic()
    before_fault = []

    def hit() -> None:
        before_fault.append(by_worker(env))  # the worker was delivering when it was hit
        os.killpg(worker.proc.pid, sig)

    codes = burst(env, n, hit, n // 4, fault)
    assert before_fault[0] > 0, "no delivery by the worker before the fault"
    took = time.monotonic() - t0
    # 75 only where the stopped worker still held the row lock of the very message the cold path
    # then tried (its transaction was open): Postfix retries those later
    assert set(codes) <= {0, 75} and codes.count(75) <= 4, codes
    if fault == "SIGSTOP":
        os.killpg(worker.proc.pid, signal.SIGCONT)  # it finishes what it had: duplicates
        time.sleep(2)
    retry = [i for i, c in enumerate(codes) if c == 75]
    assert all(env.deliver(message(i, fault)).returncode == 0 for i in retry)
    assert count(db, "SELECT count(*) FROM articles") == n
    assert count(db, "SELECT count(DISTINCT message_id) FROM articles") == n
    assert count(db, "SELECT count(*) FROM deliveries WHERE outcome NOT IN "
                     "('stored', 'duplicate', 'tempfail')") == 0  # tempfail: the deferred
    print(f"\n{fault} mid-burst: {n} delivered in {took:.1f} s, {len(retry)} deferred and retried")


def test_a_delivery_stuck_inside_its_transaction_holds_no_one_back(env: Env,
                                                                   db: psycopg.Connection) -> None:
    """A delivery process stopped mid-transaction (SIGSTOP, swapped out, hung) holds the shared
    newsletter row's lock; the server ends its idle session after IDLE_IN_TRANSACTION_MS, so
    the next issue of that newsletter is stored within its deadline instead of deferred."""
    env.extra_env = {"BOMBOM_DEADLINE_SECONDS": "10"}
    assert env.deliver(message(0, "stuck")).returncode == 0  # the newsletter's row exists
    stuck = store.connect(env.database_url, 10)
    try:
        assert len(stuck.execute("SELECT id FROM newsletters FOR UPDATE").fetchall()) == 1
        r = env.deliver(message(1, "stuck"), timeout=60)  # meanwhile `stuck` sits idle
    finally:
        with contextlib.suppress(psycopg.Error):
            stuck.close()
    assert r.returncode == 0 and r.stdout.startswith(b"2.0.0 stored"), r
    assert count(db, "SELECT count(*) FROM articles") == 2


def test_gil_spinning_message_is_quarantined_and_others_go_on(
        env: Env, db: psycopg.Connection, workdir: Path) -> None:
    with_parser_hooks(env, workdir, deadline=8)
    with_worker_socket(env)
    w = Worker(env, "--processes", "2").start()
    try:
        w.wait_ready()
        with ThreadPoolExecutor(4) as pool:
            spin = pool.submit(env.deliver, misbehaving("spin"))
            time.sleep(0.5)
            normal = list(pool.map(lambda i: env.deliver(message(i, "beside")), range(6)))
            r = spin.result()
        assert r.returncode == 0 and r.stdout.startswith(
            b"2.0.0 quarantined unparsable: parse budget exceeded"), r
        assert [x.returncode for x in normal] == [0] * 6
        before = by_worker(env)
        assert env.deliver(message(99, "after")).returncode == 0
        assert by_worker(env) > before  # the killed process was replaced; the worker serves
        assert w.proc.poll() is None
    finally:
        w.stop()
    assert count(db, "SELECT count(*) FROM articles") == 7


def test_other_users_are_refused(env: Env, db: psycopg.Connection, worker: Worker) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to connect as another user than the worker's")
    sock = env.base / "run" / "worker.sock"
    assert sock.stat().st_mode & 0o777 == 0o600
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(sock))  # root passes the file mode; SO_PEERCRED does not
        s.sendall(b'{"sha256": "' + b"0" * 64 + b'"}\n')
        with contextlib.suppress(ConnectionResetError):  # closed with our request unread
            assert s.recv(100) == b""  # closed without an answer
    assert "refused a connection from uid 0" in env.log.read_text()
    assert env.deliver(DIGEST).returncode == 0


FAKE = """
import os, socket, sys
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX)
s.bind(path)
os.chmod(path, 0o777)
s.listen(8)
while True:
    c, _ = s.accept()
    c.recv(65536)
    c.sendall(b'{"accepted": true}\\n{"outcome": "stored", "detail": "article 1", "rcpt": 0}\\n')
    c.close()
"""


@pytest.mark.parametrize("who", ["another uid", "a directory others may write"])
def test_a_stranger_on_the_worker_socket_is_not_trusted(env: Env, db: psycopg.Connection,
                                                        workdir: Path, who: str) -> None:
    """Whoever can bind `worker_socket` could answer "stored" and lose the message: bombom-deliver
    hands over only to a peer of its own uid, in a directory that uid alone may write."""
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("needs root to run the impostor as another user")
    sock = with_worker_socket(env)
    run = sock.parent
    if who == "another uid":
        os.chmod(run, 0o755)  # root's impostor binds in the delivery user's own directory
        user: list[str] = []
    else:
        os.chown(run, 0, 0)  # a directory like /tmp: the impostor has the delivery user's uid
        os.chmod(run, 0o1777)
        user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    fake = subprocess.Popen([*user, "/usr/bin/python3", "-c", FAKE, str(sock)])
    try:
        wait_for_path(sock)
        r = env.deliver(DIGEST)
    finally:
        fake.kill()
        fake.wait()
    assert r.returncode == 0 and r.stdout.startswith(b"2.0.0 stored article 1"), r
    assert count(db, "SELECT count(*) FROM articles") == 1  # stored for real, by the cold path
    why = "its peer runs as uid 0" if who == "another uid" else "writable by it alone"
    assert why in env.log.read_text()


def wait_for_path(path: Path) -> None:
    end = time.monotonic() + 10
    while not path.exists():
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


def test_sigterm_finishes_what_runs_then_exits(env: Env, db: psycopg.Connection,
                                               workdir: Path) -> None:
    """SIGTERM (systemd's stop, a restart): the job being delivered is finished by the worker,
    then it exits and removes its socket; bombom-deliver goes cold after that."""
    with_parser_hooks(env, workdir, deadline=20)
    sock = with_worker_socket(env)
    w = Worker(env, "--processes", "1").start()
    w.wait_ready()
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(env.deliver, misbehaving("pause", "term"))
        end = time.monotonic() + 10
        while "X-Test" not in "".join(open_jobs(env)) and time.monotonic() < end:
            time.sleep(0.05)  # until the worker holds the job (the raw file is spooled)
        time.sleep(0.5)
        os.kill(w.proc.pid, signal.SIGTERM)
        r = slow.result()
    assert r.returncode == 0 and r.stdout.startswith(b"2.0.0 stored"), r
    assert by_worker(env) == 1  # delivered by the worker, after the SIGTERM
    assert w.proc.wait(15) == 0 and not sock.exists()
    assert "worker stopped" in env.log.read_text()
    assert env.deliver(message(1, "after")).returncode == 0 and by_worker(env) == 1


def open_jobs(env: Env) -> list[str]:
    """The raw messages spooled so far (their first line)."""
    return [p.read_text(errors="replace").split("\n", 1)[0]
            for p in env.spool.glob("raw/*/*.eml")]


def test_a_busy_worker_hands_over_to_the_cold_path(env: Env, db: psycopg.Connection,
                                                   workdir: Path) -> None:
    """Its only process busy for longer than bombom-deliver waits (a second): the message is
    delivered by the cold path at once, not queued behind the slow one."""
    with_parser_hooks(env, workdir, deadline=20)
    with_worker_socket(env)
    w = Worker(env, "--processes", "1").start()
    try:
        w.wait_ready()
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(env.deliver, misbehaving("pause", "busy"))
            time.sleep(0.5)
            t0 = time.monotonic()
            r = env.deliver(message(2, "beside"))
            took = time.monotonic() - t0
            assert slow.result().returncode == 0
    finally:
        w.stop()
    assert r.returncode == 0 and r.stdout.startswith(b"2.0.0 stored"), r
    assert "busy; delivering without it" in env.log.read_text()
    assert by_worker(env) == 1  # only the slow one; the other went cold
    print(f"\nbusy worker: the cold path delivered in {took:.1f} s")
