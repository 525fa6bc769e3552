"""Every real message in the shared corpus through the real `bombom-deliver` process."""

from __future__ import annotations

import collections
import hashlib
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from bombom_pipe.spool import raw_path

from .conftest import CORPUS, Env, corpus_files

FILES = corpus_files()


@pytest.mark.skipif(not FILES, reason=f"no corpus at {CORPUS}")
def test_every_corpus_message_is_stored_or_quarantined(env: Env, db: psycopg.Connection) -> None:
    def one(path):  # noqa: ANN001, ANN202
        raw = path.read_bytes()
        r = env.deliver(raw, "--queue-id", hashlib.sha256(raw).hexdigest()[:10])
        return path, raw, r

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, FILES))
    bad = [(p.name, r.returncode, r.stdout[:200]) for p, _, r in results if r.returncode != 0]
    assert bad == []
    for path, raw, _ in results:
        assert raw_path(env.spool, hashlib.sha256(raw).hexdigest()).read_bytes() == raw, path
    rows = db.execute("SELECT outcome, detail FROM deliveries").fetchall()
    assert len(rows) == len(FILES)
    by_outcome = collections.Counter(o for o, _ in rows)
    reasons = collections.Counter(d.split(":")[0] for o, d in rows if o == "quarantined")
    print(f"\ncorpus: {len(FILES)} files, {dict(by_outcome)}; quarantined because: "
          f"{dict(reasons)}")
    assert set(by_outcome) <= {"stored", "duplicate", "quarantined"}
    # the corpus holds byte-identical copies of some messages and reused Message-IDs
    assert by_outcome["stored"] + by_outcome["duplicate"] >= 0.95 * len(FILES)
