"""`bombom stats`, `bombom status` and `bombom check` (a Nagios-style probe):
bombom_pipe/ops/monitor.py."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

from ..config import ConfigError
from ..ops import monitor as ops

if TYPE_CHECKING:
    from . import Context

LIMITS = ops.Limits()


@click.command()
@click.option("--hours", type=click.FloatRange(min=0.01), default=24.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="one JSON object, for scripts")
@click.pass_obj
def stats(obj: Context, hours: float, as_json: bool) -> None:
    """Deliveries per outcome, delivery time p50/p95, quarantine and spool size."""
    with obj.connect() as conn:
        s = ops.stats(conn, obj.settings.spool_dir, hours)
    if as_json:
        click.echo(json.dumps(ops.stats_json(s, hours, ops.survey(obj.settings)), indent=1))
        return
    click.echo(f"deliveries in the last {hours:g} h:")
    for outcome, n, p50, p95 in s.outcomes:
        click.echo(f"  {outcome or 'all':<12} {n:>8}   p50 {1000 * (p50 or 0):7.1f} ms"
                   f"   p95 {1000 * (p95 or 0):7.1f} ms")
    if any(edge for edge, _ in s.edges):  # several hosts, over TCP
        for edge, n in s.edges:
            click.echo(f"  via {edge or 'a unix socket'}: {n}")
    click.echo(f"quarantine: {s.quarantined} unresolved")
    rows, size, disk = s.database_raw
    click.echo(f"raw messages in the database: {rows}, {size / 1e6:.1f} MB"
               f" ({disk / 1e6:.1f} MB on disk)")
    for kind, (count, size) in s.spool.items():
        click.echo(f"spool {kind}: {count} files, {size / 1e6:.1f} MB")
    if s.free is not None:
        click.echo(f"spool free: {s.free / 1e9:.1f} GB")
    if s.volume:  # counted only while domain_daily_limit is set
        click.echo("sender domains today (UTC), messages, quarantined past domain_daily_limit:")
        for domain, n, over in s.volume:
            click.echo(f"  {domain:<40} {n:>8} {over:>8}")


@click.command()
@click.option("--hours", type=click.FloatRange(min=0.01), default=1.0, show_default=True)
@click.pass_obj
def status(obj: Context, hours: float) -> None:
    """One screen for a person: the delivery path and its worker, what waits where, the
    check's verdict, and the last hour's deliveries."""
    settings = obj.settings
    v = ops.survey(settings)
    result = ops.check(settings, LIMITS)
    click.echo(f"bombom: {ops.NAMES[result.state]}"
               f"{' - ' + '; '.join(result.notes) if result.notes else ''}")
    worker = {None: "none in this path", True: "running", False: "NOT RUNNING"}[v.worker]
    click.echo(f"path:       {ops.PATHS.get(v.path, v.path)} (Postfix virtual_transport "
               f"{v.transport or '-'})")
    click.echo(f"worker:     {worker}")
    click.echo(f"domains:    {', '.join(settings.domains)}"
               + (f"; Postfix does not accept: {', '.join(v.missing)}" if v.missing else "")
               + (f"; Postfix also routes to us: {', '.join(v.extra)}" if v.extra else ""))
    if v.maildir:
        for d, (n, age) in v.backlog.items():
            click.echo(f"maildir {d + '/:':<9}{n:>6} files, oldest {age:.0f} s   ({v.maildir})")
    queues = ops.postfix_queue(settings.domains)
    if queues is not None:
        click.echo("postfix:    " + ", ".join(f"{name} {n} (oldest {age:.0f} s)"
                                              for name, (n, age) in queues.items()))
    try:
        with obj.connect(timeout=5) as conn:
            s = ops.stats(conn, settings.spool_dir, hours)
    except Exception as e:  # noqa: BLE001 - the screen still shows the rest
        click.echo(f"database:   unreachable ({type(e).__name__})")
        return
    counts = {o: n for o, n, _, _ in s.outcomes}
    total = counts.pop(None, 0)
    click.echo(f"last {hours:g} h:   {total} deliveries: "
               + (", ".join(f"{o} {n}" for o, n in counts.items()) or "none"))
    click.echo(f"quarantine: {s.quarantined} unresolved")
    if s.free is not None:
        raw = s.spool.get("raw", (0, 0))
        click.echo(f"spool:      {raw[0]} raw files, {raw[1] / 1e6:.1f} MB; "
                   f"{s.free / 1e9:.1f} GB free")


@click.command()
@click.option("--free-warn", default=LIMITS.free_warn, show_default=True,
              help="spool MB free: warning")
@click.option("--free-crit", default=LIMITS.free_crit, show_default=True,
              help="spool MB free: critical")
@click.option("--quarantine-warn", default=LIMITS.quarantine_warn, show_default=True,
              help="quarantined in the last hour: warning")
@click.option("--deferred-warn", default=LIMITS.deferred_warn, show_default=True)
@click.option("--deferred-crit", default=LIMITS.deferred_crit, show_default=True)
@click.option("--deferred-age-warn", default=LIMITS.deferred_age_warn, show_default=True,
              help="seconds")
@click.option("--deferred-age-crit", default=LIMITS.deferred_age_crit, show_default=True,
              help="seconds")
@click.option("--backlog-age-warn", default=LIMITS.backlog_age_warn, show_default=True,
              help="seconds: the oldest file in pull mode's Maildir")
@click.option("--backlog-age-crit", default=LIMITS.backlog_age_crit, show_default=True,
              help="seconds")
@click.pass_obj
def check(obj: Context, **limits: int) -> None:
    """Monitoring probe: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, with one status line."""
    try:
        settings = obj.settings
    except ConfigError as e:
        click.echo(f"BOMBOM UNKNOWN - {e}")
        sys.exit(ops.UNKNOWN)
    status = ops.check(settings, ops.Limits(**limits))
    summary = "; ".join(status.notes) or "database, spool, quarantine and queue fine"
    click.echo(f"BOMBOM {ops.NAMES[status.state]} - {summary} | {' '.join(status.perf)}")
    sys.exit(status.state)


COMMANDS = (stats, status, check)
