"""Read an HTML body once with BeautifulSoup (html.parser): visible text, links, images.

The walk is iterative (no recursion on deep markup) and skips non-rendered content: scripts,
styles, the head, and hidden elements (``display:none``, ``max-height:0``, ``opacity:0``,
``mso-hide:all``, classes a ``<style>`` sheet hides). Hidden text near the top, and the text
of preheader-named elements, is kept aside as preheader candidates. bs4 is imported lazily.

Every step is linear in the input: a bounded prefix is parsed (MAX_HTML_CHARS, MAX_MARKUP),
after ``defuse`` has escaped what html.parser would rescan, and no pattern backtracks over a
long run (tests/test_parse_adversarial.py).
"""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass, field
from typing import Any

MAX_HTML_CHARS = 3_000_000  # larger bodies are analysed on this prefix only
# "<" and "&" parsed (each is a parser event; a bs4 element costs ~1 KB); corpus maximum ~8000
MAX_MARKUP = 50_000
MAX_OPEN_LINKS = 8  # nested <a> elements whose text is collected (HTML allows none)
MAX_LINK_TEXT = 2000  # characters of link text collected per <a>
PREHEADER_WINDOW = 400  # visible characters before which hidden text counts as a preheader

_SKIP = frozenset({"script", "style", "head", "title", "noscript", "template", "xml", "meta",
                   "link", "object", "embed", "applet", "iframe", "svg", "math", "button",
                   "select", "option", "textarea"})
_BLOCK = frozenset({"p", "div", "br", "tr", "td", "th", "li", "ul", "ol", "h1", "h2", "h3",
                    "h4", "h5", "h6", "table", "tbody", "thead", "tfoot", "blockquote",
                    "section", "article", "header", "footer", "nav", "aside", "hr", "center",
                    "pre", "dl", "dt", "dd", "figure", "figcaption", "main", "address", "form",
                    "caption", "body", "html"})
_HIDDEN_STYLE = re.compile(
    r"display:none|visibility:hidden|mso-hide:all|max-height:0(?![.\d]*[1-9])"
    r"|opacity:0(?:\.0+)?(?![.\d])"
)
_ZERO_HEIGHT = frozenset({"height:0", "height:0px", "max-height:0", "max-height:0px"})
_PREHEADER_CLASS = re.compile(r"pre-?header|preview-?text|mcnpreviewtext|preview_text|preheader",
                              re.IGNORECASE)
# zero-width and padding characters newsletters use to pad preheaders
_INVISIBLE = re.compile("[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f"
                        "\u202a-\u202e\u2060-\u2064\u206a-\u206f\u3164\ufeff\uffa0]")
_SPACES = re.compile(r"\s+")
_STYLE_OPEN = re.compile(r"<style\b", re.IGNORECASE)
_STYLE_CLOSE = re.compile(r"</style", re.IGNORECASE)
_DIMENSION = re.compile(r"^\s*(\d{1,6})(?:\.\d+)?\s*(?:px)?\s*$", re.IGNORECASE)


CHUNK = 1 << 16
_NOT_SPACE = re.compile(r"\S")
_DELETE_SPACES = dict.fromkeys(i for i in range(0x3001) if chr(i).isspace())  # what \s matches


def collapse(text: str) -> str:
    """Remove zero-width padding and collapse all whitespace (incl. NBSP) to single spaces."""
    if len(text) <= CHUNK:
        return _SPACES.sub(" ", _INVISIBLE.sub("", text)).strip()
    # re.sub keeps a list entry per match (~60 bytes): long texts go in pieces, cut where
    # no run of whitespace is split
    text = "".join(_INVISIBLE.sub("", text[i : i + CHUNK]) for i in range(0, len(text), CHUNK))
    pieces = []
    start = 0
    while start < len(text):
        cut = _NOT_SPACE.search(text, start + CHUNK)
        end = cut.start() if cut else len(text)
        pieces.append(_SPACES.sub(" ", text[start:end]))
        start = end
    return "".join(pieces).strip()


def style_of(tag: Any) -> str:
    """The tag's inline style, lower-case without whitespace."""
    style = tag.get("style") if hasattr(tag, "get") else None
    if isinstance(style, list):
        style = " ".join(style)
    return style.translate(_DELETE_SPACES).lower() if isinstance(style, str) else ""


def is_hidden(tag: Any) -> bool:
    """True when inline style or attributes make the element invisible."""
    if tag.has_attr("hidden"):
        return True
    return hides(style_of(tag))


