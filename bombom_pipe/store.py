"""PostgreSQL: find the member, upsert the newsletter, insert the article, audit the delivery.

Everything for one delivery happens in one transaction, keyed so that a retry, a duplicate or a
concurrent run of the same message never makes a second article: articles are unique on
(member_id, raw_sha256) and on (member_id, dedup_key), where dedup_key names the sender and the
message: `dkim:<aligned signing domain> <Message-ID>` for authenticated mail, else
`from:<From address> <Message-ID>`; 'sha256:<raw hash>' stands in for a missing Message-ID.
A stranger's mail therefore never shares a key with authenticated mail. A message whose key is
taken by an article with other content is not a duplicate: it becomes its own article under
`<key> content:<content hash>`, and the delivery's detail names the article it collided with.
Errors are classified by SQLSTATE class, never by message text (see `is_transient`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from .outcomes import Outcome

if TYPE_CHECKING:
    import psycopg

    from .auth import Auth
    from .parse import ParsedMessage
    from .parse.result import Attachment

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
    raw: bytes | None = field(default=None, repr=False)  # kept in raw_messages when given


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    detail: str
    article_id: int | None = None
    auth: str | None = None  # the authentication verdict, when the message got that far


_ENCLOSING = re.compile(r"[\s<>]*")  # what surrounds an address: spaces and angle brackets


def normalize_address(address: str) -> str:
    """Lower-case, unwrapped and without a `+tag` extension: `<Alice+News@Bombom.News>` ->
    `alice@bombom.news`. As with Postfix's recipient_delimiter, a tag is kept when removing it
    would leave no local part (`+news@bombom.news` is nobody). Idempotent."""
    address = address.lower()
    start = _ENCLOSING.match(address).end()  # type: ignore[union-attr]
    end = len(address) - _ENCLOSING.match(address[::-1]).end()  # type: ignore[union-attr]
    address = address[start:max(start, end)]
    local, at, domain = address.rpartition("@")
    untagged = local.split("+", 1)[0]
    if not at or not untagged:
        return address
    return f"{untagged}@{domain}"


def identity(from_address: str | None, auth: Auth | None) -> str:
    """Who the key says sent it: the aligned DKIM domain when authenticated, else From."""
    if auth is not None and auth.authenticated:
        if auth.signing_domain:
            return f"dkim:{auth.signing_domain[:MAX_ADDRESS]}"
        return f"dmarc:{(from_address or '').rpartition('@')[2][:MAX_ADDRESS]}"  # e.g. SPF
    return f"from:{(from_address or '')[:MAX_ADDRESS]}"


def dedup_key(message_id: str | None, raw_sha256: str, sender: str) -> str:
    """`<sender> <Message-ID>`, or `<sender> sha256:<raw hash>` without a Message-ID."""
    if not message_id:
        return f"{sender} sha256:{raw_sha256}"
    if len(message_id.encode()) > MAX_KEY:
        return f"{sender} mid-sha256:" + hashlib.sha256(message_id.encode()).hexdigest()
    return f"{sender} {message_id}"


def content_sha256(msg: ParsedMessage) -> str:
    """What a member would read: subject, From, bodies and attachments (not the headers a relay
    adds), so that the same issue resent through another path stays one article."""
    h = hashlib.sha256()
    for part in (msg.subject, _short(msg.from_address), msg.from_name, msg.html, msg.text,
                 *sorted(a.sha256 for a in msg.attachments)):
        data = (part or "").encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "big") + data)
    return h.hexdigest()


def _short(value: str | None, limit: int = MAX_ADDRESS) -> str | None:
    return value[:limit] if value else value


def is_transient(exc: BaseException) -> bool:
    """Worth retrying now: the server or the link failed, or a concurrency conflict."""
    import psycopg

    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return getattr(exc, "sqlstate", None) != "57014"  # a cancelled statement is our timeout
    sqlstate = getattr(exc, "sqlstate", None) or ""
    # 40: serialization failure / deadlock; 08: connection; 53: out of resources (e.g. too many
    # connections); 57P: admin shutdown / crash shutdown / cannot connect now; 25006: a write on
    # a server that is (now) a read-only standby, e.g. a kept connection across a failover: a
    # new connection finds the primary (target_session_attrs=read-write)
    return (sqlstate[:2] in {"40", "08", "53"} or sqlstate.startswith("57P")
            or sqlstate == "25006")


def is_data_error(exc: BaseException) -> bool:
    """The message itself is what the database refuses: a data exception or constraint (also
    raised by psycopg before sending, e.g. for a NUL in text), or text that is not encodable."""
    import psycopg

    if isinstance(exc, psycopg.DataError | psycopg.IntegrityError | UnicodeEncodeError):
        return True
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return sqlstate[:2] in {"22", "23"}


#: A delivery's transaction is a few statements in a row; a process stopped or stuck between two
#: of them (SIGSTOP, swapped out, a hung thread) would hold its row locks, the shared newsletter
#: row's among them, and make every delivery of that newsletter wait out its deadline. The server
#: ends such a session after this long (ms): its transaction rolls back and its locks go.
IDLE_IN_TRANSACTION_MS = 5000


def connect(database_url: str, timeout: float) -> psycopg.Connection:
    """One connection whose connect and statements give up before the delivery's deadline."""
    import psycopg

    ms = max(100, int(timeout * 1000))
    return psycopg.connect(
        database_url,
        connect_timeout=max(2, int(timeout)),  # libpq's minimum is 2 s
        options=f"-c statement_timeout={ms} -c lock_timeout={ms}"
                f" -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}",
        application_name="bombom-deliver",
    )


