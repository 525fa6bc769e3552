"""Prometheus metrics (exposition format, `prometheus_client`): what the warm service counts as it
delivers, and what any process can read from the host (the database, the Maildir, Postfix's
queue, the spool). Imported by `bombom worker` and `bombom metrics` only: bombom-deliver, the
cold path, never loads it.

Two sources, one set of names (docs/operations.md, "Watching it"):

- `Live`: the worker's own counters, histograms and gauges, kept in its dispatcher and served on
  `metrics_listen` by a thread (never beyond loopback unless an address is configured).
- `Host`: sampled by a thread every `SAMPLE_EVERY` seconds, so that a scrape never waits for the
  database, `postqueue` or a walk of the spool (a scrape that waited for a stopped database
  would time out, and the worker would look down). The deliveries table counts every delivery,
  the cold path's too; `bombom metrics --textfile` writes the same sample for node_exporter's
  textfile collector where no worker runs (push mode).

Every label value comes from a fixed set (doors, outcomes, verdicts, stages, Maildir directories,
Postfix queue names, exception class names of our own code and libraries): never an address, a
subject or anything else a sender chooses.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
import time
from collections import Counter as Tally
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .protocol import AUTH, OUTCOMES, epoch

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import psycopg

    from .config import Settings

DOORS = ("pipe", "lmtp", "maildir")
STAGES = ("read", "parse", "auth", "store")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
#: database errors are counted by exception class; any other name is "other" (bounded)
DB_ERRORS = ("OperationalError", "ConnectionTimeout", "QueryCanceled", "InterfaceError",
             "InternalError", "ProgrammingError", "DatabaseError")
SAMPLE_EVERY = 1.0  # the host sample (database, Maildir)
QUEUE_EVERY = 5.0  # postqueue -j
SPOOL_EVERY = 60.0  # a walk of the spool
DB_TIMEOUT = 2  # seconds, for the sample's connection and statements
#: bombom-deliver's reason text for a database failure (deliver._describe): its class
_DB_DETAIL = re.compile(r"database unavailable \((\w+)\)|(database cancelled the statement)")


def error_class(name: str) -> str:
    return name if name in DB_ERRORS else "other"


def db_error_in(detail: str) -> str | None:
    """The database error class a tempfail's reason names (deliver._describe wrote it)."""
    m = _DB_DETAIL.search(detail)
    if not m:
        return None
    return error_class(m[1]) if m[1] else "QueryCanceled"


class Live:
    """The worker's own metrics, fed by its dispatcher (one thread; the server reads)."""

    def __init__(self, registry: CollectorRegistry, doors: tuple[str, ...]) -> None:
        self.deliveries = Counter(
            "bombom_deliveries", "Deliveries answered by the worker, per recipient",
            ["door", "outcome", "auth"], registry=registry)
        self.stages = Histogram(
            "bombom_stage_seconds", "Time in each stage of a delivery (read: from the door's "
            "start, for the Maildir virtual(8)'s write, until a process takes it)",
            ["stage"], buckets=BUCKETS, registry=registry)
        self.whole = Histogram(
            "bombom_delivery_seconds", "Whole delivery, from the door's start to the verdict",
            ["door"], buckets=BUCKETS, registry=registry)
        self.processes = Gauge("bombom_delivery_processes", "Delivery processes",
                               registry=registry)
        self.busy = Gauge("bombom_delivery_processes_busy", "Delivery processes with a job",
                          registry=registry)
        self.queued = Gauge("bombom_jobs_waiting", "Jobs waiting for a delivery process",
                            registry=registry)
        self.db_errors = Counter(
            "bombom_database_errors", "Database errors seen by the worker (deliveries, the "
            "LMTP member lookup, the metrics sample), by exception class",
            ["class"], registry=registry)
        served = Gauge("bombom_worker_door", "The doors this worker serves (1)", ["door"],
                       registry=registry)
        for door in DOORS:  # every series exists from the start (rate() and absent alerts)
            served.labels(door).set(1 if door in doors else 0)
            self.whole.labels(door)
            for outcome in OUTCOMES:
                self.deliveries.labels(door, outcome, "-")
        for stage in STAGES:
            self.stages.labels(stage)
        for name in (*DB_ERRORS, "other"):
            self.db_errors.labels(name)

    def delivered(self, door: str, outcome: str, auth: str | None, detail: str) -> None:
        self.deliveries.labels(door, outcome, auth if auth in AUTH else "-").inc()
        if outcome == "tempfail":
            name = db_error_in(detail)
            if name:
                self.db_errors.labels(name).inc()

    def timed(self, door: str, started: float, taken: float,
              stages: list[tuple[str, float]], done: float) -> None:
        """One job's times: `started` (Unix time the door began), `taken` (monotonic, a
        process took it), each stage's start (monotonic), `done` (monotonic, answered)."""
        self.stages.labels("read").observe(max(0.0, epoch(taken) - started))
        ends = [t for _, t in stages[1:]] + [done]
        for (stage, begun), end in zip(stages, ends, strict=True):
            if stage in STAGES:
                self.stages.labels(stage).observe(max(0.0, end - begun))
        self.whole.labels(door).observe(max(0.0, epoch(done) - started))


