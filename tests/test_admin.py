"""The `bombom` operator command against the real database, run as a subprocess."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from bombom_pipe.schema import (
    GRANTS,
    NEWSLETTER_UPSERT_COLUMNS,
    SUBSCRIPTION_UPSERT_COLUMNS,
    grant,
    migrations,
    upgrade,
)
from bombom_pipe.spool import raw_path

from .conftest import ALICE, EXAMPLES, Env
from .sandbox import DELIVER_USER, LocalPostgres, give

DIGEST = (EXAMPLES / "english-digest.eml").read_bytes()


def bombom(env: Env, *args: str, owner_url: str, as_delivery_user: bool = False
           ) -> subprocess.CompletedProcess[str]:
    """Run `bombom` with the test config; the owner DSN for the admin side. `check` is pointed at
    a Postfix configuration that does not exist, whatever this machine runs: its queue part is
    UNKNOWN here (tests/test_check_postfix.py runs it against a private Postfix)."""
    environ = {**os.environ, "BOMBOM_ADMIN_DATABASE_URL": owner_url, "BOMBOM_LOG": str(env.log),
               "MAIL_CONFIG": "/nonexistent/postfix"}
    argv = [sys.executable, "-m", "bombom_pipe.admin", "--config", str(env.config), *args]
    if as_delivery_user and os.geteuid() == 0:
        python = next(a for a in env.runner if a.endswith("/bin/python"))
        argv = [*env.runner[:env.runner.index("env")], "env", f"PYTHONPATH={env.src}",
                f"BOMBOM_ADMIN_DATABASE_URL={owner_url}", python, "-m", "bombom_pipe.admin",
                "--config", str(env.config), *args]
    return subprocess.run(argv, capture_output=True, text=True, env=environ, timeout=120)


def test_init_db_twice_changes_nothing(env: Env, pg: LocalPostgres, db: psycopg.Connection) -> None:
    r = bombom(env, "init-db", "--delivery-role", "bombom_deliver", owner_url=pg.url())
    assert r.returncode == 0, r.stderr
    assert "schema is up to date" in r.stdout and "delivery role bombom_deliver" in r.stdout
    versions = db.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
    assert [v[0] for v in versions] == [m[0] for m in migrations()]


def test_members_add_normalizes_and_lists(env: Env, pg: LocalPostgres,
                                          db: psycopg.Connection) -> None:
    r = bombom(env, "members", "add", "Carol+x@Bombom.News", owner_url=pg.url())
    assert r.returncode == 0 and "added carol@bombom.news" in r.stdout
    r = bombom(env, "members", "add", "carol@bombom.news", owner_url=pg.url())
    assert "already a member" in r.stdout
    r = bombom(env, "members", "list", owner_url=pg.url())
    assert [line.split("\t")[1] for line in r.stdout.splitlines()] == [
        ALICE, "bob@bombom.news", "carol@bombom.news"]
    r = bombom(env, "members", "add", "dave@elsewhere.example", owner_url=pg.url())
    assert r.returncode == 2 and "not in the service domains (bombom.news)" in r.stderr, r.stderr
    r = bombom(env, "members", "remove", "Carol+y@bombom.news", owner_url=pg.url())
    assert (r.returncode, r.stdout) == (0, "removed carol@bombom.news\n"), r.stderr
    r = bombom(env, "members", "remove", "carol@bombom.news", owner_url=pg.url())
    assert r.returncode == 1 and r.stderr == "Error: carol@bombom.news is not a member\n"
    assert db.execute("SELECT count(*) FROM members").fetchone()[0] == 2


def test_delivery_role_cannot_delete_or_alter(pg: LocalPostgres) -> None:
    with psycopg.connect(pg.url(user="bombom_deliver")) as conn:
        for sql in ("DELETE FROM articles", "DROP TABLE deliveries",
                    "ALTER TABLE members ADD COLUMN x int", "UPDATE members SET address = 'x'"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)
            conn.rollback()


def test_delivery_role_updates_only_the_upserted_newsletter_columns(
        env: Env, db: psycopg.Connection, pg: LocalPostgres) -> None:
    assert env.deliver(DIGEST).returncode == 0
    with psycopg.connect(pg.url(user="bombom_deliver")) as conn:
        for column in ("keep_forever", "sender_address", "first_seen_at"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"UPDATE newsletters SET {column} = {column}")
            conn.rollback()
    # the upsert itself still works: a second message from the same sender updates its row
    assert env.deliver(DIGEST.replace(b"<digest-2026-11-30@", b"<digest-2@")).returncode == 0
    assert db.execute("SELECT count(*), bool_or(keep_forever) FROM newsletters").fetchone() == (
        1, False)


def test_delivery_role_upserts_only_the_members_links(
        env: Env, db: psycopg.Connection, pg: LocalPostgres) -> None:
    """On subscriptions the delivery role may insert and update the links and last_seen_at its
    upsert sets: not move a row to another member or newsletter, not delete one."""
    assert env.deliver(DIGEST).returncode == 0
    assert env.deliver(DIGEST.replace(b"<digest-2026-11-30@", b"<digest-2@")).returncode == 0
    with psycopg.connect(pg.url(user="bombom_deliver")) as conn:
        for sql in ("UPDATE subscriptions SET member_id = member_id",
                    "UPDATE subscriptions SET newsletter_id = newsletter_id",
                    "UPDATE subscriptions SET first_seen_at = now()",
                    "DELETE FROM subscriptions", "TRUNCATE subscriptions"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)
            conn.rollback()
        updatable = {r[0] for r in conn.execute(
            """SELECT attname FROM pg_attribute WHERE attrelid = 'subscriptions'::regclass
               AND attnum > 0 AND NOT attisdropped
               AND has_column_privilege('bombom_deliver', 'subscriptions', attname, 'UPDATE')""")}
    assert updatable == set(SUBSCRIPTION_UPSERT_COLUMNS)
    assert db.execute("SELECT count(*), bool_and(last_seen_at > first_seen_at)"
                      " FROM subscriptions").fetchone() == (1, True)


def _column_updates(conn: psycopg.Connection, role: str) -> set[str]:
    return {r[0] for r in conn.execute(
        """SELECT attname FROM pg_attribute WHERE attrelid = 'newsletters'::regclass
           AND attnum > 0 AND NOT attisdropped
           AND has_column_privilege(%s, 'newsletters', attname, 'UPDATE')""", (role,))}


def test_upgrade_narrows_a_delivery_role_granted_before(pg: LocalPostgres) -> None:
    """A database whose delivery role got UPDATE on the whole table keeps delivering after the
    upgrade, with UPDATE on the upserted columns only."""
    name = f"pre003_{os.getpid()}"
    pg.createdb(name)
    try:
        with psycopg.connect(pg.url(dbname=name), autocommit=True) as conn:
            for _, _, sql in migrations()[:2]:
                conn.execute(sql)  # type: ignore[arg-type]
            conn.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, "
                         "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
            conn.execute("INSERT INTO schema_migrations (version, name) VALUES (1, 'init'), "
                         "(2, 'fidelity')")
            conn.execute("DROP ROLE IF EXISTS legacy_deliver")
            conn.execute("CREATE ROLE legacy_deliver")
            conn.execute("GRANT SELECT, INSERT, UPDATE ON newsletters TO legacy_deliver")
            assert "keep_forever" in _column_updates(conn, "legacy_deliver")
            upgrade(conn)
            assert not conn.execute("SELECT has_table_privilege('legacy_deliver', "
                                    "'newsletters', 'UPDATE')").fetchone()[0]
            assert _column_updates(conn, "legacy_deliver") == set(NEWSLETTER_UPSERT_COLUMNS)
            grant(conn, "delivery", "legacy_deliver")  # and init-db grants the same
            assert _column_updates(conn, "legacy_deliver") == set(NEWSLETTER_UPSERT_COLUMNS)
            assert "UPDATE (" in GRANTS["delivery"]["newsletters"]
            conn.execute("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM legacy_deliver")
            conn.execute("REVOKE ALL ON SCHEMA public FROM legacy_deliver")
            conn.execute(f"REVOKE ALL ON DATABASE {name} FROM legacy_deliver")
            conn.execute("DROP ROLE legacy_deliver")
    finally:
        with psycopg.connect(pg.url(dbname="postgres"), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name}")


def test_lookup_role_reads_members_only(pg: LocalPostgres, db: psycopg.Connection) -> None:
    """... and the operator's blocklist (migration 009), which Postfix asks too."""
    db.execute("INSERT INTO operator_blocks (client) VALUES ('192.0.2.0/24')")
    with psycopg.connect(pg.url(user="bombom_lookup")) as conn:
        assert conn.execute("SELECT address FROM members ORDER BY 1").fetchall() == [
            (ALICE,), ("bob@bombom.news",)]
        assert conn.execute("SELECT count(*) FROM operator_blocks "
                            "WHERE client >>= bombom_inet('192.0.2.7')").fetchone() == (1,)
        for key in ("192.0.2", "unknown", "::1", "1.2.3.4.5", "'; --"):  # never an error
            conn.execute("SELECT bombom_inet(%s)", (key,))
        conn.rollback()
        for sql in ("SELECT * FROM articles", "SELECT * FROM member_blocks",
                    "INSERT INTO operator_blocks (sender) VALUES ('x.example')"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)
            conn.rollback()


