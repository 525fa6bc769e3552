"""`bombom worker`: the warm delivery service behind every door but the cold path.

One dispatcher process and N pre-forked delivery processes that have the parser and psycopg
imported and keep one database connection each (so N processes are a pool of N connections).
The dispatcher serves three doors and runs every job the same way: an idle delivery process
takes it (child.py), the dispatcher watches it with the judge (judge.py), and answers the door.

- pipe (`worker_socket`, mode 0600): bombom-deliver hands over a message it saved; the worker
  answers `{"accepted": true}` once a process took it (else bombom-deliver goes cold), then the
  verdict. Only our own uid may connect (SO_PEERCRED).
- lmtp (`lmtp_socket`): Postfix's lmtp(8) (lmtp.py): the dispatcher saves the bytes (fsync)
  before any 250, parses once and stores once per member, one reply per recipient.
- maildir (`--maildir`): files virtual(8) wrote (maildir.py), kept in the spool by a hard link,
  retried per file with a backoff of their own.

A process the judge stops is killed and replaced at once; its message is quarantined, retried or
deferred as the judge says, and a message whose process dies `MAX_DEATHS` times is quarantined.
Nothing is reloaded at run time: a restart picks up new code and configuration.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import selectors
import signal
import socket
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import child, config, judge, lmtp, protocol, spool
from .attempt import Attempt, settle
from .judge import GRACE
from .log import Log
from .maildir import Maildir, envelope, received

if TYPE_CHECKING:  # metrics.py (prometheus_client) is loaded only with metrics_listen
    from .metrics import Live

IDENT = "bombom-worker"
TICK = 0.1  # how often running jobs are judged and new/ is looked at when busy
QUEUE_WAIT = 0.8  # a pipe job no process took within this goes cold (bombom-deliver waits 1 s)
LOOKUP_TIMEOUT = 1.0  # LMTP's member lookup at RCPT; after a failure, 451 for DOWN_PAUSE
DOWN_PAUSE = 2.0
DEFAULT_SIZE = 10240000  # Postfix's default message_size_limit


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
    """The loop of one delivery process: one job (a line) at a time from the dispatcher."""
    kept = KeptConnection()
    log = Log.for_settings(settings, IDENT)
    lines = protocol.Lines()
    while True:
        try:
            data = ctl.recv(protocol.MAX_LINE)
        except OSError:
            return
        if not data:
            return
        for m in lines.feed(data):
            child.deliver(settings, protocol.Job.from_wire(m), ctl.fileno(), kept, log=log)


# -- jobs and the processes that run them --------------------------------------------------------

@dataclass
class Task:
    """A job and its door's callbacks. `answer(i, outcome, detail)` once per recipient."""

    job: protocol.Job
    answer: Callable[[int, str, str], None]
    taken: Callable[[], None] = lambda: None
    expired: Callable[[], None] = lambda: None  # not taken by `expires`: dropped, unanswered
    expires: float | None = None  # the pipe door: bombom-deliver then goes cold
    left: list[int] = field(default_factory=list)  # recipients not answered yet
    moved: int = 0  # times taken away from a stopped process

    def __post_init__(self) -> None:
        self.left = list(range(len(self.job.recipients)))


@dataclass
class Proc:
    pid: int
    ctl: socket.socket
    task: Task | None = None
    attempt: Attempt | None = None
    index: list[int] = field(default_factory=list)  # attempt's recipient i -> task's
    killed: bool = False  # waits to be reaped: takes no job


