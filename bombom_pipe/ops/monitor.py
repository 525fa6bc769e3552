"""`stats` and `check` (a monitoring probe in the Nagios plugin convention).

Neither changes the spool nor follows a link in it: the spool belongs to the pipe user (its
owner), and `check` asks whether *that* user can save a message there, as that user.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..spool import files
from . import connect
from .quarantine import count_unresolved

if TYPE_CHECKING:
    import psycopg

    from ..config import Settings

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
RANK = {OK: 0, UNKNOWN: 1, WARNING: 2, CRITICAL: 3}  # a real finding outranks "cannot tell"


@dataclass(frozen=True, slots=True)
class Stats:
    #: (outcome, or None for all; count; p50 and p95 of the delivery time in seconds)
    outcomes: list[tuple[str | None, int, float | None, float | None]]
    quarantined: int
    spool: dict[str, tuple[int, int]]  # kind -> (files, bytes)
    free: int | None  # bytes free where the spool is; None: no spool yet
    #: raw_messages (every host's copy): rows, their bytes, the table's size on disk
    database_raw: tuple[int, int, int] = (0, 0, 0)
    edges: tuple[tuple[str | None, int], ...] = ()  # deliveries per edge host's address
    #: today's (UTC) busiest sender domains: (domain, messages, quarantined past the limit)
    volume: tuple[tuple[str, int, int], ...] = ()


def stats(conn: psycopg.Connection, spool: Path, hours: float) -> Stats:
    """Deliveries per outcome in the last `hours`, the quarantine, the spool's size."""
    rows = conn.execute(
        """SELECT outcome, count(*),
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY
                      extract(epoch FROM finished_at - started_at)),
                  percentile_cont(0.95) WITHIN GROUP (ORDER BY
                      extract(epoch FROM finished_at - started_at))
           FROM deliveries WHERE started_at >= now() - make_interval(secs => %s)
           GROUP BY ROLLUP (outcome) ORDER BY outcome NULLS LAST""",
        (hours * 3600,)).fetchall()
    usage = {}
    for kind in ("raw", "att"):
        count = size = 0
        for f in files(spool, kind):
            count, size = count + 1, size + f.stat.st_size
        usage[kind] = count, size
    free = shutil.disk_usage(spool).free if spool.exists() else None
    volume = conn.execute(
        """SELECT domain, messages, quarantined FROM domain_volume
           WHERE day = (now() AT TIME ZONE 'UTC')::date
           ORDER BY quarantined DESC, messages DESC, domain LIMIT 10""").fetchall()
    raw = conn.execute("SELECT count(*), coalesce(sum(octet_length(bytes)), 0),"
                       " pg_total_relation_size('raw_messages') FROM raw_messages").fetchone()
    edges = conn.execute(
        """SELECT host(edge_address), count(*) FROM deliveries
           WHERE started_at >= now() - make_interval(secs => %s)
           GROUP BY 1 ORDER BY 1 NULLS FIRST""", (hours * 3600,)).fetchall()
    return Stats(rows, count_unresolved(conn), usage, free, tuple(raw), tuple(edges),
                 tuple(volume))


def stats_json(s: Stats, hours: float, v: Survey) -> dict[str, object]:
    """`stats --json`: the same numbers, and the delivery path they came through."""
    return {
        "hours": hours,
        "path": v.path,
        "worker": v.worker,
        "deliveries": {outcome or "all": {"count": n, "p50_s": p50, "p95_s": p95}
                       for outcome, n, p50, p95 in s.outcomes},
        "quarantine_unresolved": s.quarantined,
        "maildir": {d: {"files": n, "oldest_s": round(age, 1)}
                    for d, (n, age) in v.backlog.items()},
        "spool": {kind: {"files": n, "bytes": size} for kind, (n, size) in s.spool.items()},
        "spool_free_bytes": s.free,
        "raw_messages": dict(zip(("rows", "bytes", "disk_bytes"), s.database_raw, strict=True)),
        "deliveries_by_edge": {edge or "unix-socket": n for edge, n in s.edges},
        "volume_today": {domain: {"messages": n, "quarantined": q} for domain, n, q in s.volume},
    }


@dataclass(frozen=True, slots=True)
class Limits:
    """`check`'s thresholds (the command's options)."""

    free_warn: int = 1000  # spool MB free
    free_crit: int = 100
    quarantine_warn: int = 10  # quarantined in the last hour
    deferred_warn: int = 50
    deferred_crit: int = 500
    deferred_age_warn: int = 3600  # seconds
    deferred_age_crit: int = 6 * 3600
    backlog_age_warn: int = 300  # seconds: the oldest file in the Maildir (new/ or claimed/)
    backlog_age_crit: int = 1800