def hides(style: str) -> bool:
    """True when declarations (lower case, no whitespace) make an element invisible."""
    if not style:
        return False
    if _HIDDEN_STYLE.search(style):
        return True
    # a zero height that clips its content: one pass over the declarations, not a regex
    # with two unbounded ``.*`` (quadratic on a long style)
    return "overflow:hidden" in style and not _ZERO_HEIGHT.isdisjoint(style.split(";"))


def classes_of(tag: Any) -> str:
    """Class and id attribute text of a tag, for name-based heuristics."""
    cls = tag.get("class") or ""
    if isinstance(cls, list):
        cls = " ".join(cls)
    ident = tag.get("id") or ""
    return f"{cls} {ident if isinstance(ident, str) else ''}".strip()


def dimension(tag: Any, name: str) -> int | None:
    """Declared width/height in pixels from the attribute or the inline style."""
    value = tag.get(name)
    if isinstance(value, str) and (match := _DIMENSION.match(value)):
        return int(match.group(1))
    style = style_of(tag)
    match = re.search(rf"(?:^|;){name}:(\d{{1,6}})(?:\.\d+)?(?:px)?(?:;|$|!)", style)
    return int(match.group(1)) if match else None


@dataclass(slots=True)
class Link:
    """An anchor with its visible text and the text right before it."""

    href: str
    text: str
    before: str
    position: int  # visible characters preceding it
    after: str = ""  # the rest of its line ("click here if you can't read this mail")


@dataclass(slots=True)
class Image:
    """An <img> outside hidden elements, in document order."""

    src: str
    width: int | None
    height: int | None
    alt: str
    hints: str  # class, id and alt, lower-case: for logo/spacer heuristics
    position: int
    linked: bool


@dataclass(slots=True)
class HtmlDoc:
    """What the app and the heuristics need from one HTML body."""

    soup: Any
    blocks: list[str] = field(default_factory=list)
    hidden: list[tuple[int, str]] = field(default_factory=list)  # (position, text) near the top
    links: list[Link] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)
    og_image: str | None = None
    truncated: bool = False
    hidden_names: frozenset[str] = frozenset()  # classes and ids the <style> sheets hide

    @property
    def text(self) -> str:
        return "\n".join(self.blocks)


def load(html: str) -> HtmlDoc:
    """Parse and walk an HTML body (a prefix: MAX_HTML_CHARS, MAX_MARKUP)."""
    prefix = analysed_prefix(html)
    soup = _soup_class()(defuse(prefix), "html.parser")
    doc = HtmlDoc(soup=soup, truncated=len(prefix) < len(html))
    doc.hidden_names = sheet_hidden(_style_text(html[:MAX_HTML_CHARS])[:200_000])
    _walk(doc)
    doc.og_image = _meta_image(soup)
    return doc


@functools.cache
def _soup_class() -> type:
    from bs4 import BeautifulSoup

    class Soup(BeautifulSoup):
        """BeautifulSoup without its linkage fix-up after each string.

        The fix-up walks from the string's parent to the root (O(depth) per string: quadratic
        on deep markup) looking for a next sibling; html.parser builds the tree in document
        order, where no open element has one yet, so the walk never changes anything.
        """

        def _linkage_fixer(self, el: Any) -> None:
            return None

    return Soup


_MARKUP = re.compile(r"[<&]")


def analysed_prefix(html: str) -> str:
    """The part of the body that is parsed: bounded in characters and in markup."""
    html = html[:MAX_HTML_CHARS]
    if html.count("<") + html.count("&") > MAX_MARKUP:
        beyond = next(itertools.islice(_MARKUP.finditer(html), MAX_MARKUP, None))
        html = html[: beyond.start()]
    return html


# html.parser (CPython before 3.12.11/3.13.4) searches the rest of the document for the end of
# every unterminated comment, tag or marked section, and for a ";" after every "&#" that starts
# no character reference: quadratic on hostile input. Those constructs can only be text, so
# they are escaped first; cutoffs are found once, on the reversed string.
_BARE_CHARREF = re.compile(r"&#(?![0-9]|[xX][0-9a-fA-F])")
_RISKY = re.compile(r"<!--|<!\[([a-zA-Z][-_.a-zA-Z0-9]*)")
_COMMENT_END = re.compile(r">\s*--")  # reversed "--\s*>"
_MS_END = re.compile(r">\s*\]")  # reversed "]\s*>"
_SECTION_END = re.compile(r">\s*\]\s*\]")  # reversed "]\s*]\s*>"
_UNKNOWN_SECTION = re.compile(
    r"<!\[(?!(?:temp|cdata|ignore|include|rcdata|if|else|endif)(?![-_.a-zA-Z0-9]))",
    re.IGNORECASE,
)
_MS_SECTIONS = frozenset({"if", "else", "endif"})
_SECTIONS = frozenset({"temp", "cdata", "ignore", "include", "rcdata"})