class Worker:
    def __init__(self, settings: config.Settings, socket_path: str | None, processes: int,
                 maildir: Path | None, log: Log, lmtp_path: str | None = None) -> None:
        self.settings, self.log, self.processes = settings, log, processes
        self.budget = judge.Budget.of(settings.deadline_seconds)
        self.socket_path, self.lmtp_path = socket_path, lmtp_path
        self.maildir = Maildir(maildir) if maildir else None
        self.sel = selectors.DefaultSelector()
        self.procs: dict[int, Proc] = {}
        self.queue: deque[Task] = deque()
        self.listeners: list[socket.socket] = []
        self.stopping = False
        self.lookup_conn = None
        self.down_until = 0.0
        self.size_limit = DEFAULT_SIZE
        self.lmtp_peers: set[int] = set()
        self.metrics: Live | None = None  # metrics_listen's (metrics.py)

    # life cycle
    def run(self) -> None:
        child.preload()  # once, here: the delivery processes start warm (copy-on-write)
        if self.maildir:
            put_back = self.maildir.open(self.settings.spool_dir)
            if put_back:
                self.log.info(f"put back {put_back} files claimed by a worker that stopped")
        if self.socket_path:  # srw------- : only our own user (the pipe user)
            self._listen(self.socket_path, 0o177, self._accept_pipe)
        if self.lmtp_path:  # srw-rw-rw- : its directory and SO_PEERCRED say who may come
            self.size_limit = _postfix_size_limit()
            self.lmtp_peers = _lmtp_peers() | {os.getuid(), 0}
            self._listen(self.lmtp_path, 0o111, self._accept_lmtp)
        for _ in range(self.processes):
            self._spawn()
        if self.settings.metrics_listen:  # its threads start after the first forks
            from .metrics import serve as metrics

            doors = (("pipe",) if self.socket_path else ()) + (
                ("lmtp",) if self.lmtp_path else ()) + (("maildir",) if self.maildir else ())
            self.metrics = metrics(self.settings, self.maildir and self.maildir.root, doors)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        where = self.maildir.root if self.maildir else "-"
        listen = self.settings.metrics_listen
        self.log.info(f"worker started: {self.processes} processes, socket "
                      f"{self.socket_path or '-'}, lmtp {self.lmtp_path or '-'}, maildir {where}"
                      f", metrics {':'.join(map(str, listen)) if listen else '-'}")
        while not self.stopping or self._busy():
            self._step()
        self._shutdown()

    def _stop(self, *_: object) -> None:
        """SIGTERM: take no more work, finish what is running, then exit."""
        self.stopping = True

    def _busy(self) -> bool:
        return bool(self.queue) or any(p.task for p in self.procs.values())

    def _shutdown(self) -> None:
        self._close_listeners()
        for p in self.procs.values():
            with contextlib.suppress(OSError):
                os.kill(p.pid, signal.SIGKILL)
        for p in list(self.procs.values()):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(p.pid, 0)
        self.log.info("worker stopped")

    def _listen(self, path: str, umask: int, on_accept: Callable[[socket.socket], None]
                ) -> None:
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"socket directory {directory} does not exist (create it "
                                    f"owned by uid {os.getuid()}; the installer does)")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(umask)
        try:
            s.bind(path)
        finally:
            os.umask(old)
        s.listen(128)
        s.setblocking(False)
        self.listeners.append(s)
        self.sel.register(s, selectors.EVENT_READ, lambda: on_accept(s))

    def _close_listeners(self) -> None:
        for s in self.listeners:
            path = s.getsockname()
            self.sel.unregister(s)
            s.close()
            with contextlib.suppress(OSError):
                os.unlink(path)
        self.listeners = []

    def _spawn(self) -> None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the delivery process
            try:
                parent_end.close()
                for key in list(self.sel.get_map().values()):
                    with contextlib.suppress(OSError):
                        key.fileobj.close()  # type: ignore[union-attr]
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                child.confine(self.settings.log)
                _serve(self.settings, child_end)
            finally:
                os._exit(0)
        child_end.close()
        proc = Proc(pid, parent_end)
        self.procs[pid] = proc
        self.sel.register(parent_end, selectors.EVENT_READ, lambda: self._from_proc(proc))

    # one turn of the loop
    def _step(self) -> None:
        if self.stopping and self.listeners:
            self._close_listeners()
        for key, _ in self.sel.select(TICK):
            key.data()
        self._reap()
        self._judge(time.monotonic())
        self._dispatch()
        if self.metrics:
            self.metrics.processes.set(len(self.procs))
            self.metrics.busy.set(sum(1 for p in self.procs.values() if p.task))
            self.metrics.queued.set(len(self.queue))

    # -- the judge, for every door ---------------------------------------------------------------
    def _from_proc(self, proc: Proc) -> None:
        try:
            data = proc.ctl.recv(65536)
        except OSError:
            data = b""
        if not data:  # it died; _reap deals with it
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(proc.ctl)
            return
        a, task = proc.attempt, proc.task
        if a is None or task is None:
            return  # a late word from a job already settled
        try:
            for i in a.feed(data):
                outcome, detail = a.results[i]  # type: ignore[misc]
                self._answer(task, proc.index[i], outcome, detail, a.auth)
        except protocol.Garbage as e:
            self.log.error(f"delivery process {proc.pid}: {e}")
            self._end(proc, judge.Verdict("tempfail", f"garbage: {e}", counts=True))
            return
        if a.done:
            proc.task = proc.attempt = None
            if self.metrics:
                self.metrics.timed(task.job.door, task.job.started, a.begun, a.stages,
                                   time.monotonic())

    def _answer(self, task: Task, i: int, outcome: str, detail: str,
                auth: str | None = None) -> None:
        if i in task.left:
            task.left.remove(i)
            if self.metrics:
                self.metrics.delivered(task.job.door, outcome, auth, detail)
            task.answer(i, outcome, detail)

    def _judge(self, now: float) -> None:
        for proc in list(self.procs.values()):
            if proc.attempt is not None:
                verdict = proc.attempt.check(now)
                if verdict is not None:
                    self._end(proc, verdict)
        for task in [t for t in self.queue if t.expires is not None and now >= t.expires]:
            self.queue.remove(task)
            task.expired()
        for task in [t for t in self.queue if now >= protocol.monotonic(t.job.deadline)]:
            self.queue.remove(task)
            self._settle(task, judge.Verdict("tempfail", "no delivery process was free "
                                                         "before the deadline"))

    def _end(self, proc: Proc, verdict: judge.Verdict, kill: bool = True) -> None:
        """The judge stopped `proc`'s attempt: kill it (replaced when reaped), settle its task.
        `kill=False` once it is reaped (its pid may be another process's by now)."""
        task = proc.task
        if proc.attempt is not None and kill:
            proc.attempt.kill()
            proc.killed = True
        proc.task = proc.attempt = None
        if task is not None:
            self._settle(task, verdict)

    def _settle(self, task: Task, verdict: judge.Verdict) -> None:
        """Recipients the process left unanswered: move, quarantine or defer, as judged."""
        if not task.left:
            return
        verdict = settle(self.settings.spool_dir, task.job.sha256, verdict)
        time_left = protocol.monotonic(task.job.deadline) - time.monotonic()
        if verdict.elsewhere and task.moved < 2 and time_left > 1.0:
            task.moved += 1
            self.queue.appendleft(task)
            return
        if verdict.outcome == "quarantined" and task.job.quarantine is None:
            self.log.error(f"{task.job.queue_id or '-'}: quarantining sha256={task.job.sha256}: "
                           f"{verdict.reason}")
            task.job = task.job.with_quarantine(verdict.reason, time.time() + GRACE)
            task.expires = None
            self.queue.appendleft(task)
            return
        reason = verdict.reason
        if task.job.quarantine is not None:
            reason = f"{task.job.quarantine}; quarantine not recorded ({reason})"
        self.log.error(f"{task.job.queue_id or '-'}: sha256={task.job.sha256}: {reason}")
        for i in list(task.left):
            self._answer(task, i, "tempfail", reason)

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
            if proc.task is not None and proc.attempt is not None:
                sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
                self._end(proc, proc.attempt.watch.died(sig), kill=False)
            if not self.stopping:
                self._spawn()

    def _dispatch(self) -> None:
        idle = [p for p in self.procs.values() if p.task is None and not p.killed]
        while idle and self.queue:
            self._run(idle.pop(), self.queue.popleft())
        if idle and self.maildir and not self.stopping:
            for path in self.maildir.due(len(idle)):
                task = self._maildir_task(path)
                if task is not None:
                    self._run(idle.pop(), task)

    def _run(self, proc: Proc, task: Task) -> None:
        index = list(task.left)
        job = task.job if len(index) == len(task.job.recipients) else task.job.only(index)
        try:
            proc.ctl.sendall(protocol.encode(job.to_wire()))
        except OSError:
            self.queue.appendleft(task)
            return
        budget = judge.Budget.of(GRACE) if job.quarantine else self.budget
        proc.task, proc.index = task, index
        proc.attempt = Attempt(proc.ctl.fileno(), proc.pid, job, budget,
                               protocol.monotonic(job.deadline), forked=False)
        task.taken()

    # -- the pipe door: bombom-deliver ---------------------------------------------------------
    def _accept(self, listener: socket.socket, allowed: set[int]) -> Iterator[socket.socket]:
        while True:
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            _, uid = protocol.peer(conn)
            if uid not in allowed:
                self.log.error(f"refused a connection from uid {uid}")
                conn.close()
                continue
            conn.setblocking(False)
            yield conn

    def _accept_pipe(self, listener: socket.socket) -> None:
        for conn in self._accept(listener, {os.getuid()}):
            PipeClient(self, conn)

    # -- the LMTP door ---------------------------------------------------------------------------
    def _accept_lmtp(self, listener: socket.socket) -> None:
        for conn in self._accept(listener, self.lmtp_peers):
            LmtpClient(self, conn)

    def member(self, address: str) -> str:
        """"member", "unknown" or "down" (the database did not answer: 451 at RCPT)."""
        if time.monotonic() < self.down_until:
            return "down"
        while True:
            stale = self.lookup_conn is not None  # a kept connection may have gone stale
            try:
                return "member" if self._find_member(address) else "unknown"
            except Exception as e:  # noqa: BLE001 - any failure is "try later", never "unknown"
                with contextlib.suppress(Exception):
                    self.lookup_conn.close()  # type: ignore[union-attr]
                self.lookup_conn = None
                if self.metrics:
                    from .metrics import error_class

                    self.metrics.db_errors.labels(error_class(type(e).__name__)).inc()
                if not stale:  # a fresh connection failed too: the database is down
                    self.log.error(f"member lookup failed ({type(e).__name__}); answering 451 "
                                   f"for {DOWN_PAUSE:g} s")
                    break
        self.down_until = time.monotonic() + DOWN_PAUSE
        return "down"

    def _find_member(self, address: str) -> bool:
        from . import store

        if self.lookup_conn is None:
            self.lookup_conn = store.connect(self.settings.database_url, LOOKUP_TIMEOUT)
            self.lookup_conn.autocommit = True
            self.lookup_conn.execute(f"SET statement_timeout = {int(LOOKUP_TIMEOUT * 1000)}")
        return store.find_member(self.lookup_conn, address) is not None

    def too_busy(self) -> bool:
        return self.stopping or len(self.queue) >= 4 * self.processes

    # -- the Maildir door ------------------------------------------------------------------------
    def _maildir_task(self, path: Path) -> Task | None:
        assert self.maildir
        md = self.maildir
        try:
            kept = spool.link_or_save(self.settings.spool_dir, path)
        except (OSError, spool.SpoolError) as e:
            wait = md.retry(path)
            self.log.error(f"{path.name}: cannot keep it in the spool: {e}; retried in {wait:g} s")
            return None
        env, saved = envelope(kept.head), kept.saved
        job = protocol.Job.make(  # started: when virtual(8) delivered it, the lag's start
            saved.sha256, saved.size, "maildir", kept.mtime,
            time.time() + self.settings.deadline_seconds,
            [(env["recipient"], env["original_recipient"])], sender=env["sender"],
            queue_id=env.get("queue_id") or f"maildir:{path.name}"[:64],
            client_address=env.get("client_address"))

        def answer(i: int, outcome: str, detail: str) -> None:
            if outcome == "tempfail":
                wait = md.retry(path)
                self.log.error(f"{path.name}: {detail}; retried in {wait:g} s")
            else:
                md.done(path)

        return Task(job, answer)