@dataclass(slots=True)
class Status:
    """A probe's result: the worst level met, why, and the performance data."""

    state: int = OK
    notes: list[str] = field(default_factory=list)
    perf: list[str] = field(default_factory=list)

    def worse(self, level: int, note: str) -> None:
        self.state = max(self.state, level, key=RANK.__getitem__)
        self.notes.append(note)


def check(settings: Settings, limits: Limits) -> Status:
    """Can mail be delivered now, and is anything piling up? Never raises for a finding."""
    status = Status()
    try:
        with connect(settings, timeout=5) as conn:
            recent = conn.execute(
                "SELECT count(*) FROM deliveries WHERE outcome = 'quarantined' "
                "AND finished_at >= now() - interval '1 hour'").fetchone()[0]
        status.perf.append(f"quarantined_1h={recent}")
        if recent > limits.quarantine_warn:
            status.worse(WARNING, f"{recent} quarantined in the last hour")
    except Exception as e:  # noqa: BLE001 - any failure here is the finding
        status.worse(CRITICAL, f"database unreachable ({type(e).__name__})")
    spool = settings.spool_dir
    problem = _spool_problem(spool)
    if problem:
        status.worse(*problem)
    try:
        free_mb = shutil.disk_usage(spool).free // 1_000_000
        status.perf.append(f"spool_free_mb={free_mb}")
        if free_mb < limits.free_crit:
            status.worse(CRITICAL, f"spool {free_mb} MB free")
        elif free_mb < limits.free_warn:
            status.worse(WARNING, f"spool {free_mb} MB free")
    except OSError:
        pass  # the probe above said why
    _judge_survey(status, survey(settings), limits)
    deferred = _deferred(settings.domains)
    if deferred is None:
        status.worse(UNKNOWN, "postqueue unavailable")
    else:
        n, age = deferred
        status.perf += [f"deferred={n}", f"deferred_oldest_s={int(age)}"]
        if n > limits.deferred_crit or age > limits.deferred_age_crit:
            status.worse(CRITICAL, f"{n} deferred, oldest {int(age)} s")
        elif n > limits.deferred_warn or age > limits.deferred_age_warn:
            status.worse(WARNING, f"{n} deferred, oldest {int(age)} s")
    return status


PATHS = {"push": "push: pipe(8) -> bombom-deliver (cold)",
         "worker": "worker: pipe(8) -> bombom-deliver -> bombom worker",
         "pull": "pull: virtual(8) -> Maildir -> bombom worker",
         "lmtp": "lmtp: lmtp(8) -> bombom worker",
         "none": "none: Postfix routes none of the domains to bombom"}


@dataclass(frozen=True, slots=True)
class Survey:
    """How mail reaches us now, and whether the parts that can fail silently are alive."""

    path: str  # push | worker | pull | lmtp | none (Postfix routes none of the domains to us)
    transport: str | None  # Postfix's virtual_transport; None: no Postfix
    worker: bool | None  # alive; None: no worker in this path
    maildir: Path | None  # pull mode's
    backlog: dict[str, tuple[int, float]]  # new/, claimed/ -> (files, oldest age in seconds)
    missing: tuple[str, ...]  # our domains Postfix does not accept mail for
    extra: tuple[str, ...]  # domains Postfix routes to us that are not ours


def survey(settings: Settings) -> Survey:
    """Ask Postfix how it hands mail to us (postconf), and probe the worker of that path."""
    from ..metrics import scan

    conf = _postconf("virtual_transport", "virtual_mailbox_domains", "relay_domains",
                     "mydestination", "virtual_mailbox_base")
    if conf is None:
        return Survey("none", None, None, None, {}, (), ())
    transport = conf["virtual_transport"]
    vmd = set(_names(conf["virtual_mailbox_domains"]))
    ours = set(settings.domains)
    accepted = vmd | set(_names(conf["relay_domains"])) | set(_names(conf["mydestination"]))
    missing = tuple(sorted(ours - accepted))
    maildir, backlog, worker = None, {}, None
    socket_path = settings.worker_socket or _delivery_setting("worker_socket")
    if transport == "bombom" and vmd & ours:
        path = "worker" if socket_path else "push"
        if socket_path:
            worker = _alive(settings, socket_path)
    elif transport.startswith("bombomlmtp:") and vmd & ours:
        path = "lmtp"
        worker = _alive(settings, transport.split(":", 2)[2])
    elif transport == "virtual" and vmd & ours and conf["virtual_mailbox_base"]:
        path, maildir = "pull", Path(conf["virtual_mailbox_base"]) / "Maildir"
        worker = _maildir_locked(maildir)
        backlog = {d: scan(maildir / d) for d in ("new", "claimed")}
    else:
        path = "none"
    extra = tuple(sorted(vmd - ours)) if path != "none" else ()
    return Survey(path, transport, worker, maildir, backlog, missing, extra)