def find_member(conn: psycopg.Connection, recipient: str) -> int | None:
    row = conn.execute(
        "SELECT id FROM members WHERE address = %s", (normalize_address(recipient),)
    ).fetchone()
    return row[0] if row else None


def _record(conn: psycopg.Connection, d: Delivery, result: Result, member_id: int | None,
            message_id: str | None) -> None:
    insert(conn, "deliveries", delivery_row(d, result, member_id, message_id))


def delivery_row(d: Delivery, result: Result, member_id: int | None, message_id: str | None
                 ) -> dict[str, object]:
    return {
        "queue_id": d.queue_id, "recipient": _short(d.recipient), "raw_sha256": d.raw_sha256,
        "outcome": result.outcome.value, "detail": result.detail, "started_at": d.started_at,
        "member_id": member_id, "article_id": result.article_id,
        "message_id": _short(message_id, MAX_KEY), "envelope_sender": _short(d.envelope_sender),
        "client_address": _short(d.client_address)}


def insert(conn: psycopg.Connection, table: str, row: dict[str, object], suffix: str = ""
           ) -> tuple | None:
    """INSERT one row given by column name (each name is said once, beside its value);
    `suffix` is SQL after VALUES, e.g. `ON CONFLICT DO NOTHING RETURNING id`."""
    from psycopg import sql

    query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) {}").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, row)),
        sql.SQL(", ").join(map(sql.Placeholder, row)), sql.SQL(suffix))  # type: ignore[arg-type]
    cur = conn.execute(query, row)
    return cur.fetchone() if cur.description else None


#: the newsletter values that are the same for every member (migration 008 moved the
#: unsubscribe links, which are each member's own, to `subscriptions`)
_SHARED = ("display_name", "list_id", "sender_header")


def _merge(column: str) -> str:
    """A shared value is set by the first sighting; mail that is not authenticated never changes
    it; the first authenticated mail replaces it (with NULL too: what the first sighting said was
    nobody's word), later authenticated mail replaces it but never with NULL."""
    return (f"{column} = CASE WHEN excluded.authenticated_at IS NULL THEN newsletters.{column}"
            f" WHEN newsletters.authenticated_at IS NULL THEN excluded.{column}"
            f" ELSE coalesce(excluded.{column}, newsletters.{column}) END")


