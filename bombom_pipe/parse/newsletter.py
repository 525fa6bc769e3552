"""Newsletter heuristics: preview, unsubscribe, web version, thumbnail, confirmation, reading time.

Keyword lists cover English and Korean first (Stibee, Maily, Mailchimp, ...), plus the common
German/French wording seen in the corpus. All functions work on the one ``html.HtmlDoc`` walk,
or on the plain text when a message has no HTML.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from .headers import decode_words
from .html import HtmlDoc, Image, Link, collapse
from .result import Unsubscribe

PREVIEW_CHARS = 150
MAX_TEXT_LINES = 5000  # lines of a plain-text body read for the preview and links
MAX_TEXT_LINKS = 5000  # URLs read from a plain-text body
MIN_PREVIEW_CHARS = 100

UNSUBSCRIBE = re.compile(
    r"unsubscribe|unsub\b|opt[- ]?out|수신\s*거부|수신\s*거절|수신\s*해지"
    r"|구독\s*(?:을\s*|를\s*)?(?:취소|해지|해제|중단)"
    r"|abmelden|abbestellen|austragen|newsletter\s*abbestellen|d[ée]sinscri|d[ée]sabonner"
    r"|darse de baja|отписаться",
    re.IGNORECASE,
)
WEB_VERSION = re.compile(
    r"view\s+(?:this\s+|the\s+)?(?:e-?mail|message|newsletter|it)?\s*(?:in|on)\s+(?:your\s+|a\s+)?"
    r"(?:web\s*)?browser|view\s+(?:it\s+|this\s+|this\s+e-?mail\s+)?online|view\s+as\s+(?:a\s+)?web\s*page"
    r"|web\s*version|online[- ]?version|webversion|im\s+browser\s+(?:ansehen|anzeigen|öffnen|lesen)"
    r"|browseransicht|웹\s*(?:으로|에서|브라우저(?:로|에서)?)\s*보기|브라우저(?:로|에서)\s*보기"
    r"|웹\s*버전|온라인\s*(?:으로|에서)\s*보기|version\s+en\s+ligne",
    re.IGNORECASE,
)
TROUBLE_VIEWING = re.compile(
    r"잘\s*(?:안|않)\s*보이|제대로\s*보이지|보이지\s*않|이미지가\s*(?:안|않)|having\s+trouble\s+viewing"
    r"|trouble\s+viewing|not\s+display(?:ing)?\s+(?:correctly|properly)|can'?t\s+see\s+(?:this|the)"
    r"|darstellungsprobleme|probleme\s+mit\s+der\s+darstellung|can'?t\s+read\s+this"
    r"|nicht\s+(?:richtig|korrekt|optimal|einwandfrei)\s+(?:angezeigt|dargestellt)"
    r"|ne\s+s'affiche\s+pas",
    re.IGNORECASE,
)
BOILERPLATE = re.compile(
    rf"{TROUBLE_VIEWING.pattern}|{WEB_VERSION.pattern}|click\s+here\s+to\s+view"
    r"|add\s+us\s+to\s+your\s+address\s+book|^\(?광고\)?$",
    re.IGNORECASE,
)
CONFIRM_CONTEXT = re.compile(
    r"confirm\s+(?:your\s+)?(?:subscription|e-?mail|sign[- ]?up|address|registration)"
    r"|please\s+confirm|verify\s+(?:your\s+)?(?:e-?mail|address|subscription)"
    r"|activate\s+your\s+(?:subscription|account)|double[- ]opt[- ]?in"
    r"|구독\s*(?:을\s*|를\s*|신청\s*(?:을\s*)?)?(?:확인|인증)|이메일\s*(?:주소\s*)?(?:인증|확인)|메일\s*인증|인증\s*메일"
    r"|anmeldung\s+bestätigen|bitte\s+bestätige|bestätigen\s+sie|confirmez\s+votre",
    re.IGNORECASE,
)
CONFIRM_LINK_TEXT = re.compile(
    r"confirm|verify|activate|yes,?\s+subscribe|subscribe\s+me|확인|인증|bestätig|confirmez",
    re.IGNORECASE,
)
CONFIRM_LINK_HREF = re.compile(r"confirm|verif|activat|opt-?in|/doi\b|subscribe/confirm", re.I)
TRACKING_SRC = re.compile(
    r"/open(?:[./?_-]|$)|/track|tracking|pixel|beacon|/o\.gif|/wf/open|/e/o/|spacer|blank\.gif"
    r"|transparent\.(?:gif|png)|1x1|/imp(?:[./?]|$)|/trk|openrate|/t\.gif|/mo/|emimp|/pxl",
    re.IGNORECASE,
)
NOT_CONTENT_IMAGE = re.compile(
    r"logo|spacer|icon|social|facebook|twitter|instagram|linkedin|youtube|tiktok|pinterest"
    r"|kakao|badge|button|btn|divider|separator|arrow|bullet|app-?store|google-?play|avatar",
    re.IGNORECASE,
)
_EDGE_CHARS = "-–—|·•*_=~" + "".join(c for c in map(chr, range(0x3001)) if c.isspace())
_URL_MARK = re.compile(r"https?://|www\.")
_WHITESPACE = re.compile(r"\s")
_URL_IN_TEXT = re.compile(r"(?:https?://|mailto:)[^\s<>\"'\])]+", re.IGNORECASE)
_HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f\u3040-\u30ff\u4e00-\u9fff]")
_WORD = re.compile(r"\w+(?:['’-]\w+)*")


@dataclass(slots=True)
class Findings:
    """Everything derived from the bodies."""

    text: str | None = None
    display_html: str | None = None
    preview: str | None = None
    unsubscribe: Unsubscribe = field(default_factory=Unsubscribe)
    web_version_url: str | None = None
    thumbnail_url: str | None = None
    reading_minutes: int | None = None
    confirmation_url: str | None = None


def analyse(
    *,
    html: str | None,
    text: str | None,
    subject: str | None,
    list_unsubscribe: str | None,
    unsubscribe_post: str | None,
    cid_map: dict[str, str],
    run: Any,
) -> Findings:
    """Derive the newsletter fields; ``run.guard`` isolates each heuristic's failures."""
    from . import html as html_mod
    from . import sanitize

    found = Findings()
    doc: HtmlDoc | None = None
    if html:
        doc = run.guard("html", lambda: html_mod.load(html), None)
        if doc is not None and doc.truncated:
            run.fallbacks.append("html: over the analysis size limit, analysed a prefix")
        found.text = doc.text if doc is not None else html_mod.fallback_text(html)
    visible = found.text if found.text else (text or "")
    links = doc.links if doc is not None else text_links(text or visible)

    found.preview = run.guard("preview", lambda: preview(doc, visible), None)
    found.reading_minutes = reading_minutes(visible)
    header = parse_list_unsubscribe(list_unsubscribe, unsubscribe_post)
    found.unsubscribe = header or run.guard("unsubscribe", lambda: body_unsubscribe(links), None) \
        or Unsubscribe()
    found.web_version_url = run.guard("web version", lambda: web_version(links), None)
    found.confirmation_url = run.guard(
        "confirmation", lambda: confirmation(subject, visible, links), None
    )
    if doc is not None:
        found.thumbnail_url = run.guard("thumbnail", lambda: thumbnail(doc, cid_map), None)
        found.display_html = run.guard(
            "display_html", lambda: sanitize.display_html(doc, cid_map), None
        )
    elif html:
        found.display_html = run.guard(
            "display_html", lambda: sanitize.clean_fragment(html, cid_map), None
        )
    elif text:
        found.display_html = sanitize.plain_to_html(text)
    return found