def defuse(html: str) -> str:
    """Escape what html.parser would rescan to the end: the result parses in linear time.

    Also, ``<![`` that opens no known marked section becomes a bogus comment (as in browsers)
    instead of making html.parser raise (bs4 would reject the whole document).
    """
    html = _UNKNOWN_SECTION.sub("<! [", _BARE_CHARREF.sub("&amp;#", html))
    last_gt = html.rfind(">") + 1
    backwards = html[::-1]

    def after(pattern: re.Pattern[str]) -> int:
        match = pattern.search(backwards)
        return len(html) - match.start() if match else 0

    comment, ms_section, section = after(_COMMENT_END), after(_MS_END), after(_SECTION_END)
    low = min(comment, ms_section, section, last_gt)

    def escape(match: re.Match[str]) -> str:
        start = low + match.start()
        name = (match.group(1) or "").lower()
        if match.group(0) == "<!--":
            done = start >= comment
        elif name in _MS_SECTIONS:
            done = start >= ms_section
        else:
            done = name in _SECTIONS and start >= section
        return "&lt;" + match.group(0)[1:] if done else match.group(0)

    middle = _RISKY.sub(escape, html[low:last_gt])
    return html[:low] + middle + html[last_gt:].replace("<", "&lt;")


def _style_text(html: str) -> str:
    """The contents of the ``<style>`` elements (a linear scan of the source, no tree walk)."""
    out: list[str] = []
    pos = 0
    while (start := _STYLE_OPEN.search(html, pos)) and len(out) < 50:
        body = html.find(">", start.end())
        end = _STYLE_CLOSE.search(html, body) if body >= 0 else None
        if end is None:
            break
        out.append(html[body + 1 : end.start()])
        pos = end.end()
    return " ".join(out)


def sheet_hidden(css: str) -> frozenset[str]:
    """Class and id names that a style sheet's top-level rules hide (``.preheader{display:none}``).

    Rules inside ``@media`` and other blocks hide only on some screens and are ignored."""
    names: set[str] = set()
    depth = 0
    start = 0  # where the current top-level selector (or block) begins
    open_at = 0
    for match in re.finditer(r"[{}]", css):
        if match.group() == "{":
            if depth == 0:
                open_at = match.start()
            depth += 1
            continue
        if depth == 0:
            continue
        depth -= 1
        if depth:
            continue
        selectors, body = css[start:open_at], css[open_at + 1 : match.start()]
        start = match.end()
        if "{" in body or not hides(body.translate(_DELETE_SPACES).lower()):
            continue
        for selector in selectors.split(","):
            parts = selector.split()
            names.update(n.lower() for n in re.findall(r"[.#]([\w-]+)", parts[-1] if parts else ""))
    return frozenset(names)


def _sheet_hides(tag: Any, names: frozenset[str]) -> bool:
    return bool(names) and any(n in names for n in classes_of(tag).lower().split())


def _meta_image(soup: Any) -> str | None:
    for key, value in (("property", "og:image"), ("name", "og:image"),
                       ("property", "og:image:url"), ("name", "twitter:image")):
        tag = soup.find("meta", attrs={key: value})
        content = tag.get("content") if tag is not None else None
        if isinstance(content, str) and content.strip().lower().startswith(("http://", "https://")):
            return content.strip()
    return None


def _walk(doc: HtmlDoc) -> None:
    from bs4 import NavigableString, Tag

    line: list[str] = []
    position = 0
    waiting: list[tuple[Link, int]] = []  # links closed in this line, by line parts before them
    anchors: list[_Anchor] = []  # the open <a> elements, innermost last
    stack: list[tuple[Any, Any]] = [(iter(doc.soup.contents), None)]

    def flush() -> None:
        nonlocal position
        text = collapse("".join(line))
        for link, at in waiting:
            link.after = _head(line, at)
        waiting.clear()
        line.clear()
        if text:
            doc.blocks.append(text)
            position += len(text) + 1

    while stack:
        node = next(stack[-1][0], None)
        if node is None:
            closing = stack.pop()[1]
            if closing is None:
                continue
            if closing.name == "a" and anchors and anchors[-1].tag is closing:
                anchor = anchors.pop()
                href = closing.get("href")
                if isinstance(href, str) and href.strip():
                    text = collapse(" ".join(anchor.parts))
                    doc.links.append(Link(href.strip(), text, anchor.before, anchor.position))
                    waiting.append((doc.links[-1], len(line)))
            if closing.name in _BLOCK:
                flush()
            continue
        if type(node) is NavigableString:
            line.append(str(node))
            for anchor in anchors:
                anchor.add(str(node))
            continue
        if not isinstance(node, Tag) or node.name in _SKIP:
            continue
        hidden = is_hidden(node) or _sheet_hides(node, doc.hidden_names)
        if hidden or _PREHEADER_CLASS.search(classes_of(node)):
            if position < PREHEADER_WINDOW and (text := collapse(node.get_text(" ")[:4000])):
                doc.hidden.append((position, text))
            if hidden:
                continue  # a preheader-named table that is not hidden is read as visible
        if node.name == "img":
            _image(doc, node, position, anchors)
            continue
        if node.name in _BLOCK:
            flush()
        if node.name == "a" and len(anchors) < MAX_OPEN_LINKS:
            before = _tail(line) or (doc.blocks[-1][-80:] if doc.blocks else "")
            anchors.append(_Anchor(node, before, position))
        stack.append((iter(node.contents), node))
    flush()


