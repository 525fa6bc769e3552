"""MIME structure: split raw bytes into leaf parts with decoded transfer encoding.

The structure comes from ``email.message_from_bytes(raw, policy=compat32)``, which does not
raise on malformed structure (it records defects instead). The tree is walked iteratively with
depth and part-count limits, so deep nesting or tens of thousands of parts stay bounded.
"""

from __future__ import annotations

import binascii
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message

from .headers import Headers, angle_id, parse_params, to_bytes

FEED_CHUNK = 1 << 16

MAX_DEPTH = 40  # MIME nesting levels walked
MAX_NODES = 2000  # parts examined; the rest are only counted
MAX_DECODED_BYTES = 32 * 1024 * 1024  # decoded part bytes one message may produce
# the stdlib parser keeps every line as a str object (~60 bytes each) until its part ends:
# a message with more than MAX_LINES lines plus one per BYTES_PER_LINE bytes (base64 has one
# per 78) gets only its header block parsed
MAX_LINES = 100_000
BYTES_PER_LINE = 32
MAX_HEADER_LINES = 10_000

_CTYPE = re.compile(r"^[a-z0-9!#$&^_.+\-]+/[a-z0-9!#$&^_.+\-]+$")
_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_B64_NOT_ALPHABET = bytes(b for b in range(256) if b not in _B64_ALPHABET)
_B64_WHITESPACE = b" \t\n\r\x0b\x0c"  # what rb"\s" matches
_B64_ODD = re.compile(rb"[^A-Za-z0-9+/=\s]|=\s*[A-Za-z0-9+/]")  # junk, or data after padding


@dataclass(slots=True)
class Leaf:
    """One non-multipart part; ``decode`` undoes its transfer encoding when the part is used."""

    index: int
    content_type: str
    params: dict[str, str]
    disposition: str | None  # "attachment", "inline" or None when absent
    filename: str | None  # decoded, not yet sanitized
    content_id: str | None
    inside: int | None  # index of the enclosing message/rfc822 leaf, None at top level
    part: Message
    cte: str  # Content-Transfer-Encoding, lower case
    data: bytes = b""  # set by decode
    decoded: bool = False
    fallbacks: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Tree:
    """The message's top-level header fields and its leaves, in document order."""

    headers: Headers
    leaves: list[Leaf]
    enclosing: dict[int, int | None]  # message/rfc822 leaf index -> its own enclosing index
    fallbacks: list[str]
    skipped: list[str]
    budget: int = MAX_DECODED_BYTES  # bytes decode may still produce


def parse_bytes(data: bytes, headersonly: bool = False) -> Message:
    """`BytesParser.parsebytes`, fed in chunks: the same result, a third of the peak memory
    (parsebytes decodes and splits the whole message at once; 25 MB became 220 MB)."""
    from email.feedparser import BytesFeedParser
    from email.policy import compat32

    parser = BytesFeedParser(policy=compat32)
    if headersonly:
        parser._set_headersonly()  # type: ignore[attr-defined] - what parsebytes does
    view = memoryview(data)
    for start in range(0, len(data), FEED_CHUNK):
        parser.feed(bytes(view[start:start + FEED_CHUNK]))
    return parser.close()