def test_delivery_role_reads_blocks_and_counts_volume_only(
        pg: LocalPostgres, db: psycopg.Connection) -> None:
    with psycopg.connect(pg.url(user="bombom_deliver")) as conn:
        conn.execute("SELECT * FROM member_blocks")
        conn.execute("INSERT INTO domain_volume (domain, day) VALUES ('x.example', now())")
        conn.execute("UPDATE domain_volume SET messages = messages + 1")
        conn.rollback()
        for sql in ("INSERT INTO member_blocks (member_id, sender) VALUES (1, 'x.example')",
                    "DELETE FROM member_blocks", "SELECT * FROM operator_blocks",
                    "UPDATE domain_volume SET day = now()"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)
            conn.rollback()


def test_quarantine_list_and_replay(env: Env, pg: LocalPostgres, db: psycopg.Connection) -> None:
    garbage = b"\x00\x01 not a mail at all"
    r = env.deliver(garbage)
    assert r.returncode == 0 and b"quarantined" in r.stdout
    assert env.deliver(DIGEST).returncode == 0
    listed = bombom(env, "quarantine", "list", owner_url=pg.url())
    assert listed.returncode == 0
    header, *lines = listed.stdout.splitlines()
    assert header.split("\t") == ["id", "finished", "queue id", "recipient", "sha256", "why"]
    assert len(lines) == 1 and hashlib.sha256(garbage).hexdigest()[:12] in lines[0]
    assert len(lines[0].split("\t")) == 6
    # a "parser fix": the kept raw file now holds a message (same name, as if re-parsed better)
    path = raw_path(env.spool, hashlib.sha256(garbage).hexdigest())
    assert path.exists()
    r = bombom(env, "replay", owner_url=pg.url(), as_delivery_user=True)
    assert r.returncode == 0, r.stderr
    assert "replayed 1: quarantined 1" in r.stdout  # still unparsable: still kept, still listed
    r = bombom(env, "replay", "--all", owner_url=pg.url(), as_delivery_user=True)
    assert "duplicate 1" in r.stdout
    assert db.execute("SELECT count(*) FROM articles").fetchone()[0] == 1


