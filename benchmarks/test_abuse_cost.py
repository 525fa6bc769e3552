"""What the abuse controls cost per message, against the real database (numbers, not
assertions): the member-block lookup and the volume count each delivery makes, and the
blocklist queries Postfix's pgsql: maps send per SMTP session (one client key, three sender
keys), each with 10,000 blocks in the tables."""

from __future__ import annotations

import time

import psycopg

from bombom_pipe.store import member_block, over_volume

N = 2000


def per_call(fn) -> float:  # noqa: ANN001
    t0 = time.perf_counter()
    for i in range(N):
        fn(i)
    return (time.perf_counter() - t0) / N * 1e6


def test_abuse_controls_cost(db: psycopg.Connection) -> None:
    member = db.execute("SELECT id FROM members ORDER BY id LIMIT 1").fetchone()[0]
    db.execute("INSERT INTO member_blocks (member_id, sender) SELECT %s, 'd' || g || '.example' "
               "FROM generate_series(1, 10000) g", (member,))
    db.execute("INSERT INTO operator_blocks (sender) SELECT 's' || g || '.example' "
               "FROM generate_series(1, 10000) g")
    db.execute("INSERT INTO operator_blocks (client) SELECT ('10.' || g / 256 || '.' || g % 256 "
               "|| '.0/24')::cidr FROM generate_series(1, 10000) g")
    db.execute("ANALYZE")
    block = per_call(lambda i: member_block(db, member, f"news@x{i}.letter.example",
                                            f"bounce@esp{i}.example"))
    with db.transaction():
        volume = per_call(lambda i: over_volume(db, f"x{i % 50}.example", 10**9))
    sender = per_call(lambda i: db.execute(
        "SELECT 1 FROM operator_blocks WHERE sender = lower(%s) LIMIT 1",
        (f"n@x{i}.example",)).fetchall())
    client = per_call(lambda i: db.execute(
        "SELECT 1 FROM operator_blocks WHERE client >>= bombom_inet(%s) LIMIT 1",
        (f"192.0.{i % 256}.7",)).fetchall())
    print(f"\n  per delivery: member block {block:.0f} µs, volume count {volume:.0f} µs;"
          f" per Postfix lookup (10,000 blocks): sender {sender:.0f} µs, client {client:.0f} µs")
