"""Past one machine (issue 21): two MX hosts and a replicated PostgreSQL, exactly once across them,
with real hosts made of network namespaces (tests/netns.py: a bridge, veth pairs, addresses
inside the namespaces only; nothing reaches the machine's own network or its DNS).

    mx1   10.21.0.11  Postfix + bombom, MODE=push (pipe(8) -> bombom-deliver, the cold path)
    mx2   10.21.0.12  Postfix + bombom, MODE=lmtp (lmtp(8) -> bombom worker, kept connections)
    db    10.21.0.31  PostgreSQL primary;  10.21.0.32 its streaming standby (pg_basebackup -R)
    snd   10.21.0.5   the publishers: a sending Postfix whose relayhost is [mx1] with
                      smtp_fallback_relay [mx2] (mail from via-mx2@ goes to [mx2] first), and
                      the test's own SMTP client for the same message to both hosts

Both hosts' database_url is libpq's failover list (host a,b, target_session_attrs=read-write)
over TLS with sslmode=verify-full (a CA made here; pg_hba accepts the hosts over TLS only);
Postfix's member lookup names both hosts (its own failover, reads work on the standby). Each host
asks a DNS server on its own loopback (tests/dns_fixture.py) that answers NXDOMAIN.

1. the same message to both hosts, at once and one after the other: one article per member,
   one delivery row per host (deliveries.edge_address), both answers 250 and delivered;
2. mx1 killed (SIGKILL to every process of it) mid-burst: the sending Postfix's retries reach
   mx2; once mx1 is back (its queue kept what it had accepted), every message stored exactly
   once, none bounced;
3. the primary stopped mid-burst, the standby promoted by hand (pg_ctl promote; Patroni does it
   in production, docs/scaling.md): deliveries answer "try later" meanwhile, then resume on the
   new primary; exactly once, none bounced;
4. a message quarantined on mx1 (its parser misbehaves: tests/hooks, in mx1's venv only) is
   replayed from mx2, whose spool never had it: stored.
"""

from __future__ import annotations

import os
import smtplib
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bombom_pipe.schema import grant, upgrade

from . import netns
from .conftest import ALICE, BOB
from .dns_fixture import DnsServer
from .postfix_fixture import Postfix
from .postfix_fixture import available as postfix_available
from .sandbox import LocalPostgres, as_user, give, wait_for
from .test_postfix import bounces, install_env, newsletter, wait_queue_empty
from .test_pull_postfix import hooks_into


def _why_not() -> str | None:
    return netns.available() or postfix_available()


pytestmark = [pytest.mark.postfix, pytest.mark.skipif(_why_not() is not None,
                                                      reason=str(_why_not()))]

NET = "10.21.0"
ADDR = {"snd": f"{NET}.5", "mx1": f"{NET}.11", "mx2": f"{NET}.12", "primary": f"{NET}.31",
        "standby": f"{NET}.32"}
PASSWORD = {"bombom_deliver": "deliver-pw-21", "bombom_lookup": "lookup-pw-21"}
SENDER = "letters@news.example.kr"
VIA_MX2 = "via-mx2@news.example.kr"
DEADLINE = 10  # each host's deadline_seconds


