"""The benchmarks use the test suite's fixtures (PostgreSQL cluster, delivery environment)."""

from tests.conftest import db, env, pg, runner, workdir  # noqa: F401
