"""`bombom`: the operators' command. One module here per command group, each a thin click layer
that parses options and formats what the matching bombom_pipe.ops function returns."""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING

import click

from .. import config

if TYPE_CHECKING:
    import psycopg

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

    def connect(self, timeout: int = 10) -> psycopg.Connection:
        from ..ops import connect

        return connect(self.settings, timeout)


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
    from ..maildir import Busy

    if isinstance(e, Busy):
        return str(e)
    if isinstance(e, OSError):
        return f"{e.strerror or first}: {e.filename}" if e.filename else (e.strerror or first)
    return None


class Group(click.Group):
    """Expected failures (configuration, database, files) end as one line and exit status 1."""

    def invoke(self, ctx: click.Context) -> object:
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


#: the command groups, one module each: its COMMANDS are added to `bombom`
GROUPS = (
    "db",
    "members",
    "quarantine",
    "monitor",
    "install",
    "worker",
    "metrics",
    "blocks",
)


def _register() -> None:
    for group in GROUPS:
        for command in importlib.import_module(f".{group}", __name__).COMMANDS:
            main.add_command(command)


_register()
