"""The kept raw messages: what is quarantined, replaying them, pruning old files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from .. import spool

if TYPE_CHECKING:
    import psycopg

    from ..config import Settings
    from ..log import Log
    from ..outcomes import Outcome

#: quarantined deliveries that no later delivery of the same bytes to the same recipient resolved
UNRESOLVED = """
    SELECT q.id, q.finished_at, q.recipient, q.raw_sha256, q.detail, q.envelope_sender,
           q.queue_id, q.client_address
    FROM deliveries q
    WHERE q.outcome = 'quarantined'
      AND NOT EXISTS (SELECT 1 FROM deliveries l  -- delivered, blocked or quarantined again later
                      WHERE l.raw_sha256 = q.raw_sha256 AND l.recipient = q.recipient
                        AND l.outcome IN ('stored', 'duplicate', 'quarantined', 'blocked')
                        AND l.id > q.id)
"""

#: the latest delivery of each message and recipient that kept a raw file
DELIVERED = """
    SELECT DISTINCT ON (q.raw_sha256, q.recipient) q.id, q.finished_at, q.recipient,
           q.raw_sha256, q.detail, q.envelope_sender, q.queue_id, q.client_address
    FROM deliveries q WHERE q.outcome IN ('stored', 'duplicate', 'quarantined', 'blocked')
"""


class Kept(NamedTuple):
    """One delivery whose raw message is kept in the spool."""

    id: int
    finished_at: datetime
    recipient: str
    raw_sha256: str
    detail: str | None
    envelope_sender: str | None
    queue_id: str | None
    client_address: str | None = None  # with the envelope sender, what SPF is evaluated on


def unresolved(conn: psycopg.Connection) -> list[Kept]:
    """Every unresolved quarantined delivery, oldest first."""
    return [Kept(*row) for row in conn.execute(UNRESOLVED + " ORDER BY q.id")]


def count_unresolved(conn: psycopg.Connection) -> int:
    return conn.execute(f"SELECT count(*) FROM ({UNRESOLVED}) u").fetchone()[0]


def replay_targets(conn: psycopg.Connection, everything: bool, since: datetime | None = None,
                   until: datetime | None = None) -> list[Kept]:
    """What `replay` delivers again: the unresolved quarantine, or with `everything` each kept
    message and recipient, delivered in [since, until) (naive times are UTC)."""
    lo = _utc(since) or datetime(1970, 1, 1, tzinfo=UTC)
    hi = _utc(until) or datetime.now(UTC) + timedelta(days=1)
    order = " ORDER BY q.raw_sha256, q.recipient, q.id DESC" if everything else " ORDER BY q.id"
    query = (DELIVERED if everything else UNRESOLVED) + \
        " AND q.finished_at >= %s AND q.finished_at < %s" + order
    return [Kept(*row) for row in conn.execute(query, (lo, hi))]


def _utc(when: datetime | None) -> datetime | None:
    return when.replace(tzinfo=UTC) if when and when.tzinfo is None else when


def delivery_user(spool_dir: Path) -> str:
    """The name of the spool's owner, the user bombom-deliver runs as."""
    import pwd

    try:
        return pwd.getpwuid(spool_dir.stat().st_uid).pw_name
    except (OSError, KeyError):
        return "<the delivery user>"


def restore_raw(conn: psycopg.Connection, spool_dir: Path, sha256: str) -> bool:
    """Put a message's raw bytes into this host's spool from `raw_messages` when the spool lacks
    them (it was delivered through another host, or pruned here); False when neither has them.
    Bytes that do not hash to their key are refused, never written."""
    import hashlib

    if spool.raw_path(spool_dir, sha256).exists():
        return True
    row = conn.execute("SELECT bytes FROM raw_messages WHERE sha256 = %s", (sha256,)).fetchone()
    if row is None or hashlib.sha256(row[0]).hexdigest() != sha256:
        return False
    spool.save_bytes(spool_dir, "raw", bytes(row[0]), ".eml")
    return True


def replay(settings: Settings, kept: Kept, log: Log) -> Outcome | None:
    """Deliver a kept message again as bombom-deliver does, in a confined child watched from
    outside (so a message whose parsing overran is quarantined again, not replayed forever);
    never through the worker. None: its raw file is gone."""
    import time

    from .. import protocol, supervisor

    path = spool.raw_path(settings.spool_dir, kept.raw_sha256)
    if not path.exists():
        return None
    job = protocol.Job.make(
        kept.raw_sha256, path.stat().st_size, "replay", time.time(),
        time.time() + settings.deadline_seconds, [(kept.recipient, None)],
        sender=kept.envelope_sender, client_address=kept.client_address,
        queue_id=f"replay:{kept.queue_id or '-'}")
    outcome, _ = supervisor.cold(settings, job, log, ident="bombom-replay")
    return outcome


def prune_database(conn: psycopg.Connection, days: int) -> tuple[int, int]:
    """(rows, bytes) of `raw_messages` that `prune` deletes with the same `days` (it spares
    what it spares in the spool)."""
    cutoff = datetime.now(UTC) - timedelta(days=days)
    return conn.execute(
        "SELECT count(*), coalesce(sum(octet_length(bytes)), 0) FROM raw_messages"
        " WHERE received_at < %s AND sha256 <> ALL(%s)", (cutoff, list(_spared(conn, cutoff)))
    ).fetchone()


def _spared(conn: psycopg.Connection, cutoff: datetime) -> set[str]:
    """The raw messages `prune` keeps: used within the window, of a keep_forever newsletter,
    or the only copy of an unresolved quarantined delivery."""
    return {r[0] for r in conn.execute(
        """SELECT raw_sha256 FROM deliveries WHERE finished_at >= %s
           UNION SELECT a.raw_sha256 FROM articles a JOIN newsletters n
                 ON n.id = a.newsletter_id WHERE n.keep_forever
           UNION SELECT raw_sha256 FROM (""" + UNRESOLVED + ") u", (cutoff,))}


def prune(conn: psycopg.Connection, spool_dir: Path, days: int,
          apply: bool) -> tuple[int, int]:
    """(count, bytes) of this host's raw files and attachments older than `days` that nothing
    spares; deleted only with `apply`, and with them the same raw messages in `raw_messages`.
    Spared: anything of a newsletter marked keep_forever, raw files of unresolved quarantined
    deliveries (the only copy), and anything the database used within the window. Only files
    of the spool's own layout are considered; links are never followed."""
    cutoff = datetime.now(UTC) - timedelta(days=days)
    keep_raw = _spared(conn, cutoff)
    keep_att = {r[0] for r in conn.execute(
        """SELECT t.sha256 FROM attachments t JOIN articles a ON a.id = t.article_id
           LEFT JOIN newsletters n ON n.id = a.newsletter_id
           WHERE a.received_at >= %s OR n.keep_forever""", (cutoff,))}
    if apply:
        conn.execute("DELETE FROM raw_messages WHERE received_at < %s AND sha256 <> ALL(%s)",
                     (cutoff, list(keep_raw)))
    limit, count, size = cutoff.timestamp(), 0, 0
    for kind, keep in (("raw", keep_raw), ("att", keep_att)):
        for f in spool.files(spool_dir, kind):  # never follows the owner's links
            if f.sha256 in keep or f.stat.st_mtime >= limit:
                continue
            count += 1
            size += f.stat.st_size
            if apply:
                f.unlink()
    return count, size
