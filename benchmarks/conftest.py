"""The benchmarks use the test suite's fixtures (PostgreSQL cluster, delivery environment)."""

from tests.conftest import db, dns_server, env, key, pg, runner, workdir  # noqa: F401
