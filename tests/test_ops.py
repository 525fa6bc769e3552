"""The operator library (bombom_pipe.ops) against the real schema, without the command line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from bombom_pipe.ops import members, quarantine

from .conftest import ALICE, BOB


def delivered(db: psycopg.Connection, recipient: str, sha: str, outcome: str,
              detail: str = "") -> int:
    return db.execute(
        "INSERT INTO deliveries (recipient, raw_sha256, outcome, detail, started_at) "
        "VALUES (%s, %s, %s, %s, now()) RETURNING id",
        (recipient, sha, outcome, detail)).fetchone()[0]


def test_unresolved_is_the_latest_quarantine_no_later_delivery_stored(
        db: psycopg.Connection) -> None:
    a, b = "a" * 64, "b" * 64
    delivered(db, ALICE, a, "quarantined")
    delivered(db, ALICE, a, "stored")  # a parser fix, replayed: resolved
    delivered(db, BOB, a, "quarantined", "first try")
    bob_again = delivered(db, BOB, a, "quarantined", "replayed, still unparsable")
    alice_b = delivered(db, ALICE, b, "quarantined")
    delivered(db, ALICE, b, "tempfail")  # a failed replay resolves nothing
    kept = quarantine.unresolved(db)
    assert [(k.id, k.recipient, k.raw_sha256) for k in kept] == [
        (bob_again, BOB, a), (alice_b, ALICE, b)]
    assert kept[0].detail == "replayed, still unparsable"
    assert quarantine.count_unresolved(db) == 2


def test_replay_targets_by_date_and_with_everything(db: psycopg.Connection) -> None:
    a, b = "a" * 64, "b" * 64
    delivered(db, ALICE, a, "stored")
    delivered(db, ALICE, a, "duplicate")
    delivered(db, ALICE, b, "quarantined")
    delivered(db, BOB, b, "nouser")  # nothing kept to replay
    assert [k.raw_sha256 for k in quarantine.replay_targets(db, everything=False)] == [b]
    assert sorted(k.raw_sha256 for k in quarantine.replay_targets(db, everything=True)) == [a, b]
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    assert quarantine.replay_targets(db, True, since=tomorrow) == []
    assert quarantine.replay_targets(db, True, until=tomorrow.replace(tzinfo=None) -
                                     timedelta(days=2)) == []


def test_members_add_normalizes_once_and_refuses_what_is_no_address(
        db: psycopg.Connection) -> None:
    address, new = members.add(db, "Carol+News@Bombom.News")
    assert address == "carol@bombom.news" and new
    assert members.add(db, "carol@bombom.news") == ("carol@bombom.news", None)
    for no_address in ("carol", "+news@bombom.news", "@bombom.news", "carol@", "<>"):
        with pytest.raises(ValueError, match="not an address"):
            members.add(db, no_address)
    assert ("carol@bombom.news", 0) in [(m, n) for _, m, n in members.with_counts(db)]


def test_a_second_worker_on_the_same_maildir_is_one_line(tmp_path: Path) -> None:
    from bombom_pipe.admin import explain
    from bombom_pipe.maildir import Busy, Maildir

    Maildir(tmp_path / "Maildir").open()
    with pytest.raises(Busy) as caught:
        Maildir(tmp_path / "Maildir").open()
    assert explain(caught.value) == f"another worker is draining {tmp_path / 'Maildir'}"
