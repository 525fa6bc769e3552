"""What postfix-config/install.sh needs (`bombom postfix-settings`), computed by the package.

The installer asks here instead of parsing DSNs and doing arithmetic in shell: Postfix's time limit
follows from the real deadline constants, DSNs are parsed by libpq's own parser (psycopg), and
passwords travel only through the environment and stdout, never argv.
"""

from __future__ import annotations

import math
import secrets
import tomllib
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from ..judge import GRACE

#: seconds between the watchdog's last word and Postfix's SIGKILL: interpreter start-up and
#: imports on a loaded machine happen before our deadline starts counting
STARTUP_MARGIN = 20


def time_limit(deadline_seconds: float) -> int:
    """Postfix's bombom_time_limit: above the deadline, its watchdog grace and start-up."""
    return math.ceil(deadline_seconds + GRACE + STARTUP_MARGIN)


def parse(dsn: str) -> dict[str, str]:
    """The DSN's parameters as libpq reads them (a URI or key=value); ValueError if malformed."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    if any(c in dsn for c in '\n\r"\\'):
        raise ValueError("must not contain newlines, quotes or backslashes")
    try:
        return {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
    except ProgrammingError as e:
        raise ValueError("is not a valid libpq connection string") from e


def _uri(dsn: str) -> None:
    if not dsn.startswith(("postgresql://", "postgres://")):
        raise ValueError("must be a postgresql:// URI")
    parse(dsn)


def with_password(dsn: str, password: str) -> str:
    """The URI with `password` added, unless it carries one already (or has no user name)."""
    _uri(dsn)
    u = urlsplit(dsn)
    if not password or u.password is not None or not u.username:
        return dsn
    host = u.netloc.rsplit("@", 1)[1]
    return urlunsplit(u._replace(netloc=f"{u.username}:{quote(password, safe='')}@{host}"))


def password_of(dsn: str) -> str:
    return parse(dsn).get("password", "")


def without_password(dsn: str, passfile: Path) -> str:
    """The URI without its password, naming `passfile` instead when it had one (Postfix writes
    the URI into the mail log when the database is unreachable)."""
    _uri(dsn)
    u = urlsplit(dsn)
    if u.password is None:
        return dsn
    host = u.netloc.rsplit("@", 1)[1]
    query = "&".join(q for q in (u.query, f"passfile={passfile}") if q)
    return urlunsplit(u._replace(netloc=f"{u.username}@{host}", query=query))


def per_host(dsn: str) -> list[str]:
    """A multi-host URI (`postgresql://u@a:5432,b:5432/db?...`, libpq's failover list) as one URI
    per host: Postfix's pgsql `hosts` splits on commas, tries the hosts in turn and skips one
    that failed for a while, which is the same failover for the read-only member lookup."""
    _uri(dsn)
    u = urlsplit(dsn)
    user, at, hosts = u.netloc.rpartition("@")
    return [urlunsplit(u._replace(netloc=f"{user}{at}{host}")) for host in hosts.split(",")]


def pgpass_line(password: str) -> str:
    """A libpq password file line matching every connection (only our URI names the file)."""
    return "*:*:*:*:" + password.replace("\\", "\\\\").replace(":", "\\:")


def pgpass_password(line: str) -> str:
    fields, field, escaped = [], "", False
    for c in line.rstrip("\n"):
        if escaped:
            field, escaped = field + c, False
        elif c == "\\":
            escaped = True
        elif c == ":" and len(fields) < 4:
            fields, field = [*fields, field], ""
        else:
            field += c
    return field if len(fields) == 4 else ""


def kept_password(config_file: Path, key: str) -> str:
    """The password inside `key` of an installed config file, or ''."""
    try:
        with open(config_file, "rb") as f:
            return unquote(urlsplit(str(tomllib.load(f).get(key, ""))).password or "")
    except (OSError, ValueError):
        return ""


def kept_lookup_password(passfile: Path) -> str:
    try:
        return pgpass_password(passfile.read_text().split("\n", 1)[0])
    except OSError:
        return ""


def settings(environ: dict[str, str]) -> dict[str, str]:
    """Every value install.sh fills in, from its variables (`environ`). Passwords: the
    BOMBOM_*_PASSWORD variables, else those of an earlier install (so that running it again
    without them keeps them); the admin role's is made up once when there is none."""
    e = environ
    passfile = Path(e["LOOKUP_PASSFILE"])
    out: dict[str, str] = {}
    deadline = e.get("DEADLINE", "60")
    if not deadline.isdigit() or not 1 <= int(deadline) <= 3600:
        raise ValueError("DEADLINE must be whole seconds, 1 to 3600")
    out["TIME_LIMIT"] = str(time_limit(int(deadline)))
    kept = {
        "DELIVERY": kept_password(Path(e["CONFIG_FILE"]), "database_url"),
        "LOOKUP": kept_lookup_password(passfile),
        "ADMIN": kept_password(Path(e["ADMIN_CONFIG"]), "database_url"),
    }
    for kind in ("DELIVERY", "LOOKUP", "ADMIN"):
        name = f"{kind}_DSN"
        try:
            dsn = e[name]
            password = (password_of(dsn) or e.get(f"BOMBOM_{kind}_PASSWORD", "")
                        or kept[kind])
            if not password and kind == "ADMIN":
                password = secrets.token_hex(16)
            dsn = with_password(dsn, password)
            role = parse(dsn).get("user", "")
            if not role:
                raise ValueError("names no user (the role)")
        except ValueError as err:
            raise ValueError(f"{name} {err}") from None
        out[f"{kind}_ROLE"] = role
        out[f"{kind}_PASSWORD"] = password
        if kind == "LOOKUP":
            out["LOOKUP_HOSTS"] = " ".join(without_password(h, passfile) for h in per_host(dsn))
            out["LOOKUP_DBNAME"] = parse(dsn).get("dbname", "bombom")
            out["LOOKUP_PASSFILE_LINE"] = pgpass_line(password) if password else ""
        else:
            out[name] = dsn
    return out
