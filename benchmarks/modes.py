"""`make bench`: the delivery routes side by side, in one run, through a real Postfix on loopback
and a throwaway PostgreSQL (both started here, both gone afterwards). Numbers, not assertions.

    python -m benchmarks.modes [--messages N] [--json FILE]      (as root, like the Postfix tests)

Routes, each fed the same burst of N distinct messages over SMTP, at destination concurrency 2,
once per message set: `synthetic` (~12 KB HTML newsletters made here) and `real` (the shared
corpus's newsletters and the tests' Korean letters, 10-170 KB, each under its own Message-ID):
    floor        pipe(8) to `python3 -S -c 'import sys; sys.stdin.buffer.read()'`: the least any
                 Python command behind pipe(8) can cost
    virtual      virtual(8) into a Maildir (nothing ingests it): the least for the pull mode
    lmtp floor   lmtp(8) to a stdlib asyncio LMTP server that only saves each message with fsync
                 (benchmarks/lmtp_floor.py): the least for a Python LMTP door
    cold push    pipe(8) to bombom-deliver without a worker
    push+worker  pipe(8) to bombom-deliver, which hands each message to `bombom worker`
    lmtp         lmtp(8) to `bombom worker --lmtp-socket` (the LMTP door)
    pull         virtual(8) into the Maildir, drained by `bombom worker --maildir`
    lmtp+metrics, pull+metrics   the same with the worker's metrics on (`metrics_listen`) and
                 scraped every second, as the test's Prometheus does: the ratio to the route
                 without is printed after the table
Sender authentication asks a DNS server on loopback that answers NXDOMAIN (tests/dns_fixture.py),
never the machine's resolver.
messages/s is N over the time from the first SMTP connection to the last message stored (or
delivered, for the two baselines); delay p50/p95 is Postfix's delay= of each message (for pull:
that, plus the lag from the Maildir file to the stored row); RSS is the largest resident set of a
process doing deliveries (sampled below Postfix's master and the worker; not Postfix's daemons),
and for bombom-deliver also the command's own peak (/usr/bin/time).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from pathlib import Path

import psycopg

from bombom_pipe.schema import grant, upgrade
from tests.dns_fixture import DnsServer
from tests.postfix_fixture import Postfix, available, free_port, wait_for
from tests.sandbox import LocalPostgres, as_user

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
KOREAN = ROOT / "tests" / "data" / "newsletters" / "mails" / "ko"

PIPE_USER = "bombom"
POSTFIX_DAEMONS = {"master", "qmgr", "pickup", "smtpd", "cleanup", "proxymap", "trivial-rewrite",
                   "anvil", "tlsmgr", "postlogd", "scache", "showq", "bounce", "flush", "pipe",
                   "error", "discard", "verify", "smtp", "lmtp"}  # but virtual(8): it delivers
ALICE = "alice@bombom.news"
DELAY = re.compile(r": to=<[^>]*>,.*? relay=(?P<relay>[^,]+),.*? delay=(?P<delay>[\d.]+),"
                   r" delays=[\d./]+,.*? status=sent")


def real_letters() -> list[bytes]:
    """The shared corpus's newsletters and the tests' Korean letters (real issues)."""
    found = []
    manifest = CORPUS / "MANIFEST.tsv"
    if manifest.exists():
        for line in manifest.read_text(encoding="utf-8").splitlines()[1:]:
            cols = line.split("\t")
            if len(cols) > 5 and cols[5] == "newsletter":
                found.append((CORPUS / cols[0]).read_bytes())
    found += [p.read_bytes() for p in sorted(KOREAN.glob("*.eml"))]
    return found


def distinct(raw: bytes, tag: str) -> bytes:
    """`raw` under a Message-ID of its own (the old one dropped), CRLF line ends for SMTP."""
    head, sep, body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
    lines = [h for h in re.split(rb"\n(?![ \t])", head)
             if not h.lower().startswith(b"message-id:")]
    lines.insert(0, f"Message-ID: <{tag}-{time.time_ns()}@bench.example>".encode())
    return (b"\n".join(lines) + sep + body).replace(b"\n", b"\r\n")


def newsletter(i: int, route: str) -> bytes:
    """~12 KB of HTML, distinct per message."""
    rows = "".join(f"<tr><td style=\"padding:8px\"><h2>{route} 기사 {i}.{k}</h2><p>봄봄 "
                   f"뉴스레터의 {k}번째 소식입니다. Lorem ipsum dolor sit amet, consectetur "
                   f"adipiscing elit, sed do eiusmod tempor.</p><a href=\"https://news.example"
                   f".kr/a/{i}/{k}\">더 보기</a></td></tr>" for k in range(40))
    return (f"From: Bench Letter <letter@news.example.kr>\r\nTo: {ALICE}\r\n"
            f"Subject: {route} {i}\r\nDate: {formatdate()}\r\n"
            f"Message-ID: <{route.replace(' ', '-')}-{i}-{time.time_ns()}@news.example.kr>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
            f"<html><body><table>{rows}</table></body></html>\r\n").encode()


class RssSampler:
    """Largest VmHWM among the processes below `roots()` (Postfix's master, the worker), every
    20 ms: the pipe commands and their children, virtual(8), the worker's processes."""

    def __init__(self, roots: Callable[[], set[int]]) -> None:
        self.roots = roots
        self.peak = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.wait(0.02):
            parent: dict[int, int] = {}
            for proc in Path("/proc").glob("[0-9]*"):
                try:
                    stat = (proc / "stat").read_bytes()
                except OSError:
                    continue
                parent[int(proc.name)] = int(stat[stat.rindex(b")") + 2:].split()[1])
            ours, todo = set(), set(self.roots())
            while todo:
                pid = todo.pop()
                ours.add(pid)
                todo |= {p for p, pp in parent.items() if pp == pid and p not in ours}
            for pid in ours:
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                m = re.search(r"^VmHWM:\s+(\d+)", status, re.M)
                name = status.split("\n", 1)[0].removeprefix("Name:\t")
                if m and name not in POSTFIX_DAEMONS:
                    self.peak = max(self.peak, int(m[1]))

    def __enter__(self) -> RssSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


METRICS = "+metrics"  # a route's suffix: the same route, its worker serving metrics_listen


class Scraper:
    """Prometheus's part while a burst runs: GET /metrics every second (the test config's rate)."""

    def __init__(self, port: int) -> None:
        self.url, self.done, self.count = f"http://127.0.0.1:{port}/metrics", threading.Event(), 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        import urllib.request

        while not self.done.wait(1.0):
            with contextlib.suppress(OSError), urllib.request.urlopen(self.url, timeout=1) as r:
                r.read()
                self.count += 1

    def stop(self) -> int:
        self.done.set()
        self.thread.join()
        return self.count


class Bench:
    def __init__(self, base: Path, n: int, processes: int) -> None:
        self.base, self.n, self.processes = base, n, processes
        self.dns = DnsServer().start()
        self.floor: subprocess.Popen[bytes] | None = None
        self.pg = LocalPostgres(base / "pg", port=free_port())
        self.postfix = Postfix(base / "instance")
        self.worker: subprocess.Popen[bytes] | None = None
        self.rss_file = base / "rss.txt"
        self.metrics_port = free_port()

    # set-up
    def start(self) -> None:
        self.base.chmod(0o755)
        self.pg.start()
        self.pg.createdb("bombom")
        with psycopg.connect(self.pg.url(), autocommit=True) as conn:
            upgrade(conn)
            grant(conn, "delivery", "bombom_deliver")
            grant(conn, "lookup", "bombom_lookup")
        self.postfix.create()
        self.postfix.env = {
            "PREFIX": str(self.base / "opt"), "CONFIG_FILE": str(self.base / "etc" / "bombom.conf"),
            "SPOOL_DIR": str(self.base / "spool"), "LOG": str(self.base / "log" / "deliver.log"),
            "DELIVERY_DSN": self.pg.url(user="bombom_deliver"),
            "LOOKUP_DSN": self.pg.url(user="bombom_lookup"), "DEADLINE": "60", "MAXPROC": "2",
            "DOMAINS": "bombom.news", "MAILDIR_BASE": str(self.base / "maildir"),
            "SYSTEMD_DIR": str(self.base / "systemd"), "DNS_SERVERS": self.dns.address,
            "WORKER_SOCKET": str(self.base / "run" / "worker.sock")}
        self.install("push")
        run = self.base / "run"  # the worker's: Postfix's lmtp(8) passes through to its socket
        run.mkdir(exist_ok=True)
        subprocess.run(["chown", f"{PIPE_USER}:postfix", str(run)], check=True)
        run.chmod(0o750)
        self.postfix.postconf("virtual_destination_concurrency_limit = 2",
                              "floor_destination_concurrency_limit = 2",
                              "floor_destination_recipient_limit = 1",
                              "bombomlmtp_destination_concurrency_limit = 2")
        self.postfix.run("postconf", "-M", "floor/unix=floor unix - n n - 2 pipe flags=X "
                         f"user={PIPE_USER} argv=/usr/bin/python3 -S -c "
                         "{import sys; sys.stdin.buffer.read()}")
        self.postfix.run("postconf", "-M", "bombomlmtp/unix=bombomlmtp unix - - n - - lmtp")
        self.postfix.start()

    def stop(self) -> None:
        self.stop_worker()
        self.dns.stop()
        self.postfix.stop()
        self.pg.stop("immediate")

    def install(self, mode: str) -> None:
        self.postfix.install(MODE=mode)

    def reload(self) -> None:
        before = self.postfix.reload_count()
        self.postfix.run("postfix", "reload")
        self.postfix.wait_reloaded(before)

    @property
    def lmtp_socket(self) -> Path:
        return self.base / "run" / "lmtp.sock"

    def start_worker(self, route: str) -> None:
        env = self.postfix.env
        route, metrics = route.removesuffix(METRICS), route.endswith(METRICS)
        if route == "lmtp floor":
            out = self.base / "floor-out"
            out.mkdir(exist_ok=True)
            subprocess.run(["chown", PIPE_USER, str(out)], check=True)
            self.worker = subprocess.Popen(as_user(PIPE_USER, [
                "/usr/bin/python3", str(ROOT / "benchmarks" / "lmtp_floor.py"),
                str(self.lmtp_socket), str(out)]), start_new_session=True)
            wait_for("the LMTP floor", self.lmtp_socket.exists, 30)
            return
        args = [f"{env['PREFIX']}/venv/bin/bombom", f"--config={env['CONFIG_FILE']}", "worker",
                f"--socket={env['WORKER_SOCKET']}", f"--processes={self.processes}"]
        if metrics:  # served on loopback and scraped every second while the burst runs
            args = ["env", f"BOMBOM_METRICS_LISTEN={self.metrics_port}", *args]
        if route == "pull":
            args.append(f"--maildir={env['MAILDIR_BASE']}/Maildir")
        if route == "lmtp":
            args.append(f"--lmtp-socket={self.lmtp_socket}")
        log = Path(env["LOG"])
        mark = len(log.read_text()) if log.exists() else 0
        self.worker = subprocess.Popen(as_user(PIPE_USER, args), start_new_session=True,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for("the worker", lambda: "worker started" in log.read_text()[mark:], 60)

    def stop_worker(self) -> None:
        if self.worker and self.worker.poll() is None:
            os.killpg(self.worker.pid, signal.SIGTERM)
            self.worker.wait(30)
        self.worker = None
        self.lmtp_socket.unlink(missing_ok=True)

    def configure(self, route: str) -> None:
        """Postfix (and the worker) for one route."""
        self.stop_worker()
        worker_route, route = route, route.removesuffix(METRICS)
        mode = {"push+worker": "worker", "pull": "pull", "virtual": "pull"}.get(route, "push")
        self.install(mode)
        if route in ("cold push", "push+worker"):  # the command's own peak RSS, per run
            entry = self.postfix.run("postconf", "-M", "bombom/unix").stdout.strip()
            timed = entry.replace("argv=", f"argv=/usr/bin/time -a -o {self.rss_file} -f %M ", 1)
            self.postfix.run("postconf", "-M", f"bombom/unix={timed}")
        if "lmtp" in route:  # install.sh keeps a bombomlmtp service in MODE=lmtp only
            self.postfix.run("postconf", "-M", "bombomlmtp/unix=bombomlmtp unix - - n - - lmtp")
            self.postfix.postconf("bombomlmtp_destination_concurrency_limit = 2")
        self.postfix.postconf(
            "virtual_transport = floor" if route == "floor" else
            f"virtual_transport = bombomlmtp:unix:{self.lmtp_socket}" if "lmtp" in route else
            "virtual_transport = virtual" if mode == "pull" else "virtual_transport = bombom")
        self.reload()
        if route in ("push+worker", "pull", "lmtp", "lmtp floor"):
            self.start_worker(worker_route)

    # one burst
    def run(self, route: str, letters: list[bytes] | None) -> dict:
        self.stop_worker()
        maildir = Path(self.postfix.env["MAILDIR_BASE"]) / "Maildir"
        for sub in ("new", "cur", "claimed"):  # what an earlier route left
            for f in (maildir / sub).glob("*") if (maildir / sub).is_dir() else ():
                f.unlink()
        self.configure(route)
        with psycopg.connect(self.pg.url(), autocommit=True) as conn:
            conn.execute("TRUNCATE members, newsletters RESTART IDENTITY CASCADE")
            conn.execute("INSERT INTO members (address) VALUES (%s)", (ALICE,))
        self.postfix.members_map(self.pg.url())  # pull mode's RCPT check reads this copy
        self.postfix.empty_queue()
        self.rss_file.unlink(missing_ok=True)
        self.rss_file.touch()
        self.rss_file.chmod(0o666)
        mark = len(self.postfix.log())
        messages = [distinct(letters[i % len(letters)], f"{route}-{i}".replace(" ", "-"))
                    if letters else newsletter(i, route) for i in range(self.n)]
        relay = {"floor": "floor", "virtual": "virtual", "pull": "virtual"}.get(
            route.removesuffix(METRICS), "bombomlmtp" if "lmtp" in route else "bombom")
        stored = route.removesuffix(METRICS) in ("cold push", "push+worker", "pull", "lmtp")
        scraper = Scraper(self.metrics_port) if route.endswith(METRICS) else None
        with RssSampler(self.roots) as rss:
            t0 = time.monotonic()
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda batch: self.send(batch), [messages[k::4] for k in range(4)]))
            if stored:
                wait_for("all delivered", lambda: self.deliveries() >= self.n, 600, 0.05)
            else:
                wait_for("all delivered", lambda: len(self.sent(mark, relay)) >= self.n, 600,
                         0.05)
            took = time.monotonic() - t0
        if scraper is not None:
            scrapes = scraper.stop()
        delays = [float(m["delay"]) for m in self.sent(mark, relay)]
        result = {"route": route, "set": "real" if letters else "synthetic",
                  "messages": self.n, "seconds": round(took, 2),
                  "per_second": round(self.n / took, 2),
                  "delay_p50": round(statistics.median(delays), 2),
                  "delay_p95": round(statistics.quantiles(delays, n=20)[18], 2),
                  "rss_peak_mib": round(rss.peak / 1024, 1)}
        command_rss = [int(x) for x in self.rss_file.read_text().split() if x.isdigit()]
        if command_rss:
            result["command_rss_mib"] = round(statistics.median(command_rss) / 1024, 1)
        if scraper is not None:
            result["scrapes"] = scrapes
        if route.removesuffix(METRICS) == "pull":
            with psycopg.connect(self.pg.url()) as conn:
                lags = [r[0] for r in conn.execute(
                    "SELECT extract(epoch FROM finished_at - started_at)::float FROM deliveries")]
            result["lag_p50"] = round(statistics.median(lags), 2)
            result["lag_p95"] = round(statistics.quantiles(lags, n=20)[18], 2)
        with psycopg.connect(self.pg.url()) as conn:
            result["articles"] = conn.execute("SELECT count(*) FROM articles").fetchone()[0]
        result["bounced"] = sum("status=bounced" in line
                                for line in self.postfix.log_lines(mark))
        return result

    def roots(self) -> set[int]:
        pids = set()
        with contextlib.suppress(OSError, ValueError):
            pids.add(int((self.postfix.queue / "pid" / "master.pid").read_text().split()[0]))
        if self.worker is not None:
            pids.add(self.worker.pid)
        return pids

    def send(self, batch: list[bytes]) -> None:
        import smtplib

        with smtplib.SMTP("127.0.0.1", self.postfix.port, local_hostname="bench.example",
                          timeout=60) as s:
            for raw in batch:
                s.sendmail("bounce@news.example.kr", [ALICE], raw)

    def deliveries(self) -> int:
        """Deliveries done (stored, duplicate or quarantined: a real letter may be either)."""
        with psycopg.connect(self.pg.url()) as conn:
            return conn.execute("SELECT count(DISTINCT raw_sha256) FROM deliveries WHERE outcome"
                                " IN ('stored', 'duplicate', 'quarantined')").fetchone()[0]

    def sent(self, mark: int, relay: str) -> list[re.Match[str]]:
        return [m for line in self.postfix.log_lines(mark)
                if (m := DELAY.search(line)) and (m["relay"] == relay or relay == "bombomlmtp"
                                                  and m["relay"].endswith("lmtp.sock]"))]