def test_prune_is_a_dry_run_by_default_and_spares_the_quarantine(
        env: Env, pg: LocalPostgres, db: psycopg.Connection) -> None:
    garbage = b"\x00 quarantined forever"
    assert env.deliver(garbage).returncode == 0
    assert env.deliver(DIGEST).returncode == 0
    old = time.time() - 40 * 86400
    for p in (env.spool / "raw").rglob("*.eml"):
        os.utime(p, (old, old))
    db.execute("UPDATE deliveries SET started_at = now() - interval '40 days', "
               "finished_at = now() - interval '40 days'")
    db.execute("UPDATE articles SET received_at = now() - interval '40 days'")
    r = bombom(env, "prune", "--days", "30", owner_url=pg.url())
    assert "would delete (dry run" in r.stdout and ": 1 files" in r.stdout
    assert raw_path(env.spool, hashlib.sha256(DIGEST).hexdigest()).exists()
    r = bombom(env, "prune", "--days", "30", "--apply", owner_url=pg.url())
    assert r.stdout.startswith("deleted: 1 files")
    assert not raw_path(env.spool, hashlib.sha256(DIGEST).hexdigest()).exists()
    assert raw_path(env.spool, hashlib.sha256(garbage).hexdigest()).exists()


def test_stats_and_check(env: Env, pg: LocalPostgres, db: psycopg.Connection) -> None:
    assert env.deliver(DIGEST).returncode == 0
    assert env.deliver(DIGEST).returncode == 0
    r = bombom(env, "stats", owner_url=pg.url())
    assert r.returncode == 0
    assert "stored" in r.stdout and "duplicate" in r.stdout and "spool raw: 1 files" in r.stdout
    r = bombom(env, "check", owner_url=pg.url())
    assert r.stdout.startswith("BOMBOM UNKNOWN - postqueue unavailable |"), r.stdout
    assert r.stdout.count("\n") == 1 and r.returncode == 3
    r = bombom(env, "check", owner_url=pg.url().replace(str(pg.sock), "/nonexistent"))
    assert r.returncode == 2 and "database unreachable" in r.stdout


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the operator-as-root cases need root")


def _as_spool_owner(path: Path) -> None:
    os.lchown(path, *_nobody())


