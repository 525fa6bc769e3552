"""A private Postfix instance for the end-to-end tests: Debian's binaries, its own configuration,
queue and log under a temp dir, SMTP on 127.0.0.1 only, nothing able to leave the machine.

It is a second instance (`postfix -c DIR`), so the host's /etc/postfix and its queue are never
touched. The bombom parts are applied by postfix-config/install.sh, the script behind
`make install`, with test paths.
"""

from __future__ import annotations

import json
import os
import shutil
import smtplib
import socket
import subprocess
import time
from pathlib import Path

from .sandbox import wait_for

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "postfix-config" / "install.sh"
DOMAIN = "bombom.news"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def available() -> str | None:
    """Why the Postfix tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (Postfix runs its pipe command as another user)"
    if not shutil.which("postconf", path="/usr/sbin:/usr/bin"):
        return "Postfix is not installed (as root, `make deps` installs postfix and postfix-pgsql)"
    if not Path("/usr/lib/postfix/postfix-pgsql.so").exists():
        return "postfix-pgsql is not installed (as root, `make deps` installs it)"
    return None


class Postfix:
    """One private instance: config in `etc`, queue in `queue`, log in `maillog`."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.etc = base / "etc"
        self.queue = base / "queue"
        self.data = base / "data"
        self.maillog = base / "maillog"
        self.port = free_port()
        self.env: dict[str, str] = {}  # install.sh's settings (test paths)

    # -- commands, all aimed at this instance ----------------------------------------------------
    def run(self, cmd: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([cmd, "-c", str(self.etc), *args], check=check, text=True,
                              capture_output=True)

    def postconf(self, *settings: str) -> None:
        self.run("postconf", "-e", *settings)

    def install(self, action: str = "install", **overrides: str
                ) -> subprocess.CompletedProcess[str]:
        """postfix-config/install.sh with this instance's config dir, as `make install` runs it."""
        r = subprocess.run([str(INSTALL), action], text=True, capture_output=True,
                           env={"PATH": os.environ["PATH"],
                                "INSTALL_ENV": str(self.base / "install.env"),  # never /etc's
                                **self.env, **overrides, "POSTFIX_CONFIG_DIR": str(self.etc)})
        assert r.returncode == 0, f"install.sh {action} failed:\n{r.stdout}\n{r.stderr}"
        return r

    def members_map(self, database_url: str) -> None:
        """`bombom members map`: Postfix's local table of members (pull mode's RCPT check) from
        the database, after members were added with SQL."""
        subprocess.run([f"{self.env['PREFIX']}/venv/bin/bombom", "members", "map"], check=True,
                       capture_output=True, env={
                           "PATH": os.environ["PATH"], "BOMBOM_CONFIG": self.env["CONFIG_FILE"],
                           "BOMBOM_DATABASE_URL": database_url,
                           "BOMBOM_MEMBERS_MAP": str(self.etc / "bombom-members")})

    # -- life cycle ------------------------------------------------------------------------------
    def create(self) -> None:
        """main.cf and master.cf for a loopback-only instance that cannot send mail anywhere."""
        for d in (self.etc, self.queue, self.data):
            d.mkdir(parents=True, exist_ok=True)
        shutil.copy("/usr/share/postfix/master.cf.dist", self.etc / "master.cf")
        (self.etc / "main.cf").write_text("compatibility_level = 3.6\n")
        shutil.copy("/etc/postfix/dynamicmaps.cf", self.etc / "dynamicmaps.cf")
        if Path("/etc/postfix/dynamicmaps.cf.d").is_dir():
            shutil.copytree("/etc/postfix/dynamicmaps.cf.d", self.etc / "dynamicmaps.cf.d")
        self.postconf(
            f"queue_directory = {self.queue}",
            f"data_directory = {self.data}",
            "myhostname = mx.bombom.test",  # the machine's own name is not fully qualified
            "mydestination =",
            "inet_interfaces = 127.0.0.1",
            "inet_protocols = ipv4",
            "mynetworks = 127.0.0.0/8",
            # nothing leaves the machine: every non-bombom delivery is an immediate error
            "default_transport = error:outbound mail is disabled in tests",
            "relay_transport = error:outbound mail is disabled in tests",
            "local_transport = error:local delivery is disabled in tests",
            "relayhost =",
            "alias_maps =",
            "alias_database =",
            "smtpd_peername_lookup = no",
            "smtp_dns_support_level = disabled",
            # no syslog daemon here: postlogd writes this file
            f"maillog_file = {self.maillog}",
            f"maillog_file_prefixes = {self.base}",
            # fast retries and flushes; delays with sub-second resolution in the log
            "queue_run_delay = 2s",
            "minimal_backoff_time = 2s",
            "maximal_backoff_time = 4s",
            "delay_logging_resolution_limit = 3",
            "smtpd_banner = $myhostname ESMTP test",
        )
        # SMTP on 127.0.0.1 and a free high port instead of *:25
        self.run("postconf", "-MX", "smtp/inet")
        self.run("postconf", "-M",
                 f"127.0.0.1:{self.port}/inet=127.0.0.1:{self.port} inet n - y - - smtpd")
        for d in (self.base, self.etc):
            os.chmod(d, 0o755)
        shutil.chown(self.data, "postfix", "postfix")  # master's lock file, postlogd's state

    def start(self) -> None:
        self.maillog.touch()
        self.run("postfix", "start")
        wait_for("smtpd to listen", self._listening)

    def stop(self) -> None:
        self.run("postfix", "stop", check=False)

    def _listening(self) -> bool:
        """A whole SMTP greeting works (a bare connect can hit an smtpd a reload is retiring).
        A 4xx greeting is smtpd answering too: with the database down, the operator's blocklist
        of clients cannot be asked at connect (main.cf's smtpd_delay_reject = no)."""
        try:
            with smtplib.SMTP("127.0.0.1", self.port, timeout=5) as s:
                return s.noop()[0] == 250
        except smtplib.SMTPConnectError as e:
            return 400 <= e.smtp_code < 500
        except (OSError, smtplib.SMTPException):
            return False

    def reload_count(self) -> int:
        return self.log().count(" reload -- ")

    def smtpd_pids(self) -> set[int]:
        """This instance's smtpd (or postscreen) processes (their argv names our listener)."""
        name = f"127.0.0.1:{self.port}".encode()
        pids = set()
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith((b"smtpd", b"postscreen")) and name in argv:
                pids.add(int(proc.name))
        return pids

    def wait_reloaded(self, before: int) -> None:
        """`postfix reload` is asynchronous: wait until master logs that it reloaded, then until
        the smtpd processes of the old settings are gone (one of them could otherwise take the
        next session with the old settings and maps), then for an SMTP session to work."""
        wait_for("postfix reload", lambda: self.reload_count() > before)
        old = self.smtpd_pids()
        end = time.monotonic() + 30
        while old & self.smtpd_pids() and time.monotonic() < end:
            time.sleep(0.1)
        wait_for("smtpd to answer", lambda: self._listening() and self._listening())

    # -- queue and log ---------------------------------------------------------------------------
    def log(self) -> str:
        return self.maillog.read_text(errors="replace")

    def log_lines(self, since: int = 0) -> list[str]:
        return self.log()[since:].splitlines()

    def queued(self) -> list[dict]:
        out = self.run("postqueue", "-j").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def flush(self) -> None:
        self.run("postqueue", "-f")

    def empty_queue(self) -> None:
        self.run("postsuper", "-d", "ALL", check=False)
