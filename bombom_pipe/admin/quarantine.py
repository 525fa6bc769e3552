"""`bombom quarantine list`, `bombom replay`, `bombom prune`: the kept raw messages."""

from __future__ import annotations

import collections
import os
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from . import Context

#: quarantined deliveries that no later delivery of the same bytes to the same recipient resolved
UNRESOLVED = """
    SELECT q.id, q.finished_at, q.recipient, q.raw_sha256, q.detail, q.envelope_sender,
           q.queue_id
    FROM deliveries q
    WHERE q.outcome = 'quarantined'
      AND NOT EXISTS (SELECT 1 FROM deliveries s
                      WHERE s.raw_sha256 = q.raw_sha256 AND s.recipient = q.recipient
                        AND s.outcome IN ('stored', 'duplicate') AND s.id > q.id)
      AND NOT EXISTS (SELECT 1 FROM deliveries l
                      WHERE l.raw_sha256 = q.raw_sha256 AND l.recipient = q.recipient
                        AND l.outcome = 'quarantined' AND l.id > q.id)
"""


@click.group("quarantine")
def quarantine() -> None:
    """Messages kept because they could not be stored as articles."""


@quarantine.command("list")
@click.pass_obj
def quarantine_list(obj: Context) -> None:
    """Each unresolved quarantined delivery and why."""
    with obj.connect() as conn:
        rows = conn.execute(UNRESOLVED + " ORDER BY q.id").fetchall()
    for did, when, rcpt, sha, detail, _, qid in rows:
        click.echo(f"{did}\t{when:%Y-%m-%d %H:%M}\t{qid or '-'}\t{rcpt}\t{sha[:12]}\t{detail}")
    click.echo(f"{len(rows)} quarantined", err=True)


def _date(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value).replace(tzinfo=UTC) if value else None


@click.command()
@click.option("--all", "everything", is_flag=True,
              help="every delivered message in the date range, not only the quarantined")
@click.option("--since", help="from this date (YYYY-MM-DD), by delivery time")
@click.option("--until", help="before this date (YYYY-MM-DD)")
@click.pass_obj
def replay(obj: Context, everything: bool, since: str | None, until: str | None) -> None:
    """Parse kept raw messages again and store them, through the delivery code path.

    Idempotent: a message already stored for its recipient stays one article (duplicate).
    Run it as the delivery user, like bombom-deliver: files it writes must stay theirs.
    """
    from ..deadline import Deadline
    from ..deliver import Envelope, deliver_saved
    from ..log import Log, dsn_secrets
    from ..spool import Saved, raw_path

    settings = obj.settings
    if os.geteuid() == 0:
        import pwd

        try:
            user = pwd.getpwuid(settings.spool_dir.stat().st_uid).pw_name
        except (OSError, KeyError):
            user = "<the delivery user>"
        raise click.ClickException(f"run replay as the delivery user: runuser -u {user} -- "
                                   "bombom replay ...")
    query = UNRESOLVED if not everything else """
        SELECT DISTINCT ON (q.raw_sha256, q.recipient) q.id, q.finished_at, q.recipient,
               q.raw_sha256, q.detail, q.envelope_sender, q.queue_id
        FROM deliveries q WHERE q.outcome IN ('stored', 'duplicate', 'quarantined')"""
    query += " AND q.finished_at >= %s AND q.finished_at < %s"
    lo = _date(since) or datetime(1970, 1, 1, tzinfo=UTC)
    hi = _date(until) or datetime.now(UTC) + timedelta(days=1)
    with obj.connect() as conn:
        targets = conn.execute(query, (lo, hi)).fetchall()
    log = Log(settings.log, ident="bombom-replay",
              secrets=dsn_secrets(settings.database_url) + dsn_secrets(settings.admin_database_url))
    tally: collections.Counter[str] = collections.Counter()
    missing = []
    with click.progressbar(targets, label=f"replaying {len(targets)}") as bar:
        for _, _, rcpt, sha, _, sender, qid in bar:
            path = raw_path(settings.spool_dir, sha)
            if not path.exists():
                missing.append(sha)
                continue
            saved = Saved(sha, path, path.stat().st_size)
            env = Envelope(recipient=rcpt, sender=sender, queue_id=f"replay:{qid or '-'}")
            result = deliver_saved(settings, saved, env, Deadline(settings.deadline_seconds), log)
            tally[result.outcome.value] += 1
    summary = ", ".join(f"{k} {v}" for k, v in sorted(tally.items())) or "nothing to replay"
    click.echo(f"replayed {sum(tally.values())}: {summary}"
               + (f"; raw file missing for {len(missing)}" if missing else ""))


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
    from .. import spool

    settings = obj.settings
    cutoff = datetime.now(UTC) - timedelta(days=days)
    with obj.connect() as conn:
        keep_raw = {r[0] for r in conn.execute(
            """SELECT raw_sha256 FROM deliveries WHERE finished_at >= %s
               UNION SELECT a.raw_sha256 FROM articles a JOIN newsletters n
                     ON n.id = a.newsletter_id WHERE n.keep_forever
               UNION SELECT raw_sha256 FROM (""" + UNRESOLVED + ") u", (cutoff,))}
        keep_att = {r[0] for r in conn.execute(
            """SELECT t.sha256 FROM attachments t JOIN articles a ON a.id = t.article_id
               LEFT JOIN newsletters n ON n.id = a.newsletter_id
               WHERE a.received_at >= %s OR n.keep_forever""", (cutoff,))}
    limit, count, size = cutoff.timestamp(), 0, 0
    for kind, keep in (("raw", keep_raw), ("att", keep_att)):
        for f in spool.files(settings.spool_dir, kind):  # never follows the owner's links
            if f.sha256 in keep or f.stat.st_mtime >= limit:
                continue
            count += 1
            size += f.stat.st_size
            if apply:
                f.unlink()
    verb = "deleted" if apply else "would delete (dry run; --apply to delete)"
    click.echo(f"{verb}: {count} files, {size / 1e6:.1f} MB older than {days} days")


COMMANDS = (quarantine, replay, prune)
