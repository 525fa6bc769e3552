"""One delivery, in this order of precedence (each step decides before the next can run):

1. arguments and configuration: unusable -> tempfail (75); a config error is ours, never the
   sender's, and a bounce could get the address unsubscribed;
2. deadline armed: from here on, running out of time -> tempfail, `GRACE` seconds later a hard 75;
   our deadline is below Postfix's `bombom_time_limit` because Postfix bounces on its own timeout;
3. save the raw bytes under their SHA-256 before anything else: failure -> tempfail;
4. parse (pure): unusable -> the delivery is recorded as quarantined, raw kept for `replay`;
   then authenticate (auth.py, bounded DNS; never fails the delivery): DMARC fail under
   p=reject -> quarantined, unless the operator turned that off;
5. store in one transaction: unknown member -> nouser (67); duplicate -> 0; transient database
   errors are retried with backoff inside the deadline, then tempfail; a value the database
   refuses (SQLSTATE class 22/23, or psycopg's own DataError) -> quarantined, since retrying
   the same bytes cannot help.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from . import config, spool
from .auth import Auth, judge
from .deadline import Deadline, DeadlineExceeded
from .log import Log, dsn_secrets
from .outcomes import Outcome, status_line
from .store import Delivery, Result

if TYPE_CHECKING:
    from .parse import ParsedMessage

RETRY_FIRST_WAIT = 0.2
RETRY_MAX_WAIT = 5.0


class UsageError(Exception):
    """The command line in master.cf is wrong: our mistake, so defer, never bounce."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = _Parser(
        prog="bombom-deliver",
        description="Deliver one message from stdin to one Bombom member (Postfix pipe(8)).",
    )
    p.add_argument("--config", help="config file (default: $BOMBOM_CONFIG or "
                   f"{config.DEFAULT_CONFIG})")
    p.add_argument("--sender", help="envelope sender (${sender})")
    p.add_argument("--recipient", help="envelope recipient (${recipient}); without it, taken "
                   "from X-Original-To, Delivered-To, then To")
    p.add_argument("--original-recipient", help="${original_recipient}, for the log")
    p.add_argument("--queue-id", help="Postfix queue id (${queue_id}), for the log")
    p.add_argument("--client-address", help="SMTP client address (${client_address})")
    return p.parse_args(argv)


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

    try:
        return parse_message(raw), None
    except ParseError as e:
        return None, f"unparsable: {e}"
    except Exception as e:  # a parser bug must not cost the message: keep it for replay
        log.exception("parser crashed")
        return None, f"parser error: {type(e).__name__}: {e}"[:500]


def _store_with_retries(settings: config.Settings, deadline: Deadline, d: Delivery,
                        msg: ParsedMessage | None, reason: str | None, log: Log,
                        auth: Auth | None = None) -> Result:
    """Run `store.deliver`, retrying transient failures with backoff until the deadline."""
    from . import store

    def attempt() -> Result:
        deadline.check()
        with store.connect(settings.database_url, deadline.remaining()) as conn:
            try:
                return store.deliver(conn, d, msg, reason, auth)
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


def run(argv: list[str]) -> tuple[Outcome, str]:
    """Deliver the message on stdin; returns the outcome and its one-line explanation."""
    started = datetime.now(UTC)
    try:
        args = parse_args(argv)
    except UsageError as e:
        Log("syslog").error(f"command line: {e}")
        return Outcome.TEMPFAIL, f"bad command line: {e}"
    try:
        settings = config.load(args.config)
    except config.ConfigError as e:
        Log("syslog").error(f"configuration: {e}")
        return Outcome.TEMPFAIL, f"configuration: {e}"
    log = Log(settings.log, secrets=dsn_secrets(settings.database_url))
    if os.geteuid() == 0:
        log.error("refusing to run as root")
        return Outcome.TEMPFAIL, "refusing to run as root; set user= in master.cf"
    envelope = Envelope(args.recipient, args.sender, args.original_recipient, args.queue_id,
                        args.client_address)
    deadline = Deadline(settings.deadline_seconds)
    deadline.arm(b"4.3.0 deadline reached; will retry\n")
    try:
        saved = spool.save_stream(settings.spool_dir, sys.stdin.buffer)
    except spool.SpoolError as e:
        log.error(f"{args.queue_id or '-'}: outcome=tempfail spool: {e}")
        return Outcome.TEMPFAIL, f"spool: {e}"
    except DeadlineExceeded as e:
        return Outcome.TEMPFAIL, f"reading the message: {e}"
    result = deliver_saved(settings, saved, envelope, deadline, log, started)
    deadline.disarm()
    return result.outcome, f"{result.outcome.value} {result.detail} sha256={saved.sha256[:12]}"


