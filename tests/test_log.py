"""What the real `bombom-deliver` writes to its log and to Postfix: one record per event, nothing
unprintable, and no form of the database password."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest

from bombom_pipe.log import printable

from .conftest import EXAMPLES, Env

DIGEST = (EXAMPLES / "english-digest.eml").read_bytes()
FORGED = "Q9: outcome=stored recipient=mallory@bombom.news"
#: each breaks a line for some reader: syslog(3) via splitlines, a terminal, a bidi-aware viewer
BREAKERS = ["\x1c", "\r", "\n", "\x1b[2J\x1b[H", "\x85", "\u2028", "\u202e", "\x01", "\t", "\x7f"]


def with_message_id(value: str) -> bytes:
    """The digest with a Message-ID header written without angle brackets."""
    header = b"Message-ID: " + value.encode()
    return re.sub(rb"(?mi)^Message-ID:.*$", lambda _: header, DIGEST, count=1)


def assert_one_clean_record(text: str) -> None:
    assert text.endswith("\n") and text.count("\n") == 1, text
    record = text[:-1]
    assert len(record.splitlines()) == 1, record  # no \x1c, \x85, \u2028 ... either
    assert all(c.isprintable() for c in record), record


def test_printable_escapes_every_unprintable_character_once() -> None:
    assert printable("Rätsel 봄봄 <a@b>") == "Rätsel 봄봄 <a@b>"
    assert printable("a\x1cb\r\n\x1b[2J\u2028\u202e\x00\\") == (
        "a\\x1cb\\r\\n\\x1b[2J\\u2028\\u202e\\x00\\\\")
    assert all(printable(chr(c)).isprintable() for c in range(0x110000))


@pytest.mark.parametrize("breaker", BREAKERS, ids=[f"U+{ord(b[0]):04X}" for b in BREAKERS])
def test_header_and_envelope_text_cannot_forge_a_log_record(env: Env, db: psycopg.Connection,
                                                            breaker: str) -> None:
    raw = with_message_id(f"forged{breaker}{FORGED}@x")
    r = env.deliver(raw, "--queue-id", f"Q1{breaker}{FORGED}",
                    "--original-recipient", f"o{breaker}{FORGED}")
    assert r.returncode == 0, r
    assert r.stdout.count(b"\n") == 1 and r.stdout.decode().startswith("2.0.0 stored")
    text = env.log.read_text(encoding="utf-8")
    assert_one_clean_record(text)
    assert printable(f"o{breaker}{FORGED}") in text  # escaped, not lost


def test_a_traceback_is_one_escaped_record_per_line(tmp_path: Path) -> None:
    """A crash's message is stranger-controlled too: each record stays one line, escaped."""
    log = tmp_path / "log"
    code = ("from bombom_pipe.log import Log\n"
            "try:\n"
            f"    raise ValueError({FORGED!r}.join(['a\\n', '\\x1c']))\n"
            "except ValueError:\n"
            f"    Log({str(log)!r}).exception('parser crashed')\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    lines = log.read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 3 and all(re.match(r"\S+ bombom-deliver\[\d+\]: error: ", x)
                                    for x in lines), lines
    assert all(c.isprintable() for x in lines for c in x)
    assert sum(FORGED in x for x in lines) == 1


def syslog_records(base: Path, argv: list[str], stdin: bytes = b"") -> list[str]:
    """Run `argv` with /dev/log, in a private mount namespace, bound to our socket; what it
    logged, one string per record."""
    if os.geteuid() != 0:
        pytest.skip("a private /dev/log needs a mount namespace (root)")
    with tempfile.TemporaryDirectory(dir=base) as d:
        os.chmod(d, 0o755)
        path, dev = os.path.join(d, "log"), os.path.join(d, "dev")
        os.mkdir(dev)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            os.chmod(path, 0o666)
            setup = (f"mount --bind /dev {dev} && mount -t tmpfs -o mode=0755 tmpfs /dev && "
                     f"for n in null zero urandom; do touch /dev/$n && "
                     f"mount --bind {dev}/$n /dev/$n || exit 97; done && "
                     f"touch /dev/log && mount --bind {path} /dev/log || exit 97; exec \"$@\"")
            r = subprocess.run(["unshare", "--mount", "sh", "-c", setup, "sh", *argv],
                               input=stdin, capture_output=True, timeout=60)
            if r.returncode == 97:  # as root (CI) a missing kernel feature is a failure
                pytest.fail(f"no private mount namespace here: {r.stderr.decode()[:200]}")
            records = []
            sock.settimeout(1)
            try:
                while True:
                    records.append(sock.recv(65536).decode("utf-8"))
            except TimeoutError:
                pass
    return records