# -- what any process can read from the host ---------------------------------------------------

def scan(directory: Path) -> tuple[int, float]:
    """(files, age in seconds of the oldest by mtime) in one Maildir directory; dot files are
    virtual(8)'s and the worker's own."""
    count, oldest, now = 0, 0.0, time.time()
    with contextlib.suppress(FileNotFoundError), os.scandir(directory) as it:
        for entry in it:
            if entry.name.startswith("."):
                continue
            with contextlib.suppress(FileNotFoundError):
                age = now - entry.stat(follow_symlinks=False).st_mtime
                count, oldest = count + 1, max(oldest, age)
    return count, oldest


class DeliveryCounts:
    """Rows of the deliveries table per outcome, without counting the whole table each time:
    rows up to an id seen more than `settle` seconds ago are counted once (no transaction that
    could still commit a smaller id lives that long: the database cancels ours at the deadline),
    later ones at every read."""

    def __init__(self, settle: float) -> None:
        self.settle = settle
        self.base: Tally[str] = Tally()
        self.base_id = 0
        self.seen: deque[tuple[float, int]] = deque()  # (monotonic, highest id then)

    def read(self, conn: psycopg.Connection, now: float) -> Tally[str]:
        target = self.base_id
        while self.seen and now - self.seen[0][0] >= self.settle:
            target = max(target, self.seen.popleft()[1])
        if target > self.base_id:
            for outcome, n in conn.execute(
                    "SELECT outcome, count(*) FROM deliveries WHERE id > %s AND id <= %s "
                    "GROUP BY outcome", (self.base_id, target)):
                self.base[outcome] += n
            self.base_id = target
        recent: Tally[str] = Tally()
        top = self.base_id
        for outcome, n, high in conn.execute(
                "SELECT outcome, count(*), max(id) FROM deliveries WHERE id > %s "
                "GROUP BY outcome", (self.base_id,)):
            recent[outcome] += n
            top = max(top, high)
        self.seen.append((now, top))
        return self.base + recent