def _judge_survey(status: Status, s: Survey, limits: Limits) -> None:
    status.perf.append(f"path={s.path}")
    if s.transport is None:
        return  # no Postfix here: the queue's check says so
    if s.missing:
        status.worse(WARNING, f"Postfix does not accept mail for {', '.join(s.missing)}")
    if s.extra:
        status.worse(WARNING, f"Postfix routes {', '.join(s.extra)} to us: not in domains")
    if s.worker is not None:
        status.perf.append(f"worker={int(s.worker)}")
    if s.worker is False:
        if s.path == "worker":
            status.worse(WARNING, "worker not running: bombom-deliver delivers on the cold path")
        elif s.path == "lmtp":
            status.worse(CRITICAL, "worker not running: Postfix defers every message (lmtp)")
        elif s.path == "pull":
            level = CRITICAL if any(n for n, _ in s.backlog.values()) else WARNING
            status.worse(level, f"worker not draining {s.maildir}")
    for d, (n, age) in s.backlog.items():
        status.perf += [f"maildir_{d}={n}", f"maildir_{d}_oldest_s={int(age)}"]
    if s.backlog:
        n = sum(n for n, _ in s.backlog.values())
        age = max(age for _, age in s.backlog.values())
        if age > limits.backlog_age_crit:
            status.worse(CRITICAL, f"{n} in the Maildir, oldest {int(age)} s")
        elif age > limits.backlog_age_warn:
            status.worse(WARNING, f"{n} in the Maildir, oldest {int(age)} s")


def _delivery_setting(name: str) -> str | None:
    """A key of bombom-deliver's own config file (root's admin.conf does not repeat it)."""
    from ..config import DEFAULT_CONFIG, ConfigError, read_file

    try:
        value = read_file(DEFAULT_CONFIG, required=False).get(name)
    except ConfigError:
        return None
    return value if isinstance(value, str) else None


def _names(value: str) -> list[str]:
    return [n.lower() for n in value.replace(",", " ").split() if "/" not in n and ":" not in n]


def _postconf(*names: str) -> dict[str, str] | None:
    """main.cf's values, expanded (MAIL_CONFIG names another instance); None: no Postfix."""
    if not shutil.which("postconf"):
        return None
    r = subprocess.run(["postconf", "-x", *names], capture_output=True, text=True, timeout=20)
    if r.returncode != 0:
        return None
    found = dict.fromkeys(names, "")
    for line in r.stdout.splitlines():
        key, _, value = line.partition("=")
        found[key.strip()] = value.strip()
    return found


def _alive(settings: Settings, path: str) -> bool:
    """Does the worker accept on its socket? As root, asked as the spool's owner (the worker
    takes pipe connections from its own uid only, and logs any other)."""
    import socket

    def connect() -> str | None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            try:
                s.connect(path)
            except OSError as e:
                return e.strerror or type(e).__name__
        return None

    if os.geteuid() == 0:
        try:
            st = os.stat(settings.spool_dir)
        except OSError:
            return connect() is None
        return _as_user(st.st_uid, st.st_gid, connect) is None
    return connect() is None