_NEWSLETTER_UPSERT = f"""
    INSERT INTO newsletters (sender_address, display_name, list_id, sender_header,
                             authenticated_at)
    VALUES (%s, %s, %s, %s, CASE WHEN %s THEN now() END)
    ON CONFLICT (sender_address) DO UPDATE SET
      {", ".join(_merge(c) for c in _SHARED)},
      authenticated_at = coalesce(excluded.authenticated_at, newsletters.authenticated_at),
      last_seen_at = now()
    RETURNING id"""


def _vouched(auth: Auth | None, header: str, value: str | None) -> str | None:
    """`value` from authenticated mail only when the pass vouches for its header; from other
    mail as it is (it can only be a first sighting's, see `_merge`)."""
    if auth is None or not auth.authenticated or auth.vouches(header):
        return value
    return None


def _newsletter(conn: psycopg.Connection, msg: ParsedMessage, auth: Auth | None) -> int | None:
    """Upsert the sender. Its shared values (name, List-Id, Sender) come from the first sighting
    until authenticated mail replaces them, and from authenticated mail only after that, each
    only from a header the pass vouches for; see `_merge`."""
    if not msg.from_address:
        return None
    sender = msg.sender_address if msg.sender_address != msg.from_address else None
    row = conn.execute(
        _NEWSLETTER_UPSERT,  # type: ignore[arg-type]
        (_short(msg.from_address), _vouched(auth, "from", msg.from_name),
         _short(_vouched(auth, "list-id", msg.list_id), MAX_KEY),
         _short(_vouched(auth, "sender", sender)), auth is not None and auth.authenticated),
    ).fetchone()
    return row[0] if row else None


_SUBSCRIPTION_UPSERT = """
    INSERT INTO subscriptions (member_id, newsletter_id, unsubscribe_http, unsubscribe_mailto,
                               unsubscribe_one_click, unsubscribe_http_target, confirmation_url)
    SELECT %(member)s, n.id, v.http, v.mailto, coalesce(v.one_click, false), v.target, v.confirm
    FROM newsletters n
    CROSS JOIN LATERAL (SELECT
        CASE WHEN w.ok THEN %(http)s END AS http, CASE WHEN w.ok THEN %(mailto)s END AS mailto,
        CASE WHEN w.ok THEN %(one_click)s END AS one_click,
        CASE WHEN w.ok THEN %(target)s END AS target,
        CASE WHEN w.ok OR %(authenticated)s THEN %(confirm)s END AS confirm
        FROM (SELECT %(trusted)s OR n.authenticated_at IS NULL AS ok) w) v
    WHERE n.id = %(newsletter)s
    ON CONFLICT (member_id, newsletter_id) DO UPDATE SET
      unsubscribe_http = coalesce(excluded.unsubscribe_http, subscriptions.unsubscribe_http),
      unsubscribe_one_click = CASE WHEN excluded.unsubscribe_http IS NULL
          THEN subscriptions.unsubscribe_one_click ELSE excluded.unsubscribe_one_click END,
      unsubscribe_http_target = CASE WHEN excluded.unsubscribe_http IS NULL
          THEN subscriptions.unsubscribe_http_target ELSE excluded.unsubscribe_http_target END,
      unsubscribe_mailto = coalesce(excluded.unsubscribe_mailto, subscriptions.unsubscribe_mailto),
      confirmation_url = coalesce(excluded.confirmation_url, subscriptions.confirmation_url),
      last_seen_at = now()"""