def table(results: list[dict]) -> str:
    """One table per message set; ratios to that set's floors, measured in the same run."""
    out = []
    for name in dict.fromkeys(r["set"] for r in results):
        rows = [r for r in results if r["set"] == name]
        rate = {r["route"]: r["per_second"] for r in rows}
        head = (f"{name + ' set':<12} {'msg/s':>7} {'×floor':>7} {'×lmtp fl':>8} "
                f"{'×virtual':>8} {'delay p50':>9} {'p95':>6} {'lag p95':>7} {'RSS peak':>8} "
                f"{'cmd RSS':>7}")
        out += ["", head, "-" * len(head)]
        for r in rows:
            ratio = [f"{r['per_second'] / rate[k]:.2f}" if rate.get(k) else "-"
                     for k in ("floor", "lmtp floor", "virtual")]
            out.append(
                f"{r['route']:<12} {r['per_second']:>7.1f} {ratio[0]:>7} {ratio[1]:>8} "
                f"{ratio[2]:>8} {r['delay_p50']:>8.2f}s {r['delay_p95']:>5.2f}s "
                f"{(str(r['lag_p95']) + 's') if 'lag_p95' in r else '-':>7} "
                f"{r['rss_peak_mib']:>5.1f}MiB "
                f"{(str(r['command_rss_mib'])) if 'command_rss_mib' in r else '-':>7}")
    return "\n".join(out)


