"""Throwaway local services for the tests and the demo (never installed): a private PostgreSQL
cluster, and a way to run `bombom-deliver` as an unprivileged user the way Postfix does.

PostgreSQL refuses to run as root, and so does `bombom-deliver`; when we are root, both run as
an unprivileged account (`postgres` for the server, `nobody` for deliveries) on files we hand them.
The cluster listens on a unix socket only (listen_addresses = ''), never on the network.

Run as root, nothing here may be steered by another local user: every directory is made fresh
(`mkdtemp` by the callers, `mkdir` here, which refuses an existing path), files are created with
O_EXCL/O_NOFOLLOW, and the one thing reused between runs (the runner venv) lives in a root-owned
directory that is checked with lstat before use.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import pwd
import shutil
import stat
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

import bombom_pipe

PACKAGE = Path(bombom_pipe.__file__).resolve().parent
DELIVER_USER = "nobody"
RUNNER_CACHE = Path("/var/cache/bombom-dev")  # root only: the runner venvs, one per dependency set


def wait_for(what: str, check: Callable[[], object], timeout: float = 30,
             interval: float = 0.1) -> object:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    end = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def _pg_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        return Path(pg_ctl).parent
    raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")


def as_user(user: str | None, argv: list[str]) -> list[str]:
    """argv run as `user` when we are root (setpriv, from util-linux), else unchanged."""
    if user is None or os.geteuid() != 0:
        return argv
    pw = pwd.getpwnam(user)
    return ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups",
            "--reset-env", "--", *argv]


def give(path: Path, user: str) -> None:
    """Hand a file or directory tree to `user` when we are root (symlinks are never followed)."""
    if os.geteuid() != 0:
        return
    pw = pwd.getpwnam(user)
    os.lchown(path, pw.pw_uid, pw.pw_gid)
    for root, dirs, files in os.walk(path):  # does not descend into symlinked directories
        for name in dirs + files:
            os.lchown(os.path.join(root, name), pw.pw_uid, pw.pw_gid)


def write_file(path: Path, text: str, mode: int = 0o600, *, new: bool = False) -> None:
    """Write `text` to `path` without following a symlink there; `new`: refuse an existing one."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_EXCL if new else os.O_TRUNC)
    fd = os.open(path, flags, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def delivery_files(base: Path, database_url: str, deadline: int = 20, extra: str = "") -> Path:
    """A spool, a log and a 0600 config file naming them (plus `extra` TOML lines), handed to
    the delivery user; returns the config file. What `make install` lays out under /etc and
    /var, in one fresh directory."""
    spool, conf, log = base / "spool", base / "bombom.conf", base / "deliver.log"
    spool.mkdir()
    write_file(log, "", new=True)
    write_file(conf, f'database_url = "{database_url}"\nspool_dir = "{spool}"\n'
                     f'deadline_seconds = {deadline}\nlog = "{log}"\n{extra}', new=True)
    os.chmod(base, 0o755)
    for p in (spool, conf, log):  # not `base`: the demo keeps its PostgreSQL cluster there
        give(p, DELIVER_USER)
    return conf


class LocalPostgres:
    """initdb + pg_ctl in `base` (made here: it must not exist yet); superuser `postgres`, trust
    auth on a private unix socket."""

    user = "postgres"

    def __init__(self, base: Path, port: int = 5432) -> None:
        self.base = base.resolve()
        self.data = self.base / "data"
        self.sock = self.base / "sock"
        self.port = port
        self.bindir = _pg_bindir()
        self.run_as = "postgres" if os.geteuid() == 0 else None

    def url(self, dbname: str = "bombom", user: str = "postgres", password: str | None = None
            ) -> str:
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@/{dbname}?host={self.sock}&port={self.port}"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(as_user(self.run_as, list(argv)), check=check, text=True,
                              capture_output=True)

    def init(self) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        self.base.mkdir(mode=0o755)
        self.sock.mkdir(mode=0o755)
        if self.run_as:
            give(self.base, self.run_as)
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync")

    def start(self) -> None:
        self.init()
        if self.running():
            return
        opts = (f"-k {self.sock} -p {self.port} -c listen_addresses='' -c fsync=on "
                "-c max_connections=60")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", opts, "-w",
                  "-l", str(self.base / "postgres.log"), "start")

    def stop(self, mode: str = "fast") -> None:
        if self.running():
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w",
                      "stop")

    def running(self) -> bool:
        r = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "status", check=False)
        return r.returncode == 0

    def createdb(self, name: str = "bombom") -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (name,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')  # name is ours, not from input


def deliver_argv(workdir: Path, env: dict[str, str] | None = None) -> list[str]:
    """How to run `bombom-deliver` from this source tree as the delivery user.

    Not root: this interpreter, this source. Root: the source is copied to `workdir` (made here,
    so it must not exist yet) and run by a venv of Debian's /usr/bin/python3 kept in a root-owned
    cache, because the unprivileged user can enter neither /root nor, perhaps, this checkout.
    """
    extra = [f"{k}={v}" for k, v in (env or {}).items()]
    if os.geteuid() != 0:
        return ["env", *extra, sys.executable, "-m", "bombom_pipe.entry"]
    venv = _runner_venv()
    workdir.mkdir(mode=0o755)
    src = workdir / "src"
    shutil.copytree(PACKAGE, src / "bombom_pipe",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([str(venv / "bin" / "python"), "-m", "compileall", "-q", str(src)],
                   check=True)
    for p in [workdir, *src.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    return as_user(DELIVER_USER, ["env", f"PYTHONPATH={src}", "LANG=C", *extra,
                                  str(venv / "bin" / "python"), "-m", "bombom_pipe.entry"])


def _dependencies() -> list[str]:
    import tomllib

    pyproject = PACKAGE.parent / "pyproject.toml"
    return tomllib.loads(pyproject.read_text())["project"]["dependencies"]


def root_only_dir(path: Path) -> Path:
    """`path` and every parent: a real directory (not a symlink), owned by root, writable by
    nobody else. Missing ones are made; anything else is refused, never repaired."""
    for p in [*reversed(path.parents), path]:
        with contextlib.suppress(FileExistsError):
            p.mkdir(mode=0o755)
        st = os.lstat(p)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
            raise RuntimeError(f"{p} is not a root-owned directory closed to other users; "
                               "remove it and try again")
    return path


def _runner_venv() -> Path:
    deps = _dependencies()
    key = hashlib.sha256("\n".join(deps).encode()).hexdigest()[:12]
    venv = root_only_dir(RUNNER_CACHE) / f"runner-{key}"
    if not (venv / "ok").exists():
        base = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
        subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                        *deps], check=True)
        (venv / "ok").write_text(sysconfig.get_python_version())
    root_only_dir(venv)
    return venv
