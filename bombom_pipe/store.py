"""PostgreSQL: find the member, upsert the newsletter, insert the article, audit the delivery.

Everything for one delivery happens in one transaction, keyed so that a retry, a duplicate or a
concurrent run of the same message never makes a second article: the unique key is
(member_id, dedup_key) with dedup_key = Message-ID, or 'sha256:<raw hash>' when there is none.
Errors are classified by SQLSTATE class, never by message text (see `is_transient`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from .outcomes import Outcome

if TYPE_CHECKING:
    import psycopg

    from .parse import ParsedMessage

MAX_KEY = 900  # btree rows must stay well under PostgreSQL's 2704-byte limit
MAX_ADDRESS = 320


@dataclass(frozen=True, slots=True)
class Delivery:
    """What Postfix told us about one message and recipient."""

    recipient: str
    raw_sha256: str
    raw_path: str
    started_at: datetime
    queue_id: str | None = None
    envelope_sender: str | None = None
    client_address: str | None = None


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    detail: str
    article_id: int | None = None


def normalize_address(address: str) -> str:
    """Lower-case and drop a `+tag` extension: `Alice+News@Bombom.News` -> `alice@bombom.news`."""
    address = address.strip().strip("<>").lower()
    local, at, domain = address.rpartition("@")
    if not at:
        return address
    local = local.split("+", 1)[0]
    return f"{local}@{domain}"


def dedup_key(message_id: str | None, raw_sha256: str) -> str:
    if not message_id:
        return f"sha256:{raw_sha256}"
    if len(message_id.encode()) > MAX_KEY:
        return "mid-sha256:" + hashlib.sha256(message_id.encode()).hexdigest()
    return message_id


def _short(value: str | None, limit: int = MAX_ADDRESS) -> str | None:
    return value[:limit] if value else value


def is_transient(exc: BaseException) -> bool:
    """Worth retrying now: the server or the link failed, or a concurrency conflict."""
    import psycopg

    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return getattr(exc, "sqlstate", None) != "57014"  # a cancelled statement is our timeout
    sqlstate = getattr(exc, "sqlstate", None) or ""
    # 40: serialization failure / deadlock; 08: connection; 53: out of resources (e.g. too many
    # connections); 57P: admin shutdown / crash shutdown / cannot connect now
    return sqlstate[:2] in {"40", "08", "53"} or sqlstate.startswith("57P")


def is_data_error(exc: BaseException) -> bool:
    """The message itself is what the database refuses: a data exception or constraint (also
    raised by psycopg before sending, e.g. for a NUL in text), or text that is not encodable."""
    import psycopg

    if isinstance(exc, psycopg.DataError | psycopg.IntegrityError | UnicodeEncodeError):
        return True
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return sqlstate[:2] in {"22", "23"}


def connect(database_url: str, timeout: float) -> psycopg.Connection:
    """One connection whose connect and statements give up before the delivery's deadline."""
    import psycopg

    ms = max(100, int(timeout * 1000))
    return psycopg.connect(
        database_url,
        connect_timeout=max(2, int(timeout)),  # libpq's minimum is 2 s
        options=f"-c statement_timeout={ms} -c lock_timeout={ms}",
        application_name="bombom-deliver",
    )


def find_member(conn: psycopg.Connection, recipient: str) -> int | None:
    row = conn.execute(
        "SELECT id FROM members WHERE address = %s", (normalize_address(recipient),)
    ).fetchone()
    return row[0] if row else None