def _nobody() -> tuple[int, int]:
    import pwd

    pw = pwd.getpwnam(DELIVER_USER)
    return pw.pw_uid, pw.pw_gid


def _victim(workdir: Path, name: str) -> Path:
    """A root-owned file outside the spool, old enough for any prune."""
    d = Path(tempfile.mkdtemp(prefix=name, dir=workdir))
    victim = d / ("0" * 64 + ".eml")
    victim.write_text("precious\n")
    old = time.time() - 40 * 86400
    os.utime(victim, (old, old))
    return victim


@needs_root
def test_check_as_root_leaves_a_fresh_spool_as_it_was(env: Env, pg: LocalPostgres,
                                                      db: psycopg.Connection) -> None:
    r = bombom(env, "check", owner_url=pg.url())
    assert r.returncode == 3 and "UNKNOWN - postqueue unavailable |" in r.stdout, r.stdout
    assert list(env.spool.iterdir()) == []
    r = env.deliver(DIGEST)
    assert r.returncode == 0, r


@needs_root
@pytest.mark.parametrize("where", [".", "tmp", "raw", "raw/ab", "att"])
def test_check_is_critical_when_the_pipe_user_cannot_write(
        env: Env, pg: LocalPostgres, db: psycopg.Connection, where: str) -> None:
    assert env.deliver(DIGEST).returncode == 0
    sha = hashlib.sha256(DIGEST).hexdigest()
    (env.spool / "att").mkdir(exist_ok=True)
    give(env.spool / "att", DELIVER_USER)
    where = where.replace("ab", sha[:2])
    os.chown(env.spool / where, 0, 0)  # what a root run of an older version left behind
    r = bombom(env, "check", owner_url=pg.url())
    assert r.returncode == 2 and "spool" in r.stdout, r.stdout
    assert r.stdout.count("\n") == 1


@needs_root
def test_check_as_root_does_not_write_through_the_spool_owners_links(
        env: Env, pg: LocalPostgres, db: psycopg.Connection, workdir: Path) -> None:
    """The spool's owner makes tmp/ itself a link to a directory only root may write. The probe
    writes its file into tmp/: it must neither follow the link nor write as root, and it says
    that tmp/ is wrong. Its file is gone afterwards, so the target's mtime is the witness."""
    victim = Path(tempfile.mkdtemp(prefix="check-victim-", dir=workdir))
    os.chmod(victim, 0o755)
    old = time.time() - 40 * 86400
    os.utime(victim, (old, old))
    before = os.stat(victim).st_mtime_ns
    tmp = env.spool / "tmp"
    tmp.symlink_to(victim)
    _as_spool_owner(tmp)
    r = bombom(env, "check", owner_url=pg.url())
    assert r.returncode == 2 and "spool not writable" in r.stdout and "tmp" in r.stdout, r.stdout
    assert os.stat(victim).st_mtime_ns == before and list(victim.iterdir()) == []


@needs_root
@pytest.mark.parametrize("link", ["raw/zz", "raw", "att/zz"])
def test_prune_as_root_never_leaves_the_spool(env: Env, pg: LocalPostgres, db: psycopg.Connection,
                                             workdir: Path, link: str) -> None:
    assert env.deliver(DIGEST).returncode == 0
    old = time.time() - 40 * 86400
    own = raw_path(env.spool, hashlib.sha256(DIGEST).hexdigest())
    os.utime(own, (old, old))
    db.execute("UPDATE deliveries SET started_at = now() - interval '40 days', "
               "finished_at = now() - interval '40 days'")
    db.execute("UPDATE articles SET received_at = now() - interval '40 days'")
    victim = _victim(workdir, "prune-victim-")  # <tmp>/000….eml
    planted = env.spool / link
    target = victim.parent
    if link == "raw":  # the owner swaps raw/ itself for a link to <tmp>, holding zz/000….eml
        planted.rename(env.spool / "raw.old")
        (victim.parent / "zz").mkdir()
        victim = victim.rename(victim.parent / "zz" / victim.name)
    planted.parent.mkdir(exist_ok=True)
    _as_spool_owner(planted.parent)
    planted.symlink_to(target)
    _as_spool_owner(planted)
    r = bombom(env, "prune", "--days", "1", "--apply", owner_url=pg.url())
    assert r.returncode == 0, r.stderr
    assert victim.read_text() == "precious\n"
    if link != "raw":
        assert not own.exists(), r.stdout  # what is really in the spool still goes


def test_every_command_is_documented() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    from bombom_pipe.admin import main

    for name, command in main.commands.items():
        assert f"bombom {name}" in readme, name
        assert command.help
