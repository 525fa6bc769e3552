"""One line per delivery, to syslog (facility mail, beside Postfix's lines), stderr or a file.

With syslog, a manual run at a terminal also sees the lines on stderr.

Under Postfix, stdout and stderr are captured into Postfix's own log and bounce texts, so they get
only the one status line; everything else, tracebacks included, goes here.
"""

from __future__ import annotations

import os
import sys
import time

IDENT = "bombom-deliver"


def dsn_password(dsn: str) -> str | None:
    """The password inside a database URL or key=value DSN, so that logs can mask it."""
    import re
    from urllib.parse import unquote, urlsplit

    if "://" in dsn:
        try:
            password = urlsplit(dsn).password
        except ValueError:
            password = None
        if password:
            return unquote(password)
    m = re.search(r"password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", dsn)
    return m[1].strip("'") if m else None


class Log:
    def __init__(self, target: str = "syslog", ident: str = IDENT,
                 secrets: tuple[str | None, ...] = ()) -> None:
        self.target = target
        self.ident = ident
        self.secrets = tuple(s for s in secrets if s)
        self.echo = False
        if target == "syslog":
            import syslog

            syslog.openlog(ident, syslog.LOG_PID, syslog.LOG_MAIL)
            # a person at a terminal sees the lines too (under Postfix stderr is never a tty)
            self.echo = sys.stderr.isatty()

    def write(self, level: str, line: str) -> None:
        line = line.replace("\x00", "\\0")
        for secret in self.secrets:
            line = line.replace(secret, "***")
        try:
            if self.target == "syslog":
                import syslog

                prio = syslog.LOG_ERR if level == "error" else syslog.LOG_INFO
                for part in line.splitlines() or [""]:
                    syslog.syslog(prio, part)
                if not self.echo:
                    return
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            text = f"{stamp} {self.ident}[{os.getpid()}]: {level}: {line}\n"
            if self.target in ("stderr", "syslog"):
                sys.stderr.write(text)
                sys.stderr.flush()
            else:
                fd = os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                try:
                    os.write(fd, text.encode("utf-8", "backslashreplace"))
                finally:
                    os.close(fd)
        except OSError:
            pass  # logging must never change the outcome of a delivery

    def info(self, line: str) -> None:
        self.write("info", line)

    def error(self, line: str) -> None:
        self.write("error", line)

    def exception(self, line: str) -> None:
        import traceback

        self.write("error", f"{line}\n{traceback.format_exc()}")
