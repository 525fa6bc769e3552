"""Fixtures: a private PostgreSQL cluster per session, and a delivery environment per test that
runs the real `bombom-deliver` as a subprocess, as an unprivileged user when we are root."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from bombom_pipe.schema import grant, upgrade

from .dns_fixture import DnsServer
from .dns_fixture import shared as shared_dns
from .sandbox import DELIVER_USER, LocalPostgres, deliver_argv, delivery_files, give, write_file

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ALICE = "alice@bombom.news"
BOB = "bob@bombom.news"
DKIM_DOMAIN = "digest.example.com"  # the publisher the trust tests sign for
DKIM_SELECTOR = "s2026"


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    """A temp dir that the postgres and delivery users can enter (pytest's own is 0700)."""
    d = Path(tempfile.mkdtemp(prefix="bombom-test-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def pg(workdir: Path) -> Iterator[LocalPostgres]:
    cluster = LocalPostgres(workdir / "pg")
    cluster.start()
    cluster.createdb("bombom")
    fresh_schema(cluster.url())
    yield cluster
    cluster.stop("immediate")


@pytest.fixture
def db(pg: LocalPostgres, dns_server: DnsServer) -> Iterator[psycopg.Connection]:
    """An autocommit connection to an emptied database with two members (and no DNS records)."""
    dns_server.reset()
    fresh_schema(pg.url())
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def dns_server() -> DnsServer:
    """The loopback DNS server every test config names (no real resolver is ever asked)."""
    return shared_dns()


@pytest.fixture(scope="session")
def runner(workdir: Path) -> list[str]:
    return deliver_argv(workdir / "runner")


@dataclass
class Env:
    """One delivery environment: spool, log and config file, owned by the delivery user."""

    base: Path
    runner: list[str]
    database_url: str
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def spool(self) -> Path:
        return self.base / "spool"

    @property
    def config(self) -> Path:
        return self.base / "bombom.conf"

    @property
    def log(self) -> Path:
        return self.base / "deliver.log"

    @property
    def src(self) -> str:
        """Where the runner imports bombom_pipe from."""
        return next((a.split("=", 1)[1] for a in self.runner if a.startswith("PYTHONPATH=")),
                    str(Path(__file__).resolve().parents[1]))

    def write_config(self, text: str | None = None, mode: int = 0o600) -> None:
        """Replace the config file's text (None: keep it) and set its mode."""
        if text is not None:
            write_file(self.config, text, mode)
        os.chmod(self.config, mode)
        give(self.config, DELIVER_USER)

    def argv(self, *args: str, config: bool = True) -> list[str]:
        runner = self.runner
        if self.extra_env:
            i = runner.index("env") + 1
            while "=" in runner[i]:  # after the runner's own assignments, so ours win
                i += 1
            runner = [*runner[:i], *(f"{k}={v}" for k, v in self.extra_env.items()),
                      *runner[i:]]
        return [*runner, *(["--config", str(self.config)] if config else []), *args]

    def deliver(self, raw: bytes, *args: str, recipient: str | None = ALICE,
                timeout: float = 60, config: bool = True) -> subprocess.CompletedProcess[bytes]:
        rcpt = ["--recipient", recipient] if recipient else []
        return subprocess.run(self.argv(*rcpt, *args, config=config), input=raw,
                              capture_output=True, timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv(*args), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def new_env(workdir: Path, runner: list[str], database_url: str) -> Env:
    """A fresh spool, log and config file in `workdir`, handed to the delivery user."""
    base = Path(tempfile.mkdtemp(prefix="env-", dir=workdir))
    delivery_files(base, database_url, extra=f'dns_servers = "{shared_dns().address}"\n')
    return Env(base, runner, database_url)


def fresh_schema(url: str) -> None:
    """Schema, roles and the two members in the database at `url` (owner connection)."""
    with psycopg.connect(url, autocommit=True) as conn:
        upgrade(conn)
        grant(conn, "delivery", "bombom_deliver")
        grant(conn, "lookup", "bombom_lookup")
        conn.execute("TRUNCATE attachments, deliveries, subscriptions, articles, newsletters, "
                     "member_blocks, operator_blocks, domain_volume, members, raw_messages "
                     "RESTART IDENTITY")
        conn.execute("INSERT INTO members (address) VALUES (%s), (%s)", (ALICE, BOB))


@pytest.fixture
def env(db: psycopg.Connection, pg: LocalPostgres, runner: list[str], workdir: Path
        ) -> Iterator[Env]:
    e = new_env(workdir, runner, pg.url(user="bombom_deliver"))
    yield e
    shutil.rmtree(e.base, ignore_errors=True)


def corpus_files() -> list[Path]:
    manifest = CORPUS / "MANIFEST.tsv"
    if not manifest.exists():
        return []
    lines = manifest.read_text(encoding="utf-8").splitlines()[1:]
    return [CORPUS / line.split("\t", 1)[0] for line in lines if line.strip()]


# -- sender authentication: a DKIM key of our own, published on the loopback DNS server ----------

@pytest.fixture(scope="session")
def key(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, str]:
    """(PEM private key, DNS TXT value) of a fresh 2048-bit RSA key."""
    d = tmp_path_factory.mktemp("dkim")
    private = d / "key.pem"
    subprocess.run(["openssl", "genrsa", "-traditional", "-out", str(private), "2048"],
                   check=True, capture_output=True)
    der = subprocess.run(["openssl", "rsa", "-in", str(private), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    return private.read_bytes(), f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


@pytest.fixture
def dns(dns_server: DnsServer, key: tuple[bytes, str], db: psycopg.Connection) -> DnsServer:
    """The loopback server with our key published for DKIM_DOMAIN, its parent and
    esp.example.net (a platform)."""
    for d in (DKIM_DOMAIN, "esp.example.net", "example.com"):
        dns_server.txt[f"{DKIM_SELECTOR}._domainkey.{d}"] = [key[1]]
    return dns_server
