"""`bombom stats` and `bombom check` (a Nagios-style probe): bombom_pipe/ops/monitor.py."""

from __future__ import annotations

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
@click.pass_obj
def stats(obj: Context, hours: float) -> None:
    """Deliveries per outcome, delivery time p50/p95, quarantine and spool size."""
    with obj.connect() as conn:
        s = ops.stats(conn, obj.settings.spool_dir, hours)
    click.echo(f"deliveries in the last {hours:g} h:")
    for outcome, n, p50, p95 in s.outcomes:
        click.echo(f"  {outcome or 'all':<12} {n:>8}   p50 {1000 * (p50 or 0):7.1f} ms"
                   f"   p95 {1000 * (p95 or 0):7.1f} ms")
    click.echo(f"quarantine: {s.quarantined} unresolved")
    for kind, (count, size) in s.spool.items():
        click.echo(f"spool {kind}: {count} files, {size / 1e6:.1f} MB")
    if s.free is not None:
        click.echo(f"spool free: {s.free / 1e9:.1f} GB")
    if s.volume:  # counted only while domain_daily_limit is set
        click.echo("sender domains today (UTC), messages, quarantined past domain_daily_limit:")
        for domain, n, over in s.volume:
            click.echo(f"  {domain:<40} {n:>8} {over:>8}")


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


COMMANDS = (stats, check)
