"""bombom-deliver holds its deadline from outside the process that parses: through the real
command and a real PostgreSQL, with a parser made to misbehave by a test-only hook
(tests/hooks/sitecustomize.py, put first on PYTHONPATH; production never loads it)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from bombom_pipe.judge import GRACE
from bombom_pipe.spool import raw_path

from .builders import DIGEST, message, misbehaving, with_parser_hooks
from .conftest import Env
from .sandbox import wait_for

DEADLINE = 8


@pytest.fixture
def hooked(env: Env, workdir: Path) -> Env:
    """The delivery environment with the misbehaving parser hook on PYTHONPATH."""
    return with_parser_hooks(env, workdir, DEADLINE)


def one_line(r: subprocess.CompletedProcess[bytes]) -> str:
    assert r.stdout.count(b"\n") == 1 and r.stderr == b"", (r.stdout, r.stderr)
    return r.stdout.decode().strip()


def deliveries(db: psycopg.Connection) -> list[tuple[str, str]]:
    return db.execute("SELECT outcome, detail FROM deliveries ORDER BY id").fetchall()


@pytest.mark.parametrize("kind", ["spin", "loop"])
def test_parser_that_never_returns_is_quarantined_in_time(hooked: Env, db: psycopg.Connection,
                                                           kind: str) -> None:
    """spin: a regex holding the GIL (no signal handler can run); loop: Python code. Both are
    killed at the parse CPU budget and the message is quarantined (exit 0), since every retry
    would do the same; the raw bytes are kept."""
    raw = misbehaving(kind)
    t0 = time.monotonic()
    r = hooked.deliver(raw)
    took = time.monotonic() - t0
    assert r.returncode == 0, r
    assert one_line(r).startswith("2.0.0 quarantined unparsable: parse budget exceeded")
    assert deliveries(db) == [("quarantined", "unparsable: parse budget exceeded")]
    assert raw_path(hooked.spool, hashlib.sha256(raw).hexdigest()).read_bytes() == raw
    # Postfix's time limit is the deadline + 25 s; we answer well inside the deadline's grace
    assert took < DEADLINE + 5, took
    print(f"\n{kind}: quarantined after {took:.1f} s (deadline {DEADLINE} s)")


def test_authentication_that_never_returns_is_quarantined_in_time(
        hooked: Env, db: psycopg.Connection) -> None:
    """Sender authentication has a CPU budget of its own: overrunning it is the message's doing
    (a flood of signatures, an outsized key), quarantined like a parse overrun, never 75."""
    raw = b"X-Test-Auth: spin\r\n" + DIGEST
    t0 = time.monotonic()
    r = hooked.deliver(raw)
    took = time.monotonic() - t0
    assert r.returncode == 0 and one_line(r).startswith(
        "2.0.0 quarantined unauthenticated: authentication budget exceeded"), r
    assert deliveries(db) == [("quarantined", "unauthenticated: authentication budget exceeded")]
    assert took < DEADLINE + 5, took


def test_a_flood_of_signatures_ends_within_the_deadline(env: Env, db: psycopg.Connection
                                                        ) -> None:
    """8,000 `DKIM-Signature` headers (the verifier's header preparation is quadratic): the
    delivery ends within the deadline with exit 0, whether a cap refuses them first or the
    authentication budget quarantines the message; never 75, which would end in a bounce."""
    env.extra_env = {"BOMBOM_DEADLINE_SECONDS": str(DEADLINE)}
    raw = b"DKIM-Signature: v=1\r\n" * 8000 + DIGEST
    t0 = time.monotonic()
    r = env.deliver(raw)
    assert r.returncode == 0 and time.monotonic() - t0 < DEADLINE + 5, r
    [(outcome, detail)] = deliveries(db)
    assert outcome == "stored" or detail == "unauthenticated: authentication budget exceeded"


def test_a_message_that_kills_its_process_is_retried_then_quarantined(
        hooked: Env, db: psycopg.Connection) -> None:
    """Killed in the store stage on every try (a crash, the OOM killer): deferred twice, then
    quarantined with the count, raw kept, so Postfix never retries it until it bounces."""
    raw = b"X-Test-Store: die\r\n" + DIGEST
    codes = [hooked.deliver(raw) for _ in range(3)]
    assert [c.returncode for c in codes] == [75, 75, 0], codes
    assert "killed by signal 9 in stage store" in one_line(codes[0])
    assert one_line(codes[2]).startswith("2.0.0 quarantined unprocessable: delivery process died "
                                         "or timed out 3 times")
    assert [o for o, _ in deliveries(db)] == ["quarantined"]
    assert raw_path(hooked.spool, hashlib.sha256(raw).hexdigest()).exists()


def test_parser_stalled_without_working_is_deferred(hooked: Env, db: psycopg.Connection) -> None:
    """At the deadline, a parser that barely ran (starved by a loaded machine; here: asleep) is
    not the message's fault: 75, and Postfix retries."""
    raw = misbehaving("sleep")
    t0 = time.monotonic()
    r = hooked.deliver(raw)
    assert r.returncode == 75, r
    assert "deadline" in one_line(r)
    assert time.monotonic() - t0 < DEADLINE + 5
    assert raw_path(hooked.spool, hashlib.sha256(raw).hexdigest()).read_bytes() == raw


def test_the_hook_leaves_normal_messages_alone(hooked: Env, db: psycopg.Connection) -> None:
    r = hooked.deliver(DIGEST)
    assert r.returncode == 0 and one_line(r).startswith("2.0.0 stored article 1")


def test_quarantined_overrun_is_replayable(hooked: Env, db: psycopg.Connection) -> None:
    """After the fix (here: without the hook), `bombom replay` stores the kept message."""
    raw = misbehaving("spin", "replay")
    assert hooked.deliver(raw).returncode == 0
    hooked.extra_env = {}
    r = subprocess.run([*hooked.argv(config=False)[:-2], "-m", "bombom_pipe.admin", "--config",
                        str(hooked.config), "replay"], capture_output=True)
    assert r.returncode == 0, r
    assert db.execute("SELECT count(*) FROM articles").fetchone()[0] == 1


def test_replay_of_an_overrunning_message_is_bounded_too(hooked: Env, db: psycopg.Connection
                                                        ) -> None:
    """Before the fix, `bombom replay` parses in a child watched like bombom-deliver's: the
    message is quarantined again within the deadline instead of spinning the operator's command."""
    assert hooked.deliver(misbehaving("spin", "replay-early")).returncode == 0
    r = subprocess.run([*hooked.argv(config=False)[:-2], "-m", "bombom_pipe.admin", "--config",
                        str(hooked.config), "replay"], capture_output=True, text=True,
                       timeout=6 * DEADLINE)
    assert r.returncode == 0 and "replayed 1: quarantined 1" in r.stdout, r
    assert db.execute("SELECT count(*) FROM articles").fetchone()[0] == 0


def test_closed_stdout_does_not_change_the_exit_status(env: Env, db: psycopg.Connection) -> None:
    r = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", *env.argv("--recipient",
                        "alice@bombom.news")], input=DIGEST, capture_output=True)
    assert r.returncode == 0, r
    assert db.execute("SELECT count(*) FROM articles").fetchone()[0] == 1


