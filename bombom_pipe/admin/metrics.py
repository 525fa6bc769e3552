"""`bombom metrics`: the host's metrics in Prometheus's text format (bombom_pipe/metrics.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from . import Context


@click.command()
@click.option("--textfile", type=click.Path(dir_okay=False, path_type=Path),
              help="write here atomically (node_exporter's textfile collector: a *.prom file "
                   "in its --collector.textfile.directory) instead of printing")
@click.option("--maildir", type=click.Path(file_okay=False, path_type=Path),
              help="pull mode's Maildir (default: the one Postfix writes, if in pull mode)")
@click.pass_obj
def metrics(obj: Context, textfile: Path | None, maildir: Path | None) -> None:
    """One sample of the deliveries table (every door, the cold path too), the quarantine, the
    Maildir backlog, Postfix's queue for the domains and the spool: for push mode, where no
    worker serves metrics_listen (run it from a timer, e.g. every minute)."""
    from ..metrics import textfile as sample
    from ..ops.monitor import survey

    settings = obj.settings
    text = sample(settings, maildir or survey(settings).maildir, textfile)
    if textfile is None:
        click.echo(text, nl=False)


COMMANDS = (metrics,)
