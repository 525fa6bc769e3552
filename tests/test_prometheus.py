"""What an operator watches, against a real Prometheus (Debian's `prometheus`, on loopback,
scraping every second) and a real Postfix installed by install.sh in each mode: the deliveries
Prometheus counted equal the rows of the deliveries table; in pull mode with the database
stopped the Maildir backlog gauge rises and falls and the alert rules shipped in
monitoring/bombom-alerts.yml fire and resolve; every panel of the Grafana dashboard is a query
Prometheus answers; `bombom check` sees a stopped worker. The rules file alone passes
`promtool check rules`."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import psycopg
import pytest

from .conftest import ALICE, BOB
from .dns_fixture import DnsServer
from .postfix_fixture import Postfix, available, free_port, wait_for
from .sandbox import LocalPostgres, as_user
from .test_postfix import install_env, newsletter, send

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "monitoring" / "bombom-alerts.yml"
DASHBOARD = ROOT / "monitoring" / "grafana-dashboard.json"
needs_prometheus = pytest.mark.skipif(not shutil.which("prometheus"), reason="Debian's "
                                      "prometheus is not installed (as root, `make deps`)")


def test_alert_rules_pass_promtool() -> None:
    if not shutil.which("promtool"):
        pytest.skip("promtool is not installed (Debian's prometheus; as root, `make deps`)")
    r = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


class Prometheus:
    """A private Prometheus: its own config, rules and data directory, 127.0.0.1 only."""

    def __init__(self, base: Path, targets: dict[str, int]) -> None:
        self.base, self.port = base, free_port()
        base.mkdir()
        # the shipped rules with their `for:` shortened to what a test can wait for
        rules = re.sub(r"for: \d+m", "for: 2s", RULES.read_text())
        (base / "rules.yml").write_text(rules)
        jobs = "".join(f"  - job_name: {job}\n    static_configs:\n"
                       f"      - targets: ['127.0.0.1:{port}']\n"
                       for job, port in targets.items())
        (base / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            f"rule_files: ['{base / 'rules.yml'}']\nscrape_configs:\n{jobs}")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={base / 'prometheus.yml'}",
             f"--storage.tsdb.path={base / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--log.level=warn"], stdout=subprocess.DEVNULL,
            stderr=open(base / "prometheus.log", "wb"))  # noqa: SIM115 - the process keeps it
        wait_for("Prometheus ready", self._ready, 60)

    def _ready(self) -> bool:
        with contextlib.suppress(OSError), urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
            return r.status == 200
        return False

    def api(self, path: str, **params: str) -> object:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]

    def value(self, expr: str) -> float | None:
        """The query's single value now; None when it has no series."""
        result = self.api("query", query=expr)["result"]  # type: ignore[index]
        return float(result[0]["value"][1]) if result else None

    def by(self, expr: str, label: str) -> dict[str, float]:
        return {r["metric"].get(label, ""): float(r["value"][1])
                for r in self.api("query", query=expr)["result"]}  # type: ignore[index]

    def firing(self) -> set[str]:
        return {a["labels"]["alertname"] for a in self.api("alerts")["alerts"]  # type: ignore[index]
                if a["state"] == "firing"}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


class Textfile(http.server.ThreadingHTTPServer):
    """Stands in for node_exporter's textfile collector: serves the file `bombom metrics
    --textfile` wrote, as it is."""

    def __init__(self, path: Path) -> None:
        textfile = path

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = textfile.read_bytes() if textfile.exists() else b""
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