def test_child_output_never_reaches_postfix(env: Env, db: psycopg.Connection,
                                            workdir: Path) -> None:
    """The delivering process's stderr is the log file: a crash there is one status line."""
    broken = workdir / "noisy-psycopg"
    (broken / "psycopg").mkdir(parents=True, exist_ok=True)
    (broken / "psycopg" / "__init__.py").write_text(
        "import sys\nprint('noise on stdout')\nprint('noise on stderr', file=sys.stderr)\n"
        "raise ImportError('shadowed psycopg')\n")
    for p in [broken, *broken.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    env.extra_env = {"PYTHONPATH": f"{broken}:{env.src}"}
    r = env.deliver(DIGEST)
    assert r.returncode == 75
    assert one_line(r).startswith("4.3.0 tempfail delivery process ended without a verdict")
    assert "noise on stderr" in env.log.read_text()


def test_memory_bomb_in_the_parser_is_quarantined(hooked: Env, db: psycopg.Connection) -> None:
    """The delivering process's address space is capped (RLIMIT_AS): a parser asking for 2 GiB
    gets MemoryError at once, and the process itself quarantines the message (every retry would
    do the same), before any CPU budget runs out (bombom-deliver kills nothing)."""
    raw = misbehaving("memory")
    r = hooked.deliver(raw)
    assert r.returncode == 0, r
    assert one_line(r).startswith("2.0.0 quarantined unparsable: parse budget exceeded")
    assert "parsing killed" not in hooked.log.read_text()
    assert deliveries(db) == [("quarantined", "unparsable: parse budget exceeded")]
    assert raw_path(hooked.spool, hashlib.sha256(raw).hexdigest()).read_bytes() == raw


@pytest.mark.parametrize("kind", ["stall", "spin"])
def test_process_stuck_while_storing_is_stopped_and_deferred(hooked: Env, db: psycopg.Connection,
                                                             kind: str) -> None:
    """A process stuck in the store stage is stopped from outside: stall (asleep with SIGALRM
    blocked, so its own deadline cannot fire) is killed by bombom-deliver GRACE seconds after the
    deadline; spin (the GIL held) meets the kernel's CPU limit first. Either way 75, nothing
    stored, the raw bytes kept for the retry, and no process left behind."""
    raw = f"X-Test-Store: {kind}\r\n".encode() + message(1, f"store-{kind}")
    t0 = time.monotonic()
    p = hooked.popen("--recipient", "alice@bombom.news")
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write(raw)
    p.stdin.close()
    [child] = wait_for("the delivering process", lambda: children(p.pid))  # type: ignore[misc]
    try:
        p.wait(DEADLINE + 60)
        took = time.monotonic() - t0
        out = p.stdout.read()
        wait_for("the delivering process to be gone", lambda: not alive(child), 5)
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)
    assert p.returncode == 75, out
    if kind == "stall":
        assert out.startswith(b"4.3.0 tempfail deadline reached in stage store"), out
        assert "delivery process: deadline reached in stage store" in hooked.log.read_text()
        assert DEADLINE + GRACE - 1 < took < DEADLINE + GRACE + 4, took
    else:
        assert out.startswith(b"4.3.0 tempfail delivery process killed by signal %d in stage "
                              b"store" % signal.SIGXCPU), out
        assert took < DEADLINE + GRACE, took
    assert db.execute("SELECT count(*) FROM articles").fetchone()[0] == 0
    assert raw_path(hooked.spool, hashlib.sha256(raw).hexdigest()).read_bytes() == raw
    print(f"\nstuck while storing ({kind}): 75 after {took:.1f} s (deadline {DEADLINE} s)")


def children(pid: int) -> list[int]:
    """Live processes (not zombies) whose parent is `pid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            data = stat.read_bytes()
        except OSError:
            continue
        state, ppid = data[data.rindex(b")") + 2:].split()[:2]
        if int(ppid) == pid and state != b"Z":
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return data[data.rindex(b")") + 2:].split()[0] != b"Z"


def test_delivering_process_dies_with_bombom_deliver(hooked: Env, db: psycopg.Connection) -> None:
    """bombom-deliver killed outright (Postfix's time limit, an operator): the process it forked
    to deliver goes with it (PR_SET_PDEATHSIG) instead of delivering behind Postfix's back."""
    p = hooked.popen("--recipient", "alice@bombom.news")
    assert p.stdin is not None
    p.stdin.write(misbehaving("sleep", "orphan"))
    p.stdin.close()
    [child] = wait_for("the delivering process", lambda: children(p.pid))  # type: ignore[misc]
    try:
        time.sleep(2)  # past confine() and the imports: the child sleeps in the parser
        p.kill()
        p.wait(10)
        wait_for("the delivering process to die with its parent", lambda: not alive(child), 5)
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)
    assert db.execute("SELECT count(*) FROM deliveries").fetchone()[0] == 0
