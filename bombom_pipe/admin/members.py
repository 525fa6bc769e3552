"""`bombom members add|remove|list|map`: who may receive mail (bombom_pipe/ops/members.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..ops import members as ops

if TYPE_CHECKING:
    from . import Context


@click.group()
def members() -> None:
    """Who may receive mail."""


def _update_map(obj: Context) -> None:
    """Postfix's local table of members, when the installer made one (members_map)."""
    path = obj.settings.members_map
    if path and Path(path).exists():
        with obj.connect() as conn:
            ops.write_map(conn, Path(path))


@members.command("add")
@click.argument("address")
@click.pass_obj
def members_add(obj: Context, address: str) -> None:
    """Add a member by address (stored lower-case, without +tag), in a service domain."""
    try:
        with obj.connect() as conn:
            address, new_id = ops.add(conn, address, obj.settings.domains)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="ADDRESS") from None
    _update_map(obj)
    click.echo(f"added {address} (id {new_id})" if new_id else f"{address} is already a member")


@members.command("remove")
@click.argument("address")
@click.pass_obj
def members_remove(obj: Context, address: str) -> None:
    """Remove a member that has no articles (Postfix refuses its mail from then on)."""
    try:
        with obj.connect() as conn:
            removed = ops.remove(conn, address)
    except ops.HasArticles as e:
        raise click.ClickException(str(e)) from None
    if removed is None:
        raise click.ClickException(f"{address} is not a member")
    _update_map(obj)
    click.echo(f"removed {removed}")


@members.command("list")
@click.pass_obj
def members_list(obj: Context) -> None:
    """List members with their article counts."""
    with obj.connect() as conn:
        for mid, address, n in ops.with_counts(conn):
            click.echo(f"{mid}\t{address}\t{n} articles")


@members.command("map")
@click.pass_obj
def members_map(obj: Context) -> None:
    """Rewrite Postfix's local table of members (members_map) from the database. `add` and
    `remove` keep it current; run this after changing members any other way."""
    path = obj.settings.members_map
    if not path:
        raise click.ClickException("no members_map in the config (make install writes it)")
    with obj.connect() as conn:
        n = ops.write_map(conn, Path(path))
    click.echo(f"{path}: {n} members")


COMMANDS = (members,)
