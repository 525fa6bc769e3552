"""The parser's output: plain, frozen data with no I/O handles.

`parse_message(raw: bytes) -> ParsedMessage` (in `bombom_pipe.parse`) fills these. Every `str`
field is free of NUL and lone surrogates so it can go straight into PostgreSQL text columns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

T = TypeVar("T")


class ParseError(Exception):
    """The message is unusable; the caller quarantines it with `str(self)` as the reason."""


class Run:
    """One parse's guarded stages: a failing stage costs only its own field, and says so in
    ``fallbacks`` (stored with the article)."""

    def __init__(self) -> None:
        self.fallbacks: list[str] = []

    def guard(self, stage: str, func: Callable[[], T], default: T) -> T:
        try:
            return func()
        except Exception as exc:  # noqa: BLE001 - a failing stage costs only its own field
            self.fallbacks.append(f"{stage}: failed ({type(exc).__name__}), skipped")
            return default


@dataclass(frozen=True, slots=True)
class Attachment:
    """An attachment or inline part, decoded to bytes."""

    filename: str | None  # decoded and sanitized: no path separators, no control characters
    content_type: str
    content_id: str | None  # without angle brackets
    disposition: str  # "attachment" or "inline"
    data: bytes
    sha256: str  # hex digest of data

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Where and how a reader can leave the list (RFC 2369 / RFC 8058, or a link in the body)."""

    http: str | None = None
    mailto: str | None = None
    one_click: bool = False  # List-Unsubscribe-Post: List-Unsubscribe=One-Click
    source: str | None = None  # "header" or "body"
    http_target: str | None = None  # where a click-tracking `http` leads, read from the URL


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """What one raw message says, decoded."""

    message_id: str | None  # without angle brackets
    subject: str | None
    from_address: str | None  # lower-case
    from_name: str | None
    sender_address: str | None  # Sender: header, lower-case
    date_header: str | None  # the Date header as written
    sent_at: datetime | None  # timezone-aware when the header could be read
    list_id: str | None  # the id inside <...> of List-Id
    list_unsubscribe: str | None  # the raw List-Unsubscribe header value, unfolded
    html: str | None  # original HTML body, decoded, untouched
    text: str | None  # text/plain body, else text extracted from the HTML
    # where the envelope recipient is unknown (manual runs), these hint at it, in this order
    x_original_to: str | None = None
    delivered_to: str | None = None
    to_addresses: tuple[str, ...] = ()
    # newsletter fidelity
    display_html: str | None = None  # sanitized HTML for the app; stable once stored
    preview: str | None = None
    unsubscribe: Unsubscribe = field(default_factory=Unsubscribe)
    web_version_url: str | None = None
    web_version_target: str | None = None  # where a click-tracking web_version_url leads
    thumbnail_url: str | None = None
    # content images in order (og:image first): the store skips ones every issue repeats
    thumbnail_candidates: tuple[str, ...] = ()
    reading_minutes: int | None = None
    confirmation_url: str | None = None  # set when this is a "confirm your subscription" mail
    charsets: tuple[str, ...] = ()  # the charsets actually used to decode the bodies
    replacement_chars: bool = False  # decoding introduced U+FFFD
    fallbacks: tuple[str, ...] = ()  # headers/parts that needed a fallback decoder, and why
    attachments: tuple[Attachment, ...] = ()
    skipped_attachments: tuple[str, ...] = ()  # over the limits: "name (type, bytes): reason"

    @property
    def is_confirmation(self) -> bool:
        return self.confirmation_url is not None
