"""`make bench`: what keeping the raw bytes in the database (`raw_messages`, migration 010) costs
per delivery, in one run against a throwaway PostgreSQL (started here, gone afterwards; fsync on,
synchronous commit). Numbers, not assertions.

    python -m benchmarks.raw_store [--messages N] [--json FILE]

Each message is parsed once, then stored twice by `store.deliver`, each time in its own
transaction on one kept connection (as the worker does): for one member without the raw row and
for another with it, in alternating order, so both see the same cache and checkpoint state.
Per delivery: wall time of the transaction (commit included), WAL bytes written
(pg_current_wal_lsn before and after, nothing else writing), and at the end the tables' size on
disk per message. Sets: `synthetic` (~12 KB HTML newsletters) and `real` (the shared corpus's
newsletters and the tests' Korean letters, 10-170 KB), as in benchmarks/modes.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path

import psycopg

from bombom_pipe import store
from bombom_pipe.parse import parse_message
from bombom_pipe.schema import upgrade
from tests.sandbox import LocalPostgres

from .modes import distinct, newsletter, real_letters

TABLES = ("articles", "deliveries", "raw_messages", "newsletters", "subscriptions")


def one(conn: psycopg.Connection, probe: psycopg.Connection, raw: bytes, msg: object,
        member: str, keep: bool) -> tuple[float, int]:
    """(seconds, WAL bytes) of one delivery."""
    d = store.Delivery(recipient=member, raw_sha256=sha256(raw).hexdigest(), raw_path="/bench",
                       started_at=datetime.now(UTC), raw=raw if keep else None)
    lsn = probe.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    t0 = time.perf_counter()
    result = store.deliver(conn, d, msg)  # type: ignore[arg-type]
    dt = time.perf_counter() - t0
    assert result.outcome.value == "stored", result
    wal = probe.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (lsn,)).fetchone()[0]
    return dt, int(wal)


def measure(pg: LocalPostgres, name: str, messages: list[bytes]) -> dict:
    with psycopg.connect(pg.url(), autocommit=True) as admin:
        admin.execute("TRUNCATE attachments, deliveries, subscriptions, articles, newsletters, "
                      "members, raw_messages RESTART IDENTITY")
        admin.execute("INSERT INTO members (address) VALUES ('without@bombom.news'),"
                      " ('with@bombom.news')")
        admin.execute("CHECKPOINT")
    parsed = [(raw, parse_message(raw)) for raw in messages]
    runs: dict[bool, list[tuple[float, int]]] = {False: [], True: []}
    with psycopg.connect(pg.url(), autocommit=True) as conn, \
            psycopg.connect(pg.url(), autocommit=True) as probe:
        for i, (raw, msg) in enumerate(parsed):
            for keep in ((False, True) if i % 2 else (True, False)):
                member = "with@bombom.news" if keep else "without@bombom.news"
                runs[keep].append(one(conn, probe, raw, msg, member, keep))
        sizes = {t: probe.execute("SELECT pg_total_relation_size(%s)", (t,)).fetchone()[0]
                 for t in TABLES}
    n = len(parsed)
    out = {"set": name, "messages": n,
           "raw_bytes_mean": statistics.mean(len(r) for r in messages),
           "raw_table_bytes_per_message": sizes["raw_messages"] / n,
           "article_tables_bytes_per_delivery": sum(
               sizes[t] for t in TABLES if t != "raw_messages") / (2 * n)}
    for keep, label in ((False, "without"), (True, "with")):
        times = [t for t, _ in runs[keep]]
        wal = [w for _, w in runs[keep]]
        out[label] = {"ms_p50": statistics.median(times) * 1000,
                      "ms_mean": statistics.mean(times) * 1000,
                      "wal_bytes_mean": statistics.mean(wal),
                      "wal_bytes_p50": statistics.median(wal)}
    return out


def table(results: list[dict]) -> str:
    lines = ["| set | raw size (mean) | store ms p50 without / with | WAL per delivery without /"
             " with | raw_messages on disk per message | other tables on disk per delivery |",
             "|---|---|---|---|---|---|"]
    for r in results:
        w, k = r["without"], r["with"]
        lines.append(
            f"| {r['set']} ({r['messages']}) | {r['raw_bytes_mean'] / 1024:.1f} KiB"
            f" | {w['ms_p50']:.2f} / {k['ms_p50']:.2f} ms"
            f" | {w['wal_bytes_mean'] / 1024:.1f} / {k['wal_bytes_mean'] / 1024:.1f} KiB"
            f" | {r['raw_table_bytes_per_message'] / 1024:.1f} KiB"
            f" | {r['article_tables_bytes_per_delivery'] / 1024:.1f} KiB |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--json", default="bench-raw.json")
    args = ap.parse_args()
    real = real_letters()
    sets = {"synthetic": [newsletter(i, "raw") for i in range(args.messages)],
            "real": [distinct(real[i % len(real)], f"raw-{i}") for i in range(args.messages)]}
    with tempfile.TemporaryDirectory(prefix="bombom-bench-raw-", dir="/tmp") as tmp:
        Path(tmp).chmod(0o755)
        pg = LocalPostgres(Path(tmp) / "pg")
        pg.start()
        try:
            pg.createdb("bombom")
            with psycopg.connect(pg.url(), autocommit=True) as conn:
                upgrade(conn)
            results = [measure(pg, name, msgs) for name, msgs in sets.items() if msgs]
        finally:
            pg.stop("immediate")
    print(table(results))
    Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
