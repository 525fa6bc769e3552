"""Configuration in one place: a TOML file, overridden by environment variables.

    # /etc/bombom/bombom.conf
    database_url = "postgresql://bombom_deliver:secret@/bombom?host=/var/run/postgresql"
    spool_dir = "/var/spool/bombom"
    deadline_seconds = 60
    log = "syslog"            # or "stderr", or a file path
    # for the `bombom` admin command only (schema, prune): the owner's DSN
    admin_database_url = "postgresql://bombom@/bombom?host=/var/run/postgresql"
    domains = ["bombom.news"]  # the service's domains, for `bombom check`
    # who sent it (bombom_pipe/auth.py): "dkim" verifies here, "authentication-results" trusts
    # only the header our own milter adds with this authserv_id
    auth_method = "dkim"
    authserv_id = "mx.bombom.news"
    dns_servers = ""            # "" = the system resolver; "127.0.0.1:5353, [::1]" for others
    dns_timeout_seconds = 4     # all DNS of one message; a timeout is a `temperror` verdict
    dmarc_reject_quarantine = true  # DMARC fail under p=reject -> quarantined, not shown
    worker_socket = "/run/bombom/worker.sock"  # `bombom worker`'s socket; unset: no worker
    lmtp_socket = "/run/bombom/lmtp.sock"      # `bombom worker` serves LMTP here; unset: not
    members_map = "/etc/postfix/bombom-members"  # `bombom members` keeps this hash: table current
    metrics_listen = "9464"    # `bombom worker`'s Prometheus metrics (a port: 127.0.0.1);
                               # "ADDRESS:PORT" for another address; unset: no listener
    domain_daily_limit = 0      # articles per sender domain and UTC day; past it: quarantined
                                # ("volume: ..."), never bounced; 0 = no limit

Postfix cleans the environment of pipe(8) commands, so production reads the file; tests and manual
runs may use BOMBOM_DATABASE_URL, BOMBOM_SPOOL_DIR, BOMBOM_DEADLINE_SECONDS, BOMBOM_LOG,
BOMBOM_ADMIN_DATABASE_URL, BOMBOM_DOMAINS (comma-separated), BOMBOM_AUTH_METHOD, BOMBOM_AUTHSERV_ID,
BOMBOM_DNS_SERVERS, BOMBOM_DNS_TIMEOUT_SECONDS, BOMBOM_DMARC_REJECT_QUARANTINE,
BOMBOM_WORKER_SOCKET, BOMBOM_LMTP_SOCKET, BOMBOM_MEMBERS_MAP, BOMBOM_METRICS_LISTEN,
BOMBOM_DOMAIN_DAILY_LIMIT instead.
The file is chosen by `--config`, else BOMBOM_CONFIG, else the default path. A missing default
file is fine when the environment supplies what is needed; a file named explicitly must exist.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

DEFAULT_CONFIG = Path("/etc/bombom/bombom.conf")


class ConfigError(Exception):
    """The configuration cannot be used; the message says which key or file and why."""


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    spool_dir: Path = Path("/var/spool/bombom")
    deadline_seconds: float = 60.0
    log: str = "syslog"
    admin_database_url: str | None = None
    domains: tuple[str, ...] = ("bombom.news",)
    auth_method: str = "dkim"
    authserv_id: str | None = None
    dns_servers: tuple[str, ...] = ()
    dns_timeout_seconds: float = 4.0
    dmarc_reject_quarantine: bool = True
    worker_socket: str | None = None
    lmtp_socket: str | None = None
    members_map: str | None = None
    metrics_listen: tuple[str, int] | None = None
    domain_daily_limit: int = 0

    def __repr__(self) -> str:  # never show a password
        return (f"Settings(database_url=<hidden>, spool_dir={self.spool_dir!s}, "
                f"deadline_seconds={self.deadline_seconds}, log={self.log!r}, "
                f"domains={self.domains!r})")


def _seconds(low: float, high: float) -> Callable[[object], float]:
    """A converter for a number of seconds between `low` and `high`."""

    def convert(value: object) -> float:
        if isinstance(value, bool):
            raise ValueError("not a number")
        seconds = float(value)  # type: ignore[arg-type]
        if not low <= seconds <= high:
            raise ValueError(f"must be between {low:g} and {high:g} seconds")
        return seconds

    return convert


def _text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return value


def _strings(value: object, what: str) -> tuple[str, ...]:
    """A TOML list of strings, or one comma-separated string (the environment's form)."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(s, str) for s in items):
        raise ValueError(f"must be a list of {what}")
    return tuple(s.strip() for s in items if s.strip())


def _domains(value: object) -> tuple[str, ...]:
    domains = tuple(d.lower() for d in _strings(value, "domain names"))
    if not domains:
        raise ValueError("must name at least one domain")
    return domains


def _dsn(value: object) -> str:
    """A connection string libpq can parse; the error never quotes it (it holds a password)."""
    value = _text(value)
    try:
        from psycopg import ProgrammingError
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:  # the delivery still saves the raw message, then fails to connect (75)
        return value
    try:
        conninfo_to_dict(value)
    except ProgrammingError as e:
        reason = re.sub(r'"[^"]*"', '"…"', str(e).strip())
        raise ValueError(f"not a valid connection string: {reason}") from None
    return value


def _auth_method(value: object) -> str:
    if value not in AUTH_METHODS:
        raise ValueError(f"must be one of {', '.join(AUTH_METHODS)}")
    return value  # type: ignore[return-value]


def _dns_servers(value: object) -> tuple[str, ...]:
    servers = _strings(value, 'addresses, e.g. ["127.0.0.1:5353"]')
    for s in servers:
        host_port(s)
    return servers


def host_port(server: str) -> tuple[str, int]:
    """`127.0.0.1`, `127.0.0.1:5353`, `[::1]:5353`, `::1` -> (address, port)."""
    import ipaddress

    m = re.fullmatch(r"\[([^\]]+)\](?::(\d{1,5}))?|([^:\[\]]+)(?::(\d{1,5}))?", server)
    host, port = (m[1] or m[3], m[2] or m[4]) if m else (server, None)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{server!r} is not an IP address (with an optional :port)") from None
    return host, int(port or 53)


def _listen(value: object) -> tuple[str, int]:
    """`9464` or "9464" -> ("127.0.0.1", 9464) (loopback unless an address is named);
    "ADDRESS:PORT" or "[v6]:PORT" -> that address."""
    import ipaddress

    text = str(value).strip() if isinstance(value, int | str) and not isinstance(value, bool) \
        else ""
    if text.isdigit():
        host, port = "127.0.0.1", int(text)
    else:
        m = re.fullmatch(r"\[([^\]]+)\]:(\d{1,5})|([^:\[\]]+):(\d{1,5})", text)
        if not m:
            raise ValueError("must be a port, or ADDRESS:PORT")
        host, port = m[1] or m[3], int(m[2] or m[4])
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IP address") from None
    if not 0 < port < 65536:
        raise ValueError("the port must be between 1 and 65535")
    return host, port
def _count(value: object) -> int:
    """A whole number >= 0 (TOML integer, or its digits from the environment)."""
    if isinstance(value, bool) or not isinstance(value, int | str) or \
            (isinstance(value, str) and not value.strip().isdigit()):
        raise ValueError("must be a whole number, 0 or more")
    if int(value) < 0:
        raise ValueError("must be a whole number, 0 or more")
    return int(value)


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "1", "yes", "false", "0", "no"}:
        return value.strip().lower() in {"true", "1", "yes"}
    raise ValueError("must be true or false")


