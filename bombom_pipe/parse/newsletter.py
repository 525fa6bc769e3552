"""Newsletter heuristics: preview, unsubscribe, web version, thumbnail, confirmation, reading time.

Phrase lists per language (Korean, English, German, Japanese, French, ...) live in
``phrases.toml``, which the tests read too. All functions work on the one ``html.HtmlDoc`` walk,
or on the plain text when a message has no HTML.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from urllib.parse import unquote

from . import clicks, sanitize
from .attachments import inline_url
from .headers import decode_words
from .html import BEFORE_CHARS, PREHEADER_WINDOW, HtmlDoc, Image, Link, collapse, fallback_text
from .html import load as load_html
from .images import is_tracking_image
from .result import Run, Unsubscribe
from .urls import public_url, stored_url

PREVIEW_CHARS = 150
MAX_TEXT_LINES = 5000  # lines of a plain-text body read for the preview and links
MAX_TEXT_LINKS = 5000  # URLs read from a plain-text body
MIN_PREVIEW_CHARS = 100
MASTHEAD_CHARS = 40  # a newsletter's name or label above its date line (no sentence), at most


def _load_phrases() -> dict[str, dict[str, dict[str, list[str]]]]:
    """The per-language phrase lists in ``phrases.toml`` (shared with the tests)."""
    text = resources.files(__package__).joinpath("phrases.toml").read_text("utf-8")
    return tomllib.loads(text)


PHRASES = _load_phrases()


def phrase_pattern(kind: str) -> re.Pattern[str]:
    """One case-insensitive pattern for every language's ``kind`` phrases."""
    parts = [f"(?:{p})" for lang in PHRASES[kind].values() for p in lang["patterns"]]
    return re.compile("|".join(parts), re.IGNORECASE | re.MULTILINE)


