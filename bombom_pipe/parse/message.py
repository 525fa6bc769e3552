"""Assemble a ParsedMessage from the stages, each guarded so one failure costs one field."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from . import bodies, mime
from .charsets import clean_text, decode_fragment, prior
from .headers import (
    MAX_HEADER_CHARS,
    Headers,
    addresses,
    angle_id,
    decode_words,
    parse_date,
    parse_params,
    to_bytes,
)
from .result import Attachment, ParsedMessage, ParseError, Run, Unsubscribe

MAX_FIRST_ADDRESS_CHARS = 2048  # From, Sender, ...: read for their first address only

_MAIL_HEADERS = frozenset({
    "from", "to", "cc", "subject", "date", "message-id", "received", "return-path", "sender",
    "delivered-to", "x-original-to", "mime-version", "content-type", "reply-to", "list-id",
    "in-reply-to", "references", "dkim-signature", "bcc", "x-mailer", "envelope-to",
})


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse one raw RFC 5322 message. Raises ParseError only for unusable input."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise ParseError(f"input is {type(raw).__name__}, not bytes")
    raw = bytes(raw)
    if not raw.strip():
        raise ParseError("empty input")
    try:
        return _clean(_parse(raw))
    except ParseError:
        raise
    except Exception as exc:  # noqa: BLE001 - last resort: keep the headers at least
        try:
            return _clean(_parse(raw, minimal=f"{type(exc).__name__}: {exc}"[:200]))
        except ParseError:
            raise
        except Exception as again:
            raise ParseError(f"parser failure: {type(again).__name__}") from again


def _parse(raw: bytes, minimal: str | None = None) -> ParsedMessage:
    run = Run()
    if minimal is None:
        msg, notes = mime.load(raw)
    else:
        msg = mime.parse_bytes(mime.header_block(raw.lstrip()), headersonly=True)
        notes = [f"message: full parse failed ({minimal}), headers only"]
    run.fallbacks.extend(notes)
    headers = Headers.of(msg)
    if minimal is None and _damaged(msg, headers) and (fixed := mime.repair_header(raw)):
        msg2, notes2 = mime.load(fixed[0])
        headers2 = Headers.of(msg2)
        if _mail_count(headers2) >= max(1, _mail_count(headers)):
            msg, headers = msg2, headers2
            run.fallbacks.extend(fixed[1] + notes2)
    if not headers.fields:
        raise ParseError("no header fields: not a mail message")
    if not _MAIL_HEADERS.intersection(headers.fields):
        raise ParseError("no mail header fields (From, To, Subject, Date, ...): not a mail message")
    top_charset = parse_params(headers.first("content-type") or "")[1].get("charset")
    empty = mime.Tree(headers, [], {}, [], [])
    tree = mime.walk(msg, top_charset) if minimal is None else empty
    run.fallbacks.extend(tree.fallbacks)
    hint = _prior(headers, top_charset, tree)
    chosen = bodies.select(tree, hint)
    fields = _header_fields(headers, hint, run)
    for leaf in tree.leaves:
        run.fallbacks.extend(leaf.fallbacks)
    run.fallbacks.extend(chosen.fallbacks)

    from . import attachments, newsletter

    files = run.guard(
        "attachments", lambda: attachments.collect(chosen.others), attachments.Files()
    )
    extra = run.guard(
        "newsletter",
        lambda: newsletter.analyse(
            html=chosen.html,
            text=chosen.text,
            subject=fields["subject"],
            sender_name=fields["from_name"],
            list_unsubscribe=fields["list_unsubscribe"],
            unsubscribe_post=headers.first("list-unsubscribe-post"),
            cid_map=files.cid_map,
            image_sizes=files.sizes,
            run=run,
        ),
        newsletter.Findings(),
    )
    return ParsedMessage(
        **fields,
        html=chosen.html,
        text=chosen.text if chosen.text is not None else extra.text,
        display_html=extra.display_html,
        preview=extra.preview,
        unsubscribe=extra.unsubscribe,
        web_version_url=extra.web_version_url,
        web_version_target=extra.web_version_target,
        thumbnail_url=extra.thumbnail_url,
        thumbnail_candidates=extra.thumbnail_candidates,
        reading_minutes=extra.reading_minutes,
        confirmation_url=extra.confirmation_url,
        charsets=tuple(dict.fromkeys(chosen.charsets)),
        replacement_chars=chosen.replaced,
        fallbacks=tuple(dict.fromkeys(run.fallbacks)),
        attachments=tuple(files.attachments),
        skipped_attachments=tuple(tree.skipped + files.skipped),
    )


_WORD_CHARSET = re.compile(r"=\?([^?\s*]{1,40})(?:\*[^?]*)?\?[bBqQ]\?")
_PRIOR_HEADERS = ("subject", "from", "to", "cc", "reply-to", "sender")


def _prior(headers: Headers, top_charset: str | None, tree: mime.Tree) -> str | None:
    """The charset the message itself suggests for text that declares none (see charsets.prior)."""
    values = [v[:MAX_HEADER_CHARS] for name in _PRIOR_HEADERS for v in headers.all(name)[:5]]
    labels = [top_charset, *(leaf.params.get("charset") for leaf in tree.leaves)]
    labels += [m.group(1) for v in values for m in _WORD_CHARSET.finditer(v)]
    return prior(labels, [to_bytes(v) for v in values])


def _mail_count(headers: Headers) -> int:
    return len(_MAIL_HEADERS.intersection(headers.fields))


def _damaged(msg: Any, headers: Headers) -> bool:
    from email.errors import MissingHeaderBodySeparatorDefect

    return not _mail_count(headers) or any(
        isinstance(d, MissingHeaderBodySeparatorDefect) for d in msg.defects
    )


def _header_fields(headers: Headers, hint: str | None, run: Run) -> dict[str, Any]:
    def text(name: str) -> str | None:
        value = headers.first(name)
        if value is None:
            return None
        decoded, fallback = decode_words(value, hint)
        if fallback:
            run.fallbacks.append(f"{name}: raw 8-bit, damaged or over-long encoding")
        return " ".join(decoded.split())

    def first_address(name: str) -> tuple[str | None, str | None]:
        pairs, fallback = addresses(headers.first(name), hint, MAX_FIRST_ADDRESS_CHARS)
        if fallback:
            run.fallbacks.append(f"{name}: malformed address header, read leniently")
        return (pairs[0][1], pairs[0][0] or None) if pairs else (None, None)

    from_address, from_name = first_address("from")
    sender_address, _ = first_address("sender")
    sent_at, date_fallback = parse_date(headers.first("date"))
    if date_fallback:
        what = "read with dateutil" if sent_at else "unreadable"
        run.fallbacks.append(f"date: not RFC 5322, {what}")
    to: list[str] = []
    budget = MAX_HEADER_CHARS  # for all To fields together
    for value in headers.all("to")[:20]:
        if budget <= 0:
            break
        pairs, fallback = addresses(value, hint, budget)
        budget -= len(value)
        if fallback:
            run.fallbacks.append("to: malformed address header, read leniently")
        to.extend(addr for _, addr in pairs)
    def raw(name: str, limit: int) -> str | None:
        value = headers.first(name)
        return decode_fragment(to_bytes(value[:limit]), None, hint)[0] if value else None

    return {
        "message_id": angle_id(headers.first("message-id")),
        "subject": text("subject"),
        "from_address": from_address,
        "from_name": from_name,
        "sender_address": sender_address,
        "date_header": raw("date", 512),
        "sent_at": sent_at,
        "list_id": angle_id(headers.first("list-id")),
        "list_unsubscribe": raw("list-unsubscribe", 8192),
        "x_original_to": first_address("x-original-to")[0],
        "delivered_to": first_address("delivered-to")[0],
        "to_addresses": tuple(dict.fromkeys(to))[:500],
    }


def _clean(parsed: ParsedMessage) -> ParsedMessage:
    """Apply the PostgreSQL text invariant (no NUL, no lone surrogate) to every str field."""
    return _clean_value(parsed)


def _clean_value(value: Any) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, tuple):
        return tuple(_clean_value(v) for v in value)
    if isinstance(value, ParsedMessage | Attachment | Unsubscribe):
        changes = {f.name: _clean_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return dataclasses.replace(value, **changes)
    return value