class Mode:
    """One mode installed by install.sh on a private Postfix, its worker with metrics on."""

    def __init__(self, base: Path, pg: LocalPostgres, dns: DnsServer, mode: str,
                 metrics_port: int) -> None:
        self.base, self.mode, self.metrics_port = base, mode, metrics_port
        base.mkdir()
        base.chmod(0o755)
        (base / "run").mkdir()
        self.postfix = p = Postfix(base / "instance")
        p.create()
        p.env = install_env(base, pg, dns.address, MODE=mode, DEADLINE="10")
        p.install()
        with open(p.env["CONFIG_FILE"], "a") as f:  # what docs/operations.md says to add
            f.write(f'metrics_listen = "{metrics_port}"\n')
        p.start()
        self.worker: subprocess.Popen[bytes] | None = None

    @property
    def maildir(self) -> Path:
        return Path(self.postfix.env["MAILDIR_BASE"]) / "Maildir"

    def log(self) -> str:
        path = Path(self.postfix.env["LOG"])
        return path.read_text(errors="replace") if path.exists() else ""

    def start_worker(self) -> None:
        env = self.postfix.env
        args = ["env", f"MAIL_CONFIG={self.postfix.etc}", f"{env['PREFIX']}/venv/bin/bombom",
                f"--config={env['CONFIG_FILE']}", "worker", f"--socket={env['WORKER_SOCKET']}",
                "--processes=2"]
        if self.mode == "pull":
            args.append(f"--maildir={self.maildir}")
        if self.mode == "lmtp":
            args.append(f"--lmtp-socket={env['LMTP_SOCKET']}")
        mark = len(self.log())
        self.worker = subprocess.Popen(as_user("bombom", args), start_new_session=True,
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
        wait_for("the worker", lambda: f"metrics 127.0.0.1:{self.metrics_port}"
                 in self.log()[mark:], 60)

    def stop_worker(self) -> None:
        if self.worker and self.worker.poll() is None:
            os.killpg(self.worker.pid, 9)
            self.worker.wait(10)

    def bombom(self, *args: str, **environ: str) -> subprocess.CompletedProcess[str]:
        env = self.postfix.env
        return subprocess.run(
            ["env", f"MAIL_CONFIG={self.postfix.etc}", *(f"{k}={v}" for k, v in environ.items()),
                           f"{env['PREFIX']}/venv/bin/bombom", f"--config={env['CONFIG_FILE']}",
                           *args], capture_output=True, text=True, timeout=120)

    def close(self) -> None:
        self.stop_worker()
        self.postfix.stop()


def rows(pg: LocalPostgres) -> dict[str, int]:
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        return dict(conn.execute("SELECT outcome, count(*) FROM deliveries GROUP BY outcome"))


def fresh(pg: LocalPostgres) -> None:
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute("TRUNCATE members, newsletters, deliveries RESTART IDENTITY CASCADE")
        conn.execute("INSERT INTO members (address) VALUES (%s), (%s)", (ALICE, BOB))


def nonzero(counts: dict[str, float]) -> dict[str, int]:
    return {k: int(v) for k, v in counts.items() if v}


def final(counts: dict[str, int]) -> dict[str, int]:
    """Outcomes the database always records (a tempfail only when it could)."""
    return {k: v for k, v in counts.items() if k != "tempfail"}


@pytest.mark.postfix
@pytest.mark.slow
@pytest.mark.skipif(available() is not None, reason=str(available()))
@needs_prometheus
def test_prometheus_sees_every_mode(pg: LocalPostgres, workdir: Path,
                                    dns_server: DnsServer) -> None:
    base = workdir / "prometheus-e2e"
    base.mkdir()
    base.chmod(0o755)
    metrics_port = free_port()
    textfile = base / "bombom.prom"
    served = Textfile(textfile)
    prom = Prometheus(base / "prometheus", {"bombom": metrics_port,
                                            "bombom-textfile": served.server_address[1]})
    try:
        for mode in ("push", "worker", "lmtp", "pull"):
            m = Mode(base / mode, pg, dns_server, mode, metrics_port)
            try:
                fresh(pg)
                m.postfix.members_map(pg.url())
                if mode == "push":
                    _push(m, pg, prom, textfile)
                    continue
                m.start_worker()
                _burst_counted(m, pg, prom)
                if mode in ("worker", "lmtp"):
                    _check_sees_the_path(m)
                if mode == "pull":
                    _pull_with_the_database_stopped(m, pg, prom)
                    _dashboard_queries_answer(prom)
                    _check_sees_the_stopped_worker(m)
            finally:
                m.close()
    finally:
        prom.stop()
        served.shutdown()


def _push(m: Mode, pg: LocalPostgres, prom: Prometheus, textfile: Path) -> None:
    """No worker: `bombom metrics --textfile` carries the deliveries table's counts."""
    send(m.postfix, [newsletter(i, "push") for i in range(10)], [ALICE])
    wait_for("10 push deliveries", lambda: sum(final(rows(pg)).values()) >= 10, 180)
    r = m.bombom("metrics", f"--textfile={textfile}")
    assert r.returncode == 0, r
    expected = final(rows(pg))
    wait_for("the textfile's counts in Prometheus", lambda: final(nonzero(prom.by(
        'bombom_recorded_deliveries_total{job="bombom-textfile"}', "outcome"))) == expected, 30)


def _burst_counted(m: Mode, pg: LocalPostgres, prom: Prometheus) -> None:
    n = 12
    send(m.postfix, [newsletter(i, m.mode) for i in range(n)], [ALICE, BOB])
    wait_for(f"{2 * n} deliveries", lambda: sum(final(rows(pg)).values()) >= 2 * n, 180)
    expected = final(rows(pg))
    assert sum(expected.values()) == 2 * n, expected
    wait_for("the recorded deliveries in Prometheus", lambda: final(nonzero(prom.by(
        'bombom_recorded_deliveries_total{job="bombom"}', "outcome"))) == expected, 60)
    counted = 'sum by (outcome) (bombom_deliveries_total{job="bombom"})'
    if m.mode == "worker":  # a busy worker hands a message back to the cold path: at most
        wait_for("the worker's counts", lambda: sum(prom.by(counted, "outcome").values()) > 0, 30)
        assert sum(prom.by(counted, "outcome").values()) <= 2 * n
    else:  # every delivery went through the worker: it counted each row
        wait_for("the worker's counts", lambda: final(nonzero(prom.by(counted, "outcome")))
                 == expected, 30)
    door = {"worker": "pipe", "lmtp": "lmtp", "pull": "maildir"}[m.mode]
    doors = prom.by('sum by (door) (bombom_deliveries_total{job="bombom"})', "door")
    assert {d for d, v in doors.items() if v} == {door}, doors
    auth = prom.by('sum by (auth) (bombom_deliveries_total{outcome="stored"})', "auth")
    assert set(auth) <= {"pass", "fail", "none", "temperror", "-"}, auth
    assert prom.value('sum(bombom_stage_seconds_count{stage="parse"})')
    assert prom.value("bombom_delivery_processes") == 2


def _pull_with_the_database_stopped(m: Mode, pg: LocalPostgres, prom: Prometheus) -> None:
    """The backlog gauge rises while nothing can be stored and falls after; the database
    alert fires while it is down and resolves after."""
    backlog = 'sum(bombom_maildir_messages{job="bombom"})'
    assert prom.value(backlog) == 0
    before = final(rows(pg))
    pg.stop()
    try:
        n = 20
        send(m.postfix, [newsletter(i, "down") for i in range(n)], [ALICE])
        wait_for(f"a backlog of {n} in Prometheus", lambda: (prom.value(backlog) or 0) >= n, 90)
        wait_for("BombomDatabaseDown firing", lambda: "BombomDatabaseDown" in prom.firing(), 60)
        assert prom.value('sum(bombom_database_errors_total{job="bombom"})')
    finally:
        pg.start()
    wait_for("the backlog drained in Prometheus", lambda: prom.value(backlog) == 0, 240)
    wait_for("BombomDatabaseDown resolved",
             lambda: "BombomDatabaseDown" not in prom.firing(), 60)
    if os.environ.get("BOMBOM_GRAPH_PNG"):  # docs/operations.md's picture, from this run
        graph_png(prom, Path(os.environ["BOMBOM_GRAPH_PNG"]))
    peak = prom.value(f"max_over_time({backlog}[5m:1s])")
    assert peak is not None and peak >= n
    after = final(rows(pg))
    assert after.get("stored", 0) - before.get("stored", 0) == n, (before, after)
    counted = 'sum by (outcome) (bombom_deliveries_total{job="bombom"})'
    wait_for("the worker's counts again", lambda: final(nonzero(prom.by(counted, "outcome")))
             == after, 30)


GRAPHS = ("sum by (dir) (bombom_maildir_messages)", "bombom_database_up",
          "sum by (outcome) (increase(bombom_deliveries_total[10s]))")


def graph_png(prom: Prometheus, path: Path) -> None:
    """Prometheus's own graph page for the backlog, the database and the deliveries, rendered
    by headless Chromium."""
    query = {}
    for i, expr in enumerate(GRAPHS):
        query |= {f"g{i}.expr": expr, f"g{i}.tab": "0", f"g{i}.range_input": "1m"}
    url = f"http://127.0.0.1:{prom.port}/graph?{urllib.parse.urlencode(query)}"
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                    "--hide-scrollbars", "--window-size=1280,2100",
                    "--virtual-time-budget=15000", f"--screenshot={path}", url],
                   check=True, capture_output=True, timeout=120)


