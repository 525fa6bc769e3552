"""Versioned SQL files, applied in order by `bombom init-db`; each runs once, in a transaction."""

from __future__ import annotations

import re
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

LOCK_ID = 0x626F6D62  # "bomb": serializes concurrent init-db runs


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every `NNN_name.sql` beside this file, in order."""
    found = []
    for item in resources.files(__package__).iterdir():
        m = re.fullmatch(r"(\d{3})_(\w+)\.sql", item.name)
        if m:
            found.append((int(m[1]), m[2], item.read_text(encoding="utf-8")))
    return sorted(found)


def upgrade(conn: psycopg.Connection) -> list[str]:
    """Apply what is missing; returns the names applied. Safe to run twice, or concurrently."""
    applied = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_ID,))
        conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY, name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
        for version, name, sql in migrations():
            if version in done:
                continue
            conn.execute(sql)  # type: ignore[arg-type]
            conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                         (version, name))
            applied.append(f"{version:03d}_{name}")
    return applied


#: the newsletters columns the delivery's upsert (`store._newsletter`) sets: the only ones the
#: delivery role may UPDATE (not keep_forever, not the sender, not the unsubscribe columns that
#: migration 008 retired); a migration adding one adds it here
NEWSLETTER_UPSERT_COLUMNS: tuple[str, ...] = (
    "display_name", "list_id", "sender_header", "last_seen_at", "authenticated_at",
)

#: the subscriptions columns the delivery's upsert (`store._subscription`) sets (migration 008)
SUBSCRIPTION_UPSERT_COLUMNS: tuple[str, ...] = (
    "unsubscribe_http", "unsubscribe_mailto", "unsubscribe_one_click", "unsubscribe_http_target",
    "confirmation_url", "last_seen_at",
)

#: what each role may do, table by table; nothing else (no DDL, no DELETE, no TRUNCATE)
GRANTS: dict[str, dict[str, str]] = {
    "delivery": {
        "members": "SELECT",
        "newsletters": f"SELECT, INSERT, UPDATE ({', '.join(NEWSLETTER_UPSERT_COLUMNS)})",
        "articles": "SELECT, INSERT",
        "deliveries": "SELECT, INSERT",
        "attachments": "SELECT, INSERT",
        "subscriptions": f"SELECT, INSERT, UPDATE ({', '.join(SUBSCRIPTION_UPSERT_COLUMNS)})",
        "raw_messages": "SELECT, INSERT",  # migration 010: the bytes, for replay on any host
        "member_blocks": "SELECT",  # migration 009
        "domain_volume": "SELECT, INSERT, UPDATE (messages, quarantined)",
    },
    # Postfix's: who is a member, and the operator's blocklist (migration 009)
    "lookup": {"members": "SELECT", "operator_blocks": "SELECT"},
}


def grant(conn: psycopg.Connection, kind: str, role: str, password: str | None = None) -> None:
    """Create `role` (LOGIN) if missing, set its password when given, grant `GRANTS[kind]`."""
    from psycopg import sql

    ident = sql.Identifier(role)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_ID,))
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
        if password:
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(ident, sql.Literal(password)))
        db = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(db),
                                                                         ident))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(ident))
        for table, privileges in GRANTS[kind].items():
            conn.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(sql.Identifier(table), ident))
            conn.execute(sql.SQL("GRANT " + privileges + " ON {} TO {}").format(
                sql.Identifier(table), ident))
