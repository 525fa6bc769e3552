"""Header fields: raw access, RFC 2047/2231 decoding, addresses, ids and dates.

Headers are read raw from a ``compat32`` message (bytes kept via surrogateescape) and decoded
here, never through ``email.policy.default``, whose header parser can raise (even a bare
IndexError) on inputs such as ``To: "`` or ``Content-Type: text/plain; name*``. Every decoder
in this module is total: it returns a best-effort value and reports whether it had to fall back.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email.message import Message

from .charsets import decode_fragment

MAX_HEADER_CHARS = 16384  # longer values are truncated before decoding

_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,75})\?([bBqQ])\?([^?]*)\?=")
_FOLD = re.compile(r"\r?\n(?=[ \t])|\r(?=[ \t])")
_NEWLINES = re.compile(r"[\r\n]+")
_LOCAL = r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~\-]"
_ADDR_LIKE = re.compile(rf"{_LOCAL}+@[A-Za-z0-9.\-_]+[A-Za-z0-9]")
_ADDR_LIKE_RUN = re.compile(rf"(?<!{_LOCAL}){_LOCAL}+@[A-Za-z0-9.\-_]+[A-Za-z0-9]")
_ADDR_VALID = re.compile(r"^[^\s<>\"(),;:\[\]\\]+@[^\s<>\"(),;:@\[\]\\]+$")
_ANGLE = re.compile(r"<\s*([^<>]*?)\s*>")
_ANGLE_ADDR = re.compile(r"<\s*([^<>@\s]+@[^<>@\s]+)\s*>")  # linear: runs split at < > @
_SPACE = re.compile(r"\s+")
_TZ_NAMES = {"KST": 9 * 3600, "JST": 9 * 3600, "CET": 3600, "CEST": 7200, "BST": 3600,
             "IST": 19800, "HKT": 8 * 3600, "SGT": 8 * 3600, "AEST": 10 * 3600}


def to_bytes(value: str) -> bytes:
    """Bytes of a compat32 header value (non-ASCII arrives as surrogateescape)."""
    try:
        return value.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class Headers:
    """Raw header values by lower-case name, unfolded, in message order."""

    fields: dict[str, list[str]]

    @classmethod
    def of(cls, msg: Message) -> Headers:
        fields: dict[str, list[str]] = {}
        for name, value in msg.raw_items():
            if not isinstance(name, str):
                continue
            text = value if isinstance(value, str) else str(value)
            fields.setdefault(name.strip().lower(), []).append(unfold(text))
        return cls(fields)

    def first(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return self.fields.get(name, [])


def unfold(value: str) -> str:
    """Remove header folding and stray line breaks."""
    if "\n" not in value and "\r" not in value:
        return value.strip()  # most values: nothing to unfold
    return _NEWLINES.sub(" ", _FOLD.sub("", value)).strip()


def _decode_b(text: str) -> tuple[bytes, bool]:
    clean = re.sub(r"[^A-Za-z0-9+/]", "", text)
    if len(clean) % 4 == 1:
        clean = clean[:-1]
    repaired = clean + "=" * (-len(clean) % 4) != text
    try:
        return base64.b64decode(clean + "=" * (-len(clean) % 4)), repaired
    except (binascii.Error, ValueError):
        return b"", True


def _decode_q(text: str) -> bytes:
    return binascii.a2b_qp(to_bytes(text), header=True)


def decode_words(value: str, hint: str | None = None) -> tuple[str, bool]:
    """Decode RFC 2047 encoded words and raw 8-bit text in a header value.

    Adjacent encoded words in the same charset are joined before decoding, so a multibyte
    character split across two words survives. Returns (text, fallback_needed).
    """
    fallback = False
    if len(value) > MAX_HEADER_CHARS:
        value, fallback = value[:MAX_HEADER_CHARS], True
    pieces: list[tuple[str | None, bytes]] = []  # (charset or None for raw text, bytes)
    pos = 0
    last_was_word = False
    for match in _ENCODED_WORD.finditer(value):
        between = value[pos : match.start()]
        if between and not (last_was_word and between.isspace()):
            pieces.append((None, to_bytes(between)))
        charset, kind, payload = match.groups()
        if kind in "bB":
            data, repaired = _decode_b(payload)
            fallback = fallback or repaired
        else:
            data = _decode_q(payload)
        if pieces and pieces[-1][0] == charset.lower():
            pieces[-1] = (charset.lower(), pieces[-1][1] + data)
        else:
            pieces.append((charset.lower(), data))
        pos = match.end()
        last_was_word = True
    if pos < len(value):
        pieces.append((None, to_bytes(value[pos:])))
    out: list[str] = []
    for charset, data in pieces:
        text, replaced = decode_fragment(data, charset, hint)
        raw_legacy = charset is None and not data.isascii() and not _is_utf8(data)
        fallback = fallback or replaced or raw_legacy
        out.append(text)
    return "".join(out), fallback


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def parse_params(value: str, hint: str | None = None) -> tuple[str, dict[str, str]]:
    """Split ``type/sub; a=b; name*0*=cs''%xx`` into the main value and decoded parameters.

    RFC 2231 continuations and charsets are handled; values also get RFC 2047 decoding.
    """
    value = value[:MAX_HEADER_CHARS]
    parts = _split_semicolons(value)
    main = parts[0].strip() if parts else ""
    raw: dict[str, dict[int, tuple[bool, str]]] = {}
    plain: dict[str, str] = {}
    for part in parts[1:]:
        key, sep, val = part.partition("=")
        if not sep:
            continue
        key = key.strip().lower()
        val = val.strip()
        if len(val) >= 2 and val[0] == '"' and val[-1] == '"':
            val = re.sub(r"\\(.)", r"\1", val[1:-1])
        if "*" not in key:
            plain.setdefault(key, val)
            continue
        name, _, rest = key.partition("*")
        encoded = rest.endswith("*") or rest == ""
        index_text = rest.rstrip("*")
        index = int(index_text) if index_text.isdigit() and len(index_text) < 5 else 0
        raw.setdefault(name, {}).setdefault(index, (encoded, val))
    params = {k: decode_words(v, hint)[0] for k, v in plain.items()}
    for name, sections in raw.items():
        params[name] = _join_rfc2231(sections, hint)
    return main, params


def _join_rfc2231(sections: dict[int, tuple[bool, str]], hint: str | None) -> str:
    charset: str | None = None
    data = b""
    for i, index in enumerate(sorted(sections)):
        encoded, val = sections[index]
        if encoded and i == 0 and val.count("'") >= 2:
            charset, _, val = val.split("'", 2)
        if encoded:
            data += re.sub(
                rb"%([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), to_bytes(val)
            )
        else:
            data += to_bytes(val)
    return decode_fragment(data, charset or None, hint)[0]


def _split_semicolons(value: str) -> list[str]:
    if '"' not in value:
        return value.split(";")  # nothing quoted: every ";" separates
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in value:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ";" and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


def addresses(
    value: str | None, hint: str | None = None, limit: int = MAX_HEADER_CHARS
) -> tuple[list[tuple[str, str]], bool]:
    """(display name, lower-case address) pairs from the first ``limit`` characters of an
    address header; fallback flag. (The stdlib address parser costs ~0.1 ms per token.)"""
    if not value:
        return [], False
    value = value[:limit]
    from email.utils import getaddresses

    pairs: list[tuple[str, str]] = []
    fallback = False
    try:
        parsed = getaddresses([value])
    except Exception:  # noqa: BLE001 - the stdlib parser is not total on garbage
        parsed, fallback = [], True
    angled = {_address_text(a, hint).lower() for a in _ANGLE_ADDR.findall(value)}
    for name, addr in parsed:
        addr = _address_text(_SPACE.sub("", addr).strip("<>"), hint).lower()
        if angled and addr not in angled and _names_angle(value, addr):
            pairs = []  # the parser took a display name for the address
            break
        if "@" not in addr:
            continue
        if not _ADDR_VALID.match(addr):
            found = find_addresses(addr)
            if not found:
                continue
            addr, fallback = found[-1].lower(), True
        display, bad = decode_words(name, hint) if name else ("", False)
        fallback = fallback or bad
        pairs.append((_SPACE.sub(" ", display).strip(), addr))
    if not pairs and angled:  # an address in angle brackets always wins over the display name
        fallback = True
        start = 0
        for match in (*_ANGLE_ADDR.finditer(value), None):
            *bare, name = value[start : match.start() if match else len(value)].split(",")
            bare += [name] if match is None else []
            pairs += [("", _address_text(b.strip(), hint).lower())
                      for b in bare if _ADDR_VALID.match(b.strip())]
            if match is None:
                break
            name = name.strip().strip('"').strip()
            display = decode_words(name, hint)[0] if name else ""
            pairs.append((_SPACE.sub(" ", display).strip(),
                          _address_text(match.group(1), hint).lower()))
            start = match.end()
    if not pairs:
        found = find_addresses(value)
        if found:
            fallback = True
            name = value.split("<", 1)[0] if "<" in value else ""
            display = decode_words(name.strip().strip('"').strip(), hint)[0] if name else ""
            pairs.append((_SPACE.sub(" ", display).strip(), found[0].lower()))
    return pairs, fallback


def find_addresses(text: str) -> list[str]:
    """``_ADDR_LIKE.findall(text)`` in linear time.

    findall retries at every character of a long run of address characters that has no "@"
    (quadratic). Whether a try succeeds depends only on where the run ends, so only the first
    position of each run is tried (and the position where the previous match ended).
    """
    found: list[str] = []
    pos = 0
    while True:
        match = _ADDR_LIKE.match(text, pos) if pos else None
        match = match or _ADDR_LIKE_RUN.search(text, pos)
        if match is None:
            return found
        found.append(match.group())
        pos = match.end()


def _names_angle(value: str, addr: str) -> bool:
    """``addr`` is written right before an ``<address>``: it is that address's display name."""
    at = value.lower().find(addr)
    return at >= 0 and value[at + len(addr) :].lstrip(' \t"').startswith("<")