OPT_OUT = phrase_pattern("unsubscribe")  # says it leaves the list
PREFERENCES = phrase_pattern("preferences")  # a preference center: the list's settings
OPT_OUT_PATH = phrase_pattern("unsubscribe_path")  # refuse.asp, mail_reject.jsp: in URLs only
UNSUBSCRIBE = re.compile(f"{OPT_OUT.pattern}|{PREFERENCES.pattern}", re.IGNORECASE | re.MULTILINE)
WEB_VERSION = phrase_pattern("web_version")
TROUBLE_VIEWING = phrase_pattern("trouble_viewing")
CLICK_HERE = phrase_pattern("click_here")
ARRIVAL = phrase_pattern("arrival")  # "your newsletter is here": says nothing of this letter
ADDRESS = phrase_pattern("address_line")  # the publisher's street address or telephone
ARCHIVE = phrase_pattern("archive_notice")  # "past issues are on our site", "[print]"
UNTITLED = phrase_pattern("untitled")  # "Untitled Document": an editor's default <title>
# lines at the top of a letter that say nothing about it
LEAD_JUNK = re.compile(
    "|".join(phrase_pattern(k).pattern
             for k in ("reading_time", "issue_number", "date_line", "armor", "mail_notice")),
    re.IGNORECASE,
)
BOILERPLATE = re.compile(
    rf"{TROUBLE_VIEWING.pattern}|{WEB_VERSION.pattern}|{ARCHIVE.pattern}|click\s+here\s+to\s+view"
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
# in a path, class or alt text: logos, icons, buttons, signatures, author photos, ...
NOT_CONTENT_IMAGE = phrase_pattern("not_content_image")
# names that mark a masthead only when nothing else describes the image (no alt text), or in
# the alt text itself: a "header" picture with a caption is the story's picture
MASTHEAD_HINT = re.compile(r"(?:header|banner|newsletter)(?![a-z])", re.IGNORECASE)
# size hints in image URLs: ?w=150, /150x150/, _600x100., w644_h147
_SIZE_HINT = re.compile(
    r"(?:^|[/_.\-])w(\d{2,4})_h(\d{2,4})(?=[/_.\-]|$)|(?:^|[/_.\-=])(\d{2,4})x(\d{2,4})(?=[/_.\-&]|$)",
    re.IGNORECASE,
)
_WIDTH_PARAM = re.compile(r"[?&](?:w|width|resize_w)=(\d{1,5})\b", re.IGNORECASE)
MIN_THUMBNAIL_WIDTH = 200  # narrower images are icons, logos and author photos
MAX_BANNER_RATIO = 4  # wider than 4:1 is a masthead or a divider, not a picture
MAX_TOP_RATIO = 2.5  # near the top, wider than 5:2 is the letter's banner
MAX_CANDIDATES = 8
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
    web_version_target: str | None = None  # where a click-tracking web_version_url leads
    thumbnail_url: str | None = None
    thumbnail_candidates: tuple[str, ...] = ()
    reading_minutes: int | None = None
    confirmation_url: str | None = None


def analyse(
    *,
    html: str | None,
    text: str | None,
    subject: str | None,
    sender_name: str | None = None,
    list_unsubscribe: str | None,
    unsubscribe_post: str | None,
    cid_map: dict[str, str],
    image_sizes: dict[str, tuple[int, int]] | None = None,
    run: Run,
) -> Findings:
    """Derive the newsletter fields; ``run.guard`` isolates each heuristic's failures."""
    found = Findings()
    doc: HtmlDoc | None = None
    if html:
        doc = run.guard("html", lambda: load_html(html), None)
        if doc is not None and doc.truncated:
            run.fallbacks.append("html: over the analysis size limit, analysed a prefix")
        found.text = doc.text if doc is not None else fallback_text(html)
    visible = found.text if found.text else (text or "")
    links = doc.links if doc is not None else text_links(text or visible)

    found.preview = run.guard("preview", lambda: preview(doc, visible, subject, sender_name),
                              None)
    if found.preview is None and text and doc is not None:  # an HTML part without text
        found.preview = run.guard("preview", lambda: preview(None, text, subject, sender_name),
                                  None)
    if not found.preview:  # a letter that is pictures, or empty: the card is never blank
        found.preview = run.guard("preview", lambda: stand_in(doc, subject, sender_name), None)
    found.reading_minutes = reading_minutes(visible)
    header = parse_list_unsubscribe(list_unsubscribe, unsubscribe_post)
    found.unsubscribe = header or run.guard("unsubscribe", lambda: body_unsubscribe(links), None) \
        or Unsubscribe()
    found.web_version_url = run.guard("web version", lambda: web_version(links), None)
    found.web_version_target = run.guard(
        "click target", lambda: clicks.target(found.web_version_url), None)
    aim = run.guard("click target", lambda: clicks.target(found.unsubscribe.http), None)
    if aim:
        found.unsubscribe = dataclasses.replace(found.unsubscribe, http_target=aim)
    found.confirmation_url = run.guard(
        "confirmation", lambda: confirmation(subject, visible, links), None
    )
    if doc is not None:
        found.thumbnail_candidates = tuple(
            run.guard("thumbnail", lambda: thumbnail_candidates(doc, cid_map, sender_name or "",
                                                     image_sizes or {}),
                      [])
        )
    if doc is not None:  # last: it takes the hidden parts out of the tree
        found.display_html = run.guard(
            "display_html", lambda: sanitize.display_html(doc, cid_map), None
        )
    elif text:
        found.display_html = sanitize.plain_to_html(text)
    return _public_urls(found)


def _public_urls(found: Findings) -> Findings:
    """Every URL we store, re-serialized; ones pointing at internal hosts are dropped."""
    u = found.unsubscribe
    http = public_url(u.http)
    found.unsubscribe = dataclasses.replace(
        u, http=http, http_target=public_url(u.http_target) if http else None,
        one_click=bool(http and u.one_click))
    found.web_version_url = public_url(found.web_version_url)
    found.web_version_target = (public_url(found.web_version_target)
                                if found.web_version_url else None)
    found.thumbnail_candidates = tuple(dict.fromkeys(
        url for candidate in found.thumbnail_candidates if (url := stored_url(candidate))))
    found.thumbnail_url = found.thumbnail_candidates[0] if found.thumbnail_candidates else None
    found.confirmation_url = public_url(found.confirmation_url)
    return found


def truncate(text: str, limit: int = PREVIEW_CHARS) -> str:
    """Cut at a word boundary near ``limit`` characters."""
    text = collapse(text)
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit + 1)
    return text[: cut if cut >= limit * 2 // 3 else limit].rstrip(" ,.;:-|·")


def preview(doc: HtmlDoc | None, text: str, subject: str | None = None,
            sender: str | None = None) -> str | None:
    """A judged hidden preheader, else the first meaningful visible text (a heading that only
    repeats the subject, already the card's title, is not the letter's start)."""
    blocks = doc.blocks if doc is not None else first_lines(text, MAX_TEXT_LINES)
    title = _words(subject or "")
    brand = _words(sender or "").replace(" ", "")
    skipped: list[str] = []
    menus = _menu_blocks(doc) if doc is not None else set()
    if doc is not None:
        body = collapse(" ".join(blocks[:400]))
        for _, hidden in doc.hidden:
            candidate = without_lead_junk(_tidy(without_boilerplate(collapse(hidden))))
            if good_preheader(candidate, body):
                return truncate(candidate) or None
    pieces: list[str] = []
    size = 0
    unfinished = False  # the last block was an unsubscribe notice cut off mid-sentence
    start = 0
    for index, block in enumerate(blocks):
        block_start, start = start, start + len(block) + 1
        block = collapse(block)
        if len(block) < 2 or _is_url(block) or not re.search(r"\w", block):
            continue
        if not pieces and index in menus:
            continue  # the site's menu above the letter
        if not pieces and not _LETTER.search(block):
            continue  # digits and signs alone ("=09", "369", "01 / 03"): no sentence starts so
        if unfinished and len(block) < 80 and CLICK_HERE.search(block):
            unfinished = False
            continue  # the rest of that notice, on the next line ("... click here")
        if block.startswith(">") or (len(block) < 120 and UNSUBSCRIBE.search(block)):
            unfinished = not block.startswith(">") and not _SENTENCE_END.search(block)
            continue
        unfinished = False
        kept = without_boilerplate(block)
        if kept != block and block_start < PREHEADER_WINDOW and size < MIN_PREVIEW_CHARS:
            pieces, size = [], 0  # what stands above the "view in browser" line is the masthead
        if not (block := kept):
            continue
        if not pieces and _names_brand(block, brand):
            skipped.append(block)
            continue  # the sender's name at the top: the masthead, in text
        if block_start < PREHEADER_WINDOW and size < MASTHEAD_CHARS and _letterhead(block) \
                and not any(_SENTENCE_END.search(piece) for piece in pieces):
            skipped.extend(pieces)
            pieces, size = [], 0  # a date, issue number, reading time or address: what stood
            continue  # above it was the masthead, and the letter starts after it
        if not pieces and _SECTION_LABEL.match(block):
            skipped.append(block)
            continue  # "■ 자료": a section's label above its first headline
        if not pieces and len(block) < 80 and ARRIVAL.search(block):
            continue
        if not pieces and title and len(block) < 2 * len(subject or "") + 20 \
                and _repeats(_words(block), title):  # (a long block is no title: skip the split)
            skipped.append(block)
            continue
        pieces.append(block)
        size += len(block) + 1
        if size >= MIN_PREVIEW_CHARS:
            break
    joined = _tidy(" ".join(pieces or skipped))
    return truncate(joined) if joined else None


def stand_in(doc: HtmlDoc | None, subject: str | None, sender: str | None = None
             ) -> str | None:
    """The preview of a letter without text: its pictures' alt texts (image maps' areas too),
    else its HTML <title>, else the subject. Alt texts of logos, buttons and icons, of the
    sender's name alone, of links out (unsubscribe, web version), file names and an editor's
    defaults ("image", "이미지") do not count."""
    if doc is not None:
        brand = _words(sender or "").replace(" ", "")
        alts = [alt for alt in dict.fromkeys(doc.alts) if _LETTER.search(alt)
                and not (NOT_CONTENT_IMAGE.search(alt) or UNSUBSCRIBE.search(alt)
                         or BOILERPLATE.search(alt) or _FILE_NAME.search(alt)
                         or UNTITLED.search(alt) or _names_brand(alt, brand))]
        if alts := _tidy(" ".join(alts)):
            return truncate(alts)
        if _LETTER.search(doc.title) and not UNTITLED.search(doc.title):
            return truncate(doc.title)
    return truncate(subject) if subject and subject.strip() else None


_LETTER = re.compile(r"[^\W\d_]")
_FILE_NAME = re.compile(r"^\S+\.(?:jpe?g|png|gif|bmp|webp|svg)$", re.IGNORECASE)
# a glyph and one or two words: the label of the section below ("■ 자료", "▶ 공지사항")
_SECTION_LABEL = re.compile(
    r"[■□▪▫▶▷►▸◆◇◈●○◎◉★☆※▣➤➢»•·]\s*[^\s.!?…]{1,12}(?:\s+[^\s.!?…]{1,12})?\s*$")
# the parts of an issue line: "제 123호 (2016/05/31)", "Vol. 45 | May 31, 2016"
_ISSUE_PARTS = re.compile(r"\s*[|·•()\[\]–—]\s*|\s+-\s+")
MAX_LETTERHEAD_CHARS = 200


def _letterhead(block: str) -> bool:
    """Whether a block at the top is letterhead, not letter: a date, issue number, reading time
    or notice alone; an issue line made of such parts, perhaps after the letter's name ("봄빛
    소식지 제123호 (2016/05/31)"); or a line with the publisher's street address or telephone
    that is no sentence."""
    if LEAD_JUNK.search(block):
        return True
    if len(block) > MAX_LETTERHEAD_CHARS:
        return False
    if ADDRESS.search(block):
        return not _SENTENCE_END.search(block)
    words = block.split(" ")
    for cut in range(min(len(words), 6)):
        head = " ".join(words[:cut])
        if len(head) > MASTHEAD_CHARS or _SENTENCE_END.search(head):
            return False
        parts = [p for p in _ISSUE_PARTS.split(" ".join(words[cut:])) if re.search(r"\w", p)]
        if parts and all(LEAD_JUNK.search(p) for p in parts):
            return True
    return False


def _names_brand(block: str, brand: str) -> bool:
    """Whether a short heading is the sender's name, alone or with a word run on ("GeekNews"
    for "GeekNewsWeekly"); spacing and case aside."""
    if len(brand) < 3 or len(block) > len(brand) + 20 or _SENTENCE_END.search(block):
        return False
    words = _words(block).replace(" ", "")
    return words.startswith(brand) and len(words) <= len(brand) + 10


def _repeats(words: str, title: str) -> bool:
    """Whether a heading says the subject, or its first three words or more ("Title: teaser")."""
    return words == title or (title.startswith(words + " ") and words.count(" ") >= 2)


def _menu_blocks(doc: HtmlDoc, scan: int = 40, item: int = 30) -> set[int]:
    """Indexes among the first ``scan`` blocks that form a menu: a block made of two or more
    short links' texts, or a run of three or more blocks that are each one short link."""
    starts: dict[int, int] = {}
    at = 0
    for index, block in enumerate(doc.blocks[:scan]):
        starts[at] = index
        at += len(block) + 1
    texts: dict[int, list[str]] = {}
    for link in doc.links:
        if link.position >= at:
            break
        index = starts.get(link.position)
        if index is not None and 0 < len(link.text) <= item \
                and len(doc.blocks[index]) <= 8 * item and link.text in doc.blocks[index]:
            texts.setdefault(index, []).append(link.text)
    linked = sorted(i for i, t in texts.items()
                    if _letters(" ".join(t)) >= _letters(doc.blocks[i]))
    menus = {i for i, t in texts.items() if len(t) >= 2 and _label_with_links(doc.blocks[i], t)}
    run: list[int] = []
    for i in [*linked, -2]:
        if run and i != run[-1] + 1:
            menus.update(run if len(run) >= 3 else ())
            run = []
        run.append(i)
    return menus


def _label_with_links(block: str, links: list[str]) -> bool:
    """Whether a block is its links, or a short label run together with more link text than
    its own ("봄빛 소식지 6월호 Home Blog 후원하기"): no sentence."""
    linked, whole = _letters(" ".join(links)), _letters(block)
    if linked >= whole:
        return True
    return whole - linked <= min(linked, MASTHEAD_CHARS) and not _SENTENCE_END.search(block)


def _letters(text: str) -> int:
    return sum(len(w) for w in re.findall(r"\w+", text))


def _words(text: str) -> str:
    """``text``'s words only, case-folded: "Vol. 3 — Title" and "VOL 3: title" compare equal."""
    return " ".join(re.findall(r"\w+", text.casefold()))


def first_lines(text: str, count: int) -> list[str]:
    """``text.splitlines()[:count]`` without splitting the whole text (a list of millions of
    short lines costs tens of bytes each)."""
    size = 1 << 16
    while True:
        lines = text[:size].splitlines()
        if len(lines) > count or size >= len(text):
            return lines[:count]
        size *= 4


_SENTENCE = re.compile(r"(?<=[.!?…])\s+")
_SENTENCE_END = re.compile(r"[.!?…。)）]\W*$|(?:다|요|오)\W*$")


def without_boilerplate(text: str) -> str:
    """``text`` without its "view in browser" / "can't read this mail" sentences."""
    if len(text) >= 600 or not BOILERPLATE.search(text):
        return text
    kept = _tidy(" ".join(s for s in _SENTENCE.split(text)
                          if len(s) >= 120 or not BOILERPLATE.search(s)))
    return kept if len(kept) >= 25 else ""  # what is left of "…? Click here" is no text


def without_lead_junk(text: str) -> str:
    """``text`` without the date, issue number or reading time it starts with (a preheader
    made of the issue's date and then its summary: ``26.08.06 (목) '오늘의 단어'. …``)."""
    words = text.split(" ", 3)
    for count in range(min(3, len(words) - 1), 0, -1):
        if LEAD_JUNK.search(" ".join(words[:count])):
            return " ".join(words[count:])
    return text


PREHEADER_MIN_CHARS = 20  # shorter hidden text must be found in the letter to be trusted
_HASHTAG = re.compile(r"#[^\s#]+")


def good_preheader(candidate: str, body: str) -> bool:
    """Whether hidden preheader text can stand for the letter: not boilerplate, a URL, a date or
    reading time, not hashtags alone (often left over from an earlier issue), and long enough
    unless the letter itself says the same; not an announcement that a letter has arrived."""
    if len(candidate) < 5 or _is_url(candidate) or BOILERPLATE.search(candidate):
        return False
    if LEAD_JUNK.search(candidate) or not re.search(r"\w", _HASHTAG.sub("", candidate)):
        return False
    if ARRIVAL.search(candidate[:120]):
        return False  # the same announcement every issue
    return len(candidate) >= PREHEADER_MIN_CHARS or candidate[:60] in body


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
    web = [url for t in cleaned if (url := public_url(t))]
    https = [t for t in web if t.startswith("https://")]
    http = https or [t for t in web if t.startswith("http://")]
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
            links.append(Link(href, "", before[-BEFORE_CHARS:], position + match.start()))
        if stripped := collapse(_URL_IN_TEXT.sub(" ", line[-4096:])):
            previous = stripped
        position += len(line) + 1
    return links


def _web(href: str) -> bool:
    return public_url(href) is not None


def _href_words(href: str) -> str:
    return unquote(href)[:500]


def _best_link(links: list[Link], score: Callable[[Link], int]) -> Link | None:
    """The first of the links with the highest score above 0."""
    best: tuple[int, Link] | None = None
    for link in links:
        points = score(link)
        if points and (best is None or points > best[0]):
            best = (points, link)
    return best[1] if best else None


def body_unsubscribe(links: list[Link]) -> Unsubscribe | None:
    """An unsubscribe link from the body: its text ("Unsubscribe" before "Update your
    preferences"), its href, or, for a short link ("click here", an image button without alt
    text), the sentence it stands in: the words before it, or right after a bare call
    ("<a>Click here</a> to unsubscribe")."""

    def score(link: Link) -> int:
        points = words(link)  # the words first: they rule out most links cheaply
        if points and (_web(link.href) or link.href.lower().startswith("mailto:")):
            return points
        return 0

    def words(link: Link) -> int:
        if WEB_VERSION.search(link.text) or CONFIRM_LINK_TEXT.search(link.text):
            return 0
        if OPT_OUT.search(link.text):
            return 4
        if PREFERENCES.search(link.text):
            return 3
        if _leads_out(link.href):
            return 2
        if len(link.text) > 30:
            return 0
        if UNSUBSCRIBE.search(link.before[-80:]) or UNSUBSCRIBE.search(
                _clause_before(link.before)) or len(link.text) <= 20 and CLICK_HERE.search(
                link.text) and UNSUBSCRIBE.search(_clause_after(link.after)):
            return 1
        # a button without words: where the click-tracker says it leads
        return 2 * (len(link.text) <= 2 and _leads_out(clicks.target(link.href) or ""))

    if (best := _best_link(links, score)) is None:
        return None
    if best.href.lower().startswith("mailto:"):
        return Unsubscribe(mailto=best.href, source="body")
    return Unsubscribe(http=best.href, source="body")


_CLAUSE_END = re.compile(r"[.!?。]\s")


def _across(pattern: re.Pattern[str], link: Link) -> bool:
    """Whether a link's sentence, read across the link (with or without the space the
    collapsed text may have lost at its edges), says ``pattern``."""
    parts = (_clause_before(link.before[-80:]), link.text, _clause_after(link.after))
    return bool(pattern.search(" ".join(parts)) or pattern.search("".join(parts)))


def _clause_before(before: str) -> str:
    """The sentence a link ends: the text before it since the last full stop."""
    ends = list(_CLAUSE_END.finditer(before))
    return before[ends[-1].end():] if ends else before


def _clause_after(after: str) -> str:
    """The rest of a link's sentence after it, to its full stop."""
    return re.split(r"[.!?。]", after[:100], maxsplit=1)[0]


def _leads_out(href: str) -> bool:
    """Whether a URL names the way out: unsubscribe words, or a mailer's refusal script."""
    words = _href_words(href)
    return bool(UNSUBSCRIBE.search(words) or OPT_OUT_PATH.search(words))


def web_version(links: list[Link]) -> str | None:
    """The "view in browser" / "웹에서 보기" link: by its text, the "can't read this mail?"
    sentence around it, or, for a short link, its sentence read across it ("View this email
    in a <a>web browser</a>", "<a>웹 브라우저</a>에서 보기")."""

    def score(link: Link) -> int:
        points = words(link)  # the words first: they rule out most links cheaply
        return points if points and _web(link.href) else 0

    def words(link: Link) -> int:
        if UNSUBSCRIBE.search(link.text):
            return 0
        short = len(link.text) <= 30
        if WEB_VERSION.search(link.text):
            return 3
        if TROUBLE_VIEWING.search(link.text) or short and (
                TROUBLE_VIEWING.search(link.before[-80:])
                or TROUBLE_VIEWING.search(link.after[:80])):
            return 2
        return int(short and bool(WEB_VERSION.search(link.before[-40:])
                                  or WEB_VERSION.search(link.after[:60])
                                  or _across(WEB_VERSION, link)))

    best = _best_link(links, score)
    return best.href if best else None


def confirmation(subject: str | None, text: str, links: list[Link]) -> str | None:
    """The confirmation link of a "confirm your subscription" mail, else None."""
    if not (CONFIRM_CONTEXT.search(subject or "") or CONFIRM_CONTEXT.search(text[:3000])):
        return None

    def score(link: Link) -> int:
        if not _web(link.href) or UNSUBSCRIBE.search(link.text) or WEB_VERSION.search(link.text):
            return 0
        if UNSUBSCRIBE.search(_href_words(link.href)):
            return 0
        if CONFIRM_LINK_TEXT.search(link.text):
            return 3
        if CONFIRM_LINK_HREF.search(link.href):
            return 2
        return int(len(link.text) <= 30 and bool(CONFIRM_CONTEXT.search(link.before[-80:])))

    best = _best_link(links, score)
    return best.href if best else None


def _file_name(path: str) -> str:
    """The last segment of an image's path: a folder named for the newsletter holds its
    pictures of every kind, so only the file's own name can call it a masthead."""
    return path.rstrip("/").rpartition("/")[2]


def size_hint(src: str) -> tuple[int | None, int | None]:
    """Width and height an image URL declares for itself (CDN resize parameters, file names)."""
    path = src.split("#", 1)[0]
    if match := _SIZE_HINT.search(path.split("?", 1)[0].split("://", 1)[-1]):
        w, h = (match.group(1), match.group(2)) if match.group(1) else (match.group(3),
                                                                         match.group(4))
        return int(w), int(h)
    if match := _WIDTH_PARAM.search(path):
        return int(match.group(1)), None
    return None, None


def _content_image(image: Image, brand: str = "", intrinsic: tuple[int, int] | None = None
                   ) -> bool:
    """Whether a picture can stand for the letter: not a pixel, logo, icon, flag or button (by
    name, class or alt), not a masthead by name unless it is a portrait (a banner is wide), not
    the sender's name, not narrow or low, not a strip, not a banner near the top, and in a
    format made for the web (no .svg, no .bmp)."""
    if is_tracking_image(image.src, image.width, image.height):
        return False
    path = unquote(image.src.split("?", 1)[0].split("://", 1)[-1].partition("/")[2])
    if path.lower().endswith((".svg", ".bmp")):
        return False
    if NOT_CONTENT_IMAGE.search(image.hints) or NOT_CONTENT_IMAGE.search(path):
        return False
    portrait = image.width is not None and image.height is not None \
        and image.height >= image.width
    name = _file_name(path)
    if not portrait and (MASTHEAD_HINT.search(image.alt)
                         or (not image.alt and MASTHEAD_HINT.search(name))):
        return False
    if len(brand) >= 3 and brand.lower() in image.alt.lower() and len(image.alt) <= len(brand) + 15:
        return False  # the sender's own name as a picture's caption: its logo or masthead
    hinted_w, hinted_h = intrinsic or size_hint(image.src)
    width = image.width if image.width is not None else hinted_w
    if width is not None and hinted_w and width >= 120:
        width = max(width, hinted_w)  # a photo shown small, from a large source
    height = image.height if image.height is not None else hinted_h
    if width is not None and width < MIN_THUMBNAIL_WIDTH:
        return False
    if height is not None and height < 50:
        return False
    ratio_w, ratio_h = (hinted_w, hinted_h) if hinted_w and hinted_h else (width, height)
    widest = MAX_TOP_RATIO if image.position < PREHEADER_WINDOW else MAX_BANNER_RATIO
    return not (ratio_w and ratio_h and ratio_w > widest * ratio_h)


def thumbnail_candidates(doc: HtmlDoc, cid_map: dict[str, str], brand: str = "",
                         sizes: dict[str, tuple[int, int]] | None = None) -> list[str]:
    """``og:image``, then the content images in order (no pixels, spacers, logos, icons,
    mastheads, author photos; ``brand`` is the sender's name; ``sizes`` the intrinsic size of
    inline parts by URL). The store drops those that come back in every issue."""
    out: list[str] = [doc.og_image] if doc.og_image else []
    for image in doc.images:
        src = image.src
        if src.lower().startswith("cid:"):
            mapped = inline_url(cid_map, src)
            if mapped and _content_image(image, brand, (sizes or {}).get(mapped)):
                out.append(mapped)
            continue
        if src.startswith("//"):
            src = "https:" + src
        if _web(src) and _content_image(image, brand):
            out.append(src)
        if len(out) >= MAX_CANDIDATES:
            break
    return list(dict.fromkeys(out))

