"""Display HTML: the body's tree without what is not seen, made safe for the app by one nh3 pass.

The tree is the one ``html.load`` built (Lexbor, the HTML5 parsing algorithm) and walked: the
elements ``visibility`` judges hidden go with everything in them, and so do the images no one
sees (hidden, at most 2 px, shrunk by a tiny box) and open-tracking pixels
(``images.is_tracking_image``); markup past MAX_DEPTH is flattened to its text. The rest is
serialized and cleaned once by nh3 (the Rust ammonia sanitizer, html5ever): an allowlist of
tags, attributes, URL schemes and CSS properties, with ``attribute_filter`` deciding every
attribute: ``href``/``src`` must be public http(s) URLs (``urls``), ``cid:`` images become
``/attachments/<sha256>``, any other relative URL goes; an image keeps only a ``src`` the walk
saw on an image it kept, so however html5ever reads the serialization, no pixel comes back;
inline CSS keeps allowlisted properties whose values fetch nothing (no ``url()``/``image-set()``,
no function but colours) and cannot cover the page (no viewport units, no negative margins, no
percentage heights, no box over MAX_BOX_PX; ``position`` is not allowed). (``<details>`` is not
kept: closed, it hides what it holds.) Output is deterministic.
"""

from __future__ import annotations

import functools
import html as html_lib
import re
from collections.abc import Callable

from . import urls, visibility
from .attachments import inline_url
from .html import MAX_DEPTH as MAX_DEPTH  # deeper markup is flattened to its text
from .html import HtmlDoc, load

MAX_BOX_PX = 2000  # a declared width or height beyond this is dropped: no article is that big

TAGS = frozenset({
    "a", "abbr", "b", "bdi", "bdo", "blockquote", "br", "caption", "center", "cite", "code",
    "col", "colgroup", "dd", "del", "dfn", "div", "dl", "dt", "em", "figcaption",
    "figure", "font", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "i", "img",
    "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s", "small", "span", "strike", "strong",
    "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "time", "tr", "tt",
    "u", "ul", "wbr", "article", "section", "aside", "nav", "main",
})
_COMMON = {"style", "dir", "lang", "title", "align", "valign", "width", "height", "bgcolor",
           "hidden"}
ATTRIBUTES: dict[str, set[str]] = {
    "*": _COMMON,
    "a": {"href", "name", "target"},
    "img": {"src", "alt", "border", "hspace", "vspace"},
    "table": {"border", "cellpadding", "cellspacing", "summary", "frame", "rules"},
    "td": {"colspan", "rowspan", "nowrap", "headers", "scope"},
    "th": {"colspan", "rowspan", "nowrap", "headers", "scope"},
    "col": {"span"}, "colgroup": {"span"},
    "font": {"color", "face", "size"},
    "ol": {"start", "type"}, "ul": {"type"}, "li": {"value"},
    "blockquote": {"cite"}, "q": {"cite"}, "del": {"cite", "datetime"},
    "ins": {"cite", "datetime"}, "time": {"datetime"}, "hr": {"size", "noshade", "color"},
}
STYLE_PROPERTIES = frozenset({
    "color", "background", "background-color", "font", "font-family", "font-size",
    "font-style", "font-weight", "font-variant", "text-align", "text-decoration",
    "text-transform", "text-indent", "letter-spacing", "line-height", "word-spacing",
    "white-space", "word-break", "word-wrap", "overflow-wrap", "vertical-align", "direction",
    "margin", "margin-top", "margin-right", "margin-bottom", "margin-left",
    "padding", "padding-top", "padding-right", "padding-bottom", "padding-left",
    "border", "border-top", "border-right", "border-bottom", "border-left", "border-color",
    "border-width", "border-style", "border-radius", "border-collapse", "border-spacing",
    "border-top-color", "border-bottom-color", "border-left-color", "border-right-color",
    "width", "height", "max-width", "min-width", "max-height", "min-height", "display",
    "visibility", "opacity", "overflow", "list-style", "list-style-type", "table-layout",
    "float", "clear", "box-sizing", "text-overflow", "mso-hide",
})
CONTENT_DROPPED = frozenset({"script", "style", "title", "noscript", "template", "iframe",
                             "object", "embed", "applet", "textarea", "select", "button",
                             "svg", "math", "frameset", "noembed", "noframes"})
URL_SCHEMES = frozenset({"http", "https", "mailto", "tel", "cid"})
QUOTED_PROPERTIES = frozenset({"font", "font-family"})
NO_PERCENT = frozenset({"height", "min-height"})  # follows the viewport through 100% chains
SIZES = frozenset({"width", "height", "min-width", "min-height", "max-width", "max-height"})