def _subscription(conn: psycopg.Connection, member_id: int, newsletter_id: int,
                  msg: ParsedMessage, auth: Auth | None) -> None:
    """The member's own links for this newsletter: the latest this member received (a link is
    never replaced by none). Once the newsletter has been seen authenticated, only mail whose
    pass vouches for them sets them: List-Unsubscribe (and List-Unsubscribe-Post for one-click)
    when they come from the headers; the body (a link found there, the confirmation link) is
    covered by any pass."""
    u = msg.unsubscribe
    authenticated = auth is not None and auth.authenticated
    trusted = authenticated and (u.source != "header" or auth.vouches("list-unsubscribe"))
    one_click = u.one_click and (not authenticated or auth.vouches("list-unsubscribe-post"))
    conn.execute(_SUBSCRIPTION_UPSERT, {  # type: ignore[arg-type]
        "member": member_id, "newsletter": newsletter_id, "trusted": trusted,
        "authenticated": authenticated,
        "http": u.http, "mailto": u.mailto, "one_click": one_click, "target": u.http_target,
        "confirm": msg.confirmation_url})


def deliver(conn: psycopg.Connection, d: Delivery, msg: ParsedMessage | None,
            quarantine_reason: str | None = None, auth: Auth | None = None,
            domain_daily_limit: int = 0) -> Result:
    """The whole delivery in one transaction; returns how it ended. Raises on database errors.
    A `quarantine_reason` with a parsed message (e.g. DMARC reject) quarantines it too. In
    order: no member -> nouser; the member blocked the sender -> blocked; unusable -> quarantined;
    a new article past its sender domain's `domain_daily_limit` (0: none) -> quarantined."""
    with conn.transaction():
        member_id = find_member(conn, d.recipient)
        message_id = msg.message_id if msg else None
        block = None if member_id is None else member_block(
            conn, member_id, msg.from_address if msg else None, d.envelope_sender)
        if member_id is None:
            result = Result(Outcome.NOUSER, f"no member {normalize_address(d.recipient)}")
        elif block is not None:
            result = Result(Outcome.BLOCKED, f"by the member: {block}")
        elif msg is None or quarantine_reason:
            result = Result(Outcome.QUARANTINED, quarantine_reason or "unparsable")
        else:
            result = _article(conn, d, msg, member_id, auth, domain_daily_limit)
        if member_id is not None and d.raw is not None:
            keep_raw(conn, d.raw_sha256, d.raw)
        _record(conn, d, result, member_id, message_id)
    return result