class PipeClient:
    """bombom-deliver's connection: its job, then "accepted", then the verdict."""

    def __init__(self, worker: Worker, conn: socket.socket) -> None:
        self.worker, self.conn = worker, conn
        self.lines = protocol.Lines()
        self.task: Task | None = None
        self.since = time.monotonic()
        worker.sel.register(conn, selectors.EVENT_READ, self.readable)

    def close(self) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.worker.sel.unregister(self.conn)
        self.conn.close()
        if self.task is not None and self.task in self.worker.queue:
            self.worker.queue.remove(self.task)  # not taken yet: bombom-deliver went cold

    def send(self, message: dict[str, object]) -> None:
        with contextlib.suppress(OSError):
            self.conn.sendall(protocol.encode(message))

    def readable(self) -> None:
        try:
            data = self.conn.recv(protocol.MAX_LINE)
            if not data:
                raise ConnectionResetError
            if self.task is not None:
                return  # nothing more is expected from bombom-deliver
            messages = self.lines.feed(data)
        except (OSError, protocol.Garbage) as e:
            if not isinstance(e, ConnectionResetError):
                self.worker.log.error(f"pipe door: {e}")
            self.close()
            return
        if not messages:
            return
        try:
            job = protocol.Job.from_wire(messages[0])
            if job.door != "pipe" or len(job.recipients) != 1:
                raise protocol.Garbage("not a pipe job")
        except protocol.Garbage as e:
            self.worker.log.error(f"pipe door: {e}")
            self.close()
            return
        self.task = Task(job, self.answer, taken=lambda: self.send({"accepted": True}),
                         expired=self.close, expires=self.since + QUEUE_WAIT)
        self.worker.queue.append(self.task)

    def answer(self, i: int, outcome: str, detail: str) -> None:
        self.send({"outcome": outcome, "detail": detail, "rcpt": i})
        self.task = None
        self.close()


