"""The worker's metrics (bombom_pipe/metrics.py) read from its /metrics: counted as delivered,
label values from fixed sets only (never an address, a subject or another sender-chosen value),
off unless configured and loopback by default; the deliveries table's counts; bombom-deliver never
loads prometheus_client. The same metrics through a real Prometheus: test_prometheus.py."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bombom_pipe import config
from bombom_pipe.metrics import DB_ERRORS, DOORS, STAGES, DeliveryCounts, db_error_in
from bombom_pipe.ops.monitor import QUEUES
from bombom_pipe.protocol import AUTH, OUTCOMES

from .builders import DIGEST, Worker, message, with_worker_socket
from .conftest import ALICE, Env
from .postfix_fixture import free_port
from .sandbox import LocalPostgres
from .test_operator import bombom

#: every label value a metric may carry; numbers (`le`) aside
ALLOWED = {*DOORS, *STAGES, *AUTH, *OUTCOMES, *DB_ERRORS, *QUEUES, "-", "other", "new",
           "claimed", "raw", "att"}
MARK = "zq7sender-chosen"


@pytest.fixture
def metrics_worker(env: Env) -> Iterator[tuple[Worker, int]]:
    with_worker_socket(env)
    port = free_port()
    env.write_config(env.config.read_text() + f'metrics_listen = "{port}"\n')
    w = Worker(env, "--processes", "2").start()
    w.wait_ready()
    yield w, port
    w.stop()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text)
            for s in f.samples]


def value(text: str, name: str, **labels: str) -> float:
    return sum(v for n, ls, v in samples(text)
               if n == name and all(ls.get(k) == x for k, x in labels.items()))


def test_worker_metrics_count_deliveries_with_bounded_labels(
        env: Env, db: psycopg.Connection, metrics_worker: tuple[Worker, int]) -> None:
    _, port = metrics_worker
    hostile = (DIGEST.replace(b"Subject: ", f"Subject: {MARK}-subject ".encode(), 1)
               .replace(b"<digest-2026-11-30@", f"<{MARK}-id@".encode()))
    for raw, rcpt in [(message(1), ALICE), (hostile, ALICE),
                      (message(2), f"{MARK}-rcpt@bombom.news")]:
        r = env.deliver(raw, "--sender", f"{MARK}-from@news.example.kr", recipient=rcpt)
        assert r.returncode in (0, 67), r
    time.sleep(1.5)  # one sample of the deliveries table
    text = scrape(port)
    assert MARK not in text
    for name, labels, _ in samples(text):
        for key, label in labels.items():
            if key not in ("le", "quantile"):
                assert label in ALLOWED, (name, key, label)
    assert value(text, "bombom_deliveries_total", door="pipe", outcome="stored") == 2
    assert value(text, "bombom_deliveries_total", door="pipe", outcome="nouser") == 1
    assert value(text, "bombom_deliveries_total", outcome="stored", auth="none") == 2
    assert value(text, "bombom_stage_seconds_count", stage="parse") == 3
    assert value(text, "bombom_delivery_seconds_count", door="pipe") == 3
    assert value(text, "bombom_delivery_processes") == 2
    assert value(text, "bombom_worker_door", door="pipe") == 1
    assert value(text, "bombom_database_up") == 1
    rows = dict(db.execute("SELECT outcome, count(*) FROM deliveries GROUP BY outcome"))
    assert {o: value(text, "bombom_recorded_deliveries_total", outcome=o)
            for o in OUTCOMES} == {o: rows.get(o, 0) for o in OUTCOMES}


def test_metrics_are_off_unless_configured_and_loopback_by_default(env: Env,
                                                                     db: psycopg.Connection
                                                                     ) -> None:
    with_worker_socket(env)
    w = Worker(env, "--processes", "1").start()
    try:
        w.wait_ready()
        assert ", metrics -" in env.log.read_text()
    finally:
        w.stop()
    assert config._listen("9464") == ("127.0.0.1", 9464)
    assert config._listen(9464) == ("127.0.0.1", 9464)
    assert config._listen("[::1]:9464") == ("::1", 9464)
    for bad in ("", "localhost:9464", "0", "70000", "9464x"):
        with pytest.raises(ValueError):
            config._listen(bad)


def test_bombom_deliver_never_loads_prometheus_client() -> None:
    """The cold path's start-up is unchanged: neither the entry point nor the process that
    delivers imports the metrics library."""
    code = ("import sys, bombom_pipe.entry, bombom_pipe.supervisor, bombom_pipe.child, "
            "bombom_pipe.deliver; print('prometheus_client' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"


def test_delivery_counts_settle_without_recounting_the_table(db: psycopg.Connection) -> None:
    def add(outcome: str, n: int) -> None:
        for _ in range(n):
            db.execute("INSERT INTO deliveries (outcome, started_at) VALUES (%s, now())",
                       (outcome,))

    counts = DeliveryCounts(settle=10)
    add("stored", 3)
    assert counts.read(db, 0) == {"stored": 3}
    add("quarantined", 1)
    assert counts.read(db, 5) == {"stored": 3, "quarantined": 1}
    assert counts.base_id == 0  # nothing seen long enough ago to settle
    add("stored", 2)
    assert counts.read(db, 12) == {"stored": 5, "quarantined": 1}
    assert counts.base_id == 3 and counts.base == {"stored": 3}  # rows seen at t=0 settled
    assert counts.read(db, 30) == {"stored": 5, "quarantined": 1}
    assert counts.base_id == 6


def test_bombom_metrics_textfile_and_status_with_the_database_up_and_down(
        env: Env, pg: LocalPostgres, db: psycopg.Connection) -> None:
    """Push mode's exporter: `bombom metrics --textfile` replaces the file whole (never a
    partial file for node_exporter to read) with the deliveries table's counts; with the
    database down it still writes, saying so; `status` shows the rest of its screen."""
    db.execute("INSERT INTO deliveries (outcome, started_at) VALUES ('stored', now()), "
               "('quarantined', now())")
    out = env.base / "textfile" / "bombom.prom"
    out.parent.mkdir()
    r = bombom(env, "metrics", f"--textfile={out}", url=pg.url())
    assert r.returncode == 0 and r.stdout == "", r
    text = out.read_text()
    assert value(text, "bombom_database_up") == 1
    assert value(text, "bombom_recorded_deliveries_total", outcome="stored") == 1
    assert value(text, "bombom_recorded_deliveries_total", outcome="quarantined") == 1
    assert value(text, "bombom_spool_free_bytes") > 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["bombom.prom"]  # no leftovers
    down = pg.url().replace(str(pg.sock), str(env.base / "no-server-here"))
    r = bombom(env, "metrics", url=down)
    assert r.returncode == 0 and value(r.stdout, "bombom_database_up") == 0, r
    assert "bombom_recorded_deliveries_total" not in r.stdout
    r = bombom(env, "status", url=down)
    assert r.returncode == 0 and "database:   unreachable" in r.stdout, r
    assert r.stdout.startswith("bombom: CRITICAL - database unreachable"), r.stdout


def test_database_error_class_from_a_tempfail_reason() -> None:
    assert db_error_in("database unavailable (OperationalError)") == "OperationalError"
    assert db_error_in("database unavailable (SomethingNew)") == "other"
    assert db_error_in("deadline of 10s reached (database cancelled the statement)") \
        == "QueryCanceled"
    assert db_error_in("spool: disk full") is None