def keep_raw(conn: psycopg.Connection, sha256: str, raw: bytes) -> None:
    """The raw bytes in `raw_messages` (migration 010), in the caller's transaction: its commit
    is their copy on every host. Once per message: bytes already there are not sent again, and
    a concurrent delivery of the same bytes waits for the first, then does nothing."""
    if conn.execute("SELECT 1 FROM raw_messages WHERE sha256 = %s", (sha256,)).fetchone():
        return
    conn.execute("INSERT INTO raw_messages (sha256, bytes) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                 (sha256, raw))


def _split(address: str | None) -> tuple[str, str] | None:
    """(local part, domain) of an address, lower-case and without +tag; None if it is none."""
    local, at, domain = normalize_address(address or "").rpartition("@")
    return (local, domain) if local and at and domain else None


def sender_keys(*addresses: str | None) -> list[str]:
    """What a block may name for these senders: each address, its domain and the domains above
    it (`example.com` covers `news.example.com`), lower-case."""
    keys: list[str] = []
    for parts in filter(None, map(_split, addresses)):
        labels = parts[1].split(".")
        keys += [f"{parts[0]}@{parts[1]}",
                 *(".".join(labels[i:]) for i in range(max(1, len(labels) - 1)))]
    return keys


def member_block(conn: psycopg.Connection, member_id: int, from_address: str | None,
                 envelope_sender: str | None) -> str | None:
    """The member's block that names the From address, the envelope sender or either's domain
    (`member_blocks`), or None."""
    keys = sender_keys(from_address, envelope_sender)
    if not keys:
        return None
    row = conn.execute("SELECT sender FROM member_blocks WHERE member_id = %s AND sender = ANY(%s)"
                       " ORDER BY sender LIMIT 1", (member_id, keys)).fetchone()
    return row[0] if row else None


def sender_domain(msg: ParsedMessage, envelope_sender: str | None) -> str:
    """Whose volume a message counts to: its From domain, else the envelope sender's."""
    for address in (msg.from_address, envelope_sender):
        if parts := _split(address):
            return parts[1][:MAX_ADDRESS]
    return "-"


def over_volume(conn: psycopg.Connection, domain: str, limit: int) -> str | None:
    """Count one more article from `domain` today (UTC); past `limit`: why it is quarantined.
    The row is locked until the delivery commits, so concurrent deliveries count one by one."""
    count = conn.execute(
        """INSERT INTO domain_volume AS v (domain, day, messages)
           VALUES (%s, (now() AT TIME ZONE 'UTC')::date, 1)
           ON CONFLICT (domain, day) DO UPDATE SET messages = v.messages + 1
           RETURNING messages""", (domain,)).fetchone()[0]  # type: ignore[index]
    if count <= limit:
        return None
    conn.execute("""UPDATE domain_volume SET quarantined = quarantined + 1
                    WHERE domain = %s AND day = (now() AT TIME ZONE 'UTC')::date""", (domain,))
    return f"volume: sender domain {domain} over its limit of {limit} messages a day"


def _existing(conn: psycopg.Connection, member_id: int, key: str, raw_sha256: str
              ) -> tuple[int, str | None, str] | None:
    """(id, content_sha256, raw_sha256) of the member's article with these bytes, else with
    this key."""
    return conn.execute(
        """SELECT id, content_sha256, raw_sha256 FROM articles
           WHERE member_id = %s AND (raw_sha256 = %s OR dedup_key = %s)
           ORDER BY raw_sha256 = %s DESC LIMIT 1""",
        (member_id, raw_sha256, key, raw_sha256),
    ).fetchone()


def _article(conn: psycopg.Connection, d: Delivery, msg: ParsedMessage, member_id: int,
             auth: Auth | None, domain_daily_limit: int = 0) -> Result:
    content = content_sha256(msg)
    key = dedup_key(msg.message_id, d.raw_sha256, identity(msg.from_address, auth))
    conflict: int | None = None
    counted = not domain_daily_limit
    for _ in range(4):  # the key, then its content variant; a concurrent run may win each
        found = _existing(conn, member_id, key, d.raw_sha256)
        if found and (found[2] == d.raw_sha256 or found[1] == content):
            # a retry of the same bytes, or the same message resent on another path
            return Result(Outcome.DUPLICATE, f"article {found[0]}", found[0])
        if found:  # the key is taken by other content: never drop it silently
            conflict = found[0]
            key = f"{key[:MAX_KEY]} content:{content}"
            continue
        if not counted:  # a new article: it counts to its sender domain's volume, once
            counted = True
            why = over_volume(conn, sender_domain(msg, d.envelope_sender), domain_daily_limit)
            if why:
                return Result(Outcome.QUARANTINED, why)
        article_id = _insert(conn, d, msg, member_id, auth, key, content)
        if article_id is not None:
            detail = f"article {article_id}"
            if conflict is not None:
                detail += f" (same sender and Message-ID as article {conflict}, other content)"
            return Result(Outcome.STORED, detail, article_id)
    raise RuntimeError("article key kept changing under concurrent deliveries")


def _insert(conn: psycopg.Connection, d: Delivery, msg: ParsedMessage, member_id: int,
            auth: Auth | None, key: str, content: str) -> int | None:
    """The article and its attachments; None when a concurrent run took the key or bytes."""
    newsletter_id = _newsletter(conn, msg, auth)
    images = list(msg.thumbnail_candidates)
    row = article_row(d, msg, auth, key, content, images) | {
        "member_id": member_id, "newsletter_id": newsletter_id,
        "thumbnail_url": _thumbnail(conn, newsletter_id, msg, images)}
    inserted = insert(conn, "articles", row, "ON CONFLICT DO NOTHING RETURNING id")
    if inserted is None:
        return None
    for a in msg.attachments:
        insert(conn, "attachments", attachment_row(inserted[0], a))
    if newsletter_id is not None:
        _subscription(conn, member_id, newsletter_id, msg, auth)
    return inserted[0]


def article_row(d: Delivery, msg: ParsedMessage, auth: Auth | None, key: str, content: str,
                images: list[str]) -> dict[str, object]:
    """The `articles` columns that come from the message, by name (the member, newsletter and
    thumbnail, which need the database, are added by `_insert`)."""
    u = msg.unsubscribe
    return {
        "dedup_key": key, "message_id": msg.message_id, "subject": msg.subject,
        "from_address": _short(msg.from_address), "from_name": msg.from_name,
        "date_header": msg.date_header, "sent_at": msg.sent_at, "html": msg.html,
        "text_content": msg.text, "list_id": msg.list_id,
        "list_unsubscribe": msg.list_unsubscribe, "envelope_sender": _short(d.envelope_sender),
        "raw_sha256": d.raw_sha256, "raw_path": d.raw_path, "display_html": msg.display_html,
        "preview": msg.preview, "unsubscribe_http": u.http, "unsubscribe_mailto": u.mailto,
        "unsubscribe_one_click": u.one_click, "unsubscribe_http_target": u.http_target,
        "web_version_url": msg.web_version_url, "web_version_target": msg.web_version_target,
        "image_urls": images, "reading_minutes": msg.reading_minutes,
        "confirmation_url": msg.confirmation_url, "charsets": list(msg.charsets),
        "replacement_chars": msg.replacement_chars, "parse_fallbacks": list(msg.fallbacks),
        "skipped_attachments": list(msg.skipped_attachments), "content_sha256": content,
        "auth_verdict": auth.verdict if auth else None,
        "auth_signing_domain": auth.signing_domain if auth else None,
        "auth_dmarc_policy": auth.dmarc_policy if auth else None,
        "auth_detail": auth.detail if auth else None,
    }


def attachment_row(article_id: int, a: Attachment) -> dict[str, object]:
    return {"article_id": article_id, "filename": a.filename, "content_type": a.content_type,
            "disposition": a.disposition, "content_id": a.content_id, "size": a.size,
            "sha256": a.sha256}


PREVIOUS_ISSUES = 5  # how many earlier issues of a newsletter show what it repeats


def image_key(url: str) -> str:
    """An image URL without scheme, query and fragment: per-send tokens do not make it new."""
    return url.split("#", 1)[0].split("?", 1)[0].split("://", 1)[-1].lower()


def _thumbnail(conn: psycopg.Connection, newsletter_id: int | None, msg: ParsedMessage,
               images: list[str]) -> str | None:
    """The first candidate image that earlier issues of the same newsletter do not also have:
    an image that comes back in every issue is the newsletter's logo or masthead. Once the
    newsletter has been seen authenticated, only its authenticated issues are that history:
    anyone can send mail with its From to their own address, and must not hide what others see."""
    if not images or newsletter_id is None:
        return msg.thumbnail_url
    rows = conn.execute(
        """SELECT a.image_urls FROM articles a JOIN newsletters n ON n.id = a.newsletter_id
           WHERE a.newsletter_id = %s AND a.subject IS DISTINCT FROM %s
             AND cardinality(a.image_urls) > 0
             AND (n.authenticated_at IS NULL OR a.auth_verdict = 'pass')
           ORDER BY a.id DESC LIMIT %s""",
        (newsletter_id, msg.subject, PREVIOUS_ISSUES),
    ).fetchall()
    seen = {image_key(url) for (urls,) in rows for url in urls}
    return next((url for url in images if image_key(url) not in seen), None)


def record_only(conn: psycopg.Connection, d: Delivery, result: Result) -> None:
    """Audit a delivery that ended before or outside `deliver` (tempfail), best effort."""
    with conn.transaction():
        _record(conn, d, result, None, None)
