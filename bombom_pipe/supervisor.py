"""bombom-deliver: save the message, have another process deliver it, and hold the deadline.

Standard library only, and it never runs parser or database code itself. In order:

1. arguments and configuration: unusable -> tempfail (75); a config error is ours, never the
   sender's, and a bounce could get the address unsubscribed;
2. save the raw bytes under their SHA-256 before anything else (spool.py): failure -> tempfail;
3. hand the saved message to `bombom worker` if one is configured and answers at once, else fork
   a child (the cold path; same delivery code, child.py); either reports its stage and verdict
   (protocol.py). Deliveries are idempotent, so a worker that dies, hangs or answers garbage is
   simply replaced by the cold path;
4. watch from outside: a process still parsing at the deadline, or past the parse CPU budget, is
   killed and the message quarantined (`unparsable: parse budget exceeded`: the same bytes would
   do the same on every retry; `bombom replay` retries after a fix); one still storing `GRACE`
   seconds after the deadline (it normally gives up itself first) is killed: tempfail.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

from . import child, config, protocol, spool
from .deadline import GRACE, Deadline, DeadlineExceeded
from .log import Log
from .outcomes import Outcome

POLL = 0.1  # how often a parsing process's CPU time (and a worker's state) is looked at
CONNECT_WAIT = 0.5  # the worker's socket must take the connection within this
ACCEPT_WAIT = 1.0  # ... and one of its processes the job within this (busy: cold path)
CHILD_MARGIN = 0.5  # the delivering process's own deadline comes this much before ours
MIN_COLD = 1.0  # seconds left below which a failed worker is not followed by a cold attempt
CLK_TCK = os.sysconf("SC_CLK_TCK")


class UsageError(Exception):
    """The command line in master.cf is wrong: our mistake, so defer, never bounce."""


OPTIONS = {  # --name VALUE or --name=VALUE; all optional
    "config": f"config file (default: $BOMBOM_CONFIG or {config.DEFAULT_CONFIG})",
    "sender": "envelope sender (${sender})",
    "recipient": "envelope recipient (${recipient}); without it, taken from X-Original-To, "
                 "Delivered-To, then To",
    "original-recipient": "${original_recipient}, for the log",
    "queue-id": "Postfix queue id (${queue_id}), for the log",
    "client-address": "SMTP client address (${client_address})",
}


def parse_args(argv: list[str]) -> dict[str, str | None]:
    """The options as a dict (`queue_id`, ...); `--help` prints them and exits 0. (Not argparse:
    this runs once per message, and every import counts.)"""
    args: dict[str, str | None] = {name.replace("-", "_"): None for name in OPTIONS}
    rest = list(argv)
    while rest:
        arg = rest.pop(0)
        if arg in ("-h", "--help"):
            sys.stdout.write(
                "usage: bombom-deliver [--OPTION VALUE ...] < message\n\nDeliver one message "
                "from stdin to one Bombom member (Postfix pipe(8)).\n\noptions:\n"
                + "".join(f"  --{name} VALUE\n      {text}\n" for name, text in OPTIONS.items()))
            raise SystemExit(0)
        name, eq, value = arg.partition("=")
        if not name.startswith("--") or name[2:] not in OPTIONS:
            raise UsageError(f"unrecognized argument: {arg}")
        if not eq:
            if not rest:
                raise UsageError(f"{name}: expected one argument")
            value = rest.pop(0)
        args[name[2:].replace("-", "_")] = value
    return args


def run(argv: list[str]) -> tuple[Outcome, str]:
    """Deliver the message on stdin; returns the outcome and its one-line explanation."""
    started = time.time()
    try:
        args = parse_args(argv)
    except UsageError as e:
        Log("syslog").error(f"command line: {e}")
        return Outcome.TEMPFAIL, f"bad command line: {e}"
    try:
        settings = config.load(args["config"], check_dsn=False)  # the delivering process checks
    except config.ConfigError as e:
        Log("syslog").error(f"configuration: {e}")
        return Outcome.TEMPFAIL, f"configuration: {e}"
    log = Log(settings.log)  # no database here: nothing of the DSN can reach this log
    if os.geteuid() == 0:
        log.error("refusing to run as root")
        return Outcome.TEMPFAIL, "refusing to run as root; set user= in master.cf"
    deadline = Deadline(settings.deadline_seconds)
    deadline.alarm()  # reading stdin is the only wait in this process that has no timeout
    try:
        saved = spool.save_stream(settings.spool_dir, sys.stdin.buffer)
    except spool.SpoolError as e:
        Deadline.disarm()
        log.error(f"{args['queue_id'] or '-'}: outcome=tempfail spool: {e}")
        return Outcome.TEMPFAIL, f"spool: {e}"
    except DeadlineExceeded as e:
        return Outcome.TEMPFAIL, f"reading the message: {e}"
    # from here every wait has a timeout; the last layer, should a bug of ours loop:
    deadline.watchdog(3 * GRACE + 2, b"4.3.0 deadline reached; will retry\n")
    job = {"sha256": saved.sha256, "size": saved.size, "started": started,
           "envelope": {k: v for k, v in args.items() if k != "config"}}
    outcome, detail = deliver(settings, job, deadline.end, log)
    return outcome, f"{outcome.value} {detail} sha256={saved.sha256[:12]}"


# -- the process doing the delivery, seen from outside ---------------------------------------------

class Attempt:
    """One process working on the job: its messages, its stage, and how to stop it."""

    def __init__(self, fd: int, pid: int, forked: bool) -> None:
        self.fd = fd
        self.pid = pid
        self.forked = forked  # our child (cold path), else a process of the worker
        self.pidfd = -1 if forked else _pidfd(pid)
        self.lines = protocol.Lines()
        self.pending: list[dict[str, object]] = []
        self.stage = "start"

    def proc(self) -> tuple[str, float] | None:
        """(state letter, CPU seconds) from /proc, or None if it is gone."""
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as f:
                data = f.read()
        except OSError:
            return None
        fields = data[data.rindex(b")") + 2:].split()
        return fields[0].decode(), (int(fields[11]) + int(fields[12])) / CLK_TCK

    def kill(self) -> None:
        try:
            if self.forked:
                os.kill(self.pid, signal.SIGKILL)
            elif self.pidfd >= 0:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except OSError:
            pass

    def died_of(self) -> int | None:
        """The signal that ended our child (waits a moment for it to be reapable)."""
        if not self.forked:
            return None
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return None
            if pid:
                return os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
            time.sleep(0.01)
        return None

    def close(self) -> None:
        for fd in (self.fd, self.pidfd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.pidfd = -1


def _pidfd(pid: int) -> int:
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return -1


def watch(a: Attempt, parse_end: float, store_end: float, budget: float
          ) -> tuple[str, str, str]:
    """Wait for the verdict of `a`, enforcing the limits from outside. Returns one of
    ("verdict", outcome, detail), ("overrun", why, stage) (killed while parsing),
    ("late", why, stage) (killed after its time), ("failed", why, stage)."""
    poller = select.poll()
    poller.register(a.fd, select.POLLIN)
    cpu_at_parse = parse_started = 0.0
    while True:
        while a.pending:
            m = a.pending.pop(0)
            if "outcome" in m:
                return "verdict", str(m["outcome"]), str(m["detail"])
            if m.get("stage") in protocol.STAGES:
                a.stage = str(m["stage"])
                if a.stage == "parse":
                    cpu_at_parse = (a.proc() or ("", 0.0))[1]
                    parse_started = time.monotonic()
        now = time.monotonic()
        state = a.proc()
        if a.stage == "parse":
            if state and state[1] - cpu_at_parse > budget:
                a.kill()
                return "overrun", f"parse CPU budget of {budget:g}s", a.stage
            if now >= parse_end:
                a.kill()
                ran = state[1] - cpu_at_parse if state else 0.0
                # starved by a loaded machine (or stalled) is not the message's doing: tempfail
                if ran >= protocol.WORKING * (now - parse_started):
                    return "overrun", "deadline reached while parsing", a.stage
                return "late", "deadline reached while parsing (starved)", a.stage
        end = store_end if a.stage == "store" else parse_end
        if now >= end:
            a.kill()
            return "late", f"deadline reached in stage {a.stage}", a.stage
        if state and state[0] in "Tt" and not a.forked:
            return "failed", "worker process is stopped", a.stage
        if not poller.poll(max(0.0, min(POLL if a.stage == "parse" else 0.5, end - now)) * 1000):
            continue
        try:
            data = os.read(a.fd, 4096)
        except OSError as e:
            return "failed", f"read: {e.strerror}", a.stage
        if not data:
            sig = a.died_of()
            why = f"killed by signal {sig}" if sig else "ended without a verdict"
            if sig in (signal.SIGXCPU, signal.SIGKILL) and a.stage == "parse":
                return "overrun", why, a.stage
            return "failed", why, a.stage
        try:
            a.pending.extend(a.lines.feed(data))
        except protocol.Garbage as e:
            a.kill()
            return "failed", f"garbage: {e}", a.stage


def fork(settings: config.Settings, job: dict, ident: str = "bombom-deliver") -> Attempt:
    """The cold path: a child of ours runs the delivery (child.py), logging as `ident`."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never comes back
        os.close(r)
        child.run_forked(settings, job, w, ident)
    os.close(w)
    return Attempt(r, pid, forked=True)


