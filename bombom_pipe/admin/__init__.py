"""`bombom`: the operators' command. Each subcommand is a thin layer over one library function."""

from __future__ import annotations

import os

import click

from .. import config

ADMIN_CONFIG = config.DEFAULT_CONFIG.with_name("admin.conf")  # written by `make db`, root only


def default_config() -> str | None:
    """The admin config when this user may read it (root after `make db`), else the default."""
    return str(ADMIN_CONFIG) if os.access(ADMIN_CONFIG, os.R_OK) else None


class Context:
    """Lazily loaded settings, so `bombom --help` needs no config file."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path or default_config()
        self._settings: config.Settings | None = None

    @property
    def settings(self) -> config.Settings:
        if self._settings is None:
            self._settings = config.load(self.config_path)
        return self._settings

    def connect(self):  # noqa: ANN201
        import psycopg

        url = self.settings.admin_database_url or self.settings.database_url
        return psycopg.connect(url, autocommit=False, connect_timeout=10)


def explain(e: Exception) -> str | None:
    """One line for a failure an operator can meet and fix; None for a bug (traceback)."""
    import psycopg

    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, config.ConfigError):
        return str(e)
    if isinstance(e, psycopg.errors.InsufficientPrivilege):
        return (f"database: {first} (this role may not do that; admin commands run as root "
                f"with {ADMIN_CONFIG}, written by `make db`)")
    if isinstance(e, psycopg.errors.UndefinedTable | psycopg.errors.UndefinedColumn):
        return f"database: {first} (schema missing or old: run `make db`)"
    if isinstance(e, psycopg.Error):
        return f"database: {first}"
    if isinstance(e, OSError):
        return f"{e.strerror or first}: {e.filename}" if e.filename else (e.strerror or first)
    return None


class Group(click.Group):
    """Expected failures (configuration, database, files) end as one line and exit status 1."""

    def invoke(self, ctx: click.Context):  # noqa: ANN201
        try:
            return super().invoke(ctx)
        except Exception as e:
            message = explain(e)
            if message is None:
                raise
            raise click.ClickException(message) from None


@click.group(cls=Group)
@click.option("--config", "config_path", envvar="BOMBOM_CONFIG", metavar="FILE",
              help=f"config file (default {ADMIN_CONFIG} when readable, else "
                   f"{config.DEFAULT_CONFIG})")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """Bombom mail edge: database, members, quarantine, and monitoring."""
    ctx.obj = Context(config_path)


def _register() -> None:
    from . import install, monitor, quarantine

    for command in (*quarantine.COMMANDS, *monitor.COMMANDS, *install.COMMANDS):
        main.add_command(command)


@main.command("init-db")
@click.option("--delivery-role", metavar="ROLE",
              help="create/grant the role bombom-deliver uses (password from "
                   "$BOMBOM_DELIVERY_PASSWORD)")
@click.option("--owner", metavar="ROLE",
              help="as a superuser: make ROLE (password from $BOMBOM_ADMIN_PASSWORD) the owner "
                   "of the database and its tables, and create the schema as ROLE")
@click.option("--lookup-role", metavar="ROLE",
              help="create/grant the read-only role Postfix's recipient lookup uses (password "
                   "from $BOMBOM_LOOKUP_PASSWORD)")
@click.pass_obj
def init_db(obj: Context, owner: str | None, delivery_role: str | None,
            lookup_role: str | None) -> None:
    """Create or upgrade the schema and the least-privilege roles (safe to run twice).

    Run it with the owner's DSN. Passwords come from the environment, never from argv.
    """
    from ..schema import grant, upgrade
    from ..schema.owner import make_owner, set_role

    with obj.connect() as conn:
        if owner:
            make_owner(conn, owner, os.environ.get("BOMBOM_ADMIN_PASSWORD"))
            click.echo(f"owner {owner}: owns the database")
            set_role(conn, owner)
        applied = upgrade(conn)
        if owner:
            set_role(conn, None)  # creating roles and setting passwords needs the superuser
        click.echo("applied: " + ", ".join(applied) if applied else "schema is up to date")
        for kind, role in (("delivery", delivery_role), ("lookup", lookup_role)):
            if role:
                grant(conn, kind, role, os.environ.get(f"BOMBOM_{kind.upper()}_PASSWORD"))
                click.echo(f"{kind} role {role}: granted")


@main.group()
def members() -> None:
    """Who may receive mail."""


@members.command("add")
@click.argument("address")
@click.pass_obj
def members_add(obj: Context, address: str) -> None:
    """Add a member by address (stored lower-case, without +tag)."""
    from ..store import normalize_address

    address = normalize_address(address)
    if "@" not in address:
        raise click.BadParameter(f"{address!r} is not an address", param_hint="ADDRESS")
    with obj.connect() as conn:
        row = conn.execute(
            "INSERT INTO members (address) VALUES (%s) ON CONFLICT (address) DO NOTHING "
            "RETURNING id", (address,)).fetchone()
    click.echo(f"added {address} (id {row[0]})" if row else f"{address} is already a member")


@members.command("list")
@click.pass_obj
def members_list(obj: Context) -> None:
    """List members with their article counts."""
    with obj.connect() as conn:
        rows = conn.execute(
            """SELECT m.id, m.address, count(a.id) FROM members m
               LEFT JOIN articles a ON a.member_id = m.id GROUP BY m.id ORDER BY m.id""")
        for mid, address, n in rows:
            click.echo(f"{mid}\t{address}\t{n} articles")


_register()
