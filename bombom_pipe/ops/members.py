"""Who may receive mail: the `members` table, and Postfix's local copy of it (`members_map`)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from ..store import normalize_address

if TYPE_CHECKING:
    import psycopg


def address_in(address: str, domains: tuple[str, ...]) -> str:
    """`address` as stored (lower-case, without +tag); ValueError when it is not an address of
    one of `domains` (Postfix would never hand it to us)."""
    address = normalize_address(address)
    local, at, domain = address.rpartition("@")
    if not (local and at and domain) or "+" in local:  # "+" left: the local part is only a tag
        raise ValueError(f"{address!r} is not an address")
    if domain not in domains:
        raise ValueError(f"{address!r} is not in the service domains ({', '.join(domains)})")
    return address


def add(conn: psycopg.Connection, address: str, domains: tuple[str, ...]
        ) -> tuple[str, int | None]:
    """Add `address` as stored: (that address, its new id, or None when it was a member
    already). ValueError when it is not an address of `domains`."""
    address = address_in(address, domains)
    row = conn.execute(
        "INSERT INTO members (address) VALUES (%s) ON CONFLICT (address) DO NOTHING "
        "RETURNING id", (address,)).fetchone()
    return address, row[0] if row else None


class HasArticles(Exception):
    """The member still has articles (the app's data): not removed."""


def remove(conn: psycopg.Connection, address: str) -> str | None:
    """Remove a member without articles: the address as stored, or None when it was none.
    Its deliveries stay (the audit), no longer linked to a member. HasArticles otherwise."""
    address = normalize_address(address)
    row = conn.execute("SELECT id, (SELECT count(*) FROM articles WHERE member_id = m.id) "
                       "FROM members m WHERE address = %s FOR UPDATE", (address,)).fetchone()
    if row is None:
        return None
    member, articles = row
    if articles:
        raise HasArticles(f"{address} has {articles} articles; the app owns them, so the member "
                          "stays (delete the articles first)")
    conn.execute("UPDATE deliveries SET member_id = NULL WHERE member_id = %s", (member,))
    conn.execute("DELETE FROM members WHERE id = %s", (member,))
    return address


def with_counts(conn: psycopg.Connection) -> list[tuple[int, str, int]]:
    """(id, address, number of articles) of every member, by id."""
    return conn.execute(
        """SELECT m.id, m.address, count(a.id) FROM members m
           LEFT JOIN articles a ON a.member_id = m.id GROUP BY m.id ORDER BY m.id""").fetchall()


def write_map(conn: psycopg.Connection, path: Path) -> int:
    """Postfix's local table of members (`hash:PATH`, built by postmap), from the committed
    members table: pull mode's recipient check reads it, so smtpd can answer RCPT while the
    database is down. "ADDRESS Maildir/" lines (virtual(8)'s mailbox); 0640 root:postfix.
    Serialized by a lock on its directory, so the last writer's table is the newest. Returns
    how many members it holds."""
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        rows = conn.execute("SELECT address FROM members ORDER BY address").fetchall()
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("# bombom-pipe: the members (`bombom members map` rewrites it)\n")
            f.writelines(f"{address} Maildir/\n" for (address,) in rows)
        _own(tmp)
        os.replace(tmp, path)
        postmap = shutil.which("postmap", path="/usr/sbin:/usr/bin:/sbin:/bin") or "postmap"
        r = subprocess.run([postmap, "-c", str(path.parent), f"hash:{path}"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise OSError(f"postmap {path}: {(r.stderr.strip() or 'failed').splitlines()[0]}")
        _own(path.with_name(path.name + ".db"))
        return len(rows)
    finally:
        os.close(fd)


def _own(path: Path) -> None:
    import grp

    os.chmod(path, 0o640)
    with contextlib.suppress(KeyError, PermissionError):  # not root, or no Postfix: mode alone
        os.chown(path, 0, grp.getgrnam("postfix").gr_gid)