def load(raw: bytes) -> tuple[Message, list[str]]:
    """Parse bytes into a compat32 Message; never raises for structural problems."""
    fallbacks: list[str] = []
    stripped = raw.lstrip(b"\r\n\t \xef\xbb\xbf")
    if len(stripped) != len(raw):
        fallbacks.append("message: leading blank lines or BOM before the header removed")
    lines = max(stripped.count(b"\n"), stripped.count(b"\r"))
    if lines > (limit := MAX_LINES + len(stripped) // BYTES_PER_LINE):
        fallbacks.append(f"mime: {lines} lines (over {limit}), header only, body unparsed")
        return parse_bytes(header_block(stripped), headersonly=True), fallbacks
    try:
        return parse_bytes(stripped), fallbacks
    except RecursionError:
        fallbacks.append("mime: nesting too deep for the parser, body kept unparsed")
    except Exception as exc:  # noqa: BLE001 - fall back to a header-only parse
        fallbacks.append(f"mime: structure parse failed ({type(exc).__name__}), body unparsed")
    return parse_bytes(stripped, headersonly=True), fallbacks


_BLANK_LINE = re.compile(rb"\r?\n\r?\n|\r\r")


def header_block(data: bytes) -> bytes:
    """The header block alone (up to the first blank line, MAX_HEADER_LINES lines at most)."""
    end = _BLANK_LINE.search(data)
    lines = data[: end.start() if end else len(data)].split(b"\n", MAX_HEADER_LINES)
    return b"\n".join(lines[:MAX_HEADER_LINES]) + b"\n\n"


_HEADER_LINE = re.compile(rb"^[!-9;-~]+:")
_OBSOLETE_LINE = re.compile(rb"^([!-9;-~]+)[ \t]+:")
_KNOWN_LINE = re.compile(
    rb"^(from|to|cc|subject|date|message-id|received|return-path|sender|delivered-to|"
    rb"x-original-to|mime-version|content-type|reply-to|dkim-signature)[ \t]*:",
    re.IGNORECASE,
)
MAX_REPAIR_LINES = 2000


def repair_header(raw: bytes) -> tuple[bytes, list[str]] | None:
    """Rewrite a damaged header block so the stdlib parser reads it; None if nothing to do.

    Handles UTF-16 files, junk lines before the first header, ``Name :`` obsolete syntax and
    invalid lines inside the header block (dropped with their continuation lines).
    """
    notes: list[str] = []
    original = raw
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff") or raw[1:200:2].count(0) > 50:
        codec = "utf-16-be" if raw[:2] == b"\xfe\xff" or raw[0] == 0 else "utf-16-le"
        text = raw.decode(codec, "replace").lstrip("\ufeff")
        raw = text.encode("utf-8", "surrogatepass").replace(b"\x00", b"")
        notes.append(f"message: whole file was {codec}, transcoded")
    # only the header block is rewritten: split no further than MAX_REPAIR_LINES past its start
    lines = raw.split(b"\n", 2 * MAX_REPAIR_LINES)
    start = next(
        (i for i, line in enumerate(lines[:MAX_REPAIR_LINES]) if _KNOWN_LINE.match(line)), None
    )
    if start is None:
        return (raw, notes) if notes else None
    if start:
        notes.append(f"message: {start} junk lines before the header dropped")
    out: list[bytes] = []
    keep = True
    dropped = 0
    end = len(lines)
    for i in range(start, min(len(lines), start + MAX_REPAIR_LINES)):
        line = lines[i]
        if not line.rstrip(b"\r"):
            end = i
            break
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
            continue
        if _HEADER_LINE.match(line):
            keep = True
            out.append(line)
        elif match := _OBSOLETE_LINE.match(line):
            keep = True
            out.append(match.group(1) + b":" + line[match.end() :])
        else:
            keep = False
            dropped += 1
    else:
        end = min(len(lines), start + MAX_REPAIR_LINES)
    if dropped:
        notes.append(f"message: {dropped} invalid header lines dropped")
    if not notes and len(out) == end - start:
        notes.append("message: obsolete header syntax normalized")
    repaired = b"\n".join(out + lines[end:])
    return (repaired, notes) if repaired != original else None


def walk(msg: Message, hint: str | None) -> Tree:
    """Flatten the part tree into leaves (bounded), decoding each transfer encoding."""
    headers = Headers.of(msg)
    tree = Tree(headers, [], {}, [], [], MAX_DECODED_BYTES)
    stack: list[tuple[Message, Headers, int, int | None]] = [(msg, headers, 0, None)]
    examined = 0
    while stack:
        part, part_headers, depth, inside = stack.pop()
        examined += 1
        if examined > MAX_NODES:
            _count_rest(tree, stack)
            break
        if depth > MAX_DEPTH:
            tree.skipped.append(f"part at depth {depth}: over the {MAX_DEPTH}-level MIME nesting")
            continue
        ctype, params = _content_type(part, part_headers, hint)
        payload = part.get_payload()
        if isinstance(payload, list) and ctype.startswith("multipart/"):
            children = [p for p in payload if isinstance(p, Message)]
            stack.extend(
                (child, Headers.of(child), depth + 1, inside) for child in reversed(children)
            )
            continue
        leaf = _leaf(len(tree.leaves), part, part_headers, ctype, params, inside, hint)
        tree.leaves.append(leaf)
        if isinstance(payload, list) and ctype in ("message/rfc822", "message/global"):
            tree.enclosing[leaf.index] = inside
            children = [p for p in payload if isinstance(p, Message)]
            stack.extend(
                (child, Headers.of(child), depth + 1, leaf.index) for child in reversed(children)
            )
    return tree


def _count_rest(tree: Tree, stack: list[tuple[Message, Headers, int, int | None]]) -> None:
    rest = 1
    while stack:
        part = stack.pop()[0]
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend((p, Headers({}), 0, None) for p in payload if isinstance(p, Message))
        else:
            rest += 1
    tree.skipped.append(f"{rest} more parts: over the {MAX_NODES}-part limit, not examined")


def _content_type(part: Message, headers: Headers, hint: str | None) -> tuple[str, dict]:
    value = headers.first("content-type")
    if value is None:
        return part.get_default_type(), {}
    main, params = parse_params(value, hint)
    ctype = re.sub(r"\s+", "", main).lower()
    if not _CTYPE.match(ctype):
        fallback = "application/octet-stream" if ("name" in params) else "text/plain"
        return fallback, params
    payload = part.get_payload()
    if ctype.startswith("multipart/") and not isinstance(payload, list):
        return "text/plain", params
    return ctype, params


def _leaf(
    index: int,
    part: Message,
    headers: Headers,
    ctype: str,
    params: dict[str, str],
    inside: int | None,
    hint: str | None,
) -> Leaf:
    fallbacks: list[str] = []
    raw_ctype = headers.first("content-type")
    if raw_ctype is not None and ctype in ("text/plain", "application/octet-stream"):
        declared = re.sub(r"\s+", "", parse_params(raw_ctype, hint)[0]).lower()
        if declared != ctype:
            fallbacks.append(
                f"part {index}: invalid Content-Type {declared[:60]!r}, read as {ctype}"
            )
    disposition = None
    dparams: dict[str, str] = {}
    if (dvalue := headers.first("content-disposition")) is not None:
        dmain, dparams = parse_params(dvalue, hint)
        dmain = dmain.strip().lower()
        disposition = dmain if dmain in ("attachment", "inline") else "attachment"
    filename = dparams.get("filename") or params.get("name") or None
    cte = (headers.first("content-transfer-encoding") or "").strip().lower().split(";")[0]
    return Leaf(
        index=index,
        content_type=ctype,
        params=params,
        disposition=disposition,
        filename=filename,
        content_id=angle_id(headers.first("content-id")),
        inside=inside,
        part=part,
        cte=cte.strip().strip('"'),
        fallbacks=fallbacks,
    )


def decode(tree: Tree, leaf: Leaf) -> bool:
    """Set ``leaf.data``: the payload with its transfer encoding undone, or an embedded
    message regenerated. Only parts that are used get decoded, within the message's budget;
    False (and a note in ``tree.skipped``) when the part would exceed it."""
    if leaf.decoded:
        return True
    size = _decoded_size(leaf)
    if size > tree.budget:
        mib = MAX_DECODED_BYTES // (1024 * 1024)
        tree.skipped.append(
            f"part {leaf.index} ({leaf.content_type}, {size}): over the {mib} MB decoding "
            "budget for one message, not decoded"
        )
        return False
    leaf.data = _payload_bytes(leaf.part, leaf.cte, leaf.index, leaf.fallbacks)
    leaf.decoded = True
    tree.budget -= len(leaf.data)
    return True


def _decoded_size(leaf: Leaf) -> int:
    """An upper bound of what decode produces, from the stored payload sizes."""
    total = 0
    stack = [leaf.part]
    while stack:
        part = stack.pop()
        payload = getattr(part, "_payload", None)
        if isinstance(payload, list):
            stack.extend(p for p in payload if isinstance(p, Message))
            total += sum(len(str(v)) + 4 for v in part.values())
        elif isinstance(payload, str):
            total += len(payload)
    return total * 3 // 4 if leaf.cte == "base64" else total


def _payload_bytes(part: Message, cte: str, index: int, fallbacks: list[str]) -> bytes:
    # the stored payload: get_payload() would already decode 8-bit text with replacement
    payload = getattr(part, "_payload", None)
    if isinstance(payload, list):
        return _flatten(payload, index, fallbacks)
    if not isinstance(payload, str):
        return b""
    data = to_bytes(payload)
    if cte == "base64":
        return _base64(data, index, fallbacks)
    if cte == "quoted-printable":
        return binascii.a2b_qp(data)
    if cte in ("x-uuencode", "uuencode", "x-uue", "uue"):
        return _uudecode(data, index, fallbacks)
    if cte not in ("", "7bit", "8bit", "binary"):
        fallbacks.append(f"part {index}: unknown transfer encoding {cte[:40]!r}, kept as is")
    return data


def _base64(data: bytes, index: int, fallbacks: list[str]) -> bytes:
    if not _B64_ODD.search(data):  # the common case, decoded without a copy of the input
        try:
            return binascii.a2b_base64(data)
        except (binascii.Error, ValueError):
            pass  # bad padding: repair below
    # bytes.translate, not re.sub: a sub builds a list entry per match (~60 bytes each)
    compact = data.translate(None, _B64_WHITESPACE)
    clean = compact.rstrip(b"=").translate(None, _B64_NOT_ALPHABET)
    if len(clean) % 4 == 1:
        clean = clean[:-1]
    padded = clean + b"=" * (-len(clean) % 4)
    if padded != compact:
        fallbacks.append(f"part {index}: malformed base64 repaired")
    try:
        return binascii.a2b_base64(padded)
    except (binascii.Error, ValueError):
        fallbacks.append(f"part {index}: undecodable base64 kept as is")
        return data


def _uudecode(data: bytes, index: int, fallbacks: list[str]) -> bytes:
    out = bytearray()
    started = False
    for line in _lines(data):
        if not started:
            started = line.startswith(b"begin ")
            continue
        if line.strip() in (b"end", b"`"):
            break
        try:
            out += binascii.a2b_uu(line)
        except (binascii.Error, ValueError):
            fallbacks.append(f"part {index}: damaged uuencode line skipped")
    return bytes(out) if started else data


_LINE = re.compile(rb"([^\r\n]*)(?:\r\n|\r|\n)")


def _lines(data: bytes) -> Iterator[bytes]:
    """``data.splitlines()``, one line at a time (the list would cost ~40 bytes a line)."""
    end = 0
    for match in _LINE.finditer(data):
        end = match.end()
        yield match.group(1)
    if end < len(data):
        yield data[end:]


def _flatten(messages: list, index: int, fallbacks: list[str]) -> bytes:
    """Bytes of an embedded message (message/rfc822 and friends), regenerated."""
    from io import BytesIO

    out = BytesIO()
    for sub in messages:
        if not isinstance(sub, Message):
            continue
        try:
            _generator()(out, mangle_from_=False, maxheaderlen=0).flatten(sub)
        except Exception as exc:  # noqa: BLE001 - regeneration is best effort
            name = type(exc).__name__
            fallbacks.append(f"part {index}: embedded message not regenerated ({name})")
    return out.getvalue()


@functools.cache
def _generator() -> type:
    from email.generator import NLCRE, BytesGenerator

    class Generator(BytesGenerator):
        """BytesGenerator writing straight to its output, with the same bytes out.

        The stdlib renders every part and embedded message into a buffer of its own and
        copies it into its parent's (a copy per nesting level), and splits each payload into a
        list of lines (tens of bytes per line); here payloads go out in 1 MiB pieces.
        """

        def _write(self, msg: Message) -> None:
            if _invents_boundary(msg) or getattr(msg, "_write_headers", None) is not None:
                super()._write(msg)  # headers may change after the body is rendered
                return
            self._write_headers(msg)
            self._munge_cte = None
            self._dispatch(msg)

        def _handle_message(self, msg: Message) -> None:
            if not isinstance(msg._payload, list):  # type: ignore[attr-defined]
                super()._handle_message(msg)
                return
            self.clone(self._fp).flatten(msg.get_payload(0), unixfrom=False, linesep=self._NL)

        def _handle_multipart(self, msg: Message) -> None:
            parts = msg.get_payload()
            if _invents_boundary(msg) or not isinstance(parts, list) or self._mangle_from_:
                super()._handle_multipart(msg)
                return
            boundary = msg.get_boundary()
            if msg.preamble is not None:
                self._write_lines(msg.preamble)
                self.write(self._NL)
            self.write("--" + boundary + self._NL)
            for i, part in enumerate(parts):
                if i:
                    self.write(self._NL + "--" + boundary + self._NL)
                self.clone(self._fp).flatten(part, unixfrom=False, linesep=self._NL)
            self.write(self._NL + "--" + boundary + "--" + self._NL)
            if msg.epilogue is not None:
                self._write_lines(msg.epilogue)

        def _write_lines(self, lines: str) -> None:
            pos, size = 0, len(lines)
            while pos < size:
                end = min(pos + FEED_CHUNK * 16, size)
                if lines[end - 1] == "\r" and lines[end : end + 1] == "\n":
                    end += 1  # keep a CRLF in one piece
                self.write(NLCRE.sub(self._NL, lines[pos:end]))
                pos = end

    return Generator


def _invents_boundary(msg: Message) -> bool:
    return msg.get_content_maintype() == "multipart" and not msg.get_boundary()
