"""Any host can replay any message (issue 21): the raw bytes of every delivery are kept in
`raw_messages`, in the delivery's transaction, once per message; `bombom replay` on a host whose
spool never saw the message takes them from there; `prune` deletes old rows as it deletes old
files; the delivery role may read and add them, never change or delete them. The same with
real hosts (network namespaces, two MX, a standby): tests/test_scaling.py."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bombom_pipe.spool import raw_path

from .conftest import ALICE, BOB, Env, new_env
from .sandbox import LocalPostgres
from .test_admin import DIGEST, bombom


@pytest.fixture
def other_host(env: Env, pg: LocalPostgres, runner: list[str], workdir: Path) -> Iterator[Env]:
    """A second delivery environment on the same database: another host's empty spool."""
    e = new_env(workdir, runner, env.database_url)
    yield e
    shutil.rmtree(e.base, ignore_errors=True)


def raw_rows(db: psycopg.Connection) -> list[tuple[str, bytes]]:
    return [(sha, bytes(data)) for sha, data in
            db.execute("SELECT sha256, bytes FROM raw_messages ORDER BY sha256")]


def test_each_message_is_kept_once_with_its_delivery(env: Env, db: psycopg.Connection) -> None:
    sha = hashlib.sha256(DIGEST).hexdigest()
    assert env.deliver(DIGEST).returncode == 0
    assert env.deliver(DIGEST).returncode == 0  # a duplicate
    assert env.deliver(DIGEST, recipient=BOB).returncode == 0  # another member
    assert raw_rows(db) == [(sha, DIGEST)]
    garbage = b"\x00\x01 not a mail"
    assert b"quarantined" in env.deliver(garbage).stdout  # the quarantine's bytes too
    assert env.deliver(b"Subject: x\r\n\r\nnobody's\r\n", recipient="nobody@bombom.news"
                       ).returncode == 67  # refused: nothing to replay, nothing kept
    assert sorted(raw_rows(db)) == sorted([(sha, DIGEST),
                                           (hashlib.sha256(garbage).hexdigest(), garbage)])


def test_replay_on_another_host_takes_the_bytes_from_the_database(
        env: Env, other_host: Env, pg: LocalPostgres, db: psycopg.Connection) -> None:
    garbage = b"\x00\x01 quarantined on the first host"
    sha = hashlib.sha256(garbage).hexdigest()
    assert b"quarantined" in env.deliver(garbage).stdout
    assert not raw_path(other_host.spool, sha).exists()
    listed = bombom(other_host, "quarantine", "list", owner_url=pg.url())
    assert sha[:12] in listed.stdout
    r = bombom(other_host, "replay", owner_url=pg.url(), as_delivery_user=True)
    assert r.returncode == 0, r.stderr
    assert "replayed 1: quarantined 1" in r.stdout and "missing" not in r.stdout
    assert raw_path(other_host.spool, sha).read_bytes() == garbage
    assert db.execute("SELECT count(*) FROM deliveries WHERE raw_sha256 = %s AND queue_id "
                      "LIKE 'replay:%%'", (sha,)).fetchone()[0] == 1


def test_replay_refuses_bytes_that_are_not_what_their_key_says(
        env: Env, other_host: Env, pg: LocalPostgres, db: psycopg.Connection) -> None:
    garbage = b"\x00 tampered"
    assert b"quarantined" in env.deliver(garbage).stdout
    db.execute("UPDATE raw_messages SET bytes = 'something else'::bytea")
    r = bombom(other_host, "replay", owner_url=pg.url(), as_delivery_user=True)
    assert "raw file missing for 1" in r.stdout, r.stdout
    assert not any((other_host.spool / "raw").rglob("*.eml"))


def test_prune_deletes_old_rows_and_spares_the_quarantine(
        env: Env, pg: LocalPostgres, db: psycopg.Connection) -> None:
    garbage = b"\x00 quarantined forever"
    assert env.deliver(garbage).returncode == 0
    assert env.deliver(DIGEST).returncode == 0
    for table, column in (("deliveries", "finished_at"), ("deliveries", "started_at"),
                          ("articles", "received_at"), ("raw_messages", "received_at")):
        db.execute(f"UPDATE {table} SET {column} = now() - interval '40 days'")
    r = bombom(env, "prune", "--days", "30", owner_url=pg.url())
    assert "would delete (dry run; --apply to delete) in the database: 1 raw messages" in r.stdout
    assert len(raw_rows(db)) == 2
    r = bombom(env, "prune", "--days", "30", "--apply", owner_url=pg.url())
    assert "deleted in the database: 1 raw messages" in r.stdout, r.stdout
    assert [sha for sha, _ in raw_rows(db)] == [hashlib.sha256(garbage).hexdigest()]


def test_stats_counts_the_databases_copies(env: Env, pg: LocalPostgres,
                                          db: psycopg.Connection) -> None:
    assert env.deliver(DIGEST).returncode == 0
    r = bombom(env, "stats", owner_url=pg.url())
    assert f"raw messages in the database: 1, {len(DIGEST) / 1e6:.1f} MB" in r.stdout, r.stdout
    data = json.loads(bombom(env, "stats", "--json", owner_url=pg.url()).stdout)
    assert data["raw_messages"]["rows"] == 1
    assert data["raw_messages"]["bytes"] == len(DIGEST)
    assert data["deliveries_by_edge"] == {"unix-socket": 1}


def test_delivery_role_reads_and_adds_raw_messages_only(env: Env, pg: LocalPostgres,
                                                        db: psycopg.Connection) -> None:
    assert env.deliver(DIGEST).returncode == 0
    with psycopg.connect(pg.url(user="bombom_deliver")) as conn:
        assert conn.execute("SELECT count(*) FROM raw_messages").fetchone()[0] == 1
        for sql in ("DELETE FROM raw_messages", "UPDATE raw_messages SET bytes = ''",
                    "TRUNCATE raw_messages"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)
            conn.rollback()


def test_a_delivery_over_a_unix_socket_names_no_edge_host(env: Env, db: psycopg.Connection) -> None:
    """A delivery over a unix socket names no edge host; the column is the database's to fill."""
    assert env.deliver(DIGEST, recipient=ALICE).returncode == 0
    assert db.execute("SELECT edge_address FROM deliveries").fetchall() == [(None,)]


def test_a_server_turned_read_only_is_retried_on_a_new_connection(
        env: Env, db: psycopg.Connection) -> None:
    """What a delivery meets on a kept connection to a demoted primary, or a standby that libpq
    could not tell apart: 25006 (read-only transaction). It is "try again on a new connection"
    inside the deadline, as for a broken link, and the delivery ends stored once the server
    takes writes again; never quarantined as the message's fault. (The failover itself, with
    real hosts: tests/test_scaling.py.)"""
    from .sandbox import wait_for

    db.execute("ALTER ROLE bombom_deliver SET default_transaction_read_only = on")
    try:
        p = env.popen("--recipient", ALICE)
        assert p.stdin is not None
        p.stdin.write(DIGEST)
        p.stdin.close()
        wait_for("a retry", lambda: "transient database error, retrying" in
                 env.log.read_text(errors="replace"), 30)
    finally:
        db.execute("ALTER ROLE bombom_deliver RESET default_transaction_read_only")
    assert p.wait(60) == 0 and p.stdout is not None
    out = p.stdout.read()
    assert p.returncode == 0 and out.startswith(b"2.0.0 stored"), out
    assert db.execute("SELECT outcome FROM deliveries").fetchall() == [("stored",)]