@dataclass(slots=True)
class _Anchor:
    """An open <a>: its text so far (bounded), the text before it, its position."""

    tag: Any
    before: str
    position: int
    parts: list[str] = field(default_factory=list)
    size: int = 0

    def add(self, text: str) -> None:
        if self.size < MAX_LINK_TEXT:
            self.parts.append(text[: MAX_LINK_TEXT - self.size])
            self.size += len(self.parts[-1])


def _tail(line: list[str], keep: int = 80, scan: int = 4096) -> str:
    """The end of ``collapse("".join(line))``, at most ``keep`` characters, read from the last
    text pieces of the line only (it runs for every link, and a line can be long)."""
    text = "".join(piece[-scan:] for piece in line[-32:])
    return collapse(text[-scan:])[-keep:]


def _head(line: list[str], at: int, keep: int = 80, scan: int = 4096) -> str:
    """The start of ``collapse("".join(line[at:]))``, at most ``keep`` characters, read from the
    first text pieces only (it runs for every link of the line)."""
    text = "".join(piece[:scan] for piece in line[at : at + 32])
    return collapse(text[:scan])[:keep]


def _image(doc: HtmlDoc, node: Any, position: int, anchors: list[_Anchor]) -> None:
    src = node.get("src")
    alt = node.get("alt")
    alt = collapse(alt) if isinstance(alt, str) else ""
    if alt:
        for anchor in anchors:
            anchor.add(f" {alt} ")
    if not isinstance(src, str) or not src.strip():
        return
    doc.images.append(
        Image(
            src=src.strip(),
            width=dimension(node, "width"),
            height=dimension(node, "height"),
            alt=alt,
            hints=f"{classes_of(node)} {alt}".lower(),
            position=position,
            linked=bool(anchors),
        )
    )


def fallback_text(html: str) -> str:
    """Tag-stripping text extraction for when the HTML cannot be walked."""
    import html as html_lib

    body = _drop_raw_blocks(html[:MAX_HTML_CHARS])
    # a "<" after the last ">" starts no tag: leaving that tail out of the tag patterns keeps
    # them linear (each "<" there would otherwise be scanned to the end)
    end = body.rfind(">") + 1
    tags, tail = body[:end], body[end:]
    tags = re.sub(r"(?i)<(br|/p|/div|/tr|/li|/h\d)\b[^>]*>", "\n", tags)
    body = html_lib.unescape(re.sub(r"<[^>]*>", " ", tags) + tail)
    return "\n".join(t for line in body.splitlines() if (t := collapse(line)))


_RAW_OPEN = re.compile(r"<(script|style|head)\b", re.IGNORECASE)


def _drop_raw_blocks(html: str) -> str:
    """Replace ``<script|style|head ...>...</name>`` by a space, in one pass.

    Each element ends at the first ``</name>`` after it; an element that is never closed is
    kept. The next closing tag of each name is remembered, so no search is repeated.
    """
    out: list[str] = []
    pos = 0
    closes: dict[str, re.Match[str] | None] = {}
    for match in _RAW_OPEN.finditer(html):
        if match.start() < pos:
            continue  # inside a block already dropped
        name = match.group(1).lower()
        close = closes.get(name, match)
        if close is not None and close.start() < match.end():
            close = re.compile(rf"</{name}\s*>", re.IGNORECASE).search(html, match.end())
            closes[name] = close
        if close is None:
            continue  # never closed, nor is any later one of this name
        out.append(html[pos : match.start()])
        out.append(" ")
        pos = close.end()
    out.append(html[pos:])
    return "".join(out)
