"""`bombom postfix-settings`: the installer's values (see bombom_pipe/ops/postfix.py)."""

from __future__ import annotations

import os

import click

from ..ops.postfix import settings


@click.command("postfix-settings")
def postfix_settings() -> None:
    """Print NAME=value lines for postfix-config/install.sh, from its variables in the
    environment (DEADLINE, *_DSN, CONFIG_FILE, ADMIN_CONFIG, LOOKUP_PASSFILE, BOMBOM_*_PASSWORD).
    The output holds passwords: it is meant for the installer's pipe, not a terminal."""
    try:
        values = settings(dict(os.environ))
    except (KeyError, ValueError) as e:
        name = f"{e.args[0]} is not set" if isinstance(e, KeyError) else str(e)
        raise click.ClickException(name) from None
    for name, value in values.items():
        click.echo(f"{name}={value}")


COMMANDS = (postfix_settings,)