def _record(conn: psycopg.Connection, d: Delivery, result: Result, member_id: int | None,
            message_id: str | None) -> None:
    conn.execute(
        """INSERT INTO deliveries (queue_id, recipient, raw_sha256, outcome, detail, started_at,
                                   member_id, article_id, message_id, envelope_sender,
                                   client_address)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        (d.queue_id, _short(d.recipient), d.raw_sha256, result.outcome.value, result.detail,
         d.started_at, member_id, result.article_id, _short(message_id, MAX_KEY),
         _short(d.envelope_sender), _short(d.client_address)),
    )


def _newsletter(conn: psycopg.Connection, msg: ParsedMessage) -> int | None:
    """Upsert the sender; known values (name, List-Id, unsubscribe) are never replaced by NULL."""
    if not msg.from_address:
        return None
    u = msg.unsubscribe
    sender = msg.sender_address if msg.sender_address != msg.from_address else None
    row = conn.execute(
        """INSERT INTO newsletters (sender_address, display_name, list_id, sender_header,
                                    unsubscribe_http, unsubscribe_mailto, unsubscribe_one_click,
                                    unsubscribe_http_target)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (sender_address) DO UPDATE SET
             display_name = coalesce(excluded.display_name, newsletters.display_name),
             list_id = coalesce(excluded.list_id, newsletters.list_id),
             sender_header = coalesce(excluded.sender_header, newsletters.sender_header),
             unsubscribe_http_target = CASE WHEN excluded.unsubscribe_http IS NULL
                                            THEN newsletters.unsubscribe_http_target
                                            ELSE excluded.unsubscribe_http_target END,
             unsubscribe_http = coalesce(excluded.unsubscribe_http, newsletters.unsubscribe_http),
             unsubscribe_mailto = coalesce(excluded.unsubscribe_mailto,
                                           newsletters.unsubscribe_mailto),
             unsubscribe_one_click = CASE WHEN excluded.unsubscribe_http IS NULL
                                          THEN newsletters.unsubscribe_one_click
                                          ELSE excluded.unsubscribe_one_click END,
             last_seen_at = now()
           RETURNING id""",
        (_short(msg.from_address), msg.from_name, _short(msg.list_id, MAX_KEY), _short(sender),
         u.http, u.mailto, u.one_click, u.http_target),
    ).fetchone()
    return row[0] if row else None


def deliver(conn: psycopg.Connection, d: Delivery, msg: ParsedMessage | None,
            quarantine_reason: str | None = None) -> Result:
    """The whole delivery in one transaction; returns how it ended. Raises on database errors."""
    with conn.transaction():
        member_id = find_member(conn, d.recipient)
        message_id = msg.message_id if msg else None
        if member_id is None:
            result = Result(Outcome.NOUSER, f"no member {normalize_address(d.recipient)}")
        elif msg is None:
            result = Result(Outcome.QUARANTINED, quarantine_reason or "unparsable")
        else:
            result = _article(conn, d, msg, member_id)
        _record(conn, d, result, member_id, message_id)
    return result


def _existing(conn: psycopg.Connection, member_id: int, key: str) -> Result | None:
    row = conn.execute(
        "SELECT id FROM articles WHERE member_id = %s AND dedup_key = %s", (member_id, key)
    ).fetchone()
    return Result(Outcome.DUPLICATE, f"article {row[0]}", row[0]) if row else None


def _article(conn: psycopg.Connection, d: Delivery, msg: ParsedMessage, member_id: int) -> Result:
    key = dedup_key(msg.message_id, d.raw_sha256)
    if existing := _existing(conn, member_id, key):  # a retry: no newsletter upsert either
        return existing
    newsletter_id = _newsletter(conn, msg)
    u = msg.unsubscribe
    images = list(msg.thumbnail_candidates)
    row = conn.execute(
        """INSERT INTO articles (member_id, newsletter_id, dedup_key, message_id, subject,
                                 from_address, from_name, date_header, sent_at, html,
                                 text_content, list_id, list_unsubscribe, envelope_sender,
                                 raw_sha256, raw_path, display_html, preview, unsubscribe_http,
                                 unsubscribe_mailto, unsubscribe_one_click, web_version_url,
                                 thumbnail_url, reading_minutes, confirmation_url, charsets,
                                 replacement_chars, parse_fallbacks, skipped_attachments,
                                 web_version_target, unsubscribe_http_target, image_urls)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                   %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (member_id, dedup_key) DO NOTHING
           RETURNING id""",
        (member_id, newsletter_id, key, msg.message_id, msg.subject, _short(msg.from_address),
         msg.from_name, msg.date_header, msg.sent_at, msg.html, msg.text, msg.list_id,
         msg.list_unsubscribe, _short(d.envelope_sender), d.raw_sha256, d.raw_path,
         msg.display_html, msg.preview, u.http, u.mailto, u.one_click, msg.web_version_url,
         _thumbnail(conn, newsletter_id, msg, images), msg.reading_minutes,
         msg.confirmation_url, list(msg.charsets), msg.replacement_chars, list(msg.fallbacks),
         list(msg.skipped_attachments), msg.web_version_target, u.http_target, images),
    ).fetchone()
    if row is None:  # a concurrent run of the same message committed first
        return _existing(conn, member_id, key) or Result(Outcome.DUPLICATE, "article None")
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO attachments (article_id, filename, content_type, disposition,
                                        content_id, size, sha256)
               VALUES (%s, %s, %s, %s, %s, %s, %s)""",
            [(row[0], a.filename, a.content_type, a.disposition, a.content_id, a.size, a.sha256)
             for a in msg.attachments],
        )
    return Result(Outcome.STORED, f"article {row[0]}", row[0])


PREVIOUS_ISSUES = 5  # how many earlier issues of a newsletter show what it repeats


def image_key(url: str) -> str:
    """An image URL without scheme, query and fragment: per-send tokens do not make it new."""
    return url.split("#", 1)[0].split("?", 1)[0].split("://", 1)[-1].lower()


def _thumbnail(conn: psycopg.Connection, newsletter_id: int | None, msg: ParsedMessage,
               images: list[str]) -> str | None:
    """The first candidate image that earlier issues of the same newsletter do not also have:
    an image that comes back in every issue is the newsletter's logo or masthead."""
    if not images or newsletter_id is None:
        return msg.thumbnail_url
    rows = conn.execute(
        """SELECT image_urls FROM articles
           WHERE newsletter_id = %s AND subject IS DISTINCT FROM %s
             AND cardinality(image_urls) > 0
           ORDER BY id DESC LIMIT %s""",
        (newsletter_id, msg.subject, PREVIOUS_ISSUES),
    ).fetchall()
    seen = {image_key(url) for (urls,) in rows for url in urls}
    return next((url for url in images if image_key(url) not in seen), None)


def record_only(conn: psycopg.Connection, d: Delivery, result: Result) -> None:
    """Audit a delivery that ended before or outside `deliver` (tempfail), best effort."""
    with conn.transaction():
        _record(conn, d, result, None, None)
