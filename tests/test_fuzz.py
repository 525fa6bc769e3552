"""Fuzzing the whole delivery (parse + store against the real database) and resource bombs.

Bounded in CI; `make fuzz` runs many more examples (FUZZ_EXAMPLES).
"""

from __future__ import annotations

import os
import random

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bombom_pipe import config
from bombom_pipe.deadline import Deadline
from bombom_pipe.deliver import Envelope, deliver_saved
from bombom_pipe.log import Log
from bombom_pipe.spool import save_bytes

from .bombs import BOMBS
from .conftest import ALICE, EXAMPLES, Env, corpus_files
from .test_parse_fuzz import crashes

EXAMPLES_N = int(os.environ.get("FUZZ_EXAMPLES", "150"))
SEEDS = [p.read_bytes() for p in sorted(EXAMPLES.glob("*.eml"))] + [
    p.read_bytes() for p in corpus_files()[::25]]


def mutate(raw: bytes, rnd: random.Random) -> bytes:
    data = bytearray(raw)
    for _ in range(rnd.randint(1, 8)):
        op = rnd.randrange(6)
        i = rnd.randrange(len(data) + 1)
        if op == 0 and data:
            data[min(i, len(data) - 1)] = rnd.randrange(256)
        elif op == 1:
            data[i:i] = b"\x00" * rnd.randint(1, 4)
        elif op == 2:
            del data[i:]
        elif op == 3:
            end = data.find(b"\n\n") if b"\n\n" in data else len(data) // 2
            data[i:i] = data[: max(end, 0)]  # duplicate the header block somewhere
        elif op == 4:
            data[i:i] = rnd.choice([b"=?ks_c_5601-1987?B?tsY=?=", b"\xed\xa0\x80", b"\r",
                                    b"Content-Type: multipart/mixed; boundary=\r\n", b"name*"])
        else:
            data[i:i] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 32)))
    return bytes(data)


messages = st.one_of(
    st.binary(max_size=2000),
    st.builds(mutate, st.sampled_from(SEEDS), st.randoms(use_true_random=False)),
)


@pytest.fixture
def inprocess(env: Env) -> config.Settings:
    return config.load(env.config)


@settings(max_examples=EXAMPLES_N, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(raw=messages)
def test_delivery_never_raises_and_keeps_text_clean(raw: bytes, inprocess: config.Settings,
                                                    db: psycopg.Connection) -> None:
    saved = save_bytes(inprocess.spool_dir, "raw", raw, ".eml")
    result = deliver_saved(inprocess, saved, Envelope(recipient=ALICE), Deadline(30),
                           Log(inprocess.log))
    assert result.outcome.value in {"stored", "duplicate", "quarantined"}, result
    assert not result.detail.startswith("database refused"), result.detail  # NUL, surrogates
    assert not result.detail.startswith("parser error"), result.detail
    for (notes,) in db.execute("SELECT parse_fallbacks FROM articles"):
        assert not crashes(notes), notes  # a stage of the parser raised: a bug, even if stored


def test_random_messages_through_the_process_exit_0_or_67(env: Env,
                                                          db: psycopg.Connection) -> None:
    """With the database up, every message is stored, quarantined or refused (no such member):
    75 is what any bug of ours maps to, so it is a failure here."""
    rnd = random.Random(20261129)
    for i in range(30):
        raw = mutate(rnd.choice(SEEDS), rnd)
        r = env.deliver(raw, recipient=rnd.choice([ALICE, "ghost@bombom.news", None]))
        assert r.returncode in (0, 67), (i, r)
        assert r.stdout.count(b"\n") == 1
    for (notes,) in db.execute("SELECT parse_fallbacks FROM articles"):
        assert not crashes(notes), notes
    for (detail,) in db.execute("SELECT detail FROM deliveries WHERE outcome = 'quarantined'"):
        assert not detail.startswith(("parser error", "database refused")), detail


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_resource_bomb_is_stored_with_its_headers(name: str, env: Env, db: psycopg.Connection
                                                  ) -> None:
    """Every bomb has good headers and is within Postfix's size limit, and big_message is a
    legitimate 25 MB newsletter: each is stored (the parser's bounds cost fields, not the
    message), with no stage of the parser failing."""
    raw = BOMBS[name]()
    env.extra_env = {"BOMBOM_DEADLINE_SECONDS": "120"}
    r = env.deliver(raw, timeout=180)
    assert r.returncode == 0, r
    outcome = db.execute("SELECT outcome, detail FROM deliveries").fetchone()
    print(f"\n{name}: {len(raw)} bytes -> {outcome[0]} {outcome[1]}")
    assert outcome[0] == "stored", outcome
    message_id, notes = db.execute("SELECT message_id, parse_fallbacks FROM articles").fetchone()
    assert message_id.endswith("@example.org") and not crashes(notes), (message_id, notes)