def metrics_cost(results: list[dict]) -> str:
    """Delivery rate with the worker's metrics on (scraped every second) over off, same run."""
    rate = {(r["set"], r["route"]): r["per_second"] for r in results}
    pairs = [f"{s} {route}: {rate[(s, route + METRICS)] / rate[(s, route)]:.2f}"
             for s, route in rate if (s, route + METRICS) in rate]
    return "metrics on / off: " + (", ".join(pairs) or "-")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--json", default="bench-modes.json", help="where the figures go as JSON")
    ap.add_argument("--routes", default="floor,virtual,lmtp floor,cold push,push+worker,lmtp,"
                                        "lmtp+metrics,pull,pull+metrics")
    ap.add_argument("--sets", default="synthetic,real")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 2,
                    help="bombom worker --processes")
    args = ap.parse_args()
    why = available()
    if why:
        print(f"bench skipped: {why}")
        return 0
    letters = real_letters()
    base = Path(tempfile.mkdtemp(prefix="bombom-bench-", dir="/tmp"))
    bench = Bench(base, args.messages, args.processes)
    results = []
    try:
        bench.start()
        for name in args.sets.split(","):
            if name == "real" and not letters:
                print("real set skipped: no ../shared/corpus here", file=sys.stderr)
                continue
            for route in args.routes.split(","):
                results.append(bench.run(route, letters if name == "real" else None))
                print(f"  {name} {route}: {results[-1]}", file=sys.stderr)
    finally:
        bench.stop()
        if args.keep:
            print(f"kept {base}", file=sys.stderr)
        else:
            subprocess.run(["rm", "-rf", str(base)], check=False)
    machine = (f"{platform.node()}: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
               f"Python {platform.python_version()}")
    print(f"\n{args.messages} messages per route, destination concurrency 2, worker processes "
          f"{args.processes}; real set: {len(letters)} letters; {machine}")
    print(table(results))
    print(metrics_cost(results))
    Path(args.json).write_text(json.dumps({"machine": machine, "results": results}, indent=1))
    print(f"(JSON: {args.json})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