def test_syslog_gets_one_record_per_delivery(env: Env, db: psycopg.Connection) -> None:
    """The real syslog(3) path, which split the line at \\x1c into a forged second record."""
    env.write_config(env.config.read_text().replace(f'log = "{env.log}"', 'log = "syslog"'))
    raw = with_message_id(f"forged\x1c{FORGED}@x")
    records = syslog_records(env.base, env.argv("--recipient", "alice@bombom.news",
                                                "--queue-id", "Q1"), raw)
    mine = [x for x in records if "bombom-deliver" in x]
    assert len(mine) == 1, records
    assert "Q1: outcome=stored" in mine[0] and all(c.isprintable() for c in mine[0])


def test_the_last_resort_traceback_is_escaped_too(env: Env) -> None:
    """What escapes everything else goes to syslog from the entry point, escaped the same way."""
    code = ("from bombom_pipe.entry import _last_resort_log\n"
            f"_last_resort_log(ValueError('boom\\n' + {FORGED!r} + '\\x1c'))\n")
    python = env.runner.index("-m")  # the runner's interpreter, as the delivery user
    records = syslog_records(env.base, [*env.runner[:python], "-c", code])
    assert records and all(c.isprintable() for x in records for c in x), records
    assert sum(FORGED in x for x in records) == 1 and "boom\\n" in records[-1]


SECRET_DSNS = [
    "postgresql://u:Sup3r%2Fs3cr3t%zz@/x?host=/nonexistent",       # broken percent-escape
    "postgresql://u:Sup3r%2Fs3cr3t@/x?host=/nonexistent&sslmode=bogus",
    "postgresql://u@/x?host=/nonexistent&password=Sup3r%2Fs3cr3t%zz",
    "postgresql://u@/x?host=/nonexistent&password=Sup3r%2Fs3cr3t&port=zz",
    "host=/nonexistent user=u password='Sup3r s3cr3t' port=zz",
    "host=/nonexistent user=u password=Sup3r s3cr3t",              # unquoted space: a parse error
    "host=/nonexistent user=u password=Sup3r%2Fs3cr3t bogus",
]


def assert_no_secret(text: str) -> None:
    assert "Sup3r" not in text and "s3cr3t" not in text, text


@pytest.mark.parametrize("dsn", SECRET_DSNS)
def test_no_form_of_the_password_reaches_postfix_or_the_log(env: Env, db: psycopg.Connection,
                                                            dsn: str) -> None:
    env.extra_env = {"BOMBOM_DATABASE_URL": dsn, "BOMBOM_DEADLINE_SECONDS": "2"}
    r = env.deliver(DIGEST)
    assert r.returncode == 75, r
    assert r.stdout.startswith(b"4.3.0 ") and r.stdout.count(b"\n") == 1
    assert_no_secret(r.stdout.decode() + r.stderr.decode() + env.log.read_text())


@pytest.mark.parametrize("dsn", SECRET_DSNS)
def test_the_operator_command_does_not_echo_the_dsn(env: Env, dsn: str) -> None:
    environ = {**os.environ, "BOMBOM_ADMIN_DATABASE_URL": dsn}
    for args in (["members", "list"], ["check"]):
        r = subprocess.run([sys.executable, "-m", "bombom_pipe.admin", "--config",
                            str(env.config), *args], capture_output=True, text=True,
                           env=environ, timeout=60)
        assert r.returncode != 0
        assert_no_secret(r.stdout + r.stderr)


def test_a_log_for_settings_masks_the_password_of_every_dsn_they_hold(tmp_path: Path) -> None:
    from bombom_pipe.config import Settings
    from bombom_pipe.log import Log

    target = tmp_path / "log"
    settings = Settings(database_url="postgresql://d:Sup3r%2Fone@/x", log=str(target),
                        admin_database_url="host=/x user=a password='s3cr3t two'")
    log = Log.for_settings(settings, ident="bombom-replay")
    log.error("failed: Sup3r/one, Sup3r%2Fone, 's3cr3t two', s3cr3t two")
    text = target.read_text()
    assert "bombom-replay[" in text and "failed: " in text
    assert_no_secret(text)