def _maildir_locked(maildir: Path) -> bool:
    """Does a worker hold the Maildir's lock (maildir.py), so drain it?"""
    import fcntl

    try:
        fd = os.open(maildir / ".bombom-worker.lock", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _spool_problem(spool: Path) -> tuple[int, str] | None:
    """(level, why) when the pipe user, the spool's owner, could not save a message; None when
    it could. As root, the probe runs in a child process that has become the owner."""
    import pwd

    try:
        st = os.stat(spool)
    except OSError as e:
        return CRITICAL, f"spool {spool}: {e.strerror}"
    if st.st_uid == 0:
        return CRITICAL, "spool owned by root (bombom-deliver never runs as root)"
    try:
        pw = pwd.getpwuid(st.st_uid)
        user, gid = pw.pw_name, pw.pw_gid
    except KeyError:
        user, gid = str(st.st_uid), st.st_gid
    if os.geteuid() == 0:
        why = _as_user(st.st_uid, gid, lambda: _probe(spool))
    elif os.geteuid() == st.st_uid:
        why = _probe(spool)
    else:
        return UNKNOWN, f"spool probe needs root or its owner {user}"
    return (CRITICAL, f"spool not writable by {user}: {why}") if why else None


def _as_user(uid: int, gid: int, probe: Callable[[], str | None]) -> str | None:
    """`probe()` in a forked child with the user's ids (and no other group, as Postfix's
    pipe(8) runs it), so that nothing it does has root's rights; its answer comes back by pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            os.close(r)
            os.setgroups([gid])
            os.setgid(gid)
            os.setuid(uid)
            answer = probe() or ""
        except BaseException as e:  # noqa: BLE001 - whatever happens, answer and exit
            answer = f"probe failed ({type(e).__name__})"
        finally:
            try:
                os.write(w, answer.encode("utf-8", "replace")[:4000])
            finally:
                os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        answer = f.read().decode("utf-8", "replace")
    os.waitpid(pid, 0)
    return answer or None


def _probe(spool: Path) -> str | None:
    """As the pipe user: can it make and fill a file where bombom-deliver does (tmp/, or the
    spool itself before the first delivery), and write into raw/, att/ and their <ab>/
    directories? Makes no directory; its one probe file is gone when it returns."""
    import re

    try:
        top = os.open(spool, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        return f"{spool}: {e.strerror}"
    problems: list[str] = []
    opened = [top]
    try:
        where = top
        for kind in ("tmp", "raw", "att"):
            try:
                fd = os.open(kind, _DIR, dir_fd=top)
            except FileNotFoundError:
                continue  # made on the first delivery, which needs the spool writable (below)
            except OSError as e:
                problems.append(f"{kind}: {e.strerror}")
                continue
            opened.append(fd)
            if kind == "tmp":
                where = fd
            subs = [n for n in os.listdir(fd) if re.fullmatch(r"[0-9a-f]{2}", n)]
            for rel, parent, name in [(kind, top, kind),
                                      *((f"{kind}/{n}", fd, n) for n in sorted(subs))]:
                mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
                if not stat.S_ISDIR(mode):
                    problems.append(f"{rel}: not a directory")
                elif not os.access(name, os.W_OK | os.X_OK, dir_fd=parent):
                    problems.append(f"{rel}: Permission denied")
        if not os.access(".", os.W_OK | os.X_OK, dir_fd=top):
            problems.append(f"{spool}: Permission denied")
        if problems:
            return _summary(problems)
        name = f".check-{os.getpid()}.{secrets.token_hex(8)}"
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=where)
            try:
                os.write(fd, b"x")
            finally:
                os.close(fd)
                os.unlink(name, dir_fd=where)
        except OSError as e:
            problems.append(f"{'tmp' if where != top else spool}: {e.strerror}")
    except OSError as e:
        problems.append(e.strerror or str(e))
    finally:
        for fd in opened:
            os.close(fd)
    return _summary(problems)


def _summary(problems: list[str]) -> str | None:
    if not problems:
        return None
    return problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")


def _deferred(domains: tuple[str, ...]) -> tuple[int, float] | None:
    """(count, age of the oldest in seconds) of deferred mail for our domains; None: no Postfix."""
    queues = postfix_queue(domains)
    return None if queues is None else queues["deferred"]


QUEUES = ("incoming", "active", "deferred", "hold")


def postfix_queue(domains: tuple[str, ...]) -> dict[str, tuple[int, float]] | None:
    """Per Postfix queue, (messages with a recipient in our domains, age of the oldest in
    seconds), from `postqueue -j`; None: no Postfix."""
    if not shutil.which("postqueue"):
        return None
    r = subprocess.run(["postqueue", "-j"], capture_output=True, text=True, timeout=20)
    if r.returncode != 0:
        return None
    found = dict.fromkeys(QUEUES, (0, 0.0))
    now = time.time()
    for line in r.stdout.splitlines():
        entry = json.loads(line)
        name = entry.get("queue_name")
        rcpts = [x.get("address", "").lower() for x in entry.get("recipients", [])]
        if name in found and any(a.rpartition("@")[2] in domains for a in rcpts):
            n, oldest = found[name]
            found[name] = n + 1, max(oldest, now - float(entry.get("arrival_time", now)))
    return found
