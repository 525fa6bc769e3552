"""Blocklists: the operator's (`operator_blocks`: a sender address or domain, or a client
network, refused by Postfix with 550 5.7.1 before any data) and each member's own
(`member_blocks`: that member's mail from the sender is kept but never shown, outcome `blocked`).

Postfix reads the operator's list from the database (`pgsql:` access maps, the lookup role); in
pull mode, where smtpd must answer while the database is down, from local copies beside the
members map that `write_maps` rewrites (`hash:` for senders, `cidr:` for clients).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from ..store import normalize_address
from .members import _own

if TYPE_CHECKING:
    import psycopg

#: what Postfix answers for a blocked client or sender (access(5): an explicit code and text)
SENDER_REPLY = "550 5.7.1 blocked by the operator of this service"
CLIENT_REPLY = "550 5.7.1 client blocked by the operator of this service"
#: pull mode's local copies, beside `members_map`
SENDERS_MAP, CLIENTS_MAP = "bombom-blocked-senders", "bombom-blocked-clients"


class Target(NamedTuple):
    """What a block names: `kind` is "address", "domain" or "client"; `value` as stored."""

    kind: str
    value: str


def target(text: str) -> Target:
    """Parse an operator's argument: an IP address or network (CIDR), an address, or a domain.
    ValueError when it is none of these."""
    text = text.strip()
    with contextlib.suppress(ValueError):
        return Target("client", str(ipaddress.ip_network(text, strict=False)))
    value = normalize_address(text)
    local, at, domain = value.rpartition("@")
    if at and local and _domain(domain):
        return Target("address", value)
    if not at and _domain(value):
        return Target("domain", value)
    raise ValueError(f"{text!r} is not an address, a domain or an IP network")


def _domain(name: str) -> bool:
    labels = name.split(".")
    return len(labels) >= 2 and all(
        label and len(label) < 64 and label.replace("-", "").isalnum() for label in labels)


# -- the operator's list ------------------------------------------------------------------------

def add(conn: psycopg.Connection, t: Target, reason: str | None = None) -> bool:
    """Block `t` for everyone; False when it was blocked already."""
    column = "client" if t.kind == "client" else "sender"
    row = conn.execute(f"INSERT INTO operator_blocks ({column}, reason) VALUES (%s, %s) "
                       "ON CONFLICT DO NOTHING RETURNING id", (t.value, reason)).fetchone()
    return row is not None


def remove(conn: psycopg.Connection, t: Target) -> bool:
    column = "client" if t.kind == "client" else "sender"
    return conn.execute(f"DELETE FROM operator_blocks WHERE {column} = %s",
                        (t.value,)).rowcount > 0


def listing(conn: psycopg.Connection) -> list[tuple[str, str, str | None]]:
    """(kind, value, reason) of every operator's block, senders first."""
    return conn.execute(
        """SELECT CASE WHEN client IS NOT NULL THEN 'client'
                       WHEN sender LIKE '%%@%%' THEN 'address' ELSE 'domain' END,
                  coalesce(sender, client::text), reason
           FROM operator_blocks ORDER BY client NULLS FIRST, sender""").fetchall()


# -- a member's own list -------------------------------------------------------------------------

def _member(conn: psycopg.Connection, member: str) -> int:
    row = conn.execute("SELECT id FROM members WHERE address = %s",
                       (normalize_address(member),)).fetchone()
    if row is None:
        raise ValueError(f"{normalize_address(member)!r} is not a member")
    return row[0]


def _sender(t: Target) -> str:
    if t.kind == "client":
        raise ValueError("a member blocks a sender address or domain, not a network")
    return t.value


def member_add(conn: psycopg.Connection, member: str, t: Target) -> bool:
    return conn.execute("INSERT INTO member_blocks (member_id, sender) VALUES (%s, %s) "
                        "ON CONFLICT DO NOTHING", (_member(conn, member), _sender(t))).rowcount > 0


def member_remove(conn: psycopg.Connection, member: str, t: Target) -> bool:
    return conn.execute("DELETE FROM member_blocks WHERE member_id = %s AND sender = %s",
                        (_member(conn, member), _sender(t))).rowcount > 0


def member_listing(conn: psycopg.Connection, member: str | None = None
                   ) -> list[tuple[str, str]]:
    """(member address, sender) of every member's block, or of one member's."""
    return conn.execute(
        """SELECT m.address, b.sender FROM member_blocks b JOIN members m ON m.id = b.member_id
           WHERE %(m)s::text IS NULL OR m.address = %(m)s ORDER BY m.address, b.sender""",
        {"m": normalize_address(member) if member else None}).fetchall()


# -- pull mode's local copies --------------------------------------------------------------------

def write_maps(conn: psycopg.Connection, directory: Path) -> int:
    """Rewrite the local copies of the operator's list in `directory` (0640 root:postfix; the
    senders' table through postmap). Returns how many blocks they hold."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        rows = listing(conn)
        senders = [f"{value} {SENDER_REPLY}\n" for kind, value, _ in rows if kind != "client"]
        clients = [f"{value} {CLIENT_REPLY}\n" for kind, value, _ in rows if kind == "client"]
        for name, lines in ((SENDERS_MAP, senders), (CLIENTS_MAP, clients)):
            path = directory / name
            tmp = path.with_name(f".{name}.{os.getpid()}")
            with open(tmp, "w", encoding="utf-8") as f:
                f.write("# bombom-pipe: the operator's blocklist (`bombom block` rewrites it)\n")
                f.writelines(lines)
            _own(tmp)
            os.replace(tmp, path)
        postmap = shutil.which("postmap", path="/usr/sbin:/usr/bin:/sbin:/bin") or "postmap"
        senders_map = directory / SENDERS_MAP
        r = subprocess.run([postmap, "-c", str(directory), f"hash:{senders_map}"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise OSError(f"postmap {senders_map}: "
                          f"{(r.stderr.strip() or 'failed').splitlines()[0]}")
        _own(senders_map.with_name(SENDERS_MAP + ".db"))
        return len(rows)
    finally:
        os.close(fd)
