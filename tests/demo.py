"""`make demo` (`python -m tests.demo`): the whole delivery path on a throwaway local PostgreSQL.

A development tool beside the tests, not part of the installed package: it needs the checkout's
`examples/` and the test sandbox. Everything lives in a fresh private directory under /tmp,
removed at the end unless --keep-running.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import click

from .sandbox import LocalPostgres, deliver_argv, delivery_files

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MEMBER = "demo@bombom.news"


@click.command()
@click.option("--keep-running", is_flag=True,
              help="leave PostgreSQL (and its directory) in place afterwards, for psql")
def main(keep_running: bool) -> None:
    """Start a throwaway PostgreSQL, deliver sample newsletters, print what was stored."""
    import psycopg

    from bombom_pipe.schema import upgrade

    # mkdtemp: a new directory only we can have made; the server and the delivery user enter it
    base = Path(tempfile.mkdtemp(prefix="bombom-demo-", dir="/tmp"))
    os.chmod(base, 0o755)
    pg = LocalPostgres(base / "pg")
    click.echo(f"starting a throwaway PostgreSQL in {pg.base} (unix socket only)")
    try:
        pg.start()
        pg.createdb("bombom")
        url = pg.url("bombom")
        with psycopg.connect(url) as conn:
            upgrade(conn)
            conn.execute("INSERT INTO members (address) VALUES (%s) ON CONFLICT DO NOTHING",
                         (MEMBER,))
        # no DNS from a demo: trust only Authentication-Results from a name nobody else uses,
        # so the samples are stored with the verdict `none`
        conf = delivery_files(base, url, deadline=30, extra='auth_method = '
                              '"authentication-results"\nauthserv_id = "demo.bombom.invalid"\n')
        argv = deliver_argv(base / "runner") + ["--config", str(conf)]
        samples = sorted(EXAMPLES.glob("*.eml"))
        click.echo(f"member {MEMBER}; delivering {len(samples)} samples, then the first again")
        for i, sample in enumerate([*samples, samples[0]]):
            with sample.open("rb") as f:
                r = subprocess.run([*argv, "--recipient", MEMBER, "--queue-id", f"DEMO{i}",
                                    "--sender", "bounce@example.org"],
                                   stdin=f, capture_output=True, text=True)
            click.echo(f"  {sample.name:<28} exit {r.returncode}  {r.stdout.strip()}")
        _show(url)
    finally:
        if keep_running:
            click.echo(f"raw messages: {base / 'spool' / 'raw'}   log: {base / 'deliver.log'}\n"
                       f"PostgreSQL keeps running: psql '{pg.url('bombom')}'\n"
                       f"stop it and clean up: {pg.bindir / 'pg_ctl'} -D {pg.data} stop; "
                       f"rm -r {base}")
        else:
            pg.stop()
            shutil.rmtree(base, ignore_errors=True)
    click.echo("next: `make test` runs the test suite; see README for Postfix (make install)")


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


if __name__ == "__main__":
    main()
