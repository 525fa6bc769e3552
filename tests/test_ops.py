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


DOMAINS = ("bombom.news",)


def test_members_add_normalizes_once_and_refuses_what_is_no_address(
        db: psycopg.Connection) -> None:
    address, new = members.add(db, "Carol+News@Bombom.News", DOMAINS)
    assert address == "carol@bombom.news" and new
    assert members.add(db, "carol@bombom.news", DOMAINS) == ("carol@bombom.news", None)
    for no_address in ("carol", "+news@bombom.news", "@bombom.news", "carol@", "<>"):
        with pytest.raises(ValueError, match="not an address"):
            members.add(db, no_address, DOMAINS)
    for elsewhere in ("carol@bombom.new", "carol@mail.bombom.news", "carol@example.org"):
        with pytest.raises(ValueError, match=r"not in the service domains \(bombom.news\)"):
            members.add(db, elsewhere, DOMAINS)
    assert ("carol@bombom.news", 0) in [(m, n) for _, m, n in members.with_counts(db)]
    assert db.execute("SELECT count(*) FROM members WHERE address LIKE 'carol@%'"
                      ).fetchone()[0] == 1


def test_members_remove_only_without_articles(db: psycopg.Connection) -> None:
    carol, _ = members.add(db, "carol@bombom.news", DOMAINS)
    delivered(db, carol, "c" * 64, "tempfail")
    db.execute("UPDATE deliveries SET member_id = (SELECT id FROM members WHERE address = %s)",
               (carol,))
    assert members.remove(db, "Carol+x@Bombom.News") == carol
    assert members.remove(db, carol) is None
    assert db.execute("SELECT recipient, member_id FROM deliveries").fetchall() == [(carol, None)]
    alice = db.execute("SELECT id FROM members WHERE address = %s", (ALICE,)).fetchone()[0]
    db.execute("INSERT INTO articles (member_id, dedup_key, raw_sha256, raw_path) "
               "VALUES (%s, 'k', %s, 'p')", (alice, "d" * 64))
    with pytest.raises(members.HasArticles, match="has 1 articles"):
        members.remove(db, ALICE)
    assert [m for _, m, _ in members.with_counts(db)] == [ALICE, BOB]


def test_members_map_is_the_members_table(db: psycopg.Connection, tmp_path: Path) -> None:
    """Postfix's own reader (postmap -q) finds every member, +tag stripped by Postfix."""
    import shutil
    import subprocess

    postmap = shutil.which("postmap", path="/usr/sbin:/usr/bin")
    if postmap is None:
        pytest.skip("Postfix is not installed (as root, `make deps` installs it)")
    (tmp_path / "main.cf").write_text("compatibility_level = 3.6\n")
    path = tmp_path / "bombom-members"
    assert members.write_map(db, path) == 2
    members.add(db, "carol@bombom.news", DOMAINS)
    assert members.write_map(db, path) == 3
    members.remove(db, BOB)
    assert members.write_map(db, path) == 2

    def lookup(address: str) -> str:
        return subprocess.run([postmap, "-c", str(tmp_path), "-q", address, f"hash:{path}"],
                              capture_output=True, text=True).stdout.strip()

    assert [lookup(a) for a in (ALICE, "CAROL@bombom.news", BOB)] == ["Maildir/", "Maildir/", ""]
    assert (path.stat().st_mode & 0o777, Path(f"{path}.db").stat().st_mode & 0o777) == (
        0o640, 0o640)


def test_a_second_worker_on_the_same_maildir_is_one_line(tmp_path: Path) -> None:
    from bombom_pipe.admin import explain
    from bombom_pipe.maildir import Busy, Maildir

    Maildir(tmp_path / "Maildir").open()
    with pytest.raises(Busy) as caught:
        Maildir(tmp_path / "Maildir").open()
    assert explain(caught.value) == f"another worker is draining {tmp_path / 'Maildir'}"
