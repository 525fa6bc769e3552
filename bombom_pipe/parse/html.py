"""Read an HTML body once into one Lexbor tree: visible text, links, images, and what is hidden.

Lexbor (through selectolax) is a C parser that follows the HTML5 parsing algorithm, as browsers
and nh3 (html5ever) do, so the text, the preview and the display HTML (``sanitize``) all come
from the tree a browser would build. The walk is iterative (no recursion on deep markup) and
skips non-rendered content: scripts, styles, the head, and what ``visibility`` says is not
drawn; those hidden elements and the images no one sees are kept aside for the display HTML.
Hidden text near the top, and the text of preheader-named elements, is kept aside as preheader
candidates.

Every step is linear in the input: a bounded prefix is parsed (MAX_HTML_CHARS, MAX_MARKUP),
nesting is capped before the parser (RAW_DEPTH: an HTML5 tree builder searches the stack of
open elements for some tags), and no pattern backtracks over a long run
(tests/test_parse_adversarial.py).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from . import visibility
from .images import is_tracking_image

MAX_HTML_CHARS = 3_000_000  # larger bodies are analysed on this prefix only
# "<" and "&" parsed (each may be a node the walk visits in Python); corpus maximum ~8000
MAX_MARKUP = 50_000
MAX_OPEN_LINKS = 8  # nested <a> elements whose text is collected (HTML allows none)
MAX_LINK_TEXT = 2000  # characters of link text collected per <a>
PREHEADER_WINDOW = 400  # visible characters before which hidden text counts as a preheader
BEFORE_CHARS = 200  # text kept before a link: the sentence it ends ("If you no longer ... here")
MAX_DEPTH = 200  # deeper markup is flattened to its text in the display HTML
RAW_DEPTH = 256  # cap on the raw markup's nesting, before the tree is built
MAX_STYLE_ELEMENTS = 50

_SKIP = frozenset({"script", "style", "head", "title", "noscript", "template", "xml", "meta",
                   "link", "object", "embed", "applet", "iframe", "svg", "math", "button",
                   "select", "option", "textarea"})
_BLOCK = frozenset({"p", "div", "br", "tr", "td", "th", "li", "ul", "ol", "h1", "h2", "h3",
                    "h4", "h5", "h6", "table", "tbody", "thead", "tfoot", "blockquote",
                    "section", "article", "header", "footer", "nav", "aside", "hr", "center",
                    "pre", "dl", "dt", "dd", "figure", "figcaption", "main", "address", "form",
                    "caption", "body", "html"})
_PREHEADER_CLASS = re.compile(r"pre-?header|preview-?text|mcnpreviewtext|preview_text|preheader",
                              re.IGNORECASE)
# zero-width and padding characters newsletters use to pad preheaders
_INVISIBLE = re.compile("[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f"
                        "\u202a-\u202e\u2060-\u2064\u206a-\u206f\u3164\ufeff\uffa0]")
_SPACES = re.compile(r"\s+")


CHUNK = 1 << 16
_NOT_SPACE = re.compile(r"\S")


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

    tree: Any  # selectolax LexborHTMLParser
    blocks: list[str] = field(default_factory=list)
    hidden: list[tuple[int, str]] = field(default_factory=list)  # (position, text) near the top
    links: list[Link] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)
    og_image: str | None = None
    title: str = ""  # the <title>
    alts: list[str] = field(default_factory=list)  # alt texts of shown images and map areas
    truncated: bool = False
    # for the display HTML: hidden elements and unseen images to drop, elements past
    # MAX_DEPTH to flatten, and the image sources that are seen
    dropped: list[Any] = field(default_factory=list)
    deep: list[Any] = field(default_factory=list)
    shown_images: set[str] = field(default_factory=set)

    @property
    def text(self) -> str:
        return "\n".join(self.blocks)


def load(html: str) -> HtmlDoc:
    """Parse and walk an HTML body (a prefix: MAX_HTML_CHARS, MAX_MARKUP)."""
    from selectolax.lexbor import LexborHTMLParser

    prefix = analysed_prefix(html)
    tree = LexborHTMLParser(cap_depth(prefix))
    doc = HtmlDoc(tree=tree, truncated=len(prefix) < len(html))
    styles = tree.css("style")[:MAX_STYLE_ELEMENTS]
    sheet = visibility.sheet(" ".join(node.text() for node in styles))
    _walk(doc, sheet)
    doc.og_image = _meta_image(tree)
    title = tree.css_first("title")
    doc.title = collapse(title.text()[:1000]) if title is not None else ""
    return doc


_MARKUP = re.compile(r"[<&]")


def analysed_prefix(html: str) -> str:
    """The part of the body that is parsed: bounded in characters and in markup."""
    html = html[:MAX_HTML_CHARS]
    if html.count("<") + html.count("&") > MAX_MARKUP:
        beyond = next(itertools.islice(_MARKUP.finditer(html), MAX_MARKUP, None))
        html = html[: beyond.start()]
    return html


_RAW_TAG = re.compile(r"<(/?[a-zA-Z][a-zA-Z0-9]*)")
_RAW_VOID = frozenset({"img", "br", "hr", "col", "wbr", "meta", "link", "input", "area", "base",
                       "embed", "param", "source", "track", "keygen", "image"})
_RAW_SCOPE = frozenset({"table", "td", "th", "caption", "html", "template", "object", "applet",
                        "marquee", "svg", "math"})
_RAW_SELF_CLOSING = frozenset({"p", "li", "td", "th", "tr", "dt", "dd", "option"})


def cap_depth(html: str) -> str:
    """Drop start tags nested deeper than RAW_DEPTH, by a linear over-estimate of the tree
    builder's depth (an HTML5 tree builder is quadratic on very deep trees: it searches the
    stack of open elements). Only for speed: every decision is taken on the parsed tree."""
    if html.count("<") <= RAW_DEPTH:
        return html
    stack: list[str] = []
    if not any(_nest(stack, name.lower()) and len(stack) > RAW_DEPTH
               for name in _RAW_TAG.findall(html)):
        return html  # the usual case, found without match objects
    stack.clear()
    out: list[str] = []
    position = 0
    for match in _RAW_TAG.finditer(html):
        if _nest(stack, match.group(1).lower()) and len(stack) > RAW_DEPTH:
            stack.pop()
            out.append(html[position:match.start()])
            position = html.find(">", match.end()) + 1 or len(html)
    if not out:
        return html
    out.append(html[position:])
    return "".join(out)


def _nest(stack: list[str], name: str) -> bool:
    """Apply one tag (``div``, ``/div``) to the estimated stack; True when it was pushed."""
    if name[0] == "/":
        name = name[1:]
        if stack and stack[-1] == name:
            stack.pop()
            return False
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] == name:
                del stack[i:]
                break
            if stack[i] in _RAW_SCOPE:
                break
        return False
    if name in _RAW_VOID:
        return False
    if name in _RAW_SELF_CLOSING and name in stack[-8:]:
        del stack[len(stack) - 1 - stack[::-1].index(name):]
    stack.append(name)
    return True


def _meta_image(tree: Any) -> str | None:
    metas = [node.attributes for node in tree.css("meta[content]")[:200]]
    for key, value in (("property", "og:image"), ("name", "og:image"),
                       ("property", "og:image:url"), ("name", "twitter:image")):
        for attributes in metas:
            if (attributes.get(key) or "").lower() != value:
                continue
            content = (attributes.get("content") or "").strip()
            if content.lower().startswith(("http://", "https://")):
                return content
    return None


def _walk(doc: HtmlDoc, sheet: visibility.Sheet) -> None:
    """One pass in document order: text blocks, links, images, hidden text near the top, and
    what the display HTML drops."""
    line: list[str] = []
    position = 0
    waiting: list[tuple[Link, int]] = []  # links closed in this line, by line parts before them
    anchors: list[_Anchor] = []  # the open <a> elements, innermost last
    # the open elements: (element, its tag, whether its parent is in a tiny box, opened an anchor)
    stack: list[tuple[Any, str, bool, bool]] = []
    in_tiny = False
    seen: dict[tuple, visibility.Box] = {}

    def flush() -> None:
        nonlocal position
        if not line and not waiting:
            return  # nested blocks end together: most flushes find nothing
        text = collapse("".join(line))
        for link, at in waiting:
            link.after = _head(line, at)
        waiting.clear()
        line.clear()
        if text:
            doc.blocks.append(text)
            position += len(text) + 1

    node = doc.tree.root
    while True:
        if node is None:
            if not stack:
                break
            element, tag, in_tiny, anchored = stack.pop()
            if anchored:
                anchor = anchors.pop()
                href = anchor.href
                if href:
                    text = collapse(" ".join(anchor.parts))
                    doc.links.append(Link(href, text, anchor.before, anchor.position))
                    waiting.append((doc.links[-1], len(line)))
            if tag in _BLOCK:
                flush()
            node = element.next
            continue
        tag = node.tag
        if tag == "-text":
            text = node.text_content
            if text:
                line.append(text)
                for anchor in anchors:
                    anchor.add(text)
            node = node.next
            continue
        if tag[0] in "-_!#" or tag in _SKIP:
            node = node.next
            continue
        attributes = node.attributes
        judged = visibility.box(tag, attributes, sheet, seen) if attributes else visibility.DRAWN
        if tag == "img":
            _image(doc, node, attributes, judged, in_tiny, position, anchors)
            node = node.next
            continue
        if tag == "area":  # a link area of an image map: its alt text is its link text
            alt = "" if judged.hidden else collapse(attributes.get("alt") or "")
            if alt:
                doc.alts.append(alt)
            if href := (attributes.get("href") or "").strip():
                before = _tail(line, BEFORE_CHARS) or (doc.blocks[-1][-BEFORE_CHARS:] if doc.blocks
                                                         else "")
                doc.links.append(Link(href, alt, before, position))
            node = node.next
            continue
        hidden = judged.hidden
        if hidden or ("class" in attributes or "id" in attributes) and _PREHEADER_CLASS.search(
                _names(attributes)):
            if position < PREHEADER_WINDOW and (
                    text := collapse(node.text(deep=True, separator=" ")[:4000])):
                doc.hidden.append((position, text))
            if hidden:  # a preheader-named table that is not hidden is read as visible
                doc.dropped.append(node)
                node = node.next
                continue
        if tag in _BLOCK:
            flush()
        anchored = tag == "a" and len(anchors) < MAX_OPEN_LINKS
        if anchored:
            before = _tail(line, BEFORE_CHARS) or (doc.blocks[-1][-BEFORE_CHARS:] if doc.blocks
                                                         else "")
            anchors.append(_Anchor((attributes.get("href") or "").strip(), before, position))
        if len(stack) == MAX_DEPTH:
            doc.deep.append(node)
        stack.append((node, tag, in_tiny, anchored))
        in_tiny = in_tiny or judged.tiny
        node = node.child
    flush()


def _names(attributes: dict[str, str | None]) -> str:
    """Class and id attribute text, for name-based heuristics."""
    return f"{attributes.get('class') or ''} {attributes.get('id') or ''}".strip()


def _image(doc: HtmlDoc, node: Any, attributes: dict[str, str | None],
           judged: visibility.Box, in_tiny: bool, position: int,
           anchors: list[_Anchor]) -> None:
    src = (attributes.get("src") or "").strip()
    css = judged.css
    width = _dimension(attributes, css, "width")
    height = _dimension(attributes, css, "height")
    if visibility.image_hidden(attributes, judged, in_tiny) or src and is_tracking_image(
            src, *(None if (v := visibility.size(attributes, css, n)) is None else int(v)
                   for n in ("width", "height"))):
        doc.dropped.append(node)
        return
    alt = collapse(attributes.get("alt") or "")
    if alt:
        for anchor in anchors:
            anchor.add(f" {alt} ")
    if not src:
        return
    if alt:
        doc.alts.append(alt)
    doc.shown_images.add(attributes.get("src") or "")
    doc.images.append(Image(src=src, width=width, height=height, alt=alt,
                            hints=f"{_names(attributes)} {alt}".lower(), position=position,
                            linked=bool(anchors)))


def _dimension(attributes: dict[str, str | None], css: visibility.Declarations, name: str
               ) -> int | None:
    """Declared width/height in px: the attribute, else the inline or sheet CSS."""
    read = visibility.attribute_length(attributes.get(name))
    if read is not None:
        return None if read[1] else int(read[0])
    found = css.get(name)
    length = visibility.css_length(found[0]) if found else None
    return int(length) if length is not None else None


@dataclass(slots=True)
class _Anchor:
    """An open <a>: its href, its text so far (bounded), the text before it, its position."""

    href: str
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
