"""`bombom stats` and `bombom check` (a monitoring probe in the Nagios plugin convention)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .quarantine import UNRESOLVED

if TYPE_CHECKING:
    from . import Context

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
RANK = {OK: 0, UNKNOWN: 1, WARNING: 2, CRITICAL: 3}  # a real finding outranks "cannot tell"


def _tree_size(root: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            try:
                size += os.stat(os.path.join(dirpath, name)).st_size
                files += 1
            except OSError:
                pass
    return files, size


@click.command()
@click.option("--hours", type=click.FloatRange(min=0.01), default=24.0, show_default=True)
@click.pass_obj
def stats(obj: Context, hours: float) -> None:
    """Deliveries per outcome, delivery time p50/p95, quarantine and spool size."""
    with obj.connect() as conn:
        rows = conn.execute(
            """SELECT outcome, count(*),
                      percentile_cont(0.5) WITHIN GROUP (ORDER BY
                          extract(epoch FROM finished_at - started_at)),
                      percentile_cont(0.95) WITHIN GROUP (ORDER BY
                          extract(epoch FROM finished_at - started_at))
               FROM deliveries WHERE started_at >= now() - make_interval(secs => %s)
               GROUP BY ROLLUP (outcome) ORDER BY outcome NULLS LAST""",
            (hours * 3600,)).fetchall()
        quarantined = conn.execute(f"SELECT count(*) FROM ({UNRESOLVED}) u").fetchone()[0]
    click.echo(f"deliveries in the last {hours:g} h:")
    for outcome, n, p50, p95 in rows:
        click.echo(f"  {outcome or 'all':<12} {n:>8}   p50 {1000 * (p50 or 0):7.1f} ms"
                   f"   p95 {1000 * (p95 or 0):7.1f} ms")
    click.echo(f"quarantine: {quarantined} unresolved")
    spool = obj.settings.spool_dir
    for kind in ("raw", "att"):
        files, size = _tree_size(spool / kind)
        click.echo(f"spool {kind}: {files} files, {size / 1e6:.1f} MB")
    if spool.exists():
        free = shutil.disk_usage(spool).free
        click.echo(f"spool free: {free / 1e9:.1f} GB")


def _deferred(domains: tuple[str, ...]) -> tuple[int, float] | None:
    """(count, age of the oldest in seconds) of deferred mail for our domains; None: no Postfix."""
    if not shutil.which("postqueue"):
        return None
    r = subprocess.run(["postqueue", "-j"], capture_output=True, text=True, timeout=20)
    if r.returncode != 0:
        return None
    count, oldest, now = 0, 0.0, time.time()
    for line in r.stdout.splitlines():
        entry = json.loads(line)
        if entry.get("queue_name") != "deferred":
            continue
        rcpts = [x.get("address", "").lower() for x in entry.get("recipients", [])]
        if any(a.rpartition("@")[2] in domains for a in rcpts):
            count += 1
            oldest = max(oldest, now - float(entry.get("arrival_time", now)))
    return count, oldest


@click.command()
@click.option("--free-warn", default=1000, show_default=True, help="spool MB free: warning")
@click.option("--free-crit", default=100, show_default=True, help="spool MB free: critical")
@click.option("--quarantine-warn", default=10, show_default=True,
              help="quarantined in the last hour: warning")
@click.option("--deferred-warn", default=50, show_default=True)
@click.option("--deferred-crit", default=500, show_default=True)
@click.option("--deferred-age-warn", default=3600, show_default=True, help="seconds")
@click.option("--deferred-age-crit", default=6 * 3600, show_default=True, help="seconds")
@click.pass_obj
def check(obj: Context, free_warn: int, free_crit: int, quarantine_warn: int,
          deferred_warn: int, deferred_crit: int, deferred_age_warn: int,
          deferred_age_crit: int) -> None:
    """Monitoring probe: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, with one status line."""
    state, notes, perf = OK, [], []

    def worse(level: int, note: str) -> None:
        nonlocal state
        state = max(state, level, key=RANK.__getitem__)
        notes.append(note)

    try:
        settings = obj.settings
    except click.ClickException as e:
        click.echo(f"BOMBOM UNKNOWN - {e.message}")
        sys.exit(UNKNOWN)
    try:
        import psycopg

        url = settings.admin_database_url or settings.database_url
        with psycopg.connect(url, connect_timeout=5) as conn:
            recent = conn.execute(
                "SELECT count(*) FROM deliveries WHERE outcome = 'quarantined' "
                "AND finished_at >= now() - interval '1 hour'").fetchone()[0]
        perf.append(f"quarantined_1h={recent}")
        if recent > quarantine_warn:
            worse(WARNING, f"{recent} quarantined in the last hour")
    except Exception as e:  # noqa: BLE001 - any failure here is the finding
        worse(CRITICAL, f"database unreachable ({type(e).__name__})")
    spool = settings.spool_dir
    try:
        probe = spool / "tmp" / f".check-{os.getpid()}"
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"x")
        probe.unlink()
        free_mb = shutil.disk_usage(spool).free // 1_000_000
        perf.append(f"spool_free_mb={free_mb}")
        if free_mb < free_crit:
            worse(CRITICAL, f"spool {free_mb} MB free")
        elif free_mb < free_warn:
            worse(WARNING, f"spool {free_mb} MB free")
    except OSError as e:
        worse(CRITICAL, f"spool not writable: {e.strerror}")
    deferred = _deferred(settings.domains)
    if deferred is None:
        worse(UNKNOWN, "postqueue unavailable")
    else:
        n, age = deferred
        perf += [f"deferred={n}", f"deferred_oldest_s={int(age)}"]
        if n > deferred_crit or age > deferred_age_crit:
            worse(CRITICAL, f"{n} deferred, oldest {int(age)} s")
        elif n > deferred_warn or age > deferred_age_warn:
            worse(WARNING, f"{n} deferred, oldest {int(age)} s")
    summary = "; ".join(notes) or "database, spool, quarantine and queue fine"
    click.echo(f"BOMBOM {NAMES[state]} - {summary} | {' '.join(perf)}")
    sys.exit(state)


COMMANDS = (stats, check)