def _address_text(addr: str, hint: str | None) -> str:
    """An address as text: raw 8-bit is UTF-8 (RFC 6532 internationalized mail), else legacy."""
    if addr.isascii():
        return addr
    return decode_fragment(to_bytes(addr), "utf-8", hint)[0]


def angle_id(value: str | None) -> str | None:
    """The id inside ``<...>`` (Message-ID, List-Id), else the stripped value."""
    if not value:
        return None
    value = value[:2048]
    match = _ANGLE.search(value)
    inner = match.group(1) if match else value.strip().strip("<>")
    inner = _SPACE.sub("", inner) if match else inner.strip()
    return inner or None


def parse_date(value: str | None) -> tuple[datetime | None, bool]:
    """A timezone-aware datetime (UTC when the header names no zone); fallback flag."""
    if not value:
        return None, False
    value = value[:256]
    from email.utils import parsedate_to_datetime

    text = re.sub(r"\b(KST|JST)\b", "+0900", value)
    try:
        parsed = parsedate_to_datetime(text)
        return _aware(parsed), False
    except Exception:  # noqa: BLE001 - parsedate_to_datetime raises several types
        pass
    try:
        from dateutil import parser as date_parser

        tzinfos = {k: timezone(timedelta(seconds=v)) for k, v in _TZ_NAMES.items()}
        try:
            parsed = date_parser.parse(value, tzinfos=tzinfos)
        except Exception:  # noqa: BLE001
            parsed = date_parser.parse(value, tzinfos=tzinfos, fuzzy=True)
        return _aware(parsed), True
    except Exception:  # noqa: BLE001
        return None, True


def _aware(parsed: datetime | None) -> datetime | None:
    if parsed is None or not 1970 <= parsed.year <= 2200:
        return None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        return parsed.replace(tzinfo=UTC)
    try:
        parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        return None
    return parsed
