"""URLs we store or let the app fetch: parsed and re-serialized as a browser would, public only.

Every URL leaving the parser (unsubscribe, web version, thumbnail, confirmation, and the
``href``/``src`` of the display HTML) goes through here. ada-url implements the WHATWG URL
standard that browsers and Node.js use, so what we check is the host a browser or the app would
contact: ``http://2130706433/``, ``http://0x7f.1/`` and ``http://[::ffff:127.0.0.1]/`` are all
127.0.0.1 to it, IDNA hosts come out in punycode, and quotes, ``<`` and spaces come out
percent-encoded. Pure: no DNS lookups (a public name that resolves to a private address is the
fetcher's business).
"""

from __future__ import annotations

import functools
import ipaddress
import re

MAX_URL_CHARS = 8192
# our own reference to a stored attachment (see attachments.attachment_url)
ATTACHMENT_REF = re.compile(r"/attachments/[0-9a-f]{64}")
# names that never lead to a public host (RFC 6761/6762/8375 and common internal zones)
LOCAL_SUFFIXES = ("localhost", "local", "localdomain", "internal", "intranet", "lan",
                  "home.arpa", "corp", "private", "invalid")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@functools.lru_cache(maxsize=4096)  # the same links are judged for heuristics and display
def public_url(url: str | None) -> str | None:
    """``url`` re-serialized by the WHATWG rules, or None unless it is http(s) to a public host.

    Refused: other schemes, user:password@, loopback/private/link-local/unspecified/multicast/
    reserved addresses in any spelling, ``localhost`` and other local names, single-label hosts.
    """
    from ada_url import URL

    if not url or len(url) > MAX_URL_CHARS:
        return None
    try:
        parsed = URL(url)
    except ValueError:
        return None
    if parsed.protocol not in ("http:", "https:") or parsed.username or parsed.password:
        return None
    if not public_host(parsed.hostname):
        return None
    # ' and ` are left as they are by the standard in paths; encode them for any HTML context
    return parsed.href.replace("'", "%27").replace("`", "%60")


def public_host(host: str) -> bool:
    """True for a DNS name with a dot outside local zones, or a globally routed address."""
    host = host.lower().rstrip(".")
    if host.startswith("["):
        return _public_ip(host.strip("[]"))
    if re.fullmatch(r"[\d.]+", host):  # ada-url has turned every IPv4 spelling into this
        return _public_ip(host)
    if "." not in host or not re.fullmatch(r"[a-z0-9_.-]+", host):
        return False
    return not any(host == s or host.endswith("." + s) for s in LOCAL_SUFFIXES)


def _public_ip(text: str) -> bool:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and not _public_ip(str(embedded)):
            return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved)


def stored_url(url: str | None) -> str | None:
    """A URL to store: a public http(s) URL, or our own ``/attachments/<sha256>`` reference."""
    if url and ATTACHMENT_REF.fullmatch(url):
        return url
    return public_url(url)


def link_url(url: str | None) -> str | None:
    """An ``href`` the reader may follow: public http(s), or mailto:/tel: (kept as written)."""
    if url and re.match(r"(?:mailto|tel):", url.strip(), re.IGNORECASE):
        return url.strip()
    return stored_url(url)