def _check_sees_the_path(m: Mode) -> None:
    """`bombom check` names the path Postfix uses and sees its worker, a domain Postfix does
    not accept, and the worker gone: the cold path takes over (worker) or Postfix defers
    everything (lmtp)."""
    r = m.bombom("check")
    assert r.returncode == 0 and f" path={m.mode} worker=1" in r.stdout, r.stdout
    r = m.bombom("check", BOMBOM_DOMAINS="bombom.news,other.example")
    assert r.returncode == 1, r.stdout
    assert "Postfix does not accept mail for other.example" in r.stdout, r.stdout
    m.stop_worker()
    r = m.bombom("check")
    assert " worker=0" in r.stdout, r.stdout
    if m.mode == "worker":
        assert r.returncode == 1 and "delivers on the cold path" in r.stdout, r.stdout
    else:
        assert r.returncode == 2 and "Postfix defers every message" in r.stdout, r.stdout


def _check_sees_the_stopped_worker(m: Mode) -> None:
    r = m.bombom("check")
    assert r.returncode == 0 and " path=pull worker=1 " in r.stdout, r.stdout
    m.stop_worker()
    send(m.postfix, [newsletter(i, "stopped") for i in range(5)], [ALICE])
    wait_for("5 files in new/", lambda: len(os.listdir(m.maildir / "new")) >= 5, 60)
    r = m.bombom("check")
    assert r.returncode == 2, r.stdout
    assert "worker not draining" in r.stdout and " maildir_new=5 " in r.stdout, r.stdout
    status = m.bombom("status")
    assert "NOT RUNNING" in status.stdout and "pull:" in status.stdout, status.stdout
    stats = json.loads(m.bombom("stats", "--json").stdout)
    assert stats["path"] == "pull" and stats["worker"] is False
    assert stats["maildir"]["new"]["files"] == 5


def _dashboard_queries_answer(prom: Prometheus) -> None:
    """Every expression of the dashboard is one Prometheus accepts, and the first panels'
    have data."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs
    for expr in exprs:
        prom.api("query", query=expr)  # asserts status "success"
    for expr in exprs[:4]:
        assert prom.api("query", query=expr)["result"], expr  # type: ignore[index]