def ask_worker(path: str, job: dict, log: Log) -> Attempt | None:
    """Hand the job to `bombom worker`; None when it is absent or busy (then: the cold path)."""
    import socket

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(CONNECT_WAIT)
    try:
        s.connect(path)
        s.sendall(protocol.encode(job))
        fd = s.detach()
    except OSError as e:
        s.close()
        if not isinstance(e, FileNotFoundError | ConnectionRefusedError):
            log.error(f"worker {path}: {e}")
        return None
    lines = protocol.Lines()
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    messages: list[dict[str, object]] = []
    end = time.monotonic() + ACCEPT_WAIT
    try:
        while not messages:
            if not poller.poll(max(0.0, end - time.monotonic()) * 1000):
                log.error(f"worker {path}: busy or stopped; delivering without it")
                break
            data = os.read(fd, 4096)
            if not data:
                log.error(f"worker {path}: closed the connection; delivering without it")
                break
            messages = lines.feed(data)
        else:
            pid = messages[0].get("accepted")
            if isinstance(pid, int) and pid > 1:
                a = Attempt(fd, pid, forked=False)
                a.lines, a.pending = lines, messages[1:]
                return a
            log.error(f"worker {path}: unexpected answer; delivering without it")
    except (OSError, protocol.Garbage) as e:
        log.error(f"worker {path}: {e}; delivering without it")
    os.close(fd)
    return None


