"""`bombom worker`: the warm delivery service (see bombom_pipe/worker.py)."""

from __future__ import annotations

import os
from pathlib import Path

import click


@click.command()
@click.option("--processes", type=click.IntRange(1, 64), default=os.cpu_count() or 2,
              show_default="the number of CPUs", help="delivery processes (and connections)")
@click.option("--socket", "socket_path", metavar="PATH",
              help="where bombom-deliver hands over messages (default: worker_socket from the "
                   "config file)")
@click.option("--no-socket", is_flag=True, help="no socket for bombom-deliver")
@click.option("--lmtp-socket", "lmtp_path", metavar="PATH",
              help="serve LMTP for Postfix here (default: lmtp_socket from the config file)")
@click.option("--maildir", type=click.Path(file_okay=False, path_type=Path),
              help="also drain this Maildir (pull mode: Postfix virtual(8) writes into it)")
@click.pass_obj
def worker(obj, socket_path: str | None, no_socket: bool, lmtp_path: str | None,  # noqa: ANN001
           processes: int, maildir: Path | None) -> None:
    """Deliver with warm processes: for bombom-deliver (--socket), Postfix's LMTP
    (--lmtp-socket), and a Maildir (--maildir, the pull mode).

    Run it as the pipe user (the systemd unit bombom-worker does). Without a worker,
    bombom-deliver delivers by itself (the cold path); with one, it falls back to that path
    whenever the worker is absent, busy, stopped or failing.
    """
    from ..worker import serve

    if os.geteuid() == 0:
        raise click.ClickException("run the worker as the pipe user, not root")
    settings = obj.settings
    path = None if no_socket else (socket_path or settings.worker_socket)
    lmtp = lmtp_path or settings.lmtp_socket
    if path is None and maildir is None and lmtp is None:
        raise click.ClickException("nothing to do: no worker_socket or lmtp_socket in the "
                                   "config, no --socket, --lmtp-socket or --maildir")
    serve(settings, path, processes, maildir, lmtp)


COMMANDS = (worker,)
