"""The `bombom` operator command against the real database, run as a subprocess."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from bombom_pipe.spool import raw_path

from .conftest import ALICE, EXAMPLES, Env

DIGEST = (EXAMPLES / "english-digest.eml").read_bytes()


def bombom(env: Env, *args: str, owner_url: str, as_delivery_user: bool = False
           ) -> subprocess.CompletedProcess[str]:
    """Run `bombom` with the test config; the owner DSN for the admin side."""
    environ = {**os.environ, "BOMBOM_ADMIN_DATABASE_URL": owner_url, "BOMBOM_LOG": str(env.log)}
    argv = [sys.executable, "-m", "bombom_pipe.admin", "--config", str(env.config), *args]
    if as_delivery_user and os.geteuid() == 0:
        python = next(a for a in env.runner if a.endswith("/bin/python"))
        argv = [*env.runner[:env.runner.index("env")], "env", f"PYTHONPATH={env.src}",
                f"BOMBOM_ADMIN_DATABASE_URL={owner_url}", python, "-m", "bombom_pipe.admin",
                "--config", str(env.config), *args]
    return subprocess.run(argv, capture_output=True, text=True, env=environ, timeout=120)


def test_init_db_twice_changes_nothing(env: Env, pg, db: psycopg.Connection) -> None:  # noqa: ANN001
    r = bombom(env, "init-db", "--delivery-role", "bombom_deliver", owner_url=pg.url())
    assert r.returncode == 0, r.stderr
    assert "schema is up to date" in r.stdout and "delivery role bombom_deliver" in r.stdout
    versions = db.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
    assert [v[0] for v in versions] == [1, 2]


def test_members_add_normalizes_and_lists(env: Env, pg, db: psycopg.Connection) -> None:  # noqa: ANN001
    r = bombom(env, "members", "add", "Carol+x@Bombom.News", owner_url=pg.url())
    assert r.returncode == 0 and "added carol@bombom.news" in r.stdout
    r = bombom(env, "members", "add", "carol@bombom.news", owner_url=pg.url())
    assert "already a member" in r.stdout
    r = bombom(env, "members", "list", owner_url=pg.url())
    assert [line.split("\t")[1] for line in r.stdout.splitlines()] == [
        ALICE, "bob@bombom.news", "carol@bombom.news"]


def test_delivery_role_cannot_delete_or_alter(pg) -> None:  # noqa: ANN001
    with psycopg.connect(pg.url(user="bombom_deliver")) as conn:
        for sql in ("DELETE FROM articles", "DROP TABLE deliveries",
                    "ALTER TABLE members ADD COLUMN x int", "UPDATE members SET address = 'x'"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)
            conn.rollback()


def test_lookup_role_reads_members_only(pg) -> None:  # noqa: ANN001
    with psycopg.connect(pg.url(user="bombom_lookup")) as conn:
        assert conn.execute("SELECT count(*) FROM members").fetchone()[0] >= 0
        conn.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM articles")


def test_quarantine_list_and_replay(env: Env, pg, db: psycopg.Connection) -> None:  # noqa: ANN001
    garbage = b"\x00\x01 not a mail at all"
    r = env.deliver(garbage)
    assert r.returncode == 0 and b"quarantined" in r.stdout
    assert env.deliver(DIGEST).returncode == 0
    listed = bombom(env, "quarantine", "list", owner_url=pg.url())
    assert listed.returncode == 0
    lines = listed.stdout.splitlines()
    assert len(lines) == 1 and hashlib.sha256(garbage).hexdigest()[:12] in lines[0]
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
        env: Env, pg, db: psycopg.Connection) -> None:  # noqa: ANN001
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


def test_stats_and_check(env: Env, pg, db: psycopg.Connection) -> None:  # noqa: ANN001
    assert env.deliver(DIGEST).returncode == 0
    assert env.deliver(DIGEST).returncode == 0
    r = bombom(env, "stats", owner_url=pg.url())
    assert r.returncode == 0
    assert "stored" in r.stdout and "duplicate" in r.stdout and "spool raw: 1 files" in r.stdout
    r = bombom(env, "check", owner_url=pg.url())
    assert r.stdout.startswith("BOMBOM ") and r.stdout.count("\n") == 1
    assert r.returncode in (0, 3), r.stdout  # 3 only when this machine has no Postfix queue
    r = bombom(env, "check", owner_url=pg.url().replace(str(pg.sock), "/nonexistent"))
    assert r.returncode == 2 and "database unreachable" in r.stdout


def test_every_command_is_documented() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    from bombom_pipe.admin import main

    for name, command in main.commands.items():
        assert f"bombom {name}" in readme, name
        assert command.help
