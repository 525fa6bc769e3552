"""The schema owner: a login role that owns the database and its tables, so that `bombom`
(members, migrations, grants on existing roles) runs without superuser rights."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import LOCK_ID

if TYPE_CHECKING:
    import psycopg


def make_owner(conn: psycopg.Connection, role: str, password: str | None = None) -> None:
    """As a superuser: create `role` (LOGIN) if missing, set its password when given, and hand
    it the current database and every table and view in its public schema (identity sequences
    follow their tables). Safe to run twice."""
    from psycopg import sql

    ident = sql.Identifier(role)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_ID,))
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
        if password:
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(ident, sql.Literal(password)))
        db = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(db), ident))
        tables = conn.execute(
            """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')
                 AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = %s)""",
            (role,)).fetchall()
        for (table,) in tables:
            conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(
                sql.Identifier("public", table), ident))


def set_role(conn: psycopg.Connection, role: str | None) -> None:
    """Act as `role` from now on in this session (None: as the login role again)."""
    from psycopg import sql

    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)) if role
                 else sql.SQL("RESET ROLE"))
