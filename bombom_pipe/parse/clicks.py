"""Click-tracking redirects: the real target, when the tracking URL itself carries it.

Sending platforms wrap every link in a redirect that records a click for the recipient. Several
carry the destination inside the URL: as a URL-valued query parameter or path segment
(``?url=https%3A…``, ``awstrack.me/L0/https:%2F%2F…``), or base64 of the URL or of a small JSON
or zlib-compressed JSON holding it (Stibee ``/v2/click/<id>/<base64>``, Substack
``/redirect/2/<base64 JSON>``, ConvertKit, Axios). `target` recovers it from the string alone;
nothing is ever fetched. Only URLs shaped like a redirect (a click/redirect/track path, or a
tracking host name) are unwrapped, so an unsubscribe page's own ``?redirect=`` is left alone.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import zlib
from urllib.parse import parse_qsl, unquote, urlsplit

MAX_URL = 4096
_REDIRECT_PATH = re.compile(
    r"/(?:v\d+/)?(?:click|clicks|c|cl|ls|l|r|redirect|redir|rd|track|trk|tr|link|links|go|out|"
    r"e2t|ss|wf|L0|CL0|mps2|t)(?:/|$)",
    re.IGNORECASE,
)
_TRACKING_HOST = re.compile(
    r"^(?:click|clicks|link|links|ct|trk|track|tracking|url\d*)"
    r"[.-]|awstrack\.me$|list-manage\.com$|sendgrid\.net$|hubspotlinks\.com$|beehiiv\.com$",
    re.IGNORECASE,
)
_URL_PARAMS = ("url", "u", "redirect", "redirect_url", "redirect_uri", "target", "link", "dest",
               "destination", "to", "goto", "next", "r", "q", "href", "l")
_B64 = re.compile(r"^[A-Za-z0-9_\-+/]{16,}={0,2}$")
_JSON_KEYS = ("url", "e", "u", "href", "link", "target", "destination", "redirect")


def target(url: str | None, depth: int = 2) -> str | None:
    """The destination a click-tracking ``url`` redirects to, if the URL itself says; else None."""
    if not url or len(url) > MAX_URL or depth <= 0:
        return None
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    if not (_REDIRECT_PATH.search(parts.path) or _TRACKING_HOST.search(parts.hostname)):
        return None
    for candidate in _candidates(parts.path, parts.query):
        if (found := _as_url(candidate)) is not None and found != url:
            return target(found, depth - 1) or found
    return None


def _candidates(path: str, query: str) -> list[str]:
    values = [v for k, v in parse_qsl(query, keep_blank_values=False) if k.lower() in _URL_PARAMS]
    segments: list[str] = []
    for segment in path.split("/")[::-1]:  # the target tends to come last
        if segment:  # a JWT-like "payload.signature" segment: the pieces too
            segments += [segment, *(p for p in segment.split(".") if len(p) >= 16)]
    return values + segments + [v for _, v in parse_qsl(query)]


def _as_url(value: str) -> str | None:
    """``value`` as an http(s) URL: plain, percent-encoded, base64, or inside base64 JSON/zlib."""
    for text in (value, unquote(value), unquote(unquote(value))):
        if _web(text):
            return text
    if not _B64.match(value):
        return None
    data = _b64(value)
    if data is None:
        return None
    if data[:1] == b"\x78":  # zlib header: compressed JSON (Mailgun-style links)
        try:
            data = zlib.decompressobj().decompress(data, 65536)
        except zlib.error:
            return None
    text = data.decode("utf-8", "replace").strip()
    if _web(text):
        return text
    if text.startswith("{"):
        return _from_json(text)
    return None


def _b64(value: str) -> bytes | None:
    clean = value.rstrip("=")
    try:
        return base64.urlsafe_b64decode(
            clean.replace("+", "-").replace("/", "_") + "=" * (-len(clean) % 4)
        )
    except (binascii.Error, ValueError):
        return None


def _from_json(text: str) -> str | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    for key in _JSON_KEYS:
        value = data.get(key)
        if isinstance(value, str) and _web(value):
            return value
    return None


def _web(text: str) -> bool:
    if not re.match(r"https?://[^\s/?#]+\.[^\s/?#]+", text, re.IGNORECASE):
        return False
    return len(text) <= MAX_URL and not re.search(r"[\x00-\x20\x7f\ufffd]", text)