_DECLARATION = re.compile(r"""(?:[^;"']|"[^"]*"|'[^']*')+""")
_COLOUR_FUNCTION = re.compile(r"\b(?:rgba?|hsla?)\(", re.IGNORECASE)
_VIEWPORT_UNIT = re.compile(r"\d\s*[sld]?v(?:w|h|i|b|min|max)\b", re.IGNORECASE)
_FONT_UNIT = re.compile(r"\d\s*(?:r?em|ex|ch|r?lh|cap|ic)\b", re.IGNORECASE)
_NEGATIVE = re.compile(r"(?:^|[\s,(])-\s*\.?\d")


def clean_fragment(html: str, cid_map: dict[str, str]) -> str:
    """An HTML body made safe for display."""
    return display_html(load(html), cid_map)


def display_html(doc: HtmlDoc, cid_map: dict[str, str]) -> str:
    """The display HTML of a walked body. Takes the hidden parts out of ``doc.tree``."""
    for node in doc.dropped:
        node.decompose()
    doc.dropped.clear()
    root = doc.tree.body or doc.tree.root
    if root is None:
        return ""
    root.strip_tags(list(CONTENT_DROPPED))
    for node in doc.deep:  # their hidden parts and scripts are gone: only text is left
        node.replace_with(node.text(deep=True))
    doc.deep.clear()
    return _clean(root.html or "", _attribute_filter(cid_map, doc.shown_images))


def plain_to_html(text: str) -> str:
    """A plain-text body as escaped, whitespace-preserving HTML."""
    return f'<div style="white-space:pre-wrap">{html_lib.escape(text.strip())}</div>'


@functools.lru_cache(maxsize=8192)
def safe_style(style: str) -> str:
    """The declarations of an inline style that neither fetch anything nor escape the box."""
    if "\\" in style or "/*" in style or "*/" in style or len(style) > visibility.MAX_STYLE_CHARS:
        return ""
    kept = []
    for match in _DECLARATION.finditer(style):
        name, colon, value = match.group(0).partition(":")
        name = name.strip().lower()
        value = value.strip()
        if colon and value and name in STYLE_PROPERTIES and _safe_value(name, value):
            kept.append(f"{name}:{value}")
    return ";".join(kept)


def _safe_value(name: str, value: str) -> bool:
    if "(" in _COLOUR_FUNCTION.sub("", value) or any(c in value for c in "{}<>@"):
        return False
    if ('"' in value or "'" in value) and name not in QUOTED_PROPERTIES:
        return False
    if _VIEWPORT_UNIT.search(value):
        return False
    if name.startswith("margin") and _NEGATIVE.search(value):
        return False
    if name in SIZES and _FONT_UNIT.search(value):  # font-size:0 would make the box vanish
        return False
    if name in SIZES and _oversized(visibility.css_length(value)):
        return False
    return not (name in NO_PERCENT and "%" in value)


def _oversized(length: float | None) -> bool:
    return length is not None and length > MAX_BOX_PX


def _attribute_filter(cid_map: dict[str, str], shown: set[str]
                      ) -> Callable[[str, str, str], str | None]:
    """nh3's per-attribute decision; images keep only the sources in ``shown``."""

    decided: dict[tuple[str, str], str | None] = {}  # no decision depends on the tag

    def decide(tag: str, attribute: str, value: str) -> str | None:
        key = (attribute, value)
        if key in decided:
            return decided[key]
        try:
            result = _decide(tag, attribute, value)
        except Exception:  # noqa: BLE001 - nh3 would print it to stderr; drop the attribute
            result = None
        decided[key] = result
        return result

    def _decide(tag: str, attribute: str, value: str) -> str | None:
        if attribute == "style":
            return safe_style(value) or None
        if attribute == "href":
            return urls.link_url(value)
        if attribute == "cite":
            return urls.public_url(value)
        if attribute == "src":
            if value not in shown:
                return None
            if value.lower().startswith("cid:"):
                value = inline_url(cid_map, value) or ""
            return urls.stored_url(value)
        if attribute == "target":
            return "_blank" if value.strip().lower() == "_blank" else None
        if attribute in NO_PERCENT and "%" in value:
            return None
        if attribute in ("width", "height"):
            read = visibility.attribute_length(value)
            if read is not None and not read[1] and _oversized(read[0]):
                return None
        return value

    return decide


def _clean(html: str, attribute_filter: Callable[[str, str, str], str | None]) -> str:
    import nh3

    return nh3.clean(
        html,
        tags=set(TAGS),
        attributes={k: set(v) for k, v in ATTRIBUTES.items()},
        attribute_filter=attribute_filter,
        url_schemes=set(URL_SCHEMES),
        clean_content_tags=set(CONTENT_DROPPED),
        strip_comments=True,
        link_rel="noopener noreferrer nofollow",
        filter_style_properties=set(STYLE_PROPERTIES),
    )
