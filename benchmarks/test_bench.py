"""Measurements, not assertions: `make bench`. Numbers go to the issue notes, not to timed tests."""

from __future__ import annotations

import contextlib
import resource
import statistics
import subprocess
import time

import psycopg

from bombom_pipe.parse import ParseError, parse_message
from tests.bombs import BOMBS
from tests.conftest import EXAMPLES, Env, corpus_files


def test_parse_typical_newsletter(benchmark) -> None:  # noqa: ANN001
    raw = (EXAMPLES / "korean-weekly-cp949.eml").read_bytes()
    benchmark(parse_message, raw)


def test_parse_corpus_median_p95() -> None:
    times = []
    for path in corpus_files():
        raw = path.read_bytes()
        t0 = time.perf_counter()
        with contextlib.suppress(ParseError):
            parse_message(raw)
        times.append(time.perf_counter() - t0)
    if times:
        q = statistics.quantiles(times, n=20)
        print(f"\nparse over {len(times)} corpus files: median "
              f"{statistics.median(times) * 1000:.2f} ms, p95 {q[18] * 1000:.2f} ms, "
              f"max {max(times) * 1000:.1f} ms")


def test_one_delivery_wall_time(env: Env, db: psycopg.Connection) -> None:
    raw = (EXAMPLES / "english-digest.eml").read_bytes()
    times = []
    for i in range(20):
        msg = raw.replace(b"<digest-", f"<bench{i}-".encode())
        t0 = time.perf_counter()
        assert env.deliver(msg).returncode == 0
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    python = next(a for a in env.argv() if "python" in a.rsplit("/", 1)[-1])
    for _ in range(20):
        subprocess.run([python, "-c", "pass"], check=True)
    base = (time.perf_counter() - t0) / 20
    print(f"\none delivery (median of 20): {statistics.median(times) * 1000:.1f} ms; "
          f"{python} -c pass: {base * 1000:.1f} ms")


def test_peak_rss_per_bomb(env: Env, db: psycopg.Connection) -> None:
    env.extra_env = {"BOMBOM_DEADLINE_SECONDS": "300"}
    for name, make in sorted(BOMBS.items()):
        raw = make()
        argv = ["/usr/bin/time", "-f", "%M %e", *env.argv("--recipient", "alice@bombom.news")]
        r = subprocess.run(argv, input=raw, capture_output=True, timeout=600)
        rss_kb, secs = r.stderr.decode().strip().splitlines()[-1].split()
        print(f"\n{name}: {len(raw) / 1e6:.1f} MB in, exit {r.returncode}, peak RSS "
              f"{int(rss_kb) / 1024:.0f} MiB, {float(secs):.2f} s")


def test_authentication_cost_per_delivery(env: Env, db: psycopg.Connection, dns_server,  # noqa: ANN001
                                          key) -> None:  # noqa: ANN001
    """Median cold delivery for: no authentication work (a milter's header is trusted, none
    present), an unsigned mail (DMARC lookups only), a signed mail (DMARC + key + RSA verify)."""
    from tests.test_trust import DOMAIN, SELECTOR, mail, sign

    dns_server.txt[f"{SELECTOR}._domainkey.{DOMAIN}"] = [key[1]]
    dns_server.txt[f"_dmarc.{DOMAIN}"] = ["v=DMARC1; p=none"]
    base_config = env.config.read_text()

    configs = {"header-trust": 'auth_method = "authentication-results"\n'
                               'authserv_id = "x.invalid"\n', "unsigned": "", "signed": ""}
    wall: dict[str, list[float]] = {k: [] for k in configs}
    cpu: dict[str, list[float]] = {k: [] for k in configs}
    for i in range(15):  # interleaved, so that load on the machine hits each kind alike
        for kind, extra in configs.items():
            env.write_config(base_config + extra)
            raw = mail(mid=f"{kind}{i}@{DOMAIN}")
            raw = sign(raw, key) if kind == "signed" else raw
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            assert env.deliver(raw).returncode == 0
            wall[kind].append((time.perf_counter() - t0) * 1000)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[kind].append((after.ru_utime + after.ru_stime - before.ru_utime
                              - before.ru_stime) * 1000)
    rows = db.execute("SELECT auth_verdict, count(*) FROM articles GROUP BY 1 ORDER BY 1")
    base_wall, base_cpu = statistics.median(wall["header-trust"]), statistics.median(
        cpu["header-trust"])
    print("\ncold delivery, median of 15 (wall ms / CPU ms of the process):")
    for kind in configs:
        w, c = statistics.median(wall[kind]), statistics.median(cpu[kind])
        print(f"  {kind:<13} {w:7.1f} / {c:6.1f}   (+{w - base_wall:.1f} / +{c - base_cpu:.1f})")
    print(f"  verdicts {rows.fetchall()}")


