"""The benchmarks use the test suite's fixtures (PostgreSQL cluster, delivery environment)."""

from tests.conftest import db, dns_server, env, pg, runner, workdir  # noqa: F401
from tests.test_trust import key  # noqa: F401
