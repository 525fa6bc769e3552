"""Who may receive mail: the `members` table."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..store import normalize_address

if TYPE_CHECKING:
    import psycopg


def add(conn: psycopg.Connection, address: str) -> tuple[str, int | None]:
    """Add `address` as stored (lower-case, without +tag): (that address, its new id, or None
    when it was a member already). ValueError when it is not an address."""
    address = normalize_address(address)
    local, at, domain = address.rpartition("@")
    if not (local and at and domain) or "+" in local:  # "+" left: the local part is only a tag
        raise ValueError(f"{address!r} is not an address")
    row = conn.execute(
        "INSERT INTO members (address) VALUES (%s) ON CONFLICT (address) DO NOTHING "
        "RETURNING id", (address,)).fetchone()
    return address, row[0] if row else None


def with_counts(conn: psycopg.Connection) -> list[tuple[int, str, int]]:
    """(id, address, number of articles) of every member, by id."""
    return conn.execute(
        """SELECT m.id, m.address, count(a.id) FROM members m
           LEFT JOIN articles a ON a.member_id = m.id GROUP BY m.id ORDER BY m.id""").fetchall()
