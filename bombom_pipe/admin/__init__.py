"""`bombom`: the operators' command. Each subcommand is a thin layer over one library function."""

from __future__ import annotations

import click

from .. import config


class Context:
    """Lazily loaded settings, so `bombom --help` needs no config file."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._settings: config.Settings | None = None

    @property
    def settings(self) -> config.Settings:
        if self._settings is None:
            try:
                self._settings = config.load(self.config_path)
            except config.ConfigError as e:
                raise click.ClickException(str(e)) from None
        return self._settings

    def connect(self):  # noqa: ANN201
        import psycopg

        url = self.settings.admin_database_url or self.settings.database_url
        try:
            return psycopg.connect(url, autocommit=False)
        except psycopg.OperationalError as e:
            raise click.ClickException(f"database: {e}") from None


@click.group()
@click.option("--config", "config_path", envvar="BOMBOM_CONFIG", metavar="FILE",
              help=f"config file (default {config.DEFAULT_CONFIG})")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """Bombom mail edge: database, members, quarantine, and monitoring."""
    ctx.obj = Context(config_path)


def _register() -> None:
    from . import monitor, quarantine

    for command in (*quarantine.COMMANDS, *monitor.COMMANDS):
        main.add_command(command)


@main.command("init-db")
@click.option("--delivery-role", metavar="ROLE",
              help="create/grant the role bombom-deliver uses (password from "
                   "$BOMBOM_DELIVERY_PASSWORD)")
@click.option("--lookup-role", metavar="ROLE",
              help="create/grant the read-only role Postfix's recipient lookup uses (password "
                   "from $BOMBOM_LOOKUP_PASSWORD)")
@click.pass_obj
def init_db(obj: Context, delivery_role: str | None, lookup_role: str | None) -> None:
    """Create or upgrade the schema and the least-privilege roles (safe to run twice).

    Run it with the owner's DSN. Passwords come from the environment, never from argv.
    """
    import os

    from ..schema import grant, upgrade

    with obj.connect() as conn:
        applied = upgrade(conn)
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
