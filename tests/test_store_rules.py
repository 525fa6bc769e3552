"""The store's pure rules, without a database: which errors are worth a retry (by SQLSTATE class,
never by message text) and how an address is normalized for the member lookup."""

from __future__ import annotations

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg import errors

from bombom_pipe.store import is_transient, normalize_address


@pytest.mark.parametrize("exc", [
    psycopg.OperationalError("connection refused"),  # no SQLSTATE: the link itself failed
    psycopg.InterfaceError("the connection is closed"),
    errors.SerializationFailure("40001"),
    errors.DeadlockDetected("40P01"),
    errors.ConnectionFailure("08006"),
    errors.TooManyConnections("53300"),
    errors.OutOfMemory("53200"),
    errors.AdminShutdown("57P01"),
    errors.CrashShutdown("57P02"),
    errors.CannotConnectNow("57P03"),
])
def test_server_link_and_concurrency_failures_are_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize("exc", [
    errors.QueryCanceled("57014"),  # our own statement_timeout: the deadline, not the server
    errors.UniqueViolation("23505"),
    errors.NotNullViolation("23502"),
    errors.StringDataRightTruncation("22001"),
    errors.CharacterNotInRepertoire("22021"),
    errors.InsufficientPrivilege("42501"),
    errors.UndefinedTable("42P01"),
    errors.SyntaxError("42601"),
    psycopg.DataError("a NUL in text, refused before sending"),
    psycopg.ProgrammingError("bad query"),
    ValueError("not a database error"),
    UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
])
def test_refusals_of_the_message_or_of_our_code_are_not(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_the_class_decides_not_the_message_text() -> None:
    assert is_transient(errors.SerializationFailure("permission denied"))
    assert not is_transient(errors.InsufficientPrivilege("could not serialize; try again"))


@pytest.mark.parametrize(("given", "stored"), [
    ("alice@bombom.news", "alice@bombom.news"),
    ("Alice@Bombom.News", "alice@bombom.news"),
    ("alice+promo@bombom.news", "alice@bombom.news"),
    ("Alice+Promo+2024@BOMBOM.news", "alice@bombom.news"),
    ("<alice@bombom.news>", "alice@bombom.news"),
    ("  <Alice+x@bombom.news>\n", "alice@bombom.news"),
    ("a+b@c+d.example", "a@c+d.example"),  # only the local part has a tag
    ("\"a@b\"@bombom.news", "\"a@b\"@bombom.news"),  # the last @ separates the domain
    ("ÄLICE@bombom.news", "älice@bombom.news"),
    ("not-an-address", "not-an-address"),  # left for the caller to refuse
    ("< a@b >", "a@b"),  # spaces inside the brackets too
    (" <\t< Alice@bombom.news >> ", "alice@bombom.news"),
    ("+promo@bombom.news", "+promo@bombom.news"),  # a tag alone is no local part: nobody
    ("<+promo+x@bombom.news>", "+promo+x@bombom.news"),
    ("a+@bombom.news", "a@bombom.news"),
    ("@bombom.news", "@bombom.news"),
])
def test_normalize_address(given: str, stored: str) -> None:
    assert normalize_address(given) == stored
    assert normalize_address(stored) == stored


#: what addresses are made of, and what normalization treats specially
ADDRESSY = st.text(alphabet=st.sampled_from("aZİΣς+@<> \t\n\x0b\u3000\u00a0.\"-"), max_size=20)


@given(st.one_of(ADDRESSY, st.text(max_size=30)))
def test_normalize_address_is_idempotent_and_never_empties_a_local_part(given: str) -> None:
    once = normalize_address(given)
    assert normalize_address(once) == once
    local, at, _ = once.rpartition("@")
    if at and not local:  # only when the input had nothing but spaces and brackets before it
        assert all(c.isspace() or c in "<>" for c in given.rpartition("@")[0]), given
