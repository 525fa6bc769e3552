"""Read an HTML body once with BeautifulSoup (html.parser): visible text, links, images.

The walk is iterative (no recursion on deep markup) and skips non-rendered content: scripts,
styles, the head, and hidden elements (``display:none``, ``max-height:0``, ``opacity:0``,
``mso-hide:all``, classes a ``<style>`` sheet hides). Hidden text near the top, and the text
of preheader-named elements, is kept aside as preheader candidates. bs4 is imported lazily.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

MAX_HTML_CHARS = 3_000_000  # larger bodies are analysed on this prefix only
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
    r"|(?:^|;)(?:max-)?height:0(?:px)?(?:;|$).*overflow:hidden"
    r"|overflow:hidden.*(?:^|;)(?:max-)?height:0(?:px)?(?:;|$)"
)
_PREHEADER_CLASS = re.compile(r"pre-?header|preview-?text|mcnpreviewtext|preview_text|preheader",
                              re.IGNORECASE)
# zero-width and padding characters newsletters use to pad preheaders
_INVISIBLE = re.compile("[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f"
                        "\u202a-\u202e\u2060-\u2064\u206a-\u206f\u3164\ufeff\uffa0]")
_SPACES = re.compile(r"\s+")
_STYLE_OPEN = re.compile(r"<style\b", re.IGNORECASE)
_STYLE_CLOSE = re.compile(r"</style", re.IGNORECASE)
_DIMENSION = re.compile(r"^\s*(\d{1,6})(?:\.\d+)?\s*(?:px)?\s*$", re.IGNORECASE)


def collapse(text: str) -> str:
    """Remove zero-width padding and collapse all whitespace (incl. NBSP) to single spaces."""
    return _SPACES.sub(" ", _INVISIBLE.sub("", text)).strip()


def style_of(tag: Any) -> str:
    """The tag's inline style, lower-case without whitespace."""
    style = tag.get("style") if hasattr(tag, "get") else None
    if isinstance(style, list):
        style = " ".join(style)
    return re.sub(r"\s+", "", style).lower() if isinstance(style, str) else ""


def is_hidden(tag: Any) -> bool:
    """True when inline style or attributes make the element invisible."""
    if tag.has_attr("hidden"):
        return True
    style = style_of(tag)
    return bool(style and _HIDDEN_STYLE.search(style))


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
    source: str = ""
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
    """Parse and walk an HTML body."""
    from bs4 import BeautifulSoup

    truncated = len(html) > MAX_HTML_CHARS
    soup = BeautifulSoup(html[:MAX_HTML_CHARS], "html.parser")
    doc = HtmlDoc(soup=soup, source=html, truncated=truncated)
    doc.hidden_names = sheet_hidden(_style_text(html[:MAX_HTML_CHARS])[:200_000])
    _walk(doc)
    doc.og_image = _meta_image(soup)
    return doc


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
        if "{" in body or not _HIDDEN_STYLE.search(re.sub(r"\s+", "", body).lower()):
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
    anchors: list[tuple[Any, list[str], str, int]] = []  # (tag, text parts, before, position)
    stack: list[tuple[Any, Any]] = [(iter(doc.soup.contents), None)]

    def flush() -> None:
        nonlocal position
        text = collapse("".join(line))
        for link, at in waiting:
            link.after = collapse("".join(line[at:]))[:80]
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
            if closing.name == "a" and anchors and anchors[-1][0] is closing:
                tag, parts, before, start = anchors.pop()
                href = tag.get("href")
                if isinstance(href, str) and href.strip():
                    doc.links.append(Link(href.strip(), collapse(" ".join(parts)), before, start))
                    waiting.append((doc.links[-1], len(line)))
            if closing.name in _BLOCK:
                flush()
            continue
        if type(node) is NavigableString:
            line.append(str(node))
            for anchor in anchors:
                anchor[1].append(str(node))
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
        if node.name == "a":
            current = collapse("".join(line))
            before = current or (doc.blocks[-1] if doc.blocks else "")
            anchors.append((node, [], before[-80:], position))
        stack.append((iter(node.contents), node))
    flush()


def _image(doc: HtmlDoc, node: Any, position: int, anchors: list) -> None:
    src = node.get("src")
    alt = node.get("alt")
    alt = collapse(alt) if isinstance(alt, str) else ""
    if alt:
        for anchor in anchors:
            anchor[1].append(f" {alt} ")
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

    body = re.sub(r"(?is)<(script|style|head)\b.*?</\1\s*>", " ", html[:MAX_HTML_CHARS])
    body = re.sub(r"(?i)<(br|/p|/div|/tr|/li|/h\d)\b[^>]*>", "\n", body)
    body = html_lib.unescape(re.sub(r"<[^>]*>", " ", body))
    return "\n".join(t for line in body.splitlines() if (t := collapse(line)))