class Host:
    """One sample of the host: the deliveries table, the quarantine, the Maildir, Postfix's
    queue for the service domains, the spool. `sample()` never raises for what it cannot read."""

    def __init__(self, settings: Settings, maildir: Path | None,
                 on_db_error: Callable[[str], None] = lambda name: None) -> None:
        self.settings, self.maildir, self.on_db_error = settings, maildir, on_db_error
        self.counts = DeliveryCounts(max(600.0, 4 * settings.deadline_seconds))
        self.conn: psycopg.Connection | None = None
        self.kept: dict[str, tuple[float, list[Metric]]] = {}  # slow parts, by name

    def sample(self) -> list[Metric]:
        return [*self._database(), *self._maildir(),
                *self._every("queue", QUEUE_EVERY, self._queue),
                *self._every("spool", SPOOL_EVERY, self._spool)]

    def _every(self, name: str, seconds: float, read: Callable[[], list[Metric]]
               ) -> list[Metric]:
        now = time.monotonic()
        when, metrics = self.kept.get(name, (-seconds, []))
        if now - when >= seconds:
            metrics = read()
            self.kept[name] = now, metrics
        return metrics

    def _database(self) -> list[Metric]:
        up = GaugeMetricFamily("bombom_database_up", "1 when the metrics sample could read the "
                               "database")
        try:
            counts, unresolved, volume = self._query()
        except Exception as e:  # noqa: BLE001 - any failure is the finding: database down
            with contextlib.suppress(Exception):
                self.conn.close()  # type: ignore[union-attr]
            self.conn = None
            self.on_db_error(error_class(type(e).__name__))
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        rows = CounterMetricFamily(
            "bombom_recorded_deliveries", "Rows of the deliveries table (every door, the cold "
            "path too; a tempfail only when the database could record it)", labels=["outcome"])
        for outcome in OUTCOMES:
            rows.add_metric([outcome], counts.get(outcome, 0))
        quarantine = GaugeMetricFamily("bombom_quarantine_unresolved",
                                       "Quarantined deliveries no later delivery resolved")
        quarantine.add_metric([], unresolved)
        # the volume limit (domain_daily_limit): totals only, a sender's domain is no label
        over = GaugeMetricFamily("bombom_volume_domains_over_limit", "Sender domains past their "
                                 "daily limit today (UTC)")
        over.add_metric([], volume[0])
        held = GaugeMetricFamily("bombom_volume_quarantined_today", "Messages quarantined today "
                                 "(UTC) because their sender domain was past its daily limit")
        held.add_metric([], volume[1])
        return [up, rows, quarantine, over, held]

    def _query(self) -> tuple[Tally[str], int, tuple[int, int]]:
        from .ops.quarantine import count_unresolved

        if self.conn is None or self.conn.closed:
            import psycopg

            self.conn = psycopg.connect(self.settings.database_url, autocommit=True,
                                        connect_timeout=DB_TIMEOUT)
            self.conn.execute(f"SET statement_timeout = {DB_TIMEOUT * 1000}")
        volume = self.conn.execute(
            "SELECT count(*) FILTER (WHERE quarantined > 0), coalesce(sum(quarantined), 0) "
            "FROM domain_volume WHERE day = (now() AT TIME ZONE 'UTC')::date").fetchone()
        return (self.counts.read(self.conn, time.monotonic()), count_unresolved(self.conn),
                (int(volume[0]), int(volume[1])))  # type: ignore[index]

    def _maildir(self) -> list[Metric]:
        if self.maildir is None:
            return []
        files = GaugeMetricFamily("bombom_maildir_messages", "Files waiting in the pull mode's "
                                  "Maildir: new/ (not taken) and claimed/ (taken, or waiting "
                                  "for a retry)", labels=["dir"])
        oldest = GaugeMetricFamily("bombom_maildir_oldest_seconds", "Age of the oldest file "
                                   "there (since virtual(8) wrote it)", labels=["dir"])
        for d in ("new", "claimed"):
            n, age = scan(self.maildir / d)
            files.add_metric([d], n)
            oldest.add_metric([d], age)
        return [files, oldest]

    def _queue(self) -> list[Metric]:
        from .ops.monitor import postfix_queue

        try:
            queues = postfix_queue(self.settings.domains)
        except Exception:  # noqa: BLE001 - no Postfix here, or it did not answer
            queues = None
        if queues is None:
            return []
        files = GaugeMetricFamily("bombom_postfix_queue_messages", "Messages in Postfix's "
                                  "queues with a recipient in the service domains",
                                  labels=["queue"])
        oldest = GaugeMetricFamily("bombom_postfix_queue_oldest_seconds", "Age of the oldest "
                                   "of them", labels=["queue"])
        for name, (n, age) in queues.items():
            files.add_metric([name], n)
            oldest.add_metric([name], age)
        return [files, oldest]

    def _spool(self) -> list[Metric]:
        from .spool import files

        size = GaugeMetricFamily("bombom_spool_bytes", "Bytes kept in the spool",
                                 labels=["kind"])
        count = GaugeMetricFamily("bombom_spool_files", "Files kept in the spool",
                                  labels=["kind"])
        for kind in ("raw", "att"):
            n = total = 0
            for f in files(self.settings.spool_dir, kind):
                n, total = n + 1, total + f.stat.st_size
            size.add_metric([kind], total)
            count.add_metric([kind], n)
        metrics = [size, count]
        with contextlib.suppress(OSError):
            free = GaugeMetricFamily("bombom_spool_free_bytes", "Bytes free where the spool is")
            free.add_metric([], shutil.disk_usage(self.settings.spool_dir).free)
            metrics.append(free)
        return metrics


class _Snapshot:
    """A collector that serves the last sample taken by a thread of its own."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.metrics: list[Metric] = []

    def collect(self) -> Iterator[Metric]:
        yield from self.metrics

    def run(self) -> None:
        while True:
            start = time.monotonic()
            with contextlib.suppress(Exception):
                self.metrics = self.host.sample()
            time.sleep(max(0.1, SAMPLE_EVERY - (time.monotonic() - start)))


def serve(settings: Settings, maildir: Path | None, doors: tuple[str, ...]) -> Live | None:
    """The worker's metrics on `metrics_listen` (None when unset): the live ones, and the host
    sample refreshed by a thread."""
    if settings.metrics_listen is None:
        return None
    from prometheus_client import start_http_server

    registry = CollectorRegistry()
    live = Live(registry, doors)
    snapshot = _Snapshot(Host(settings, maildir, lambda name: live.db_errors.labels(name).inc()))
    registry.register(snapshot)
    host, port = settings.metrics_listen
    start_http_server(port, addr=host, registry=registry)
    threading.Thread(target=snapshot.run, name="metrics-sample", daemon=True).start()
    return live


def textfile(settings: Settings, maildir: Path | None, path: Path | None) -> str:
    """One host sample in the exposition format; written atomically to `path` when given
    (node_exporter's textfile collector reads `*.prom` files)."""
    from prometheus_client import generate_latest, write_to_textfile

    registry = CollectorRegistry()
    host = Host(settings, maildir)

    class _Once:
        def collect(self) -> Iterator[Metric]:
            yield from host.sample()

    registry.register(_Once())  # type: ignore[arg-type]
    if path is not None:
        write_to_textfile(str(path), registry)
        return path.read_text()
    return generate_latest(registry).decode()