class LmtpClient:
    """One LMTP connection from Postfix (lmtp.py holds the conversation)."""

    def __init__(self, worker: Worker, conn: socket.socket) -> None:
        self.worker, self.conn = worker, conn
        self.session = lmtp.Session(socket.gethostname(), worker.size_limit, worker.member,
                                    worker.too_busy, self.data)
        self.out = bytearray(self.session.greeting())
        self.pending: list[bytes | None] = []  # the current transaction's replies, in order
        self.sent = 0  # how many of them went out
        worker.sel.register(conn, selectors.EVENT_READ, self.readable)
        self.flush()

    def flush(self) -> None:
        while self.out:
            try:
                sent = self.conn.send(self.out)
            except BlockingIOError:
                self._want_write(True)
                return
            except OSError:
                self.close()
                return
            del self.out[:sent]
        self._want_write(False)
        if self.session.closed:
            self.close()

    def _want_write(self, on: bool) -> None:
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if on else 0)
        with contextlib.suppress(KeyError, ValueError):
            self.worker.sel.modify(self.conn, events, self.readable)

    def close(self) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.worker.sel.unregister(self.conn)
        self.conn.close()

    def readable(self) -> None:
        if self.out:
            self.flush()
        try:
            data = self.conn.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        self.out += self.session.feed(data)
        self.flush()

    def data(self, session: lmtp.Session, sender: str, recipients: list[str], body: bytes
             ) -> None:
        """A complete message: saved (fsync) before any reply, then one job for all."""
        try:
            saved = spool.save_bytes(self.worker.settings.spool_dir, "raw", body, ".eml")
        except spool.SpoolError as e:
            self.worker.log.error(f"lmtp: spool: {e}")
            for _ in recipients:
                self.out += session.answer(b"451 4.3.0 spool: " + str(e).encode()[:100] + b"\r\n")
            self.flush()
            return
        queue_id, client = received(body)
        job = protocol.Job.make(
            saved.sha256, saved.size, "lmtp", time.time(),
            time.time() + self.worker.settings.deadline_seconds,
            [(r, None) for r in recipients], sender=sender or None,
            queue_id=queue_id, client_address=client)
        self.pending = [None] * len(recipients)
        self.sent = 0
        self.worker.queue.append(Task(job, self.answer))

    def answer(self, i: int, outcome: str, detail: str) -> None:
        """Replies go out in recipient order, each as soon as those before it are out."""
        self.pending[i] = lmtp.reply_for(outcome, detail)
        while self.sent < len(self.pending) and self.pending[self.sent] is not None:
            self.out += self.session.answer(self.pending[self.sent])  # type: ignore[arg-type]
            self.sent += 1
        self.flush()


def _postfix_size_limit() -> int:
    """main.cf's message_size_limit, for LHLO's SIZE (Postfix's default when unknown)."""
    try:
        out = subprocess.run(["postconf", "-h", "message_size_limit"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        return int(out) if int(out) > 0 else DEFAULT_SIZE
    except (OSError, ValueError, subprocess.SubprocessError):
        return DEFAULT_SIZE


def _lmtp_peers() -> set[int]:
    """Who may speak LMTP to us besides our own uid and root: Postfix's mail_owner."""
    with contextlib.suppress(KeyError):
        return {pwd.getpwnam("postfix").pw_uid}
    return set()


def serve(settings: config.Settings, socket_path: str | None, processes: int,
          maildir: Path | None, lmtp_path: str | None = None) -> None:
    log = Log.for_settings(settings, IDENT)
    Worker(settings, socket_path, processes, maildir, log, lmtp_path).run()
