"""Charset labels to Python codecs, and byte decoding with fallbacks.

Mail in the wild mislabels its charset. Korean mail labelled ``euc-kr`` / ``ks_c_5601-1987``
really is CP949 (Unified Hangul Code, a superset with syllables such as 똠 햏 뷁 that strict EUC-KR
lacks), so every Korean label maps to ``cp949``. A few other labels map to the superset browsers
use. Unknown or missing labels fall back to an HTML ``<meta charset>``, then detection with
charset-normalizer (imported lazily), then UTF-8 with replacement.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

_ALIASES: dict[str, str] = {
    # Korean: everything is decoded as CP949 (superset of EUC-KR / KS X 1001)
    **dict.fromkeys(
        (
            "euc-kr", "euc_kr", "euckr", "ks_c_5601-1987", "ks_c_5601_1987", "ks_c_5601",
            "ks_c_5601-1989", "ksc5601", "ksc_5601", "ks-c-5601", "ks-c-5601-1987", "korean",
            "csksc56011987", "iso-ir-149", "windows-949", "windows949", "uhc", "cp949", "ms949",
            "x-windows-949", "cseuckr", "x-euc-kr",
        ),
        "cp949",
    ),
    **dict.fromkeys(("iso-2022-kr", "csiso2022kr", "iso2022kr", "iso2022_kr"), "iso2022_kr"),
    **dict.fromkeys(("iso-8859-8-i", "iso-8859-8-e", "iso_8859-8-i", "logical"), "iso8859-8"),
    **dict.fromkeys(
        ("gb2312", "gb_2312-80", "gbk", "x-gbk", "euc-cn", "cn-gb", "csgb2312", "chinese",
         "gb18030", "cp936", "windows-936"),
        "gb18030",
    ),
    **dict.fromkeys(("windows-874", "tis-620", "iso-8859-11", "dos-874"), "cp874"),
    **dict.fromkeys(
        ("shift_jis", "shift-jis", "sjis", "x-sjis", "windows-31j", "ms_kanji"), "cp932"
    ),
    **dict.fromkeys(("big5", "big5-hkscs", "x-x-big5", "cn-big5"), "big5hkscs"),
    # what browsers do: latin-1 and ascii labels are read as windows-1252
    **dict.fromkeys(
        ("iso-8859-1", "iso8859-1", "iso_8859-1", "latin1", "latin-1", "l1", "cp819", "ibm819"),
        "cp1252",
    ),
    **dict.fromkeys(("us-ascii", "ascii", "ansi_x3.4-1968", "us", "iso646-us"), "ascii"),
    **dict.fromkeys(("utf8", "utf-8", "utf_8", "unicode-1-1-utf-8", "x-unicode20utf8"), "utf-8"),
}
# labels that say nothing, and Python codecs that are not safe or not text charsets
_UNKNOWN = frozenset({"unknown-8bit", "unknown", "x-unknown", "default", "x-user-defined",
                      "charset", "none", "8bit", "binary"})
_REJECTED_CODECS = frozenset({"raw_unicode_escape", "unicode_escape", "idna", "punycode",
                              "undefined", "mbcs", "oem", "utf-7"})
# when the primary codec fails strictly, a lenient sibling that still reads the bytes right
_LENIENT = {"cp1252": "latin-1"}

_META_RE = re.compile(
    rb"""<meta[^>]{0,300}?charset\s*=\s*["']?\s*([a-zA-Z0-9_.:\-]{2,40})""", re.IGNORECASE
)
_ISO2022KR_RE = re.compile(rb"\x1b\$\)C")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def codec_for(label: str | None) -> str | None:
    """Map a charset label from a header or meta tag to a Python codec name, or None."""
    if not label:
        return None
    name = label.strip().strip("\"'").strip().lower()
    name = name.split("*", 1)[0]  # RFC 2231 language suffix: utf-8*ko
    if not name or len(name) > 40 or name in _UNKNOWN:
        return None
    if name in _ALIASES:
        return _ALIASES[name]
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _REJECTED_CODECS:
        return None
    return _ALIASES.get(info.name, info.name)


def clean_text(text: str) -> str:
    """Drop NUL and replace lone surrogates so PostgreSQL accepts the string."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    return _SURROGATE_RE.sub("\ufffd", text)


@dataclass(frozen=True, slots=True)
class Decoded:
    """Text decoded from bytes, with the codec that did it and whether U+FFFD was introduced."""

    text: str
    charset: str
    replaced: bool
    fallback: str | None = None  # why the declared label was not used as is


def meta_charset(data: bytes) -> str | None:
    """The codec named by an HTML ``<meta charset>`` or http-equiv Content-Type, if any."""
    match = _META_RE.search(data[:8192])
    return codec_for(match.group(1).decode("ascii")) if match else None


def _strict(data: bytes, codec: str) -> str | None:
    try:
        return data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return None


def detect(data: bytes) -> str | None:
    """Guess the codec of unlabelled bytes with charset-normalizer (lazy import)."""
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(data[:65536]).best()
    except Exception:  # noqa: BLE001 - detection is best effort
        return None
    return codec_for(best.encoding) if best is not None else None


def decode_bytes(data: bytes, label: str | None, *, html: bool = False) -> Decoded:
    """Decode a body: declared label, then meta charset, then detection, then UTF-8/replace."""
    declared = codec_for(label)
    if data.isascii() and not _ISO2022KR_RE.search(data):
        return Decoded(data.decode("ascii"), declared or "ascii", False)
    why = None
    if declared is not None:
        text = _strict(data, declared)
        if text is not None:
            return Decoded(text, declared, False)
        lenient = _LENIENT.get(declared)
        if lenient and (text := _strict(data, lenient)) is not None:
            return Decoded(text, lenient, False)
        replaced = data.decode(declared, "replace")
        if declared != "ascii" and replaced.count("\ufffd") <= max(2, len(data) // 2000):
            return Decoded(replaced, declared, True, f"invalid bytes for {declared}")
        why = f"bytes do not match declared charset {label!r}"
    elif label and label.strip():
        why = f"unknown charset {label.strip()[:40]!r}"
    else:
        why = "no charset declared"
    for codec in _guesses(data, html, declared):
        text = _strict(data, codec)
        if text is not None:
            return Decoded(text, codec, False, why)
    if declared is not None and declared != "ascii":
        return Decoded(data.decode(declared, "replace"), declared, True, why)
    return Decoded(data.decode("utf-8", "replace"), "utf-8", True, why)


def _guesses(data: bytes, html: bool, declared: str | None) -> list[str]:
    out: list[str] = []
    if _ISO2022KR_RE.search(data):
        out.append("iso2022_kr")
    if html and (meta := meta_charset(data)):
        out.append(meta)
    out.append("utf-8")
    if (guess := detect(data)) is not None:
        out.append(guess)
    return [c for c in dict.fromkeys(out) if c != declared]


def decode_fragment(data: bytes, label: str | None, hint: str | None = None) -> tuple[str, bool]:
    """Decode a short header fragment (encoded word, RFC 2231 value, raw 8-bit header text).

    Returns the text and whether the decoding needed replacement characters.
    """
    if data.isascii() and not _ISO2022KR_RE.search(data):
        return data.decode("ascii"), False
    codecs_to_try = [codec_for(label), "utf-8", codec_for(hint), "cp949"]
    for codec in dict.fromkeys(c for c in codecs_to_try if c):
        if (text := _strict(data, codec)) is not None:
            return text, False
    return data.decode(codec_for(label) or "utf-8", "replace"), True
