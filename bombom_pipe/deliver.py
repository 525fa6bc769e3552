"""One delivery of a message already saved in the spool, in this order of precedence (each step
decides before the next can run). `bombom-deliver` (entry.py) saved the raw bytes and runs this in
a process it can kill (a forked child, or a child of `bombom worker`); `bombom replay` runs it too.

1. parse (pure): unusable -> the delivery is recorded as quarantined, raw kept for `replay`;
   running out of time or memory while parsing is the message's doing: quarantined too
   ("unparsable: parse budget exceeded"), never deferred, since every retry would do the same;
   then authenticate (auth.py: DKIM, SPF for the envelope's client address and sender, DMARC;
   bounded DNS; never fails the delivery): DMARC fail under p=reject -> quarantined, unless
   the operator turned that off;
2. store in one transaction: unknown member -> nouser (67); the member blocked the sender ->
   blocked (0, no article); a new article past its sender domain's `domain_daily_limit` ->
   quarantined (0); duplicate -> 0; transient database
   errors are retried with backoff inside the deadline, then tempfail; a value the database
   refuses (SQLSTATE class 22/23, or psycopg's own DataError) -> quarantined, since retrying
   the same bytes cannot help. The database cancels our statements shortly before the deadline
   (statement_timeout, lock_timeout), so the connection ends cleanly, before any signal.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from . import config, spool
from .auth import Auth, judge
from .deadline import Deadline, DeadlineExceeded
from .judge import AUTH_BUDGET, GRACE, OVERRUN, PARSE_BUDGET, overran
from .log import Log
from .outcomes import Outcome
from .store import Delivery, Result

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    import psycopg

    from .parse import ParsedMessage

    Connect = Callable[[str, float], AbstractContextManager[psycopg.Connection]]

#: the database gives up this much before our own deadline, so it cancels cleanly first
DB_MARGIN = 0.5
RETRY_FIRST_WAIT = 0.2
RETRY_MAX_WAIT = 5.0


def _recipient_from_headers(msg: ParsedMessage | None) -> tuple[str | None, str]:
    """For manual runs only: X-Original-To, Delivered-To, then the first To address."""
    if msg is None:
        return None, "none"
    for value, source in ((msg.x_original_to, "x-original-to"),
                          (msg.delivered_to, "delivered-to"),
                          (msg.to_addresses[0] if msg.to_addresses else None, "to")):
        if value:
            return value, source
    return None, "none"


def _parse(raw: bytes, log: Log) -> tuple[ParsedMessage | None, str | None]:
    """(ParsedMessage, None) or (None, why it is quarantined)."""
    from .parse import ParseError, parse_message

    wall, cpu = time.monotonic(), time.process_time()
    try:
        return parse_message(raw), None
    except ParseError as e:
        return None, f"unparsable: {e}"
    except MemoryError:
        return None, PARSE_BUDGET
    except DeadlineExceeded:
        if not overran(time.process_time() - cpu, time.monotonic() - wall):
            raise
        return None, PARSE_BUDGET
    except Exception as e:  # a parser bug must not cost the message: keep it for replay
        log.exception("parser crashed")
        return None, f"parser error: {type(e).__name__}: {e}"[:500]


def _authenticate(settings: config.Settings, raw: bytes, msg: ParsedMessage,
                  deadline: Deadline, sender: str | None, client_address: str | None = None
                  ) -> tuple[Auth | None, str | None]:
    """(verdict, why quarantined): running out of time or memory here is the message's doing
    (a flood of signatures, an outsized key) and quarantines it, as for the parser."""
    wall, cpu = time.monotonic(), time.process_time()
    try:
        return judge(settings, raw, msg, deadline.remaining(), sender, client_address)
    except MemoryError:
        return None, AUTH_BUDGET
    except DeadlineExceeded:
        if not overran(time.process_time() - cpu, time.monotonic() - wall):
            raise
        return None, AUTH_BUDGET


def _store_with_retries(settings: config.Settings, deadline: Deadline, d: Delivery,
                        msg: ParsedMessage | None, reason: str | None, log: Log,
                        auth: Auth | None = None, connect: Connect | None = None) -> Result:
    """Run `store.deliver`, retrying transient failures with backoff until the deadline."""
    from . import store

    def attempt() -> Result:
        deadline.check()
        with (connect or store.connect)(settings.database_url,
                                        deadline.remaining() - DB_MARGIN) as conn:
            try:
                return store.deliver(conn, d, msg, reason, auth, settings.domain_daily_limit)
            except Exception as e:
                if not store.is_data_error(e):
                    raise
                log.exception("database refused the message")
                why = f"database refused: {getattr(e, 'sqlstate', '')} {e}"[:500]
                return store.deliver(conn, d, None, why)

    try:
        return attempt()
    except Exception as e:
        if not store.is_transient(e):
            raise
        log.error(f"transient database error, retrying: {e}")
    import tenacity  # only paid when the first attempt failed

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(store.is_transient),
        wait=tenacity.wait_exponential_jitter(initial=RETRY_FIRST_WAIT, max=RETRY_MAX_WAIT),
        stop=tenacity.stop_before_delay(max(0.0, deadline.remaining() - 0.5)),
        reraise=True,
    )
    return retrying(attempt)


@dataclass(frozen=True, slots=True)
class Envelope:
    """What Postfix says about the message, from the command line."""

    recipient: str | None = None
    sender: str | None = None
    original_recipient: str | None = None
    queue_id: str | None = None
    client_address: str | None = None


def deliver_saved(settings: config.Settings, saved: spool.Saved, envelope: Envelope,
                  deadline: Deadline, log: Log, started: datetime | None = None,
                  stage: Callable[[str], None] = lambda name: None,
                  quarantine: str | None = None, connect: Connect | None = None) -> Result:
    """`deliver_all` for one recipient."""
    return deliver_all(settings, saved, [envelope], deadline, log, started, stage, quarantine,
                       connect)[0]


def deliver_all(settings: config.Settings, saved: spool.Saved, envelopes: Sequence[Envelope],
                deadline: Deadline, log: Log, started: datetime | None = None,
                stage: Callable[[str], None] = lambda name: None,
                quarantine: str | None = None, connect: Connect | None = None,
                each: Callable[[int, Result], None] = lambda i, result: None) -> list[Result]:
    """Parse a message already in the spool once, authenticate it once, and store it for each
    recipient (one transaction each). `stage` is told "parse", "auth" and "store" as they begin
    (the judge times each by it); `each(i, result)` hears every recipient's result as soon as it
    is known; `quarantine` skips the parser and records the message as quarantined with that
    reason; `connect(url, timeout)` gives the database connection (default: `store.connect`)."""
    t0 = time.monotonic()
    started = started or datetime.now(UTC)
    msg: ParsedMessage | None = None
    auth: Auth | None = None
    reason = quarantine
    early: Result | None = None
    raw: bytes | None = None
    try:
        raw = saved.path.read_bytes()  # parsed, and kept in the database with the delivery
        if reason is None:
            stage("parse")
            msg, reason = _parse(raw, log)
            for a in msg.attachments if msg else ():
                spool.save_bytes(settings.spool_dir, "att", a.data)
            if msg is not None:
                stage("auth")
                auth, reason = _authenticate(settings, raw, msg, deadline, envelopes[0].sender,
                                             envelopes[0].client_address)
            if reason in OVERRUN.values() and deadline.remaining() <= 0:
                deadline = Deadline(GRACE)  # time to record the quarantine
        stage("store")
    except DeadlineExceeded as e:
        early = Result(Outcome.TEMPFAIL, str(e))
    except spool.SpoolError as e:
        early = Result(Outcome.TEMPFAIL, f"spool: {e}")
    results = []
    for i, envelope in enumerate(envelopes):
        if early is None:
            result = _store_one(settings, saved, envelope, msg, reason, auth, deadline, log,
                                started, connect, t0, raw)
        else:  # the parse, authenticate or spool step failed for all: each still logs its line
            result = early
            _log_outcome(log, envelope, envelope.recipient, "envelope", msg, saved, t0, result)
        if auth is not None:
            result = replace(result, auth=auth.verdict)
        results.append(result)
        each(i, result)
    return results


def _store_one(settings: config.Settings, saved: spool.Saved, envelope: Envelope,
               msg: ParsedMessage | None, reason: str | None, auth: Auth | None,
               deadline: Deadline, log: Log, started: datetime, connect: Connect | None,
               t0: float, raw: bytes | None = None) -> Result:
    """Store for one recipient, log the one line of this delivery, and return its result."""
    d: Delivery | None = None
    source = "envelope"
    try:
        recipient = envelope.recipient
        if not recipient:
            recipient, source = _recipient_from_headers(msg)
        if not recipient:
            result = Result(Outcome.NOUSER, "no recipient given and none in the headers")
        else:
            d = Delivery(recipient=recipient, raw_sha256=saved.sha256,
                         raw_path=str(saved.path), started_at=started,
                         queue_id=envelope.queue_id, envelope_sender=envelope.sender,
                         client_address=envelope.client_address, raw=raw)
            result = _store_with_retries(settings, deadline, d, msg, reason, log, auth, connect)
    except DeadlineExceeded as e:
        result = Result(Outcome.TEMPFAIL, str(e))
    except Exception as e:
        from .store import is_transient

        if is_transient(e):  # expected (the database is down): one line, no traceback
            log.error(f"{envelope.queue_id or '-'}: delivery failed: {_describe(e, deadline)}")
        else:
            log.exception(f"{envelope.queue_id or '-'}: delivery failed")
        result = Result(Outcome.TEMPFAIL, _describe(e, deadline))
    if result.outcome is Outcome.TEMPFAIL and d is not None:
        _audit_tempfail(settings, d, result, log)
    _log_outcome(log, envelope, d.recipient if d else None, source, msg, saved, t0, result)
    return result


def _log_outcome(log: Log, envelope: Envelope, recipient: str | None, source: str,
                 msg: ParsedMessage | None, saved: spool.Saved, t0: float, result: Result
                 ) -> None:
    """The one log line of a delivery to one recipient."""
    log.info(
        f"{envelope.queue_id or '-'}: outcome={result.outcome.value}"
        f" recipient={recipient or '-'}"
        f"{'' if source == 'envelope' else f' (from {source} header)'}"
        f" orig_to={envelope.original_recipient or '-'}"
        f" message_id=<{(msg.message_id if msg else None) or ''}> sha256={saved.sha256}"
        f" ms={int((time.monotonic() - t0) * 1000)} {result.detail}"
    )


def _audit_tempfail(settings: config.Settings, d: Delivery, result: Result, log: Log) -> None:
    """Best effort, bounded by a 2 s connect and 1 s statement timeout (inside the watchdog's
    grace): a `tempfail` row for `bombom stats`. Never changes the outcome, and the deadline's
    alarm no longer applies: these timeouts bound it."""
    from . import store

    Deadline.disarm()

    try:
        with store.connect(settings.database_url, 1.0) as conn:
            store.record_only(conn, d, result)
    except Exception as e:  # noqa: BLE001 - the database may well be why we failed
        log.error(f"tempfail not recorded in deliveries ({type(e).__name__})")


def _describe(e: BaseException, deadline: Deadline) -> str:
    """A short, password-free reason for an unexpected failure."""
    name = type(e).__name__
    sqlstate = getattr(e, "sqlstate", None)
    if sqlstate in {"57014", "55P03"}:  # our statement_timeout / lock_timeout fired
        return f"deadline of {deadline.seconds:g}s reached (database cancelled the statement)"
    if name in {"OperationalError", "ConnectionTimeout"}:
        return f"database unavailable ({name})"
    if sqlstate and sqlstate[:2] == "53":  # disk full, out of memory, too many connections
        return f"database out of resources ({name} {sqlstate})"
    return f"{name}{f' {sqlstate}' if sqlstate else ''}"
