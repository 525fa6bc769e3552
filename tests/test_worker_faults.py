"""The fault matrix of test_faults.py again, with `bombom worker` running (push + worker mode):
the same exit codes, the raw message kept, and once the fault clears one article per message.

Left out, because the worker changes what they measure, not the promise: out of connections (the
worker's processes keep theirs, so deliveries go on) and SIGKILL inside the transaction (killing
bombom-deliver does not stop the worker's delivery, which then commits; a retry is a duplicate).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import test_faults as faults
from .builders import Worker, by_worker, with_worker_socket
from .conftest import Env, fresh_schema, new_env
from .sandbox import LocalPostgres
from .test_faults import cluster, tiny_spool  # noqa: F401 - fixtures, used by name


@pytest.fixture
def fenv(cluster: LocalPostgres, runner: list[str], workdir: Path  # noqa: F811
         ) -> Iterator[Env]:
    cluster.start()
    fresh_schema(cluster.url())
    e = new_env(workdir, runner, cluster.url(user="bombom_deliver"))
    e.extra_env = {"BOMBOM_DEADLINE_SECONDS": "4"}
    with_worker_socket(e)
    w = Worker(e, "--processes", "2").start()
    w.wait_ready()
    yield e
    w.stop()
    assert by_worker(e) > 0 or not list(e.spool.glob("raw/*/*"))  # the worker did deliver
    cluster.start()
    shutil.rmtree(e.base, ignore_errors=True)


test_postgres_stopped_then_started = faults.test_postgres_stopped_then_started
test_postgres_restarted_mid_burst = faults.test_postgres_restarted_mid_burst
test_sigkill_after_reading_part_of_stdin = faults.test_sigkill_after_reading_part_of_stdin
test_sigkill_after_the_spool_write = faults.test_sigkill_after_the_spool_write
test_sigkill_after_commit_before_exit = faults.test_sigkill_after_commit_before_exit
test_spool_full_is_75_and_leaves_no_partial_file = (
    faults.test_spool_full_is_75_and_leaves_no_partial_file)
test_spool_directory_missing_and_parent_closed = (
    faults.test_spool_directory_missing_and_parent_closed)
test_config_unreadable_is_75 = faults.test_config_unreadable_is_75
