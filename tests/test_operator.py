"""What an operator meets: every `bombom` command either works or refuses in one line, the
schema owner that `make db` sets up, what the installer asks the package, members without tags."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import psycopg
import pytest

from bombom_pipe.judge import GRACE
from bombom_pipe.ops.postfix import (
    STARTUP_MARGIN,
    pgpass_line,
    pgpass_password,
    settings,
    time_limit,
    with_password,
    without_password,
)

from .conftest import Env
from .sandbox import LocalPostgres

#: every command that talks to the database, with harmless arguments
COMMANDS = [["members", "list"], ["members", "add", "carol@bombom.news"], ["quarantine", "list"],
            ["stats"], ["prune", "--days", "30"], ["init-db"], ["replay"], ["stats", "--json"],
            ["block", "list"], ["block", "add", "junk.example"],
            ["block", "add", "--member", "alice@bombom.news", "junk.example"]]


def bombom_argv(env: Env, *args: str, variables: dict[str, str],
                as_delivery_user: bool = False) -> list[str]:
    argv = [sys.executable, "-m", "bombom_pipe.admin", "--config", str(env.config), *args]
    if as_delivery_user and os.geteuid() == 0:
        python = next(a for a in env.runner if a.endswith("/bin/python"))
        argv = [*env.runner[:env.runner.index("env")], "env", f"PYTHONPATH={env.src}",
                *(f"{k}={v}" for k, v in variables.items()), python, "-m", "bombom_pipe.admin",
                "--config", str(env.config), *args]
    return argv


def bombom(env: Env, *args: str, url: str, as_delivery_user: bool = False,
           **environ: str) -> subprocess.CompletedProcess[str]:
    """`bombom --config <the test config>` with `url` as the database."""
    variables = {"BOMBOM_DATABASE_URL": url, "BOMBOM_LOG": str(env.log), **environ}
    return subprocess.run(bombom_argv(env, *args, variables=variables,
                                      as_delivery_user=as_delivery_user),
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **variables})


def one_line_refusal(r: subprocess.CompletedProcess[str]) -> str:
    out = (r.stdout + r.stderr).strip()
    assert r.returncode not in (0, None), out
    assert "Traceback" not in out and len(out.splitlines()) == 1, out
    return out


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_database_down_is_one_line(env: Env, pg: LocalPostgres, command: list[str]) -> None:
    down = pg.url().replace(str(pg.sock), str(env.base / "no-server-here"))
    out = one_line_refusal(bombom(env, *command, url=down))
    assert "database" in out or "replay" in out


def test_missing_schema_is_one_line(env: Env, pg: LocalPostgres) -> None:
    for command in COMMANDS[:5]:
        out = one_line_refusal(bombom(env, *command, url=pg.url("postgres")))
        assert "make db" in out, out


def test_delivery_role_refused_in_one_line(env: Env, pg: LocalPostgres,
                                           db: psycopg.Connection) -> None:
    """As the pipe user with its own config: what needs the owner is refused in one line."""
    r = bombom(env, "members", "add", "carol@bombom.news", url=pg.url(user="bombom_deliver"),
               as_delivery_user=True)
    out = one_line_refusal(r)
    assert "permission denied for table members" in out and "admin.conf" in out


def test_unreadable_config_is_one_line(env: Env, pg: LocalPostgres) -> None:
    env.write_config(mode=0o644)  # world-readable: refused
    out = one_line_refusal(bombom(env, "members", "list", url=pg.url()))
    assert "world-readable" in out


def test_check_with_an_unusable_config_says_unknown_in_its_own_format(
        env: Env, pg: LocalPostgres) -> None:
    """A monitoring system reads check's exit status: 3 (UNKNOWN), never click's 1 (WARNING)."""
    env.write_config(mode=0o644)
    r = bombom(env, "check", url=pg.url())
    assert r.returncode == 3, r
    assert r.stdout.startswith("BOMBOM UNKNOWN - ") and "world-readable" in r.stdout, r
    assert r.stdout.count("\n") == 1 and not r.stderr, r


@pytest.mark.skipif(os.geteuid() != 0, reason="replay runs as the delivery user")
def test_replay_masks_every_database_password_in_its_log(env: Env, pg: LocalPostgres,
                                                         db: psycopg.Connection) -> None:
    """Replay logs like delivery: the delivery DSN it fails with never shows its password."""
    assert env.deliver(b"\x00 not a mail").returncode == 0  # quarantined, kept for replay
    secret = "postgresql://u:Sup3r%2Fs3cr3t@/x?host=/nonexistent&sslmode=bogus"
    r = bombom(env, "replay", url=secret, as_delivery_user=True,
               BOMBOM_ADMIN_DATABASE_URL=pg.url(), BOMBOM_DEADLINE_SECONDS="2")
    assert r.returncode == 0 and "replayed 1: tempfail 1" in r.stdout, r
    log = env.log.read_text()
    assert "bombom-replay" in log and "Sup3r" not in log and "s3cr3t" not in log, log


def test_a_tagged_member_address_is_refused_by_the_schema(db: psycopg.Connection) -> None:
    """Postfix would accept alice+x@ at RCPT for such a row and bombom-deliver then answer 67."""
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("INSERT INTO members (address) VALUES ('carol+news@bombom.news')")


@pytest.fixture
def owned_db(pg: LocalPostgres) -> Iterator[str]:
    """A fresh, empty database on the test cluster; yields its name."""
    name = "bombom_owned"
    with psycopg.connect(pg.url("postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    yield name
    with psycopg.connect(pg.url("postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_init_db_owner_runs_the_admin_side_without_a_superuser(
        env: Env, pg: LocalPostgres, owned_db: str) -> None:
    superuser, owner = pg.url(owned_db), pg.url(owned_db, user="bombom_admin")
    r = bombom(env, "init-db", "--owner", "bombom_admin", "--delivery-role", "bombom_deliver",
               "--lookup-role", "bombom_lookup", url=superuser)
    assert r.returncode == 0, r.stderr
    with psycopg.connect(superuser) as conn:
        owners = set(conn.execute(
            "SELECT tableowner FROM pg_tables WHERE schemaname = 'public'").fetchall())
        assert owners == {("bombom_admin",)}
        assert not conn.execute("SELECT rolsuper OR rolcreaterole FROM pg_roles "
                                "WHERE rolname = 'bombom_admin'").fetchone()[0]
    r = bombom(env, "members", "add", "Carol+News@Bombom.News", url=owner)
    assert r.returncode == 0 and "added carol@bombom.news" in r.stdout, r.stderr
    r = bombom(env, "init-db", "--delivery-role", "bombom_deliver", url=owner)  # upgrades, too
    assert r.returncode == 0 and "schema is up to date" in r.stdout, r.stderr
    r = bombom(env, "init-db", "--owner", "bombom_admin", url=superuser)  # twice: no change
    assert r.returncode == 0 and "schema is up to date" in r.stdout, r.stderr


# -- what install.sh asks the package ---------------------------------------------------------

def test_time_limit_follows_the_deadline_constants() -> None:
    assert time_limit(60) == 60 + GRACE + STARTUP_MARGIN
    assert time_limit(59.2) == 85 and time_limit(1) > 1 + GRACE


def test_passwords_go_into_and_out_of_dsns_without_loss() -> None:
    password = "p@ss:w/o%rd\\ 봄"
    dsn = with_password("postgresql://bombom_lookup@127.0.0.1:5432/bombom", password)
    assert psycopg.conninfo.conninfo_to_dict(dsn)["password"] == password
    bare = without_password(dsn, "/etc/bombom/lookup.pgpass")  # type: ignore[arg-type]
    assert password not in bare and "%40" not in bare
    assert bare == ("postgresql://bombom_lookup@127.0.0.1:5432/bombom"
                    "?passfile=/etc/bombom/lookup.pgpass")
    assert pgpass_password(pgpass_line(password)) == password
    assert with_password(dsn, "other") == dsn  # a DSN's own password wins


def test_a_multi_host_lookup_dsn_is_one_uri_per_host_for_postfix(tmp_path) -> None:  # noqa: ANN001
    """Postfix's pgsql `hosts` splits on commas: libpq's failover list becomes its host list;
    the delivery DSN stays one libpq URI (libpq fails over itself)."""
    dsn = "postgresql://bombom_lookup@10.0.0.1:5432,10.0.0.2:5433/bombom?sslmode=verify-full"
    environ = {"DEADLINE": "60", "CONFIG_FILE": str(tmp_path / "c"),
               "ADMIN_CONFIG": str(tmp_path / "a"), "LOOKUP_PASSFILE": "/etc/bombom/l.pgpass",
               "DELIVERY_DSN": dsn.replace("lookup", "deliver"), "LOOKUP_DSN": dsn,
               "ADMIN_DSN": "postgresql://bombom_admin@10.0.0.1/bombom",
               "BOMBOM_DELIVERY_PASSWORD": "d", "BOMBOM_LOOKUP_PASSWORD": "l"}
    out = settings(environ)
    assert out["LOOKUP_HOSTS"].split(" ") == [
        f"postgresql://bombom_lookup@{host}/bombom?sslmode=verify-full"
        "&passfile=/etc/bombom/l.pgpass" for host in ("10.0.0.1:5432", "10.0.0.2:5433")]
    assert out["DELIVERY_DSN"] == ("postgresql://bombom_deliver:d@10.0.0.1:5432,10.0.0.2:5433"
                                   "/bombom?sslmode=verify-full")
    assert psycopg.conninfo.conninfo_to_dict(out["DELIVERY_DSN"])["host"] == "10.0.0.1,10.0.0.2"


def test_settings_keep_earlier_passwords(tmp_path) -> None:  # noqa: ANN001
    environ = {"DEADLINE": "60", "CONFIG_FILE": str(tmp_path / "bombom.conf"),
               "ADMIN_CONFIG": str(tmp_path / "admin.conf"),
               "LOOKUP_PASSFILE": str(tmp_path / "lookup.pgpass"),
               "DELIVERY_DSN": "postgresql://bombom_deliver@127.0.0.1:5432/bombom",
               "LOOKUP_DSN": "postgresql://bombom_lookup@127.0.0.1:5432/bombom",
               "ADMIN_DSN": "postgresql://bombom_admin@127.0.0.1:5432/bombom",
               "BOMBOM_DELIVERY_PASSWORD": "d1", "BOMBOM_LOOKUP_PASSWORD": "l:1"}
    first = settings(environ)
    assert first["TIME_LIMIT"] == str(time_limit(60))
    assert (first["DELIVERY_ROLE"], first["LOOKUP_ROLE"]) == ("bombom_deliver", "bombom_lookup")
    assert first["DELIVERY_PASSWORD"] == "d1" and len(first["ADMIN_PASSWORD"]) == 32
    # what install.sh and make db write from them
    (tmp_path / "bombom.conf").write_text(f'database_url = "{first["DELIVERY_DSN"]}"\n')
    (tmp_path / "admin.conf").write_text(f'database_url = "{first["ADMIN_DSN"]}"\n')
    (tmp_path / "lookup.pgpass").write_text(first["LOOKUP_PASSFILE_LINE"] + "\n")
    del environ["BOMBOM_DELIVERY_PASSWORD"], environ["BOMBOM_LOOKUP_PASSWORD"]
    again = settings(environ)
    assert again == first


def test_postfix_settings_refuses_a_bad_dsn_in_one_line(env: Env) -> None:
    r = subprocess.run([sys.executable, "-m", "bombom_pipe.admin", "postfix-settings"],
                       capture_output=True, text=True,
                       env={**os.environ, "DEADLINE": "60", "CONFIG_FILE": "/nonexistent",
                            "ADMIN_CONFIG": "/nonexistent", "LOOKUP_PASSFILE": "/nonexistent",
                            "DELIVERY_DSN": "postgresql://bombom_deliver@/x?bogus=1",
                            "LOOKUP_DSN": "postgresql://l@/x", "ADMIN_DSN": "postgresql://a@/x"})
    out = one_line_refusal(r)
    assert "DELIVERY_DSN" in out


def test_worker_makes_its_runtime_directory_or_names_it(env: Env, pg: LocalPostgres) -> None:
    """Without systemd nobody made /run/bombom: the worker makes it when it may, else one line
    naming the directory and root's command for it."""
    missing = "/run/bombom-test-no-such-dir/worker.sock"  # /run is root's
    r = bombom(env, "worker", "--socket", missing, url=pg.url(), as_delivery_user=True)
    out = one_line_refusal(r)
    assert "/run/bombom-test-no-such-dir is missing" in out and "install -d -o " in out, out
    made = env.spool / "run-made"  # the spool is the delivery user's: it may make this one
    assert not made.exists()
    variables = {"BOMBOM_DATABASE_URL": pg.url(), "BOMBOM_LOG": str(env.log)}
    worker = subprocess.Popen(
        bombom_argv(env, "worker", "--socket", str(made / "w.sock"), "--processes", "1",
                    variables=variables, as_delivery_user=True),
        env={**os.environ, **variables}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True)
    try:
        end = time.monotonic() + 60
        while not (made / "w.sock").exists() and worker.poll() is None:
            assert time.monotonic() < end, "no socket"
            time.sleep(0.1)
        assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
        assert made.stat().st_mode & 0o777 == 0o700
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, 15)
        worker.wait(30)
