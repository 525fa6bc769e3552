"""One line per delivery, to syslog (facility mail, beside Postfix's lines), stderr or a file.

With syslog, a manual run at a terminal also sees the lines on stderr.

Under Postfix, stdout and stderr are captured into Postfix's own log and bounce texts, so they get
only the one status line; everything else, tracebacks included, goes here.

Every record is one line of printable text: `Log.write` escapes whatever a caller passes (header
values, envelope fields, exception messages), so no field can end a record or start a forged one.
"""

from __future__ import annotations

import os
import re
import sys
import time

TYPE_CHECKING = False  # not `typing`'s: bombom-deliver imports this per message; typing costs 3 ms
if TYPE_CHECKING:
    from .config import Settings

IDENT = "bombom-deliver"

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape(c: str) -> str:
    if c in _ESCAPES:
        return _ESCAPES[c]
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def printable(text: str) -> str:
    """`text` with every unprintable character (controls, line and paragraph separators, format
    characters such as bidi overrides, surrogates) and the backslash escaped: one record, shown as
    it was sent (like Postfix's printable(), which replaces them by `?`)."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(c if c.isprintable() and c != "\\" else _escape(c) for c in text)


def dsn_secrets(dsn: str | None) -> tuple[str, ...]:
    """Every form of the password a database URL or key=value DSN holds, as written and decoded,
    so that logs can mask it whatever an error message quotes."""
    from urllib.parse import unquote

    if not dsn:
        return ()
    found: list[str] = []
    if "://" in dsn:
        userinfo = dsn.split("://", 1)[1].split("?", 1)[0].rpartition("@")[0]
        if ":" in userinfo:
            found.append(userinfo.split(":", 1)[1])
        found += re.findall(r"[?&]password=([^&#]*)", dsn)
    for m in re.finditer(r"password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", dsn):
        value = m[1]
        found.append(value)
        if value.startswith("'"):
            found += [value[1:-1], re.sub(r"\\(.)", r"\1", value[1:-1])]
    forms = {f for s in found for f in (s, unquote(s), unquote(s.replace("+", " "))) if f}
    return tuple(sorted(forms, key=len, reverse=True))  # the longest first: no partial leftovers


def mask(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


class Log:
    def __init__(self, target: str = "syslog", ident: str = IDENT,
                 secrets: tuple[str | None, ...] = ()) -> None:
        self.target = target
        self.ident = ident
        self.secrets = tuple(sorted((s for s in secrets if s), key=len, reverse=True))
        self.echo = False
        if target == "syslog":
            import syslog

            syslog.openlog(ident, syslog.LOG_PID, syslog.LOG_MAIL)
            # a person at a terminal sees the lines too (under Postfix stderr is never a tty)
            self.echo = sys.stderr.isatty()

    @classmethod
    def for_settings(cls, settings: Settings, ident: str = IDENT) -> Log:
        """The log `settings` name, masking every form of each database password they hold."""
        urls = (settings.database_url, settings.admin_database_url)
        return cls(settings.log, ident, secrets=tuple(s for u in urls for s in dsn_secrets(u)))

    def write(self, level: str, line: str) -> None:
        """One record, whatever `line` holds: the one place text reaches the log."""
        line = printable(mask(line, self.secrets))
        try:
            if self.target == "syslog":
                import syslog

                prio = syslog.LOG_ERR if level == "error" else syslog.LOG_INFO
                syslog.syslog(prio, line)
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
        """`line`, then the current traceback: a record per line of our frames, and one per
        exception message, whose own line breaks (a stranger's text, maybe) stay escaped in it."""
        import traceback

        self.write("error", line)
        e = sys.exc_info()[1]
        if e is None:
            return
        for chunk in traceback.TracebackException.from_exception(e).format():
            chunk = chunk.strip("\n")
            for part in chunk.split("\n") if chunk.startswith("  File ") else [chunk]:
                self.write("error", part)