def truncate(text: str, limit: int = PREVIEW_CHARS) -> str:
    """Cut at a word boundary near ``limit`` characters."""
    text = collapse(text)
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit + 1)
    return text[: cut if cut >= limit * 2 // 3 else limit].rstrip(" ,.;:-|·")


def preview(doc: HtmlDoc | None, text: str) -> str | None:
    """The hidden preheader if any, else the first meaningful visible text."""
    if doc is not None:
        for _, hidden in doc.hidden:
            if len(hidden) >= 5 and not BOILERPLATE.search(hidden) and not _is_url(hidden):
                return truncate(_tidy(hidden)) or None
    blocks = doc.blocks if doc is not None else first_lines(text, MAX_TEXT_LINES)
    pieces: list[str] = []
    size = 0
    for block in blocks:
        block = collapse(block)
        if len(block) < 2 or _is_url(block) or not re.search(r"\w", block):
            continue
        if block.startswith(">") or (len(block) < 120 and BOILERPLATE.search(block)):
            continue
        pieces.append(block)
        size += len(block) + 1
        if size >= MIN_PREVIEW_CHARS:
            break
    joined = _tidy(" ".join(pieces))
    return truncate(joined) if joined else None


def first_lines(text: str, count: int) -> list[str]:
    """``text.splitlines()[:count]`` without splitting the whole text (a list of millions of
    short lines costs tens of bytes each)."""
    size = 1 << 16
    while True:
        lines = text[:size].splitlines()
        if len(lines) > count or size >= len(text):
            return lines[:count]
        size *= 4


def _tidy(text: str) -> str:
    # str.strip with a character set: a "[...]+$" regex is quadratic on long inner runs
    return text.strip(_EDGE_CHARS)


def _is_url(text: str) -> bool:
    # no "\S*...\S*" fullmatch: it backtracks over every "www." of a long token (quadratic)
    return bool(_URL_MARK.search(text)) and not _WHITESPACE.search(text)


def _pieces(text: str, size: int = 1 << 16) -> Iterator[str]:
    """``text`` in pieces of about ``size`` characters, cut at whitespace (never in a word)."""
    start = 0
    while start < len(text):
        cut = _WHITESPACE.search(text, start + size)
        end = cut.start() if cut else len(text)
        yield text[start:end]
        start = end


def reading_minutes(text: str | None) -> int | None:
    """Minutes to read: Hangul (and CJK) by characters at 500/min, other words at 230/min."""
    if not text or not text.strip():
        return None
    cjk = words = 0
    for piece in _pieces(text):  # re.subn keeps a list entry per match: bounded pieces
        others, found = _HANGUL.subn(" ", piece)
        cjk += found
        words += _WORD.subn("", others)[1]
    if not cjk and not words:
        return None
    return max(1, round(cjk / 500 + words / 230))


def parse_list_unsubscribe(value: str | None, post: str | None) -> Unsubscribe | None:
    """RFC 2369 ``List-Unsubscribe`` targets and the RFC 8058 one-click flag."""
    if not value:
        return None
    if "=?" in value:
        value = decode_words(value)[0]
    targets = re.findall(r"<([^<>]*)>", value) or value.split(",")
    cleaned = [re.sub(r"\s+", "", t) for t in targets]
    https = [t for t in cleaned if t.lower().startswith("https://")]
    http = https or [t for t in cleaned if t.lower().startswith("http://")]
    mailto = [t for t in cleaned if t.lower().startswith("mailto:")]
    if not http and not mailto:
        return None
    one_click = bool(
        http and post and re.search(r"list-unsubscribe\s*=\s*one-click", post, re.IGNORECASE)
    )
    return Unsubscribe(
        http=http[0] if http else None,
        mailto=mailto[0] if mailto else None,
        one_click=one_click,
        source="header",
    )


def text_links(text: str) -> list[Link]:
    """Links in plain text, with the words before each URL on its line (or the line above)."""
    links: list[Link] = []
    position = 0
    previous = ""
    for line in first_lines(text, MAX_TEXT_LINES):
        for match in itertools.islice(_URL_IN_TEXT.finditer(line), MAX_TEXT_LINKS - len(links)):
            before = collapse(line[max(0, match.start() - 400) : match.start()]) or previous
            href = match.group(0).rstrip(".,;:!?")
            links.append(Link(href, "", before[-80:], position + match.start()))
        if stripped := collapse(_URL_IN_TEXT.sub(" ", line[-4096:])):
            previous = stripped
        position += len(line) + 1
    return links


def _web(href: str) -> bool:
    return href.lower().startswith(("http://", "https://"))


def _href_words(href: str) -> str:
    return unquote(href)[:500]


def body_unsubscribe(links: list[Link]) -> Unsubscribe | None:
    """An unsubscribe link from the body: anchor text, href, or the words right before it."""
    best: tuple[int, Link] | None = None
    for link in links:
        lower = link.href.lower()
        if not (_web(link.href) or lower.startswith("mailto:")):
            continue
        if WEB_VERSION.search(link.text) or CONFIRM_LINK_TEXT.search(link.text):
            continue
        score = 0
        if UNSUBSCRIBE.search(link.text):
            score = 3
        elif UNSUBSCRIBE.search(_href_words(link.href)):
            score = 2
        elif len(link.text) <= 30 and UNSUBSCRIBE.search(link.before[-40:]):
            score = 1
        if score and (best is None or score > best[0]):
            best = (score, link)
    if best is None:
        return None
    href = best[1].href
    if href.lower().startswith("mailto:"):
        return Unsubscribe(mailto=href, source="body")
    return Unsubscribe(http=href, source="body")


def web_version(links: list[Link]) -> str | None:
    """The "view in browser" / "웹에서 보기" link."""
    best: tuple[int, Link] | None = None
    for link in links:
        if not _web(link.href) or UNSUBSCRIBE.search(link.text):
            continue
        score = 0
        if WEB_VERSION.search(link.text):
            score = 3
        elif len(link.text) <= 30 and TROUBLE_VIEWING.search(link.before):
            score = 2
        elif len(link.text) <= 30 and WEB_VERSION.search(link.before[-40:]):
            score = 1
        if score and (best is None or score > best[0]):
            best = (score, link)
    return best[1].href if best else None


def confirmation(subject: str | None, text: str, links: list[Link]) -> str | None:
    """The confirmation link of a "confirm your subscription" mail, else None."""
    if not (CONFIRM_CONTEXT.search(subject or "") or CONFIRM_CONTEXT.search(text[:3000])):
        return None
    best: tuple[int, Link] | None = None
    for link in links:
        if not _web(link.href) or UNSUBSCRIBE.search(link.text) or WEB_VERSION.search(link.text):
            continue
        if UNSUBSCRIBE.search(_href_words(link.href)):
            continue
        score = 0
        if CONFIRM_LINK_TEXT.search(link.text):
            score = 3
        elif CONFIRM_LINK_HREF.search(link.href):
            score = 2
        elif len(link.text) <= 30 and CONFIRM_CONTEXT.search(link.before):
            score = 1
        if score and (best is None or score > best[0]):
            best = (score, link)
    return best[1].href if best else None


def is_tracking_image(src: str, width: int | None, height: int | None) -> bool:
    """Open-tracking pixels: 0/1-pixel images or well-known tracking URL shapes."""
    if width is not None and width <= 2 or height is not None and height <= 2:
        return True
    return bool(TRACKING_SRC.search(src.split("#", 1)[0]))


def _content_image(image: Image) -> bool:
    if is_tracking_image(image.src, image.width, image.height):
        return False
    path = image.src.split("?", 1)[0].split("://", 1)[-1].partition("/")[2]
    if NOT_CONTENT_IMAGE.search(image.hints) or NOT_CONTENT_IMAGE.search(path):
        return False
    if image.width is not None and image.width < 120:
        return False
    if image.height is not None and image.height < 50:
        return False
    return not image.src.lower().endswith(".svg")


def thumbnail(doc: HtmlDoc, cid_map: dict[str, str]) -> str | None:
    """``og:image``, else the first content image (no pixels, spacers, logos, icons)."""
    if doc.og_image:
        return doc.og_image
    for image in doc.images:
        src = image.src
        if src.lower().startswith("cid:"):
            cid = unquote(src[4:]).strip("<>")
            mapped = cid_map.get(cid) or cid_map.get(cid.lower())
            if mapped and _content_image(image):
                return mapped
            continue
        if src.startswith("//"):
            src = "https:" + src
        if _web(src) and _content_image(image):
            return src
    return None
