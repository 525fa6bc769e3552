"""`bombom members add|list`: who may receive mail (bombom_pipe/ops/members.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ..ops import members as ops

if TYPE_CHECKING:
    from . import Context


@click.group()
def members() -> None:
    """Who may receive mail."""


@members.command("add")
@click.argument("address")
@click.pass_obj
def members_add(obj: Context, address: str) -> None:
    """Add a member by address (stored lower-case, without +tag)."""
    try:
        with obj.connect() as conn:
            address, new_id = ops.add(conn, address)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="ADDRESS") from None
    click.echo(f"added {address} (id {new_id})" if new_id else f"{address} is already a member")


@members.command("list")
@click.pass_obj
def members_list(obj: Context) -> None:
    """List members with their article counts."""
    with obj.connect() as conn:
        for mid, address, n in ops.with_counts(conn):
            click.echo(f"{mid}\t{address}\t{n} articles")


COMMANDS = (members,)
