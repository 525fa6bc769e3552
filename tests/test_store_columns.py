"""The store names each column once, beside its value; these names must be the schema's: every
column the database does not fill itself is written, and nothing else."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg

from bombom_pipe.outcomes import Outcome
from bombom_pipe.parse import parse_message
from bombom_pipe.parse.result import Attachment
from bombom_pipe.store import Delivery, Result, article_row, attachment_row, delivery_row

from .conftest import EXAMPLES

#: columns the database fills (keys, defaults, timestamps) or an operator sets
DATABASE_SIDE = {
    "articles": {"id", "received_at"},
    "deliveries": {"id", "finished_at", "edge_address"},  # edge_address: inet_client_addr()
    "attachments": {"id"},
}
#: articles columns that need the database, added by store._insert
NEEDS_DATABASE = {"member_id", "newsletter_id", "thumbnail_url"}


def columns(db: psycopg.Connection, table: str) -> set[str]:
    rows = db.execute("SELECT column_name FROM information_schema.columns "
                      "WHERE table_schema = 'public' AND table_name = %s", (table,)).fetchall()
    return {name for (name,) in rows}


def test_rows_name_exactly_the_schemas_columns(db: psycopg.Connection) -> None:
    raw = sorted(EXAMPLES.glob("*.eml"))[0].read_bytes()
    msg = parse_message(raw)
    d = Delivery(recipient="alice@bombom.news", raw_sha256="0" * 64, raw_path="/x",
                 started_at=datetime.now(UTC))
    written = {
        "articles": set(article_row(d, msg, None, "k", "c", [])) | NEEDS_DATABASE,
        "deliveries": set(delivery_row(d, Result(Outcome.STORED, "article 1", 1), 1, None)),
        "attachments": set(attachment_row(1, Attachment("a.pdf", "application/pdf", None,
                                                        "attachment", b"x", "0" * 64))),
    }
    for table, names in written.items():
        assert names == columns(db, table) - DATABASE_SIDE[table], table
