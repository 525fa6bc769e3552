"""`auth_method = "authentication-results"` through a real Postfix and a real milter (Debian's
OpenDKIM, verifying with keys from the loopback DNS server): bombom-deliver trusts the header
carrying our authserv-id, so no such header may come from outside. The installer refuses the mode
without a milter, and Postfix removes every incoming Authentication-Results before the milter adds
its own.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from .conftest import ALICE, DKIM_DOMAIN
from .dns_fixture import DnsServer
from .postfix_fixture import INSTALL, Postfix, available, free_port
from .sandbox import LocalPostgres, wait_for
from .test_postfix import install_env, send, wait_queue_empty
from .test_trust import mail, sign

OPENDKIM = shutil.which("opendkim", path="/usr/sbin:/usr/bin")
pytestmark = [
    pytest.mark.postfix,
    pytest.mark.skipif(available() is not None, reason=str(available())),
    pytest.mark.skipif(OPENDKIM is None,
                       reason="opendkim is not installed (as root, `make deps` installs it)"),
]

AUTHSERV_ID = "mx.bombom.test"  # the test instance's myhostname: the installer's default


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def milter(workdir: Path, dns_server: DnsServer) -> Iterator[int]:
    """OpenDKIM in verify mode on 127.0.0.1, asking only the loopback DNS server (through
    libunbound's configuration file), as the operator's docs/postfix.md sets it up."""
    base = workdir / "opendkim"
    base.mkdir()
    host, port = dns_server.address.split(":")
    (base / "unbound.conf").write_text(
        "server:\n  do-not-query-localhost: no\n"
        f'forward-zone:\n  name: "."\n  forward-addr: {host}@{port}\n')
    listen = free_port()
    (base / "opendkim.conf").write_text(
        f"Mode v\nSocket inet:{listen}@127.0.0.1\nAuthservID {AUTHSERV_ID}\n"
        f"ResolverConfiguration {base / 'unbound.conf'}\nPidFile {base / 'opendkim.pid'}\n"
        "Syslog no\nUserID opendkim\nBackground no\n")
    os.chmod(base, 0o755)
    proc = subprocess.Popen([OPENDKIM, "-f", "-x", str(base / "opendkim.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for("opendkim to listen", lambda: listening(listen) or proc.poll() is not None)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        yield listen
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def postfix(pg: LocalPostgres, workdir: Path, dns_server: DnsServer, milter: int
            ) -> Iterator[Postfix]:
    base = workdir / "postfix-milter"
    base.mkdir()
    base.chmod(0o755)
    p = Postfix(base / "instance")
    p.create()
    p.env = install_env(base, pg, dns_server.address, AUTH_METHOD="authentication-results")
    refused = subprocess.run([str(INSTALL), "install"], text=True, capture_output=True,
                             env={"PATH": os.environ["PATH"], **p.env,
                                  "POSTFIX_CONFIG_DIR": str(p.etc)})
    assert refused.returncode != 0 and "smtpd_milters is empty" in refused.stderr, refused
    p.postconf(f"smtpd_milters = inet:127.0.0.1:{milter}", "milter_default_action = accept")
    refused = subprocess.run([str(INSTALL), "install"], text=True, capture_output=True,
                             env={"PATH": os.environ["PATH"], **p.env,
                                  "POSTFIX_CONFIG_DIR": str(p.etc)})
    assert refused.returncode != 0 and "milter_default_action" in refused.stderr, refused
    p.postconf("milter_default_action = tempfail")
    p.install()
    p.start()
    yield p
    p.stop()


@pytest.fixture
def db(postfix: Postfix, pg: LocalPostgres, dns_server: DnsServer, key: tuple[bytes, str]
       ) -> Iterator[psycopg.Connection]:
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute("TRUNCATE members, newsletters RESTART IDENTITY CASCADE")
        conn.execute("INSERT INTO members (address) VALUES (%s)", (ALICE,))
        dns_server.txt[f"s2026._domainkey.{DKIM_DOMAIN}"] = [key[1]]
        dns_server.txt[f"_dmarc.{DKIM_DOMAIN}"] = ["v=DMARC1; p=none"]
        yield conn
    dns_server.reset()


def delivered(postfix: Postfix, db: psycopg.Connection, raw: bytes) -> tuple:
    """Send `raw` to alice; the stored article's verdict, signing domain and detail, and the
    Authentication-Results headers in the bytes bombom-deliver received."""
    send(postfix, [raw], [ALICE])
    wait_queue_empty(postfix, 60)
    row = db.execute("SELECT auth_verdict, auth_signing_domain, auth_detail, raw_path "
                     "FROM articles ORDER BY id DESC LIMIT 1").fetchone()
    assert row is not None, postfix.log()[-3000:]
    head = Path(row[3]).read_bytes().split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    results = [line for line in head.replace(b"\r\n", b"\n").replace(b"\n\t", b" ")
               .replace(b"\n ", b" ").split(b"\n")
               if line.lower().startswith(b"authentication-results")]
    return row[0], row[1], row[2], results


FORGED = [  # what a sender might write to pass as our milter's header, each spelling of the id
    f"Authentication-Results: {AUTHSERV_ID}; dkim=pass header.d={DKIM_DOMAIN}; dmarc=pass",
    f"Authentication-Results: {AUTHSERV_ID.upper()} 1; dmarc=pass header.from={DKIM_DOMAIN}",
    f"Authentication-Results: (our milter) {AUTHSERV_ID};\r\n\tdkim=pass header.d={DKIM_DOMAIN}",
    f"authentication-results:{AUTHSERV_ID}; dmarc=pass (p=none) header.from={DKIM_DOMAIN}",
]


@pytest.mark.parametrize("forged", FORGED, ids=["plain", "upper-version", "comment-folded",
                                                "lowercase-name"])
def test_a_forged_header_with_our_authserv_id_never_reaches_us(
        postfix: Postfix, db: psycopg.Connection, forged: str) -> None:
    """An unsigned message from a stranger claiming the publisher's From (the milter adds no
    header to unsigned mail) with a forged pass: stored, but not as the publisher's."""
    raw = mail(subject="Action required", extra=forged + "\r\n")
    verdict, signer, detail, results = delivered(postfix, db, raw)
    assert results == [], results
    assert (verdict, signer) == ("none", None), detail


