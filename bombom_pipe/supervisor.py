"""bombom-deliver, the pipe door: save the message, have another process deliver it, and hold
the deadline.

Standard library only, and it never runs parser or database code itself. In order:

1. arguments and configuration: unusable -> tempfail (75); a config error is ours, never the
   sender's, and a bounce could get the address unsubscribed;
2. save the raw bytes under their SHA-256 before anything else (spool.py): failure -> tempfail;
3. hand the saved message to `bombom worker` if one is configured, is who it should be (our own
   uid, in a directory only that uid may write) and takes the job at once; the worker's own
   judge watches its process and sends the verdict. Else, or when the worker dies, stops or
   talks garbage, fork a child (the cold path; same delivery code, child.py) and watch it here
   with the same judge (judge.py): a CPU-bound stage that overruns quarantines the message, the
   store stage alone may answer "try later", and a message whose process dies `MAX_DEATHS`
   times is quarantined instead of retried forever. Deliveries are idempotent, so handing a
   message from a failing worker to the cold path never stores it twice.
"""

from __future__ import annotations

import os
import select
import sys
import time

from . import config, judge, protocol, spool
from .attempt import Attempt, proc_stat, settle
from .deadline import Deadline, DeadlineExceeded
from .judge import GRACE
from .log import Log
from .outcomes import Outcome

POLL = 0.1  # how often a delivering process's CPU time (and the worker's state) is looked at
CONNECT_WAIT = 0.5  # the worker's socket must take the connection within this
ACCEPT_WAIT = 1.0  # ... and one of its processes the job within this (busy: cold path)
CHILD_MARGIN = 0.5  # the delivering process's own deadline comes this much before ours
MIN_COLD = 1.0  # seconds left below which a failed worker is not followed by a cold attempt
WORKER_LATE = 2 * GRACE + 1  # past the deadline, the worker's verdict is no longer awaited


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
    job = protocol.Job.make(
        saved.sha256, saved.size, "pipe", started, protocol.epoch(deadline.end - CHILD_MARGIN),
        [(args["recipient"], args["original_recipient"])], sender=args["sender"],
        queue_id=args["queue_id"], client_address=args["client_address"])
    outcome, detail = deliver(settings, job, log)
    return outcome, f"{outcome.value} {detail} sha256={saved.sha256[:12]}"


# -- the cold path: a child of ours, judged here -------------------------------------------------

def fork(settings: config.Settings, job: protocol.Job, ident: str = "bombom-deliver"
         ) -> tuple[int, int]:
    """Fork a child that runs the delivery (child.py), logging as `ident`: (its pipe's fd, its
    pid). child.py is imported here, on the cold path only."""
    from . import child

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never comes back
        os.close(r)
        child.run_forked(settings, job, w, ident)
    os.close(w)
    return r, pid


def watch(a: Attempt) -> judge.Verdict | None:
    """Wait for every verdict of `a`, feeding the judge; None when all came, else the judge's
    verdict for the rest (the process is then killed or gone)."""
    poller = select.poll()
    poller.register(a.fd, select.POLLIN)
    while not a.done:
        verdict = a.check(time.monotonic())
        if verdict is not None:
            a.kill()
            a.died_of()
            return verdict
        if not poller.poll(POLL * 1000):
            continue
        try:
            data = os.read(a.fd, 4096)
        except OSError as e:
            a.kill()
            return judge.Verdict("tempfail", f"read: {e.strerror}", counts=True)
        if not data:
            return a.watch.died(a.died_of())
        try:
            a.feed(data)
        except protocol.Garbage as e:
            a.kill()
            return judge.Verdict("tempfail", f"garbage: {e}", counts=True)
    return None


def _in_child(settings: config.Settings, job: protocol.Job, budget: judge.Budget, ident: str
              ) -> tuple[Outcome, str] | judge.Verdict:
    """`job` (one recipient) run in a child of ours and judged here: its outcome, or the
    judge's verdict when it gave none."""
    fd, pid = fork(settings, job, ident)
    a = Attempt(fd, pid, job, budget, protocol.monotonic(job.deadline), forked=True)
    verdict = watch(a)
    a.close()
    if verdict is not None:
        return verdict
    outcome, detail = a.results[0]  # type: ignore[misc]
    return Outcome(outcome), detail


