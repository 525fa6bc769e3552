"""Charset labels to Python codecs, and byte decoding with fallbacks.

Labels are resolved with the WHATWG Encoding Standard's label table (what browsers do with the
same HTML), as shipped by the ``webencodings`` package, and its mapping to Python codecs
(``euc-kr`` -> ``cp949``, ``shift_jis`` -> ``cp932``, ``big5`` -> ``big5hkscs``,
``iso-8859-1``/``us-ascii`` -> ``cp1252``). Mail differs from the web in a few places, listed in
``_MAIL_LABELS`` with the reason. Unknown labels then go to Python's own codec registry
(``x-mac-*`` included). Missing labels fall back to an HTML ``<meta charset>``, ISO-2022 escape
sequences, a script-plausibility choice for short strings, then charset-normalizer (imported
lazily), then UTF-8 with replacement.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

_KOREAN = (
    "euc-kr", "euc_kr", "euckr", "ks_c_5601-1987", "ks_c_5601_1987", "ks_c_5601", "ks_c_5601-1989",
    "ksc5601", "ksc_5601", "ks-c-5601", "ks-c-5601-1987", "korean", "csksc56011987",
    "iso-ir-149", "windows-949", "windows949", "uhc", "cp949", "ms949", "x-windows-949",
    "cseuckr", "x-euc-kr",
)
# Where mail is not the web: labels the browser table lacks or maps to something mail can't use.
_MAIL_LABELS: dict[str, str] = {
    # Korean mail labels CP949 text with every Korean label, also ones browsers do not know
    **dict.fromkeys(_KOREAN, "cp949"),
    # RFC 1557 / RFC 1843 mail charsets; browsers map them to "replacement" for script safety
    **dict.fromkeys(("iso-2022-kr", "csiso2022kr", "iso2022kr", "iso2022_kr"), "iso2022_kr"),
    "hz-gb-2312": "hz",
    # the WHATWG gbk decoder is the gb18030 decoder; Python's gbk codec is stricter
    **dict.fromkeys(("gbk", "gb2312", "x-gbk", "euc-cn", "cn-gb", "cp936", "windows-936"),
                    "gb18030"),
    # mail's utf-16 parts carry a byte order mark; browsers assume little-endian
    **dict.fromkeys(("utf-16", "utf16", "csunicode", "iso-10646-ucs-2", "unicode"), "utf-16"),
    "utf_8": "utf-8",
    "tis620": "cp874",
}
# x-mac-* labels Python knows under another name (the rest map by dropping the "x-")
_MAC = {"ce": "mac-latin2", "icelandic": "mac-iceland", "korean": "cp949",
        "japanese": "cp932", "chinesetrad": "big5hkscs", "chinesesimp": "gb18030"}
# labels that say nothing, and Python codecs that are not safe or not text charsets
_UNKNOWN = frozenset({"unknown-8bit", "unknown", "x-unknown", "default", "x-user-defined",
                      "charset", "none", "8bit", "binary", "replacement"})
_REJECTED_CODECS = frozenset({"raw_unicode_escape", "unicode_escape", "idna", "punycode",
                              "undefined", "mbcs", "oem", "utf-7"})
# when the primary codec fails strictly, a lenient sibling that still reads the bytes right
_LENIENT = {"cp1252": ("latin-1",), "iso2022_jp": ("iso2022_jp_2", "iso2022_jp_ext")}

_META_RE = re.compile(
    rb"""<meta[^>]{0,300}?charset\s*=\s*["']?\s*([a-zA-Z0-9_.:\-]{2,40})""", re.IGNORECASE
)
# ISO-2022 designations: KS X 1001 (KR), JIS X 0208/0212/0201 (JP)
_ISO2022KR_RE = re.compile(rb"\x1b\$\)C")
_ISO2022JP_RE = re.compile(rb"\x1b(?:\$[@B]|\$\(D|\([JI])")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