def test_the_milters_own_header_is_trusted(postfix: Postfix, db: psycopg.Connection,
                                          key: tuple[bytes, str]) -> None:
    """A genuine signature: OpenDKIM verifies it and adds its header after header_checks ran (a
    forged one above the signature is still removed)."""
    raw = sign(mail(subject="Spring issue"), key)
    forged = FORGED[0].replace("dkim=pass", "dkim=fail").encode() + b"\r\n"
    verdict, signer, detail, results = delivered(postfix, db, forged + raw)
    assert len(results) == 1 and b"dkim=pass" in results[0], results
    assert (verdict, signer) == ("pass", DKIM_DOMAIN), detail


def test_reinstall_keeps_the_mode_and_dkim_mode_puts_header_checks_back(
        postfix: Postfix) -> None:
    """The mode is remembered; switching to dkim restores header_checks as it was."""
    postfix.install()
    assert "bombom-header-checks" in postfix.run("postconf", "-h", "header_checks").stdout
    conf = Path(postfix.env["CONFIG_FILE"]).read_text()
    assert 'auth_method = "authentication-results"' in conf
    assert f'authserv_id = "{AUTHSERV_ID}"' in conf
    try:
        postfix.install(AUTH_METHOD="dkim")
        assert postfix.run("postconf", "-nh", "header_checks").stdout.strip() == ""
        assert '\nauth_method = "authentication-results"' not in \
            Path(postfix.env["CONFIG_FILE"]).read_text()
    finally:
        postfix.install(AUTH_METHOD="authentication-results")
