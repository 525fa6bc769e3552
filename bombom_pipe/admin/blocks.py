"""`bombom block add|remove|list`: the operator's blocklist, refused by Postfix at the door, and
with `--member` a member's own, applied at delivery (bombom_pipe/ops/blocks.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..ops import blocks as ops

if TYPE_CHECKING:
    from . import Context

MEMBER = click.option("--member", metavar="ADDRESS",
                      help="a member's own block (their mail from it is kept, never shown)")


@click.group("block")
def block() -> None:
    """Blocked senders, domains and client networks."""


def _target(text: str) -> ops.Target:
    try:
        return ops.target(text)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="WHAT") from None


def _update_maps(obj: Context) -> None:
    """Pull mode's local copies of the operator's list, beside the members map."""
    path = obj.settings.members_map
    if path and Path(path).parent.is_dir() and Path(path).exists():
        with obj.connect() as conn:
            ops.write_maps(conn, Path(path).parent)


@block.command("add")
@click.argument("what")
@MEMBER
@click.option("--reason", help="why (the operator's note; never sent to anyone)")
@click.pass_obj
def block_add(obj: Context, what: str, member: str | None, reason: str | None) -> None:
    """Block WHAT: an address, a domain, or (not with --member) an IP address or network."""
    t = _target(what)
    try:
        with obj.connect() as conn:
            new = ops.member_add(conn, member, t) if member else ops.add(conn, t, reason)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    if not member:
        _update_maps(obj)
    whose = f" for {member}" if member else ""
    click.echo(f"blocked {t.kind} {t.value}{whose}" if new
               else f"{t.kind} {t.value} was blocked already{whose}")


@block.command("remove")
@click.argument("what")
@MEMBER
@click.pass_obj
def block_remove(obj: Context, what: str, member: str | None) -> None:
    """Lift the block of WHAT (as it was added)."""
    t = _target(what)
    try:
        with obj.connect() as conn:
            gone = ops.member_remove(conn, member, t) if member else ops.remove(conn, t)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    if not gone:
        raise click.ClickException(f"{t.kind} {t.value} is not blocked"
                                   + (f" for {member}" if member else ""))
    if not member:
        _update_maps(obj)
    click.echo(f"unblocked {t.kind} {t.value}" + (f" for {member}" if member else ""))


@block.command("list")
@MEMBER
@click.option("--members", "all_members", is_flag=True, help="every member's own blocks")
@click.pass_obj
def block_list(obj: Context, member: str | None, all_members: bool) -> None:
    """The operator's blocks (kind, value, reason), or members' own (member, sender)."""
    with obj.connect() as conn:
        if member or all_members:
            for address, sender in ops.member_listing(conn, member):
                click.echo(f"{address}\t{sender}")
        else:
            for kind, value, reason in ops.listing(conn):
                click.echo(f"{kind}\t{value}\t{reason or ''}")


@block.command("map")
@click.pass_obj
def block_map(obj: Context) -> None:
    """Rewrite pull mode's local copies of the operator's list (beside members_map) from the
    database; `add` and `remove` do it themselves."""
    path = obj.settings.members_map
    if not path:
        raise click.ClickException("no members_map in the config (make install writes it)")
    with obj.connect() as conn:
        n = ops.write_maps(conn, Path(path).parent)
    click.echo(f"{Path(path).parent}: {n} blocks")


COMMANDS = (block,)
