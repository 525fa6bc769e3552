"""The process that parses and stores one message for bombom-deliver: a child it forks (the cold
path) or a pre-forked child of `bombom worker`. It reports each stage and the verdict over `fd`
(protocol.py) and writes nothing to stdout; its stderr is the log file, or nothing.

It is confined so that bombom-deliver stays in charge: it dies with its parent (PR_SET_PDEATHSIG),
its address space is capped (RLIMIT_AS: a memory bomb raises MemoryError while parsing, which
quarantines the message), and the kernel stops it a little after the parse CPU budget
(RLIMIT_CPU) should the judge's watch (judge.py) not have killed it first.
"""

from __future__ import annotations

import math
import os
import resource
import signal

from . import config, protocol, spool
from .judge import GRACE, Budget

TYPE_CHECKING = False  # not `typing`'s: bombom-deliver imports this module, and typing costs 3 ms
if TYPE_CHECKING:
    from typing import NoReturn

    from .deliver import Connect
    from .log import Log

#: address space of a delivering process: the interpreter and its libraries take ~250 MB of it;
#: a 20 MB message (Postfix's size limit) needs a small multiple of its size on top
MEMORY_LIMIT = 1536 << 20
PR_SET_PDEATHSIG = 1


def confine(log_target: str) -> None:
    """Die with the parent, cap memory, keep stdin/stdout away from Postfix."""
    parent = os.getppid()
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl: nobody waits for us
        os._exit(0)
    for sig in (signal.SIGALRM, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.setitimer(signal.ITIMER_REAL, 0)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    if log_target == "syslog":
        os.dup2(null, 2)
    elif log_target != "stderr":
        try:
            fd = os.open(log_target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            os.dup2(fd, 2)
            os.close(fd)
        except OSError:
            os.dup2(null, 2)
    os.close(null)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = MEMORY_LIMIT if hard == resource.RLIM_INFINITY else min(MEMORY_LIMIT, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGXCPU would otherwise dump core


def cpu_backstop(budget: float) -> None:
    """Let the kernel stop this process (SIGXCPU) a little after `budget` more CPU seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = usage.ru_utime + usage.ru_stime
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = math.ceil(used + budget + 2)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def preload() -> None:
    """Import what a delivery needs, so that the parse stage measures parsing only."""
    import psycopg  # noqa: F401

    from . import deliver, parse, store  # noqa: F401


def deliver(settings: config.Settings, job: protocol.Job, fd: int, connect: Connect | None = None,
            ident: str = "bombom-deliver", log: Log | None = None) -> None:
    """Run one job and send its stages and each recipient's verdict to `fd` (protocol.py);
    `log` (default: a new one as `ident`) is a warm process's own."""
    from datetime import UTC, datetime

    from .deadline import Deadline, DeadlineExceeded
    from .deliver import Envelope, deliver_all
    from .log import Log

    saved = spool.Saved(job.sha256, spool.raw_path(settings.spool_dir, job.sha256), job.size)
    envelopes = [Envelope(r.address, job.sender, r.original, job.queue_id, job.client_address)
                 for r in job.recipients]
    log = log or Log.for_settings(settings, ident)
    # The judge decides at the job's deadline while parsing or authenticating, and gives the
    # store stage GRACE more; this process's own alarm falls between, so that it ends a database
    # wait cleanly itself but never answers for a CPU-bound stage (a stalled parser must count
    # as a timeout, judge.py, not come back as an ordinary "try later" forever).
    deadline = Deadline(settings.deadline_seconds)  # as configured, for the reasons given
    deadline.end = protocol.monotonic(job.deadline) + GRACE / 2
    budget = Budget.of(settings.deadline_seconds)
    cpu_backstop(budget.parse_cpu + budget.auth_cpu)
    answered = 0

    def each(i: int, result: object) -> None:
        nonlocal answered
        verdict = {"outcome": result.outcome.value, "detail": result.detail,  # type: ignore[attr-defined]
                   "rcpt": i}
        if result.auth:  # type: ignore[attr-defined]
            verdict["auth"] = result.auth  # type: ignore[attr-defined]
        protocol.send(fd, verdict)
        answered = i + 1

    deadline.alarm()
    try:
        config.check_dsns(settings)
        deliver_all(settings, saved, envelopes, deadline, log,
                    started=datetime.fromtimestamp(job.started, UTC),
                    stage=lambda name: protocol.send(fd, {"stage": name}),
                    quarantine=job.quarantine, connect=connect, each=each)
    except DeadlineExceeded as e:  # after deliver_all had decided: still a tempfail
        verdict = {"outcome": "tempfail", "detail": str(e)}
    except config.ConfigError as e:
        log.error(f"configuration: {e}")
        verdict = {"outcome": "tempfail", "detail": f"configuration: {e}"}
    else:
        verdict = {}
    finally:
        Deadline.disarm()
    for i in range(answered, len(envelopes)) if verdict else ():
        protocol.send(fd, {**verdict, "rcpt": i})


def run_forked(settings: config.Settings, job: protocol.Job, fd: int, ident: str = "bombom-deliver"
               ) -> NoReturn:
    """The cold path, in a child bombom-deliver (or `bombom replay`) has just forked: never
    returns."""
    try:
        confine(settings.log)
        preload()
        deliver(settings, job, fd, ident=ident)
    except BaseException:  # noqa: BLE001 - the parent sees no verdict and decides
        import traceback

        traceback.print_exc()  # to the log file, or nowhere
    finally:
        os._exit(0)
