"""`bombom init-db`: the schema and the least-privilege roles (bombom_pipe/ops/db.py)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

from ..ops.db import init_db

if TYPE_CHECKING:
    from . import Context


@click.command("init-db")
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
def init_db_command(obj: Context, owner: str | None, delivery_role: str | None,
            lookup_role: str | None) -> None:
    """Create or upgrade the schema and the least-privilege roles (safe to run twice).

    Run it with the owner's DSN. Passwords come from the environment, never from argv.
    """
    with obj.connect() as conn:
        done = init_db(conn, owner, {"delivery": delivery_role, "lookup": lookup_role},
                       os.environ)
    if done.owner:
        click.echo(f"owner {done.owner}: owns the database")
    click.echo("applied: " + ", ".join(done.applied) if done.applied else "schema is up to date")
    for kind, role in done.granted:
        click.echo(f"{kind} role {role}: granted")


COMMANDS = (init_db_command,)