@lru_cache(maxsize=1)
def _whatwg() -> dict[str, str]:
    """The WHATWG label table resolved to Python codec names (webencodings, imported lazily)."""
    import webencodings
    from webencodings.labels import LABELS

    out: dict[str, str] = {}
    for label, name in LABELS.items():
        python = webencodings.PYTHON_NAMES.get(name, name)
        try:
            out[label] = codecs.lookup(python).name
        except LookupError:
            continue  # "replacement", "x-user-defined": no Python codec
    return out


def codec_for(label: str | None) -> str | None:
    """Map a charset label from a header or meta tag to a Python codec name, or None."""
    if not label:
        return None
    name = label.strip().strip("\"'").strip().lower()
    name = name.split("*", 1)[0]  # RFC 2231 language suffix: utf-8*ko
    if not name or len(name) > 40 or name in _UNKNOWN:
        return None
    if name in _MAIL_LABELS:
        return _MAIL_LABELS[name]
    if (known := _whatwg().get(name)) is not None:
        return known
    if name.startswith("x-mac-"):
        rest = name[len("x-mac-"):]
        name = _MAC.get(rest, f"mac-{rest}")
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _REJECTED_CODECS:
        return None
    return _MAIL_LABELS.get(info.name) or _whatwg().get(info.name, info.name)


def iso2022(data: bytes) -> str | None:
    """The ISO-2022 codec whose escape sequences appear in 7-bit data, if any."""
    if b"\x1b" not in data:
        return None
    if _ISO2022KR_RE.search(data):
        return "iso2022_kr"
    if _ISO2022JP_RE.search(data):
        return "iso2022_jp"
    return None


