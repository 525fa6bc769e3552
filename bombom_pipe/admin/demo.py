"""`bombom demo`: the whole delivery path on a throwaway local PostgreSQL, in one command."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import click

from ..sandbox import LocalPostgres, deliver_argv, delivery_files

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MEMBER = "demo@bombom.news"


def run(workdir: str, keep_running: bool) -> None:
    import psycopg

    from ..schema import upgrade

    base = _reachable(Path(workdir).resolve())
    base.mkdir(parents=True, exist_ok=True)
    pg = LocalPostgres(base / "pg")
    click.echo(f"starting a throwaway PostgreSQL in {pg.base} (unix socket only)")
    pg.start()
    try:
        pg.createdb("bombom")
        url = pg.url("bombom")
        with psycopg.connect(url) as conn:
            upgrade(conn)
            conn.execute("INSERT INTO members (address) VALUES (%s) ON CONFLICT DO NOTHING",
                         (MEMBER,))
        conf = delivery_files(base, url, deadline=30)
        argv = deliver_argv(base / "runner") + ["--config", str(conf)]
        samples = sorted(EXAMPLES.glob("*.eml"))
        click.echo(f"member {MEMBER}; delivering {len(samples)} samples, then the first again")
        for i, sample in enumerate([*samples, samples[0]]):
            r = subprocess.run([*argv, "--recipient", MEMBER, "--queue-id", f"DEMO{i}",
                                "--sender", "bounce@example.org"],
                               stdin=sample.open("rb"), capture_output=True, text=True)
            click.echo(f"  {sample.name:<28} exit {r.returncode}  {r.stdout.strip()}")
        _show(url)
        click.echo(f"raw messages: {base / 'spool' / 'raw'}   log: {base / 'deliver.log'}")
    finally:
        if keep_running:
            click.echo(f"PostgreSQL keeps running: psql '{pg.url('bombom')}'")
        else:
            pg.stop()
    click.echo("next: `make test` runs the test suite; see README for Postfix (make install)")


def _reachable(base: Path) -> Path:
    """As root, the server and the delivery user must be able to enter `base`; else use /var/tmp."""
    if os.geteuid() != 0 or all(os.stat(p).st_mode & 0o001 for p in base.parents if p.exists()):
        return base
    fallback = Path("/var/tmp/bombom-demo")
    click.echo(f"{base.parent} is closed to unprivileged users; using {fallback} instead")
    return fallback


def _show(url: str) -> None:
    import psycopg

    with psycopg.connect(url) as conn:
        click.echo("\narticles:")
        for row in conn.execute(
            """SELECT a.id, m.address, coalesce(a.from_name, ''), a.from_address, a.subject,
                      a.sent_at, a.preview, a.unsubscribe_http, a.reading_minutes
               FROM articles a JOIN members m ON m.id = a.member_id ORDER BY a.id"""):
            aid, member, name, addr, subject, sent, preview, unsub, minutes = row
            click.echo(f"  #{aid} {member} <- {name} <{addr}>\n      subject: {subject}\n"
                       f"      sent: {sent}  reading: {minutes} min\n"
                       f"      preview: {preview}\n      unsubscribe: {unsub}")
        click.echo("deliveries:")
        for outcome, n in conn.execute(
                "SELECT outcome, count(*) FROM deliveries GROUP BY 1 ORDER BY 1"):
            click.echo(f"  {outcome}: {n}")