class Cluster(LocalPostgres):
    """A LocalPostgres in the db namespace, on its own address as well as its unix socket."""

    def __init__(self, net: netns.Network, base: Path, address: str) -> None:
        super().__init__(base)
        self.net, self.address = net, address

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.net.exec("db", as_user(self.run_as, list(argv))),
                              check=check, text=True, capture_output=True)

    def start(self) -> None:
        opts = (f"-k {self.sock} -p {self.port} -c listen_addresses={self.address} "
                "-c fsync=on -c max_connections=60 -c wal_level=replica -c ssl=on "
                "-c ssl_cert_file=server.pem -c ssl_key_file=server.key")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", opts, "-w",
                  "-l", str(self.base / "postgres.log"), "start")

    def standby_of(self, primary: Cluster) -> None:
        """A streaming copy of `primary` (pg_basebackup -R: standby.signal, primary_conninfo)."""
        self.base.mkdir(mode=0o755)
        self.sock.mkdir(mode=0o755)
        give(self.base, "postgres")
        self._run(str(self.bindir / "pg_basebackup"), "-D", str(self.data), "-h",
                  str(primary.sock), "-p", str(primary.port), "-U", "postgres", "-R",
                  "-X", "stream", "-c", "fast")

    def promote(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-w", "promote")


class Host(Postfix):
    """A Postfix instance (and its bombom) whose processes live in one namespace."""

    def __init__(self, net: netns.Network, name: str, base: Path) -> None:
        super().__init__(base / "instance")
        self.net, self.name = net, name
        self.address = ADDR[name]
        self.worker: subprocess.Popen[bytes] | None = None
        self.moved = False

    def run(self, cmd: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Postfix's commands inside the host's namespace, once it has its address there."""
        if not self.moved:
            return super().run(cmd, *args, check=check)
        return subprocess.run(self.net.exec(self.name, [cmd, "-c", str(self.etc), *args]),
                              check=check, text=True, capture_output=True)

    def move_in(self, smtp: bool) -> None:
        """From the loopback instance install.sh set up (on the machine, where pip works) to
        the host's own address; SMTP on port 25 there when `smtp`."""
        self.moved = True
        self.run("postconf", "-MX", f"127.0.0.1:{self.port}/inet")
        self.postconf(f"inet_interfaces = {self.address}", f"mynetworks = {NET}.0/24",
                      f"myhostname = {self.name}.bombom.test", "smtp_connect_timeout = 3s")
        if smtp:
            self.port = 25
            self.run("postconf", "-M",
                     f"{self.address}:25/inet={self.address}:25 inet n - y - - smtpd")

    def start(self) -> None:
        self.maillog.touch()
        r = subprocess.run(self.net.exec(self.name, ["postfix", "-c", str(self.etc), "start"]),
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        if self.port == 25:
            wait_for(f"{self.name} to answer", self._listening)

    def stop(self) -> None:
        subprocess.run(self.net.exec(self.name, ["postfix", "-c", str(self.etc), "stop"]),
                       capture_output=True)

    def _listening(self) -> bool:
        try:
            with netns.inside(self.net.ns("snd")), \
                    smtplib.SMTP(self.address, 25, timeout=5) as s:
                return s.noop()[0] == 250
        except (OSError, smtplib.SMTPException):
            return False

    def bombom(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`bombom` of this host, as its pipe user, inside its namespace."""
        argv = [f"{self.env['PREFIX']}/venv/bin/bombom", f"--config={self.env['CONFIG_FILE']}",
                *args]
        return subprocess.run(self.net.exec(self.name, as_user("bombom", argv)),
                              capture_output=True, text=True, timeout=120)

    def start_worker(self) -> None:
        argv = [f"{self.env['PREFIX']}/venv/bin/bombom", f"--config={self.env['CONFIG_FILE']}",
                "worker", f"--socket={self.env['WORKER_SOCKET']}", "--processes=2",
                f"--lmtp-socket={self.env['LMTP_SOCKET']}"]
        mark = len(self.deliver_log())
        self.worker = subprocess.Popen(self.net.exec(self.name, as_user("bombom", argv)),
                                       start_new_session=True, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for("the worker", lambda: "worker started" in self.deliver_log()[mark:], 60)

    def deliver_log(self) -> str:
        path = Path(self.env["LOG"])
        return path.read_text(errors="replace") if path.exists() else ""

    def sendmail(self, sender: str, rcpts: list[str], raw: bytes) -> None:
        """Submit through this (sending) instance's pickup (postdrop: no network involved)."""
        r = subprocess.run(self.net.exec(self.name, ["/usr/sbin/sendmail", "-C", str(self.etc),
                                                     "-f", sender, "--", *rcpts]),
                           input=raw, capture_output=True)
        assert r.returncode == 0, r.stderr


class World:
    """The namespaces, the two clusters and the three Postfix instances of one module."""

    def __init__(self, net: netns.Network, primary: Cluster, standby: Cluster,
                 mx1: Host, mx2: Host, snd: Host) -> None:
        self.net, self.primary, self.standby = net, primary, standby
        self.mx1, self.mx2, self.snd = mx1, mx2, snd
        self.current = primary  # the writable one, for the test's own checks

    def sql(self, query: str, *params: object) -> list[tuple]:
        with psycopg.connect(self.current.url(), autocommit=True) as conn:
            cur = conn.execute(query, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def one(self, query: str, *params: object) -> object:
        return self.sql(query, *params)[0][0]

    def hosts(self) -> tuple[Host, Host, Host]:
        return self.mx1, self.mx2, self.snd

    def bounced(self, marks: dict[str, int]) -> list[str]:
        return [line for h in self.hosts() for line in bounces(h, marks[h.name])]

    def marks(self) -> dict[str, int]:
        return {h.name: len(h.log()) for h in self.hosts()}

    def drained(self, timeout: float = 180) -> None:
        for h in self.hosts():
            wait_queue_empty(h, timeout)


def smtp_to(net: netns.Network, host: Host, rcpts: list[str], raw: bytes) -> dict:
    """One SMTP transaction from the publishers' namespace; {} when every recipient took it."""
    with netns.inside(net.ns("snd")), smtplib.SMTP(host.address, 25, timeout=60,
                                                   local_hostname="out.news.example.kr") as s:
        return s.sendmail(SENDER, rcpts, raw)


def certificates(tls: Path, data: Path) -> Path:
    """A CA, and a server certificate it signed for both database addresses (libpq's
    verify-full checks the address each host of the list is reached by) put into `data`;
    returns the CA's file, readable by the pipe user and Postfix."""
    tls.mkdir(mode=0o755)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tls, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=bombom test database CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
            "server.csr", "-subj", "/CN=db.bombom.test")
    (tls / "san.ext").write_text(
        f"subjectAltName = IP:{ADDR['primary']}, IP:{ADDR['standby']}\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.ext")
    for name, mode in (("server.pem", 0o644), ("server.key", 0o600)):
        (data / name).write_bytes((tls / name).read_bytes())
        (data / name).chmod(mode)
        give(data / name, "postgres")
    (tls / "ca.pem").chmod(0o644)
    return tls / "ca.pem"


@pytest.fixture(scope="module")
def world(workdir: Path) -> Iterator[World]:
    net = netns.Network(f"b21{os.getpid() % 100000}", NET)
    base = workdir / "scaling"
    base.mkdir()
    base.chmod(0o755)
    dns: list[DnsServer] = []
    hosts: list[Host] = []
    primary = standby = None
    try:
        net.create()
        net.host("snd", 5)
        net.host("mx1", 11)
        net.host("mx2", 12)
        net.host("db", 31, 32)
        primary = Cluster(net, base / "primary", ADDR["primary"])
        primary.init()
        ca = certificates(base / "tls", primary.data)  # the standby gets them by pg_basebackup
        with open(primary.data / "pg_hba.conf", "a") as f:  # the edge hosts: TLS and password
            f.write(f"hostssl bombom all {NET}.0/24 scram-sha-256\n")
        primary.start()
        primary.createdb("bombom")
        with psycopg.connect(primary.url(), autocommit=True) as conn:
            upgrade(conn)
            grant(conn, "delivery", "bombom_deliver", PASSWORD["bombom_deliver"])
            grant(conn, "lookup", "bombom_lookup", PASSWORD["bombom_lookup"])
        standby = Cluster(net, base / "standby", ADDR["standby"])
        standby.standby_of(primary)
        standby.start()
        wait_for("the standby streaming", lambda: psycopg.connect(
            primary.url("postgres"), autocommit=True).execute(
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
        ).fetchone()[0] == 1, 60)

        both = f"{ADDR['primary']}:5432,{ADDR['standby']}:5432"
        tls = f"sslmode=verify-full&sslrootcert={ca}&connect_timeout=2"
        for name, mode in (("mx1", "push"), ("mx2", "lmtp")):
            with netns.inside(net.ns(name)):  # a DNS server on the host's own loopback
                dns.append(DnsServer().start())
            hb = base / name
            hb.mkdir()
            hb.chmod(0o755)
            (hb / "run").mkdir()
            h = Host(net, name, hb)
            h.create()
            h.env = install_env(
                hb, primary, dns[-1].address, MODE=mode, DEADLINE=str(DEADLINE),
                DELIVERY_DSN=f"postgresql://bombom_deliver@{both}/bombom"
                             f"?target_session_attrs=read-write&{tls}",
                LOOKUP_DSN=f"postgresql://bombom_lookup@{both}/bombom?{tls}",
                BOMBOM_DELIVERY_PASSWORD=PASSWORD["bombom_deliver"],
                BOMBOM_LOOKUP_PASSWORD=PASSWORD["bombom_lookup"])
            h.install()
            h.move_in(smtp=True)
            if name == "mx1":
                hooks_into(Path(h.env["PREFIX"]), hb)  # mx1's parser misbehaves on demand
            hosts.append(h)
            h.start()
            if mode == "lmtp":
                h.start_worker()
        mx1, mx2 = hosts
        sb = base / "snd"
        sb.mkdir()
        snd = Host(net, "snd", sb)
        snd.create()
        snd.move_in(smtp=False)
        snd.postconf("default_transport = smtp", "relay_transport = smtp",
                     f"relayhost = [{ADDR['mx1']}]:25",
                     f"smtp_fallback_relay = [{ADDR['mx2']}]:25",
                     f"sender_dependent_relayhost_maps = inline:{{{VIA_MX2}=[{ADDR['mx2']}]:25}}",
                     "myorigin = news.example.kr", "smtp_tls_security_level = none",
                     "bounce_queue_lifetime = 1h", "maximal_queue_lifetime = 1h")
        hosts.append(snd)
        snd.start()
        world = World(net, primary, standby, mx1, mx2, snd)
        yield world
    finally:
        for h in hosts:
            h.stop()
        for name in ("mx1", "mx2", "snd"):
            net.kill_all(name)
        for cluster in (standby, primary):
            if cluster is not None:
                cluster.stop("immediate")
        net.remove()
        for d in dns:
            d.stop()


@pytest.fixture
def fresh(world: World) -> Iterator[dict[str, int]]:
    """Empty tables, the two members; every queue empty; the log offsets to check for bounces."""
    world.sql("TRUNCATE members, newsletters, deliveries, raw_messages RESTART IDENTITY CASCADE")
    world.sql("INSERT INTO members (address) VALUES (%s), (%s)", ALICE, BOB)
    for h in world.hosts():
        h.empty_queue()
    marks = world.marks()
    yield marks
    assert world.bounced(marks) == [], "Postfix bounced mail"


def burst(world: World, n: int, tag: str, sender: str = SENDER, start: int = 0) -> None:
    for i in range(start, start + n):
        world.snd.sendmail(sender, [ALICE], newsletter(i, tag))


def settled(world: World, tag: str, n: int) -> None:
    """At least `n` articles of `tag`, and every queue empty."""
    wait_for(f"{n} '{tag}' articles", lambda: world.one(
        "SELECT count(*) FROM articles WHERE subject LIKE %s", f"{tag} %") >= n, 240, 0.5)
    world.drained()


def exactly_once(world: World, tag: str, n: int) -> None:
    """`n` messages of `tag` to one member: `n` articles, none twice, nothing else than stored,
    duplicate or (while the database was away) tempfail."""
    settled(world, tag, n)
    assert world.one("SELECT count(*) FROM articles WHERE subject LIKE %s", f"{tag} %") == n
    assert world.one("SELECT count(DISTINCT message_id) FROM articles WHERE subject LIKE %s",
                     f"{tag} %") == n
    assert world.sql("SELECT DISTINCT outcome FROM deliveries WHERE outcome NOT IN "
                     "('stored', 'duplicate', 'tempfail')") == []


def test_same_message_to_both_hosts_is_one_article_per_member(world: World,
                                                                 fresh: dict[str, int]) -> None:
    at_once = newsletter(1, "both-at-once")
    answers: list[dict] = []
    threads = [threading.Thread(target=lambda h=h: answers.append(
        smtp_to(world.net, h, [ALICE, BOB], at_once))) for h in (world.mx1, world.mx2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = newsletter(2, "both-in-turn")
    answers += [smtp_to(world.net, world.mx1, [ALICE, BOB], after)]
    settled(world, "both-in-turn", 2)  # mx1 has delivered it to both before mx2 gets it
    answers += [smtp_to(world.net, world.mx2, [ALICE, BOB], after)]
    assert answers == [{}, {}, {}, {}]
    settled(world, "both-at-once", 2)
    settled(world, "both-in-turn", 2)
    for mid in ("%both-at-once-1@news.example.kr%", "%both-in-turn-2@news.example.kr%"):
        rows = world.sql("SELECT m.address, host(d.edge_address), d.outcome FROM deliveries d "
                         "JOIN members m ON m.id = d.member_id WHERE d.message_id LIKE %s", mid)
        assert sorted((m, a) for m, a, _ in rows) == sorted(
            (m, ADDR[h]) for m in (ALICE, BOB) for h in ("mx1", "mx2")), rows  # one per host
        for member in (ALICE, BOB):  # one stored, the other a duplicate of it
            assert sorted(o for m, _, o in rows if m == member) == ["duplicate", "stored"], rows
        assert world.one("SELECT count(*) FROM articles WHERE message_id LIKE %s", mid) == 2
    for h in (world.mx1, world.mx2):  # each host delivered both messages to both members
        assert h.log()[fresh[h.name]:].count("status=sent") == 4, h.log()[-3000:]
    # the hosts' connections (the worker's kept ones at least) are TLS; pg_hba allows no other
    assert world.sql("SELECT bool_and(s.ssl), count(*) > 0 FROM pg_stat_ssl s JOIN "
                     "pg_stat_activity a USING (pid) WHERE a.usename = 'bombom_deliver'"
                     ) == [(True, True)]


def test_a_message_quarantined_on_one_host_is_replayed_from_the_other(
        world: World, fresh: dict[str, int]) -> None:
    raw = b"X-Test-Parser: spin\r\n" + newsletter(7, "quarantined-on-mx1")
    assert smtp_to(world.net, world.mx1, [ALICE], raw) == {}
    wait_for("the quarantine", lambda: world.one(
        "SELECT count(*) FROM deliveries WHERE outcome = 'quarantined'") == 1, 120, 0.5)
    [(sha,)] = world.sql("SELECT raw_sha256 FROM deliveries WHERE outcome = 'quarantined'")
    on_mx2 = Path(world.mx2.env["SPOOL_DIR"]) / "raw" / sha[:2] / f"{sha}.eml"
    assert not on_mx2.exists()
    listed = world.mx2.bombom("quarantine", "list")
    assert listed.returncode == 0 and sha[:12] in listed.stdout, listed
    r = world.mx2.bombom("replay")
    assert r.returncode == 0, r.stderr
    assert "replayed 1: stored 1" in r.stdout, r.stdout  # mx2's parser is the mended one
    assert on_mx2.exists()
    assert world.one("SELECT count(*) FROM articles WHERE subject = 'quarantined-on-mx1 7'") == 1
    assert world.one("SELECT host(edge_address) FROM deliveries WHERE outcome = 'stored'"
                     ) == ADDR["mx2"]
    assert "0 quarantined" in world.mx2.bombom("quarantine", "list").stderr


def test_one_host_killed_mid_burst_every_message_once(world: World,
                                                       fresh: dict[str, int]) -> None:
    n = 30
    burst(world, n // 2, "killed")
    wait_for("mx1 delivering", lambda: world.one(
        "SELECT count(*) FROM articles WHERE subject LIKE 'killed %%'") >= 3, 120, 0.2)
    killed = world.net.kill_all("mx1")  # its Postfix, its smtpd sessions, its deliveries
    assert killed > 3
    burst(world, n - n // 2, "killed", start=n // 2)
    wait_queue_empty(world.snd, 120)  # every message handed over, the rest to mx2
    world.mx1.start()  # the host comes back; what its queue had accepted is delivered now
    exactly_once(world, "killed", n)
    assert world.one("SELECT count(*) FROM deliveries WHERE host(edge_address) = %s",
                     ADDR["mx2"]) >= n - n // 2
    assert f"relay={ADDR['mx2']}[{ADDR['mx2']}]:25" in world.snd.log()[fresh["snd"]:]


def test_primary_stopped_mid_burst_standby_promoted(world: World,
                                                    fresh: dict[str, int]) -> None:
    n = 24
    burst(world, n // 2, "failover")
    burst(world, n // 2, "failover", VIA_MX2, start=n // 2)
    wait_for("deliveries under way", lambda: world.one(
        "SELECT count(*) FROM articles WHERE subject LIKE 'failover %%'") >= 4, 120, 0.2)
    world.primary.stop("fast")  # terminates the hosts' connections, kept or not
    # longer than a delivery's deadline: a delivery retries inside it (a quick promotion is
    # never seen by Postfix), then answers "try later" (75 from the pipe, 451 over LMTP)
    time.sleep(DEADLINE + 3)
    world.standby.promote()
    world.current = world.standby
    exactly_once(world, "failover", n)
    deferred = [line for h in world.hosts() for line in h.log_lines(fresh[h.name])
                if "status=deferred" in line]
    assert deferred, "no delivery answered 'try later' during the switch"
    assert {a for (a,) in world.sql("SELECT DISTINCT host(edge_address) FROM deliveries "
                                    "WHERE outcome = 'stored'")} == {ADDR["mx1"], ADDR["mx2"]}
    assert world.one("SELECT pg_is_in_recovery()") is False
