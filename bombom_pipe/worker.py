"""`bombom worker`: deliveries without the cold start, and the Maildir pull mode.

One dispatcher process and N pre-forked delivery processes that have the parser and psycopg
imported and keep one database connection each (so N processes are a pool of N connections).

- push: bombom-deliver connects to the unix socket (mode 0600, owned by the pipe user; the peer's
  uid is checked with SO_PEERCRED), sends the job (protocol.py) and waits at most a second for a
  delivery process to take it. The dispatcher hands the connection itself to an idle process
  (SCM_RIGHTS), which then speaks to bombom-deliver directly: stages, then the verdict.
  bombom-deliver keeps the deadline: it kills a process that overruns the parse budget (pidfd)
  and falls back to its cold path when the worker is absent, busy, stopped, dead or talks
  garbage. A killed process is replaced at once; the others carry on.
- pull (`--maildir`): files virtual(8) wrote are claimed and delivered by the same code
  (maildir.py); here the dispatcher keeps the deadline itself.

Nothing is reloaded at run time: a restart picks up new code and configuration.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import struct
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import child, config, protocol, spool
from .deadline import GRACE
from .log import Log
from .maildir import Maildir, envelope

IDENT = "bombom-worker"
SCAN = 0.2  # how often new/ is looked at when idle
MAX_BACKOFF = 30.0  # pull: longest pause after a tempfail (database down)
QUEUE_WAIT = 1.0  # a connection no process took within this has gone cold already


class KeptConnection:
    """One database connection per delivery process, kept between deliveries; the timeouts are
    set for each delivery; any error closes it (the next delivery connects afresh)."""

    def __init__(self) -> None:
        self.conn = None

    @contextlib.contextmanager
    def __call__(self, url: str, timeout: float) -> Iterator[object]:
        from . import store

        ms = str(max(100, int(timeout * 1000)))
        try:
            if self.conn is None or self.conn.closed:
                self.conn = store.connect(url, timeout)
                self.conn.autocommit = True  # store.deliver makes its own transaction
            self.conn.execute("SELECT set_config('statement_timeout', %s, false),"
                              " set_config('lock_timeout', %s, false)", (ms, ms))
            yield self.conn
        except BaseException:
            if self.conn is not None:
                with contextlib.suppress(Exception):
                    self.conn.close()
            self.conn = None
            raise


# -- a delivery process --------------------------------------------------------------------------

def _serve(settings: config.Settings, ctl: socket.socket) -> None:
    """The loop of one delivery process: a job from the dispatcher, then {"idle": true}."""
    kept = KeptConnection()
    log = Log.for_settings(settings, IDENT)
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(ctl, 4096, 1)
        except OSError:
            return
        if not data:
            return
        job = json.loads(data)
        try:
            if fds:
                _push(settings, fds[0], kept, log)
            else:
                _pull(settings, job, ctl.fileno(), kept, log)
        except Exception as e:
            log.exception(f"worker job failed: {e}")
            if not fds:
                protocol.send(ctl.fileno(), {"outcome": "tempfail",
                                             "detail": f"worker: {type(e).__name__}"})
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if not protocol.send(ctl.fileno(), {"idle": True}):
            return


def _push(settings: config.Settings, fd: int, kept: KeptConnection, log: Log) -> None:
    s = socket.socket(fileno=os.dup(fd))
    try:
        s.settimeout(QUEUE_WAIT)
        line = b""
        while not line.endswith(b"\n") and len(line) < protocol.MAX_LINE:
            chunk = s.recv(protocol.MAX_LINE)
            if not chunk:
                return
            line += chunk
        job = protocol.decode(line)
        s.settimeout(None)
        if protocol.send(fd, {"accepted": os.getpid()}):
            child.deliver(settings, job, fd, kept, log=log)
    finally:
        s.close()


def _pull(settings: config.Settings, job: dict, ctl: int, kept: KeptConnection, log: Log
          ) -> None:
    path = Path(job["path"])
    with open(path, "rb") as f:
        saved = spool.save_stream(settings.spool_dir, f)
    started = os.stat(path).st_mtime  # when virtual(8) delivered it: the lag is measured from it
    child.deliver(settings, {
        "sha256": saved.sha256, "size": saved.size, "started": started,
        "envelope": envelope(path),
        "deadline": time.time() + settings.deadline_seconds,
        "quarantine": job.get("quarantine")}, ctl, kept, log=log)


# -- the dispatcher ------------------------------------------------------------------------------

@dataclass
class Proc:
    pid: int
    ctl: socket.socket
    lines: protocol.Lines = field(default_factory=protocol.Lines)
    job: dict | None = None  # the pull job it works on ({"path", "stage", ...}), or {} for push
    since: float = 0.0
    killed: bool = False


class Worker:
    def __init__(self, settings: config.Settings, socket_path: str | None, processes: int,
                 maildir: Path | None, log: Log) -> None:
        self.settings, self.log, self.processes = settings, log, processes
        self.socket_path = socket_path
        self.maildir = Maildir(maildir) if maildir else None
        self.sel = selectors.DefaultSelector()
        self.procs: dict[int, Proc] = {}
        self.pending: deque[tuple[socket.socket, float]] = deque()
        self.quarantine: deque[Path] = deque()  # pull files whose parsing overran
        self.listener: socket.socket | None = None
        self.stopping = False
        self.next_scan = 0.0
        self.backoff = 0.0

    # life cycle
    def run(self) -> None:
        child.preload()  # once, here: the delivery processes start warm (copy-on-write)
        if self.maildir:
            put_back = self.maildir.open()
            if put_back:
                self.log.info(f"put back {put_back} files claimed by a worker that stopped")
        if self.socket_path:
            self.listener = self._listen(self.socket_path)
            self.sel.register(self.listener, selectors.EVENT_READ, "accept")
        for _ in range(self.processes):
            self._spawn()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        where = self.maildir.root if self.maildir else "-"
        self.log.info(f"worker started: {self.processes} processes, socket "
                      f"{self.socket_path or '-'}, maildir {where}")
        while not self.stopping or self._busy():
            self._step()
        self._shutdown()

    def _stop(self, *_: object) -> None:
        """SIGTERM: take no more work, finish what is running, then exit."""
        self.stopping = True

    def _close_listener(self) -> None:
        if self.listener is not None:
            self.sel.unregister(self.listener)
            self.listener.close()
            self.listener = None
            with contextlib.suppress(OSError):
                os.unlink(self.socket_path)  # type: ignore[arg-type]
        while self.pending:
            self.pending.popleft()[0].close()

    def _busy(self) -> bool:
        return any(p.job is not None for p in self.procs.values())

    def _shutdown(self) -> None:
        for p in self.procs.values():
            with contextlib.suppress(OSError):
                os.kill(p.pid, signal.SIGKILL)
        for p in list(self.procs.values()):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(p.pid, 0)
        self.log.info("worker stopped")

    def _listen(self, path: str) -> socket.socket:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # srw------- : only our own user (the pipe user) may connect
        try:
            s.bind(path)
        finally:
            os.umask(old)
        s.listen(128)
        s.setblocking(False)
        return s

    def _spawn(self) -> None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the delivery process
            try:
                parent_end.close()
                for p in self.procs.values():
                    p.ctl.close()
                if self.listener is not None:
                    self.listener.close()
                for s, _ in self.pending:
                    s.close()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                child.confine(self.settings.log)
                _serve(self.settings, child_end)
            finally:
                os._exit(0)
        child_end.close()
        proc = Proc(pid, parent_end)
        self.procs[pid] = proc
        self.sel.register(parent_end, selectors.EVENT_READ, proc)

    # one turn of the loop
    def _step(self) -> None:
        now = time.monotonic()
        timeout = SCAN if self.maildir and not self.stopping else 1.0
        if self.stopping:
            self._close_listener()
        for key, _ in self.sel.select(timeout):
            if key.data == "accept":
                self._accept()
            else:
                self._from_proc(key.data)
        self._reap()
        self._enforce(now)
        self._dispatch()

    def _accept(self) -> None:
        while self.listener is not None:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                    struct.calcsize("3i"))
            _, uid, _ = struct.unpack("3i", creds)
            if uid != os.getuid():
                self.log.error(f"refused a connection from uid {uid}")
                conn.close()
                continue
            self.pending.append((conn, time.monotonic()))

    def _from_proc(self, proc: Proc) -> None:
        try:
            data = proc.ctl.recv(4096)
        except OSError:
            data = b""
        if not data:  # it died; _reap deals with it
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(proc.ctl)
            return
        try:
            messages = proc.lines.feed(data)
        except protocol.Garbage as e:
            self.log.error(f"delivery process {proc.pid}: {e}")
            self._kill(proc)
            return
        for m in messages:
            job = proc.job
            if "stage" in m and job:
                job["stage"] = m["stage"]
            elif "outcome" in m and job:
                self._finish(job, str(m["outcome"]), str(m["detail"]))
                job["finished"] = True
            elif m.get("idle"):
                proc.job = None

    def _finish(self, job: dict, outcome: str, detail: str) -> None:
        assert self.maildir
        path = Path(job["path"])
        if outcome == "tempfail":
            self.maildir.retry(path)
            self.backoff = min(MAX_BACKOFF, max(1.0, self.backoff * 2))
            self.next_scan = time.monotonic() + self.backoff
            self.log.error(f"{path.name}: {detail}; left in new/ for {self.backoff:g} s")
        else:
            self.maildir.done(path)
            self.backoff = 0.0

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if not pid:
                return
            proc = self.procs.pop(pid, None)
            if proc is None:
                continue
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(proc.ctl)
            proc.ctl.close()
            sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
            job = proc.job
            if job and "path" in job and not job.get("finished"):
                self._lost(job, sig, proc.killed)
            elif job is not None and sig not in (None, signal.SIGKILL):
                self.log.error(f"delivery process {pid} died (signal {sig})")
            if not self.stopping:
                self._spawn()

    def _lost(self, job: dict, sig: int | None, killed: bool) -> None:
        """A pull job's process died before its verdict."""
        assert self.maildir
        path = Path(job["path"])
        overran = job.get("stage") == "parse" and (killed or sig == signal.SIGXCPU)
        if overran and not job.get("quarantine"):
            self.log.error(f"{path.name}: parsing killed (signal {sig}); quarantining")
            self.quarantine.append(path)
        else:
            self.log.error(f"{path.name}: delivery process died (signal {sig}); will retry")
            self.maildir.retry(path)

    def _enforce(self, now: float) -> None:
        """Pull jobs: the parse budget and the deadline, from outside (bombom-deliver does
        this for push jobs; a push job running far past any deadline is stuck: killed)."""
        limit = self.settings.deadline_seconds
        for proc in self.procs.values():
            job = proc.job
            if job is None or proc.killed:
                continue
            late = now - proc.since
            if ("path" in job and job.get("stage") == "parse" and late > limit) \
                    or late > limit + 2 * GRACE:
                self._kill(proc)

    def _kill(self, proc: Proc) -> None:
        proc.killed = True
        with contextlib.suppress(OSError):
            os.kill(proc.pid, signal.SIGKILL)

    def _dispatch(self) -> None:
        now = time.monotonic()
        idle = [p for p in self.procs.values() if p.job is None and not p.killed]
        while idle and self.pending:
            conn, since = self.pending.popleft()
            if now - since < QUEUE_WAIT:
                proc = idle.pop()
                try:
                    socket.send_fds(proc.ctl, [b"{}"], [conn.fileno()])
                    proc.job, proc.since = {}, now
                except OSError:
                    idle.append(proc)
            conn.close()
        while idle and self.quarantine:
            self._pull(idle.pop(), self.quarantine.popleft(), quarantine=True)
        if idle and self.maildir and not self.stopping and now >= self.next_scan:
            claimed = self.maildir.claim(len(idle))
            for path in claimed:
                self._pull(idle.pop(), path)
            self.next_scan = now + (0 if claimed else SCAN)

    def _pull(self, proc: Proc, path: Path, quarantine: bool = False) -> None:
        job: dict = {"path": str(path), "stage": "start"}
        if quarantine:
            job["quarantine"] = protocol.PARSE_BUDGET
        try:
            proc.ctl.sendall(json.dumps(job).encode())
        except OSError:
            self.maildir.retry(path)  # type: ignore[union-attr]
            return
        proc.job, proc.since = job, time.monotonic()


def serve(settings: config.Settings, socket_path: str | None, processes: int,
          maildir: Path | None) -> None:
    log = Log.for_settings(settings, IDENT)
    Worker(settings, socket_path, processes, maildir, log).run()
