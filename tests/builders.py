"""What several test modules build: HTML messages, variants of the example digest, the
misbehaving-parser hook on PYTHONPATH, and a `bombom worker` process for a delivery environment."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from .conftest import EXAMPLES, Env
from .sandbox import DELIVER_USER, give

DIGEST = (EXAMPLES / "english-digest.eml").read_bytes()
HOOKS = Path(__file__).resolve().parent / "hooks"


def html_message(head: Sequence[str], html: str, image: bytes | None = None,
                 content_id: str = "") -> bytes:
    """A text/html message under these header lines; with `image`, a multipart/related whose
    second part is that PNG under `Content-ID: <content_id>`."""
    lines = list(head)
    if image is None:
        lines.append("Content-Type: text/html; charset=utf-8")
        return ("\r\n".join(lines) + "\r\n\r\n" + html).encode()
    lines.append('Content-Type: multipart/related; boundary="rel"')
    body = ("--rel\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + html +
            f"\r\n--rel\r\nContent-Type: image/png\r\nContent-ID: <{content_id}>\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(image).decode() +
            "\r\n--rel--\r\n")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def message(i: int, tag: str = "w") -> bytes:
    """The example digest under its own Message-ID."""
    return DIGEST.replace(b"<digest-2026-11-30@", f"<{tag}-{i}@".encode())


def misbehaving(kind: str, tag: str = "x") -> bytes:
    """The digest with the header that makes the test-only parser hook `kind` (spin, stall…)."""
    return (f"X-Test-Parser: {kind}\r\n".encode()
            + DIGEST.replace(b"<digest-2026-11-30@", f"<{kind}-{tag}@".encode()))


def with_parser_hooks(env: Env, workdir: Path, deadline: int) -> Env:
    """`env` with tests/hooks first on PYTHONPATH (copied once where the delivery user can read
    it; production never loads it) and this deadline."""
    hooks = workdir / "hooks"
    if not hooks.exists():
        shutil.copytree(HOOKS, hooks, ignore=shutil.ignore_patterns("__pycache__"))
        for p in [hooks, *hooks.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
    env.extra_env = {"PYTHONPATH": f"{hooks}:{env.src}", "BOMBOM_DEADLINE_SECONDS": str(deadline)}
    return env


class Worker:
    """A `bombom worker` process for one delivery environment, as the delivery user."""

    def __init__(self, env: Env, *args: str) -> None:
        self.env = env
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        base = self.env.argv(config=False)
        assert base[-2:] == ["-m", "bombom_pipe.entry"]
        return [*base[:-2], "-m", "bombom_pipe.admin", "--config", str(self.env.config),
                "worker", *self.args]

    def start(self) -> Worker:
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        return self

    def wait_ready(self, what: str = "worker started", timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while what not in self.env.log.read_text():
            assert self.proc and self.proc.poll() is None, "worker exited"
            assert time.monotonic() < end, "worker did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGCONT)
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc:
            self.proc.wait(10)


def with_worker_socket(env: Env) -> Path:
    """A worker_socket in env's config, in a directory only the delivery user may enter."""
    run = env.base / "run"
    run.mkdir(mode=0o700)
    give(run, DELIVER_USER)
    sock = run / "worker.sock"
    env.write_config(env.config.read_text() + f'worker_socket = "{sock}"\n')
    return sock


def by_worker(env: Env) -> int:
    """How many deliveries a worker process made: its own `outcome=` lines (the worker's start,
    stop and error lines do not count)."""
    return sum(1 for line in env.log.read_text().splitlines()
               if "bombom-worker[" in line and ": info: " in line and " outcome=" in line)
