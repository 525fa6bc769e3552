"""Display HTML: the body made safe for the app with nh3.

nh3 binds the Rust ammonia sanitizer: an allowlist (tags, attributes, URL schemes, CSS
properties) rather than a blocklist, fast on 200 KB newsletters, and maintained. Scripts, event
handlers, ``javascript:``/``data:`` URLs, forms, iframes, objects and ``<style>`` blocks go;
inline ``style`` stays but only with layout/typography properties (no ``position``, no
``url()``). Tracking pixels are dropped and ``cid:`` images point at ``/attachments/<sha256>``.
Output is deterministic: the same input always gives byte-identical HTML.
"""

from __future__ import annotations

import html as html_lib
import re
from typing import Any
from urllib.parse import unquote

from .html import HtmlDoc, dimension, is_hidden

MAX_DEPTH = 200  # deeper markup is flattened (html5ever is quadratic on very deep trees)

TAGS = frozenset({
    "a", "abbr", "b", "bdi", "bdo", "blockquote", "br", "caption", "center", "cite", "code",
    "col", "colgroup", "dd", "del", "details", "dfn", "div", "dl", "dt", "em", "figcaption",
    "figure", "font", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "i", "img",
    "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s", "small", "span", "strike", "strong",
    "sub", "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "time", "tr", "tt",
    "u", "ul", "wbr", "article", "section", "aside", "nav", "main",
})
_COMMON = {"style", "dir", "lang", "title", "align", "valign", "width", "height", "bgcolor"}
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
URL_SCHEMES = frozenset({"http", "https", "mailto", "tel"})

_BAD_CSS_VALUE = re.compile(r"url\s*\(|expression\s*\(|javascript:|behavior|-moz-binding|@import"
                            r"|\\", re.IGNORECASE)


def display_html(doc: HtmlDoc, cid_map: dict[str, str]) -> str:
    """Sanitize the analysed body (mutates ``doc.soup``; run it after the other heuristics)."""
    from .newsletter import is_tracking_image

    soup = doc.soup
    changed = False
    for img in soup.find_all("img"):
        src = img.get("src")
        src = src.strip() if isinstance(src, str) else ""
        if is_hidden(img) or is_tracking_image(src, dimension(img, "width"),
                                               dimension(img, "height")):
            img.decompose()
            changed = True
        elif src.lower().startswith("cid:"):
            cid = unquote(src[4:]).strip("<>")
            img["src"] = cid_map.get(cid) or cid_map.get(cid.lower()) or ""
            changed = True
    for tag in soup.find_all(style=True):
        style = _safe_style(tag["style"])
        if style != tag["style"]:
            tag["style"] = style
            changed = True
    changed = _flatten_deep(soup) or changed
    # re-serializing a large soup is slow: feed nh3 the source when nothing was rewritten
    return _clean(str(soup) if changed or doc.truncated else doc.source)


def clean_fragment(html: str, cid_map: dict[str, str]) -> str:
    """Sanitize raw HTML when the analysis walk failed (no pixel removal)."""
    def rewrite(match: re.Match[str]) -> str:
        cid = unquote(match.group(2)).strip("<>")
        return match.group(1) + (cid_map.get(cid) or cid_map.get(cid.lower()) or "")

    html = re.sub(r"""(src\s*=\s*["']?)cid:([^"'\s>]*)""", rewrite, html, flags=re.IGNORECASE)
    return _clean(html)


def plain_to_html(text: str) -> str:
    """A plain-text body as escaped, whitespace-preserving HTML."""
    return f'<div style="white-space:pre-wrap">{html_lib.escape(text.strip())}</div>'


def _safe_style(style: Any) -> str:
    if isinstance(style, list):
        style = " ".join(style)
    if not isinstance(style, str):
        return ""
    if not _BAD_CSS_VALUE.search(style):
        return style
    kept = [d for d in style.split(";") if d.strip() and not _BAD_CSS_VALUE.search(d)]
    return ";".join(d.strip() for d in kept)


def _flatten_deep(soup: Any) -> bool:
    """Replace the content of elements at MAX_DEPTH by their text (markup below is dropped)."""
    from bs4 import NavigableString, Tag

    boundary: list[Any] = []
    stack: list[tuple[Any, int]] = [(soup, 0)]
    while stack:
        node, depth = stack.pop()
        if depth == MAX_DEPTH:
            if any(isinstance(child, Tag) for child in node.contents):
                boundary.append(node)
            continue
        stack.extend((child, depth + 1) for child in node.contents if isinstance(child, Tag))
    for tag in boundary:
        text = tag.get_text()
        tag.clear()
        tag.append(NavigableString(text))
    return bool(boundary)


def _clean(html: str) -> str:
    import nh3

    return nh3.clean(
        html,
        tags=set(TAGS),
        attributes={k: set(v) for k, v in ATTRIBUTES.items()},
        url_schemes=set(URL_SCHEMES),
        clean_content_tags=set(CONTENT_DROPPED),
        strip_comments=True,
        link_rel="noopener noreferrer nofollow",
        filter_style_properties=set(STYLE_PROPERTIES),
    )