def test_supervisor_peak_rss(env: Env, db: psycopg.Connection) -> None:
    """bombom-deliver's own peak RSS (its delivering child is not reaped, so not counted) next
    to the child's, over 10 deliveries."""
    raw = (EXAMPLES / "english-digest.eml").read_bytes()
    own = []
    for i in range(10):
        msg = raw.replace(b"<digest-", f"<rss{i}-".encode())
        argv = ["/usr/bin/time", "-f", "%M", *env.argv("--recipient", "alice@bombom.news")]
        r = subprocess.run(argv, input=msg, capture_output=True, timeout=60)
        assert r.returncode == 0, r
        own.append(int(r.stderr.decode().split()[-1]))
    print(f"\nbombom-deliver (supervisor) peak RSS: median {statistics.median(own) / 1024:.1f} "
          f"MiB, max {max(own) / 1024:.1f} MiB")


def test_authentication_of_hostile_mail(dns_server, key) -> None:  # noqa: ANN001
    """CPU of `auth.verify` alone for what a stranger can send: thousands of DKIM-Signature
    headers (dkimpy's cost grows with their square), and a signature whose key has a 32768-bit
    modulus and exponent with a b= as long as the modulus (one modular exponentiation of that
    size). Both are refused before dkimpy does the work; figures only."""
    import base64
    import os
    import re

    from bombom_pipe import auth
    from tests.test_trust import DOMAIN, SELECTOR
    from tests.test_trust_headers import issue, rsa_public_key, signed

    dns_server.txt[f"{SELECTOR}._domainkey.{DOMAIN}"] = [key[1]]
    dns_server.txt[f"huge._domainkey.{DOMAIN}"] = [rsa_public_key(32768, (1 << 32767) | 1)]
    genuine = signed(issue(), key)
    junk = b"".join(b"DKIM-Signature: v=1; a=rsa-sha256; d=other%d.example.org; s=x; h=from;"
                    b" bh=AAAA; b=AAAA\r\n" % i for i in range(8000))
    huge = signed(issue(), key, selector="huge")
    end = re.search(rb"\r\n(?![ \t])", huge).start()  # the end of the DKIM-Signature field
    fat = base64.b64encode(b"\x01" + os.urandom(4095))
    huge = re.sub(rb"b=[A-Za-z0-9+/=\s]+$", b"b=" + fat, huge[:end]) + huge[end:]
    print("\nauth.verify, CPU seconds:")
    for name, raw in [("genuine signature", genuine), ("8000 junk signatures", junk + genuine),
                      ("32768-bit key", huge)]:
        t = time.process_time()
        verdict = auth.verify(raw, DOMAIN, auth.Dns((dns_server.address,), 120), auth.Smtp())
        print(f"  {name:<22} {time.process_time() - t:6.2f}  {verdict.verdict}:"
              f" {verdict.detail[:70]}")


def test_pull_claims_do_not_grow_with_the_backlog(tmp_path) -> None:  # noqa: ANN001
    """Maildir.due with 300,000 files waiting in new/ against an empty Maildir fed one file at a
    time: the cost of a claim (what bounds how fast pull drains a backlog) must not grow with
    it. The old claim listed and sorted all of new/ each time (~240 ms at 300,000)."""
    from pathlib import Path

    from bombom_pipe.maildir import Maildir

    def per_claim(root: Path, backlog: int, claims: int = 2000) -> float:
        md = Maildir(root)
        md.open()
        for i in range(backlog):
            (md.new / f"{i:07d}.V1I1M1.mx").touch()
        took, taken = 0.0, 0
        for i in range(claims):
            if not backlog:
                (md.new / f"x{i:07d}.V1I1M1.mx").touch()
            t0 = time.perf_counter()
            taken += len(md.due(1))
            took += time.perf_counter() - t0
        assert taken == claims
        return took / claims

    empty = per_claim(tmp_path / "empty", 0)
    full = per_claim(tmp_path / "full", 300_000)
    print(f"\npull claim: {empty * 1e6:.0f} µs each on an empty Maildir (one file written "
          f"before each), {full * 1e6:.0f} µs each with 300,000 waiting in new/ "
          f"({full / empty:.2f}×)")
