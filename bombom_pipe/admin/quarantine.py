"""`bombom quarantine list`, `bombom replay`, `bombom prune`: the kept raw messages
(bombom_pipe/ops/quarantine.py)."""

from __future__ import annotations

import collections
import os
from datetime import datetime
from typing import TYPE_CHECKING

import click

from ..ops import quarantine as ops

if TYPE_CHECKING:
    from . import Context


@click.group("quarantine")
def quarantine() -> None:
    """Messages kept because they could not be stored as articles."""


@quarantine.command("list")
@click.pass_obj
def quarantine_list(obj: Context) -> None:
    """Each unresolved quarantined delivery and why."""
    with obj.connect() as conn:
        kept = ops.unresolved(conn)
    click.echo("id\tfinished\tqueue id\trecipient\tsha256\twhy")
    for k in kept:
        click.echo(f"{k.id}\t{k.finished_at:%Y-%m-%d %H:%M}\t{k.queue_id or '-'}\t{k.recipient}"
                   f"\t{k.raw_sha256[:12]}\t{k.detail}")
    click.echo(f"{len(kept)} quarantined", err=True)


DATE = click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"])


@click.command()
@click.option("--all", "everything", is_flag=True,
              help="every delivered message in the date range, not only the quarantined")
@click.option("--since", type=DATE, help="from this date (YYYY-MM-DD, UTC), by delivery time")
@click.option("--until", type=DATE, help="before this date (YYYY-MM-DD, UTC)")
@click.pass_obj
def replay(obj: Context, everything: bool, since: datetime | None,
           until: datetime | None) -> None:
    """Parse kept raw messages again and store them, through the delivery code path.

    Idempotent: a message already stored for its recipient stays one article (duplicate).
    Run it as the delivery user, like bombom-deliver: files it writes must stay theirs.
    """
    from ..log import Log

    settings = obj.settings
    if os.geteuid() == 0:
        user = ops.delivery_user(settings.spool_dir)
        raise click.ClickException(f"run replay as the delivery user: runuser -u {user} -- "
                                   "bombom replay ...")
    with obj.connect() as conn:
        targets = ops.replay_targets(conn, everything, since, until)
        for kept in targets:  # delivered through another host, or pruned here: from the database
            ops.restore_raw(conn, settings.spool_dir, kept.raw_sha256)
    log = Log.for_settings(settings, ident="bombom-replay")
    tally: collections.Counter[str] = collections.Counter()
    missing = 0
    with click.progressbar(targets, label=f"replaying {len(targets)}") as bar:
        for kept in bar:
            outcome = ops.replay(settings, kept, log)
            if outcome is None:
                missing += 1
            else:
                tally[outcome.value] += 1
    summary = ", ".join(f"{k} {v}" for k, v in sorted(tally.items())) or "nothing to replay"
    click.echo(f"replayed {sum(tally.values())}: {summary}"
               + (f"; raw file missing for {missing}" if missing else ""))


@click.command()
@click.option("--days", type=click.IntRange(min=1), required=True,
              help="delete what is older than this many days")
@click.option("--apply", is_flag=True, help="really delete (default: only show what would go)")
@click.pass_obj
def prune(obj: Context, days: int, apply: bool) -> None:
    """Delete old raw files and attachments; dry-run unless --apply.

    Spared: anything of a newsletter marked keep_forever, raw files of unresolved quarantined
    deliveries (the only copy), and anything the database used within the window. Only files
    of the spool's own layout are considered; links in it are never followed.
    """
    with obj.connect() as conn:
        rows, row_bytes = ops.prune_database(conn, days)
        count, size = ops.prune(conn, obj.settings.spool_dir, days, apply)
    verb = "deleted" if apply else "would delete (dry run; --apply to delete)"
    click.echo(f"{verb}: {count} files, {size / 1e6:.1f} MB older than {days} days")
    click.echo(f"{verb} in the database: {rows} raw messages, {row_bytes / 1e6:.1f} MB")


COMMANDS = (quarantine, replay, prune)
