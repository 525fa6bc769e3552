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
