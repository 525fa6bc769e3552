"""What the `bombom` command does, as plain functions: the SQL and the file work live here, one
module per command group; `bombom_pipe.admin` only parses options and formats what these return.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

    from ..config import Settings


def connect(settings: Settings, timeout: int = 10) -> psycopg.Connection:
    """The operator's connection: the admin DSN when configured, else the delivery one."""
    import psycopg

    url = settings.admin_database_url or settings.database_url
    return psycopg.connect(url, autocommit=False, connect_timeout=timeout)