def cold(settings: config.Settings, job: protocol.Job, log: Log, ident: str = "bombom-deliver"
         ) -> tuple[Outcome, str]:
    """Deliver `job` (one recipient) in a child of ours, judged here."""
    verdict = _in_child(settings, job, judge.Budget.of(settings.deadline_seconds), ident)
    if not isinstance(verdict, judge.Verdict):
        return verdict
    verdict = settle(settings.spool_dir, job.sha256, verdict)
    log.error(f"{job.queue_id or '-'}: delivery process: {verdict.reason}")
    if verdict.outcome == "quarantined":
        return _quarantine(settings, job, verdict.reason, log, ident)
    return Outcome.TEMPFAIL, verdict.reason


def _quarantine(settings: config.Settings, job: protocol.Job, why: str, log: Log, ident: str
                ) -> tuple[Outcome, str]:
    """Record the message as quarantined with `why`, in a fresh child, within GRACE."""
    log.error(f"{job.queue_id or '-'}: quarantining sha256={job.sha256}: {why}")
    end = protocol.epoch(time.monotonic() + GRACE - CHILD_MARGIN)
    verdict = _in_child(settings, job.with_quarantine(why, end), judge.Budget.of(GRACE), ident)
    if not isinstance(verdict, judge.Verdict):
        return verdict
    log.error(f"quarantine not recorded: {verdict.reason}")
    return Outcome.TEMPFAIL, f"{why}; quarantine not recorded"


# -- the warm path: `bombom worker` judges, we wait for its verdict ------------------------------

class WorkerGone(Exception):
    """The worker is absent, not who it should be, busy, stopped or failed: go cold."""


def trusted_peer(s: object, path: str) -> int:
    """The worker's pid, if the peer of `s` runs as our uid and the socket's directory belongs
    to that uid and is writable by nobody else (else anyone who could bind `path` could take,
    and lose, our messages)."""
    pid, uid = protocol.peer(s)
    if uid != os.getuid():
        raise WorkerGone(f"its peer runs as uid {uid}, not ours")
    st = os.stat(os.path.dirname(os.path.abspath(path)))
    if st.st_uid != uid or st.st_mode & 0o022:
        raise WorkerGone(f"{os.path.dirname(path)} must belong to uid {uid} and be writable by "
                         f"it alone")
    return pid


def warm(settings: config.Settings, job: protocol.Job, log: Log) -> tuple[Outcome, str]:
    """Hand `job` to `bombom worker` and wait for its verdict. Raises WorkerGone (before any
    verdict) when the cold path should take over."""
    import socket

    path = settings.worker_socket
    assert path
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(CONNECT_WAIT)
    try:
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise WorkerGone("") from None
        peer = trusted_peer(s, path)
        s.sendall(protocol.encode(job.to_wire()))
        lines = protocol.Lines()
        accepted = False
        accept_by = time.monotonic() + ACCEPT_WAIT
        late = protocol.monotonic(job.deadline) + WORKER_LATE
        while True:
            now = time.monotonic()
            if not accepted and now >= accept_by:
                raise WorkerGone("busy")
            if now >= late:
                return Outcome.TEMPFAIL, "the worker gave no verdict in time"
            st = proc_stat(peer)
            if st is None or st[0] in "TtZX":
                raise WorkerGone("stopped" if st and st[0] in "Tt" else "gone")
            s.settimeout(max(0.01, min(0.5, (late if accepted else accept_by) - now)))
            try:
                data = s.recv(4096)
            except TimeoutError:
                continue
            if not data:  # before taking the job: no process was free in time
                raise WorkerGone("closed the connection" if accepted else "busy")
            for m in lines.feed(data):
                if m.get("accepted"):
                    accepted = True
                elif "outcome" in m:
                    return Outcome(str(m["outcome"])), str(m["detail"])
    except (OSError, protocol.Garbage) as e:
        raise WorkerGone(str(e)) from None
    finally:
        s.close()


def deliver(settings: config.Settings, job: protocol.Job, log: Log,
            ident: str = "bombom-deliver") -> tuple[Outcome, str]:
    """The saved message (one recipient), delivered by the worker or a child of ours."""
    if settings.worker_socket:
        try:
            return warm(settings, job, log)
        except WorkerGone as e:
            if str(e):
                log.error(f"worker {settings.worker_socket}: {e}; delivering without it")
            if protocol.monotonic(job.deadline) - time.monotonic() < MIN_COLD:
                return Outcome.TEMPFAIL, f"deadline of {settings.deadline_seconds:g}s reached"
    return cold(settings, job, log, ident)
