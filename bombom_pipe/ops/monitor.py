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
    return Stats(rows, count_unresolved(conn), usage, free, tuple(volume))


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
    if not shutil.which("postqueue"):
        return None
    r = subprocess.run(["postqueue", "-j"], capture_output=True, text=True, timeout=20)
    if r.returncode != 0:
        return None
    count, oldest, now = 0, 0.0, time.time()
    for line in r.stdout.splitlines():
        entry = json.loads(line)
        if entry.get("queue_name") != "deferred":
            continue
        rcpts = [x.get("address", "").lower() for x in entry.get("recipients", [])]
        if any(a.rpartition("@")[2] in domains for a in rcpts):
            count += 1
            oldest = max(oldest, now - float(entry.get("arrival_time", now)))
    return count, oldest
