"""Blocks and volume at delivery, through the real bombom-deliver: a member's block by address,
domain or envelope sender ends as `blocked` (exit 0, no article, the others unaffected), and
every door answers it as done; the operator's argument parsing; the volume count."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from bombom_pipe import lmtp
from bombom_pipe.ops.blocks import (
    CLIENT_REPLY,
    CLIENTS_MAP,
    SENDER_REPLY,
    SENDERS_MAP,
    Target,
    add,
    remove,
    target,
    write_maps,
)
from bombom_pipe.outcomes import DONE, Outcome
from bombom_pipe.store import sender_keys

from .builders import DIGEST
from .conftest import ALICE, BOB, Env
from .sandbox import LocalPostgres
from .test_operator import bombom


def test_every_outcome_that_exits_0_is_answered_250_by_lmtp() -> None:
    assert "blocked" in DONE and "duplicate" in DONE and "tempfail" not in DONE
    for outcome in Outcome:
        reply = lmtp.reply_for(outcome.value, "x")
        assert reply.startswith(b"250 " if outcome.exit_code == 0 else b"451 "), outcome


def test_what_an_operator_may_block() -> None:
    assert target("Spam+x@Junk.Example") == Target("address", "spam@junk.example")
    assert target("junk.example") == Target("domain", "junk.example")
    assert target("192.0.2.7") == Target("client", "192.0.2.7/32")
    assert target("2001:db8::/32") == Target("client", "2001:db8::/32")
    for bad in ("junk", "a b.example", "@junk.example", "x@y", ""):
        with pytest.raises(ValueError):
            target(bad)


def block(db: psycopg.Connection, member: str, sender: str) -> None:
    db.execute("INSERT INTO member_blocks (member_id, sender) SELECT id, %s FROM members "
               "WHERE address = %s", (sender, member))


def outcomes(db: psycopg.Connection) -> list[tuple[str, str]]:
    return db.execute("SELECT recipient, outcome FROM deliveries ORDER BY id").fetchall()


@pytest.mark.parametrize("sender", ["hello@digest.example.com", "digest.example.com",
                                    "example.com", "bounces@esp.example", "esp.example"])
def test_a_members_block_is_blocked_exit_0_and_no_article(env: Env, db: psycopg.Connection,
                                                          sender: str) -> None:
    """By the From address or domain (or a domain above it), or the envelope sender's."""
    block(db, ALICE, sender)
    r = env.deliver(DIGEST, "--sender", "bounces@esp.example")
    assert r.returncode == 0 and r.stdout.startswith(b"2.0.0 blocked by the member: "
                                                     + sender.encode()), r
    assert env.deliver(DIGEST, "--sender", "bounces@esp.example", recipient=BOB).returncode == 0
    assert outcomes(db) == [(ALICE, "blocked"), (BOB, "stored")]
    assert db.execute("SELECT count(*) FROM articles").fetchone() == (1,)
    db.execute("DELETE FROM member_blocks")
    assert b"stored" in env.deliver(DIGEST, "--sender", "bounces@esp.example").stdout


@pytest.mark.parametrize("sender", ["other.example", "com", "mple.com", "x.digest.example.com",
                                    "digest@example.com", "hello@example.com"])
def test_a_block_of_another_sender_changes_nothing(env: Env, db: psycopg.Connection,
                                                   sender: str) -> None:
    block(db, ALICE, sender)
    assert b"stored" in env.deliver(DIGEST).stdout


def test_the_keys_a_block_may_name() -> None:
    assert sender_keys("Hello+x@News.Digest.Example.com", None, "MAILER-DAEMON", "b@esp") == [
        "hello@news.digest.example.com", "news.digest.example.com", "digest.example.com",
        "example.com", "b@esp", "esp"]


def test_past_the_daily_limit_new_articles_are_quarantined(env: Env, db: psycopg.Connection,
                                                           pg: LocalPostgres) -> None:
    env.extra_env["BOMBOM_DOMAIN_DAILY_LIMIT"] = "1"
    assert b"stored" in env.deliver(DIGEST).stdout
    assert b"duplicate" in env.deliver(DIGEST).stdout  # not a new article: not counted
    r = env.deliver(DIGEST.replace(b"Message-ID: <", b"Message-ID: <2."))
    assert r.returncode == 0 and b"quarantined volume: sender domain" in r.stdout, r
    assert db.execute("SELECT messages, quarantined FROM domain_volume").fetchall() == [(2, 1)]
    metrics = bombom(env, "metrics", url=pg.url()).stdout  # totals; a domain is no label
    assert "bombom_volume_domains_over_limit 1.0" in metrics, metrics
    assert "bombom_volume_quarantined_today 1.0" in metrics, metrics
    assert "digest" not in metrics


@pytest.mark.skipif(shutil.which("postmap", path="/usr/sbin:/usr/bin") is None,
                    reason="Postfix is not installed")
def test_pull_modes_local_copies_answer_as_the_database(db: psycopg.Connection,
                                                         tmp_path: Path) -> None:
    """`bombom block map` (pull mode): a hash: table of senders and a cidr: table of clients
    that Postfix answers like the pgsql: maps (550 5.7.1), asked here with postmap -q."""
    (tmp_path / "main.cf").write_text("compatibility_level = 3.6\n")  # postmap -c reads it
    for t in (target("spam@junk.example"), target("junk2.example"), target("192.0.2.0/24")):
        add(db, t)
    assert write_maps(db, tmp_path) == 3

    def ask(key: str, table: str) -> str:
        return subprocess.run(["postmap", "-c", str(tmp_path), "-q", key, table],
                              capture_output=True, text=True).stdout.strip()

    senders, clients = f"hash:{tmp_path / SENDERS_MAP}", f"cidr:{tmp_path / CLIENTS_MAP}"
    assert ask("spam@junk.example", senders) == SENDER_REPLY
    assert ask("junk2.example", senders) == SENDER_REPLY
    assert ask("other@junk.example", senders) == ""
    assert ask("192.0.2.7", clients) == CLIENT_REPLY
    assert ask("192.0.3.7", clients) == ""
    remove(db, target("192.0.2.0/24"))
    assert write_maps(db, tmp_path) == 2 and ask("192.0.2.7", clients) == ""