def deliver(settings: config.Settings, job: dict, deadline_end: float, log: Log,
            ident: str = "bombom-deliver") -> tuple[Outcome, str]:
    """The saved message, delivered by the worker or a child, within `deadline_end`."""
    budget = child.parse_cpu_budget(settings.deadline_seconds)
    store_end = deadline_end + GRACE
    qid = (job["envelope"].get("queue_id") or "-")
    late = Outcome.TEMPFAIL, f"deadline of {settings.deadline_seconds:g}s reached"
    job["deadline"] = _epoch(deadline_end - CHILD_MARGIN)
    if settings.worker_socket:
        a = ask_worker(settings.worker_socket, job, log)
        if a is not None:
            kind, what, stage = watch(a, deadline_end, store_end, budget)
            a.close()
            if kind == "verdict":  # what: the outcome, stage: its detail
                return Outcome(what), stage
            if kind == "overrun":
                return _quarantine(settings, job, what, log, ident)
            log.error(f"{qid}: worker: {what} (stage {stage})")
            if kind == "late" or deadline_end - time.monotonic() < MIN_COLD:
                return late  # else the cold path, with the time left
    a = fork(settings, job, ident)
    kind, what, stage = watch(a, deadline_end, store_end, budget)
    a.close()
    if kind == "verdict":
        return Outcome(what), stage
    if kind == "overrun":
        return _quarantine(settings, job, what, log, ident)
    log.error(f"{qid}: delivery process: {what} (stage {stage})")
    if kind == "late":
        return late
    return Outcome.TEMPFAIL, f"delivery process failed ({what})"


def _epoch(monotonic: float) -> float:
    """A point in time as the delivering process understands it (protocol.py)."""
    return time.time() + monotonic - time.monotonic()


def _quarantine(settings: config.Settings, job: dict, why: str, log: Log, ident: str
                ) -> tuple[Outcome, str]:
    """Parsing overran: record the message as quarantined, in a fresh child."""
    log.error(f"{job['envelope'].get('queue_id') or '-'}: parsing killed ({why}); quarantining "
              f"sha256={job['sha256']}")
    end = time.monotonic() + GRACE
    a = fork(settings, {**job, "quarantine": protocol.PARSE_BUDGET,
                        "deadline": _epoch(end - CHILD_MARGIN)}, ident)
    kind, what, stage = watch(a, end, end, 0.0)
    a.close()
    if kind == "verdict":
        return Outcome(what), stage
    log.error(f"quarantine not recorded: {what}")
    return Outcome.TEMPFAIL, "parse budget exceeded; quarantine not recorded"