AUTH_METHODS = ("dkim", "authentication-results")

_CONVERT = {
    "database_url": _dsn,
    "spool_dir": lambda v: Path(_text(v)),
    "deadline_seconds": _seconds(1, 3600),
    "log": _text,
    "admin_database_url": _dsn,
    "domains": _domains,
    "auth_method": _auth_method,
    "authserv_id": _text,
    "dns_servers": _dns_servers,
    "dns_timeout_seconds": _seconds(0.1, 30),
    "dmarc_reject_quarantine": _bool,
    "worker_socket": _text,
    "lmtp_socket": _text,
    "members_map": _text,
    "metrics_listen": _listen,
    "domain_daily_limit": _count,
}


def config_path(explicit: str | os.PathLike[str] | None = None) -> tuple[Path, bool]:
    """The file to read, and whether it was asked for (so its absence is an error)."""
    if explicit:
        return Path(explicit), True
    if os.environ.get("BOMBOM_CONFIG"):
        return Path(os.environ["BOMBOM_CONFIG"]), True
    return DEFAULT_CONFIG, False


def read_file(path: Path, required: bool) -> dict[str, object]:
    """The key/value pairs of a config file; {} for an absent optional file."""
    import tomllib

    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if mode & stat.S_IROTH:
                raise ConfigError(f"{path} is world-readable; it holds the database password "
                                  f"(chmod 640)")
            return tomllib.load(f)
    except FileNotFoundError:
        if required:
            raise ConfigError(f"config file {path} not found") from None
        return {}
    except PermissionError:
        raise ConfigError(f"config file {path} not readable by uid {os.getuid()}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path}: {e}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory") from None


DSN_KEYS = ("database_url", "admin_database_url")


def check_dsns(settings: Settings) -> None:
    """The DSN check of `load`, for a process that loaded with `check_dsn=False`."""
    for name in DSN_KEYS:
        if getattr(settings, name):
            try:
                _dsn(getattr(settings, name))
            except ValueError as e:
                raise ConfigError(f"{name}: {e}") from None


def load(explicit: str | os.PathLike[str] | None = None,
         environ: dict[str, str] | None = None, check_dsn: bool = True) -> Settings:
    """Read the file, apply BOMBOM_* overrides, validate every value. `check_dsn=False` leaves
    the DSNs to `check_dsns` (it loads psycopg, which bombom-deliver itself never does)."""
    env = os.environ if environ is None else environ
    path, required = config_path(explicit)
    raw = read_file(path, required)
    unknown = sorted(set(raw) - set(_CONVERT))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}")
    for name in _CONVERT:
        value = env.get(f"BOMBOM_{name.upper()}")
        if value:
            raw[name] = value
    if "database_url" not in raw:
        raise ConfigError(f"no database_url: set it in {path} or BOMBOM_DATABASE_URL")
    values: dict[str, object] = {}
    for f in fields(Settings):
        if f.name in raw:
            try:
                convert = _text if not check_dsn and f.name in DSN_KEYS else _CONVERT[f.name]
                values[f.name] = convert(raw[f.name])
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{f.name}: {e}") from None
    settings = Settings(**values)  # type: ignore[arg-type]
    if settings.auth_method == "authentication-results" and not settings.authserv_id:
        raise ConfigError("auth_method = \"authentication-results\" needs authserv_id")
    return settings