def clean_text(text: str) -> str:
    """Drop NUL and replace lone surrogates so PostgreSQL accepts the string."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    if text.isascii():
        return text
    try:
        text.encode("utf-8")  # in C: only a lone surrogate fails
    except UnicodeEncodeError:
        return _SURROGATE_RE.sub("\ufffd", text)
    return text


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


def _strict_family(data: bytes, codec: str) -> tuple[str, str] | None:
    """Strict decoding with the codec, else with its lenient siblings: (text, codec used)."""
    for name in (codec, *_LENIENT.get(codec, ())):
        if (text := _strict(data, name)) is not None:
            return text, name
    return None


def _utf8_multibyte(data: bytes) -> bool:
    return not data.isascii() and _strict(data, "utf-8") is not None


@lru_cache(maxsize=64)
def _single_byte(codec: str) -> bool:
    """A codec that reads any byte as one character: it never fails, so it never reveals a
    mislabel. Text in it that is also valid multibyte UTF-8 is UTF-8 mislabelled."""
    try:
        return len(bytes(range(256)).decode(codec, "replace")) == 256
    except LookupError:
        return False


def _damaged_utf8(data: bytes) -> bool:
    """Mostly well-formed UTF-8 with a few broken sequences (a truncated header, say)."""
    text = data.decode("utf-8", "replace")
    bad = text.count("\ufffd")
    good = sum(1 for c in text if ord(c) > 127) - bad
    return good >= 3 * bad


def detect(data: bytes) -> str | None:
    """Guess the codec of unlabelled bytes with charset-normalizer (lazy import)."""
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(data[:65536]).best()
    except Exception:  # noqa: BLE001 - detection is best effort
        return None
    return codec_for(best.encoding) if best is not None else None


# --- short strings: too little for statistics, so judge each candidate's output by its script ---

SHORT_BYTES = 400  # unlabelled 8-bit data up to this size is judged by script plausibility
# legacy codecs tried on unlabelled short strings, in order of preference on a tie (this is a
# Korean service: CP949 first); Chinese codecs only come in through a prior
SHORT_CANDIDATES = ("cp949", "cp932", "koi8_r", "cp1251", "cp1252", "iso8859-7")
_SCRIPTS = {  # codec (Python's canonical name) -> the scripts its text is written in
    "cp949": ("HANGUL",), "iso2022_kr": ("HANGUL",),
    "cp932": ("HIRAGANA", "KATAKANA", "CJK"), "euc_jp": ("HIRAGANA", "KATAKANA", "CJK"),
    "iso2022_jp": ("HIRAGANA", "KATAKANA", "CJK"),
    "gb18030": ("CJK",), "big5hkscs": ("CJK",), "hz": ("CJK",),
    "koi8-r": ("CYRILLIC",), "koi8-u": ("CYRILLIC",), "cp1251": ("CYRILLIC",),
    "cp866": ("CYRILLIC",), "iso8859-5": ("CYRILLIC",), "mac-cyrillic": ("CYRILLIC",),
    "iso8859-7": ("GREEK",), "cp1253": ("GREEK",), "iso8859-8": ("HEBREW",),
    "cp1255": ("HEBREW",), "cp1256": ("ARABIC",), "iso8859-6": ("ARABIC",), "cp874": ("THAI",),
}
_NEUTRAL = frozenset("€£¥©®°±·–—‘’‚“”„†•…‰‹›™×÷«»¡¿§¶\u00a0")


def _script(ch: str) -> str:
    if ch in _NEUTRAL:
        return "NEUTRAL"
    name = unicodedata.name(ch, "")
    if name.startswith("CJK") or name.startswith("IDEOGRAPHIC"):
        return "CJK"
    if name.startswith("HALFWIDTH"):
        return "HALFWIDTH"  # half-width kana: legal, but what wrong guesses look like
    return name.split(" ", 1)[0]


def plausibility(text: str, codec: str) -> float:
    """How much ``text`` looks like real writing in the script(s) of ``codec`` (0..1).

    Wrong guesses of a legacy charset produce characters from the wrong script, Hanja without
    Hangul, half-width kana, or words mixing case (``оПХБЕР``) and accented-only Latin words.
    """
    try:
        scripts = _SCRIPTS.get(codecs.lookup(codec).name, ("LATIN",))
    except LookupError:
        return 0.0
    chars = [c for c in text if ord(c) > 127 and c not in _NEUTRAL and not c.isspace()]
    if not chars:
        return 1.0
    kinds = [_script(c) for c in chars]
    score = sum(k in scripts for k in kinds) / len(kinds)
    if scripts == ("HANGUL",):
        hangul = [c for c, k in zip(chars, kinds, strict=True) if k == "HANGUL"]
        common = sum(_in_ksx1001(c) for c in hangul)  # the 2,350 syllables in everyday use
        score = (common + 0.5 * (len(hangul) - common) + 0.5 * kinds.count("CJK")) / len(kinds)
        if len(hangul) * 2 < len(kinds):
            score *= 0.3  # Korean is written mostly in Hangul
    elif "HIRAGANA" in scripts and not {"HIRAGANA", "KATAKANA"} & set(kinds):
        score *= 0.5  # Japanese without any kana is rare
    words = [w for w in re.findall(r"\w+", text) if not w.isascii()]
    if not words or scripts[0] in {"HANGUL", "HIRAGANA", "CJK"}:
        return score
    if scripts == ("LATIN",):  # an accented letter sits among plain ones: "café", "Grüße"
        longer = [w for w in words if len(w) > 1]
        return score * sum(any(c.isascii() for c in w) for w in longer) / max(1, len(longer)) \
            if longer else score
    coherent = sum((w.islower() or w.isupper() or w.istitle()) and not _mixed(w)
                   for w in words) / len(words)
    lower = sum(c.islower() for c in chars) / len(chars)
    return score * coherent * (0.9 + 0.1 * lower)


def _mixed(word: str) -> bool:
    """Basic Latin letters inside a word of another script: "Crиme" is cp1251 misread."""
    return any(c.isascii() and c.isalpha() for c in word)


def _in_ksx1001(ch: str) -> bool:
    try:
        return len(ch.encode("euc_kr")) == 2  # others come out as 8-byte jamo sequences
    except UnicodeEncodeError:
        return False


def guess_short(data: bytes, prior: str | None = None) -> str | None:
    """The codec for short unlabelled 8-bit data: the prior if its text is plausible, else the
    candidate whose text is most plausible (ties go to the earlier candidate)."""
    best: tuple[float, str] | None = None
    for codec in dict.fromkeys([c for c in (prior,) if c] + list(SHORT_CANDIDATES)):
        text = _strict(data, codec)
        if text is None:
            continue
        score = plausibility(text, codec)
        if codec == prior and score >= 0.5:
            return codec
        if best is None or score > best[0]:
            best = (score, codec)
    return best[1] if best else None


def prior(labels: list[str | None], raw: list[bytes]) -> str | None:
    """The message's own evidence for its unlabelled 8-bit text: the first declared legacy
    charset (of a part, or of an encoded word in a header), else the codec that makes all of
    its raw 8-bit header text together most plausible."""
    for label in labels:
        codec = codec_for(label)
        if codec and codec not in {"utf-8", "ascii", "utf-16"}:
            return codec
    sample = b" ".join(r for r in raw if not r.isascii() and _strict(r, "utf-8") is None)
    return guess_short(sample[:SHORT_BYTES]) if sample and iso2022(sample) is None else None


def decode_bytes(data: bytes, label: str | None, *, html: bool = False,
                 hint: str | None = None) -> Decoded:
    """Decode a body: declared label, then meta charset, then detection, then UTF-8/replace."""
    declared = codec_for(label)
    if data.isascii() and iso2022(data) is None:
        return Decoded(data.decode("ascii"), declared or "ascii", False)
    why = None
    if declared is not None and _single_byte(declared) and _utf8_multibyte(data):
        return Decoded(data.decode("utf-8"), "utf-8", False,
                       f"declared {label!r} but the bytes are UTF-8")
    if declared is not None:
        if (found := _strict_family(data, declared)) is not None:
            return Decoded(found[0], found[1], False)
        replaced = data.decode(declared, "replace")
        if declared != "ascii" and replaced.count("\ufffd") <= max(2, len(data) // 2000):
            return Decoded(replaced, declared, True, f"invalid bytes for {declared}")
        why = f"bytes do not match declared charset {label!r}"
    elif label and label.strip():
        why = f"unknown charset {label.strip()[:40]!r}"
    else:
        why = "no charset declared"
    for codec in _guesses(data, html, declared, hint):
        if (found := _strict_family(data, codec)) is not None:
            return Decoded(found[0], found[1], False, why)
    if declared is not None and declared != "ascii":
        return Decoded(data.decode(declared, "replace"), declared, True, why)
    return Decoded(data.decode("utf-8", "replace"), "utf-8", True, why)


def _guesses(data: bytes, html: bool, declared: str | None, hint: str | None) -> list[str]:
    out: list[str] = []
    if (escaped := iso2022(data)) is not None:
        out.append(escaped)
    if html and (meta := meta_charset(data)):
        out.append(meta)
    out.append("utf-8")
    if len(data) <= SHORT_BYTES and (short := guess_short(data, hint)) is not None:
        out.append(short)
    elif (guess := detect(data)) is not None:
        out.append(guess)
    return [c for c in dict.fromkeys(out) if c != declared]


def decode_fragment(data: bytes, label: str | None, hint: str | None = None) -> tuple[str, bool]:
    """Decode a short header fragment (encoded word, RFC 2231 value, raw 8-bit header text).

    ``hint`` is the message's prior (see `prior`) for unlabelled bytes. Returns the text and
    whether the decoding needed replacement characters.
    """
    escaped = iso2022(data)
    if data.isascii() and escaped is None:
        return data.decode("ascii"), False
    declared = codec_for(label)
    if declared is not None and _single_byte(declared) and _utf8_multibyte(data):
        declared = "utf-8"
    elif declared == "cp1252" and plausibility(data.decode(declared, "replace"), declared) < 0.5:
        declared = None  # "us-ascii" on bytes that are not Latin text: judge them unlabelled
    if declared is None and escaped is None and _strict(data, "utf-8") is None:
        if _damaged_utf8(data):
            return data.decode("utf-8", "replace"), True
        declared = guess_short(data, codec_for(hint))
    for codec in dict.fromkeys(c for c in (escaped, declared, "utf-8", "cp949") if c):
        if (found := _strict_family(data, codec)) is not None:
            return found[0], False
    return data.decode(declared or "utf-8", "replace"), True