def deliver_saved(settings: config.Settings, saved: spool.Saved, envelope: Envelope,
                  deadline: Deadline, log: Log, started: datetime | None = None) -> Result:
    """Steps 4 and 5 for a message already in the spool; `bombom replay` comes in here too."""
    t0 = time.monotonic()
    started = started or datetime.now(UTC)
    msg: ParsedMessage | None = None
    d: Delivery | None = None
    source = "envelope"
    try:
        raw = saved.path.read_bytes()
        msg, reason = _parse(raw, log)
        recipient = envelope.recipient
        if not recipient:
            recipient, source = _recipient_from_headers(msg)
        if not recipient:
            result = Result(Outcome.NOUSER, "no recipient given and none in the headers")
        else:
            for a in msg.attachments if msg else ():
                spool.save_bytes(settings.spool_dir, "att", a.data)
            d = Delivery(recipient=recipient, raw_sha256=saved.sha256,
                         raw_path=str(saved.path), started_at=started,
                         queue_id=envelope.queue_id, envelope_sender=envelope.sender,
                         client_address=envelope.client_address)
            auth, refusal = judge(settings, raw, msg, deadline.remaining())
            result = _store_with_retries(settings, deadline, d, msg, reason or refusal, log,
                                         auth)
    except DeadlineExceeded as e:
        result = Result(Outcome.TEMPFAIL, str(e))
    except spool.SpoolError as e:
        result = Result(Outcome.TEMPFAIL, f"spool: {e}")
    except Exception as e:
        log.exception(f"{envelope.queue_id or '-'}: delivery failed")
        result = Result(Outcome.TEMPFAIL, _describe(e))
    if result.outcome is Outcome.TEMPFAIL and d is not None:
        _audit_tempfail(settings, d, result, log)
    log.info(
        f"{envelope.queue_id or '-'}: outcome={result.outcome.value}"
        f" recipient={d.recipient if d else '-'}"
        f"{'' if source == 'envelope' else f' (from {source} header)'}"
        f" orig_to={envelope.original_recipient or '-'}"
        f" message_id=<{(msg.message_id if msg else None) or ''}> sha256={saved.sha256}"
        f" ms={int((time.monotonic() - t0) * 1000)} {result.detail}"
    )
    return result


def _audit_tempfail(settings: config.Settings, d: Delivery, result: Result, log: Log) -> None:
    """Best effort, bounded by a 2 s connect and 1 s statement timeout (inside the watchdog's
    grace): a `tempfail` row for `bombom stats`. Never changes the outcome."""
    from . import store

    try:
        with store.connect(settings.database_url, 1.0) as conn:
            store.record_only(conn, d, result)
    except Exception as e:  # noqa: BLE001 - the database may well be why we failed
        log.error(f"tempfail not recorded in deliveries ({type(e).__name__})")


def _describe(e: BaseException) -> str:
    """A short, password-free reason for an unexpected failure."""
    name = type(e).__name__
    sqlstate = getattr(e, "sqlstate", None)
    if name in {"OperationalError", "ConnectionTimeout"}:
        return f"database unavailable ({name})"
    return f"{name}{f' {sqlstate}' if sqlstate else ''}"


def main(argv: list[str] | None = None) -> int:
    outcome, text = run(sys.argv[1:] if argv is None else argv)
    os.write(1, (status_line(outcome, text) + "\n").encode("utf-8", "replace"))
    return outcome.exit_code
