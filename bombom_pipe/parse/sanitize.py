"""Display HTML: the body made safe for the app with nh3, deciding on the DOM nh3 serializes.

nh3 binds the Rust ammonia sanitizer (html5ever, the HTML5 parsing algorithm browsers use): an
allowlist of tags, attributes, URL schemes and CSS properties. Three steps, all on nh3's view:

1. ``nh3.clean`` with ``attribute_filter`` deciding every attribute: ``href``/``src`` must be
   public http(s) URLs (``urls``), ``cid:`` images become ``/attachments/<sha256>``, any other
   relative URL goes; inline CSS keeps allowlisted properties whose values fetch nothing
   (no ``url()``/``image-set()``, no function but colours) and cannot cover the page (no
   viewport units, no negative margins, no percentage heights; ``position`` is not allowed).
2. A linear scan of that (balanced, escaped) output drops hidden subtrees (``display:none``,
   ``visibility:hidden``, ``opacity:0``, zero-size with ``overflow:hidden``, ``hidden``) with
   everything in them, tracking images (``images.is_tracking_image``: 0-2 px, beacon URL
   shapes and hosts; or inside a box of at most 2 px), and depth past MAX_DEPTH. (``<details>``
   is not kept: closed, it hides what it holds.)
3. ``nh3.clean`` again with the same filter, where an image may keep only a ``src`` that step 2
   approved: a reparse can never bring back a pixel.

Before step 1 a cheap scan of the raw markup caps nesting (html5ever is quadratic on very deep
trees). Output is deterministic: the same input always gives byte-identical HTML.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Callable

from . import urls
from .attachments import inline_url
from .html import analysed_prefix
from .images import is_tracking_image

MAX_DEPTH = 200  # deeper markup is flattened to its text
RAW_DEPTH = 256  # cap on the raw markup's nesting, before nh3 parses it

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
VOID = frozenset({"img", "br", "hr", "col", "wbr"})
TINY_TABLE, TINY_BOX = 1, 2  # an ancestor declares at most 2 px: a table part, another box
TABLE_PARTS = frozenset({"table", "tbody", "thead", "tfoot", "tr", "td", "th", "caption",
                         "colgroup"})
QUOTED_PROPERTIES = frozenset({"font", "font-family"})
NO_PERCENT = frozenset({"height", "min-height"})  # follows the viewport through 100% chains
SIZES = frozenset({"width", "height", "min-width", "min-height", "max-width", "max-height"})

_DECLARATION = re.compile(r"""(?:[^;"']|"[^"]*"|'[^']*')+""")
_COLOUR_FUNCTION = re.compile(r"\b(?:rgba?|hsla?)\(", re.IGNORECASE)
_VIEWPORT_UNIT = re.compile(r"\d\s*[sld]?v(?:w|h|i|b|min|max)\b", re.IGNORECASE)
_FONT_UNIT = re.compile(r"\d\s*(?:r?em|ex|ch|r?lh|cap|ic)\b", re.IGNORECASE)
_NEGATIVE = re.compile(r"(?:^|[\s,(])-\s*\.?\d")
_RAW_TAG = re.compile(r"<(/?)([a-zA-Z][^\s/>]*)[^>]*>?")
_OUT_TAG = re.compile(r"<(/?)([a-z][a-z0-9]*)([^>]*)>")
_OUT_ATTR = re.compile(r'([^\s=]+)="([^"]*)"')
_PX = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*(?:px)?\s*$")
_ZERO = re.compile(r"^-?(?:0+\.?0*|\.0+)(?:px|em|rem|%|pt)?$")
_RAW_VOID = frozenset({"img", "br", "hr", "col", "wbr", "meta", "link", "input", "area", "base",
                       "embed", "param", "source", "track", "keygen", "image"})
_RAW_SCOPE = frozenset({"table", "td", "th", "caption", "html", "template", "object", "applet",
                        "marquee", "svg", "math"})
_RAW_SELF_CLOSING = frozenset({"p", "li", "td", "th", "tr", "dt", "dd", "option"})


def clean_fragment(html: str, cid_map: dict[str, str]) -> str:
    """An HTML body made safe for display."""
    source = _cap_raw_depth(analysed_prefix(html))  # bounded in characters and markup
    first = _clean(source, _attribute_filter(cid_map, None))
    kept, approved = _drop_hidden_and_pixels(first)
    return _clean(kept, _attribute_filter(cid_map, approved))


def plain_to_html(text: str) -> str:
    """A plain-text body as escaped, whitespace-preserving HTML."""
    return f'<div style="white-space:pre-wrap">{html_lib.escape(text.strip())}</div>'


def safe_style(style: str) -> str:
    """The declarations of an inline style that neither fetch anything nor escape the box."""
    if "\\" in style or "/*" in style or "*/" in style:
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
    return not (name in NO_PERCENT and "%" in value)


def _attribute_filter(cid_map: dict[str, str], approved: set[str] | None
                      ) -> Callable[[str, str, str], str | None]:
    """nh3's per-attribute decision; with ``approved``, images keep only those sources."""

    def decide(tag: str, attribute: str, value: str) -> str | None:
        try:
            return _decide(tag, attribute, value)
        except Exception:  # noqa: BLE001 - nh3 would print it to stderr; drop the attribute
            return None

    def _decide(tag: str, attribute: str, value: str) -> str | None:
        if attribute == "style":
            return safe_style(value) or None
        if attribute == "href":
            return urls.link_url(value)
        if attribute == "cite":
            return urls.public_url(value)
        if attribute == "src":
            if value.lower().startswith("cid:"):
                value = inline_url(cid_map, value) or ""
            src = urls.stored_url(value)
            return src if approved is None or src in approved else None
        if attribute == "target":
            return "_blank" if value.strip().lower() == "_blank" else None
        if attribute in NO_PERCENT and "%" in value:
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


def _declarations(style: str) -> dict[str, str]:
    found = {}
    for match in _DECLARATION.finditer(style):
        name, _, value = match.group(0).partition(":")
        value = re.sub(r"!\s*important", "", value).strip().lower()
        found[name.strip().lower()] = re.sub(r"\s+", " ", value)
    return found


def _hidden(attributes: dict[str, str], css: dict[str, str]) -> bool:
    if "hidden" in attributes:
        return True
    if css.get("display") == "none" or css.get("visibility") in ("hidden", "collapse"):
        return True
    opacity = re.fullmatch(r"(\d*\.?\d+)(%?)", css.get("opacity", "1"))
    if opacity and float(opacity.group(1)) / (100 if opacity.group(2) else 1) < 0.05:
        return True
    clipped = css.get("overflow", "").startswith(("hidden", "clip"))
    return clipped and _tiny(attributes, css)


def _tiny(attributes: dict[str, str], css: dict[str, str]) -> bool:
    """A declared width or height of at most 2 px (or 1 %, or 0 in any unit)."""
    values = [attributes.get("width", ""), attributes.get("height", ""), css.get("width", ""),
              css.get("height", ""), css.get("max-width", ""), css.get("max-height", "")]
    for value in values:
        if _ZERO.match(value):
            return True
        if (match := _PX.match(value)) and float(match.group(1)) <= 2:
            return True
        if (match := re.fullmatch(r"\s*(\d*\.?\d+)\s*%\s*", value)) and float(match.group(1)) <= 1:
            return True
    return False


def _size(attributes: dict[str, str], css: dict[str, str], name: str) -> float | None:
    sizes = [attributes.get(name, ""), css.get(name, ""), css.get(f"max-{name}", "")]
    numbers = [float(m.group(1)) for s in sizes if (m := _PX.match(s))]
    return min(numbers) if numbers else None


def _image_shown(src: str, attributes: dict[str, str], css: dict[str, str], inside: int) -> bool:
    """False for pixels and for images that a hidden or tiny container keeps out of sight."""
    if inside == TINY_BOX or _hidden(attributes, css) or _tiny(attributes, css):
        return False
    sizes = [attributes.get("width", ""), attributes.get("height", ""),
             *(value for key, value in css.items() if key in SIZES)]
    # a tiny table grows to fit its content, except content sized in percent of it
    if inside == TINY_TABLE and any("%" in size for size in sizes):
        return False
    width, height = _size(attributes, css, "width"), _size(attributes, css, "height")
    return not is_tracking_image(src, width, height)


def _drop_hidden_and_pixels(html: str) -> tuple[str, set[str]]:
    """Step 2 on nh3's serialization: drop hidden subtrees, pixels and deep markup.

    nh3's output is balanced (every non-void element closed) and escapes ``<``/``>``/``"``
    in text and attribute values, so every ``<`` starts a tag and the scan sees nh3's tree.
    Images inside a tiny box (at most 2 px) go too: it would shrink them out of sight.
    """
    out: list[str] = []
    approved: set[str] = set()
    tiny: list[int] = []  # per open element: TINY_BOX, TINY_TABLE or 0
    hidden_at: int | None = None  # depth of the hidden element being skipped
    position = 0
    for match in _OUT_TAG.finditer(html):
        if hidden_at is None:
            out.append(html[position:match.start()])
        position = match.end()
        closing, name = match.group(1), match.group(2)
        if closing:
            if tiny:  # always, as nh3 balances its output
                tiny.pop()
            if hidden_at is not None:
                if len(tiny) == hidden_at:
                    hidden_at = None
            elif len(tiny) < MAX_DEPTH:
                out.append(match.group(0))
            continue
        if hidden_at is not None:
            if name not in VOID:
                tiny.append(TINY_BOX)
            continue
        attributes = {k: html_lib.unescape(v) for k, v in _OUT_ATTR.findall(match.group(3))}
        css = _declarations(attributes.get("style", ""))
        if name not in VOID and _hidden(attributes, css):
            hidden_at = len(tiny)
            tiny.append(TINY_BOX)
            continue
        if name == "img":
            src = attributes.get("src", "")
            if src and not _image_shown(src, attributes, css, tiny[-1] if tiny else 0):
                continue
            if src:
                approved.add(src)
        if len(tiny) < MAX_DEPTH:
            out.append(match.group(0))
        if name not in VOID:
            small = _tiny(attributes, css) and (TINY_TABLE if name in TABLE_PARTS else TINY_BOX)
            tiny.append(max(tiny[-1] if tiny else 0, small))
    if hidden_at is None:
        out.append(html[position:])
    return "".join(out), approved


def _cap_raw_depth(html: str) -> str:
    """Drop tags nested deeper than RAW_DEPTH, by a linear over-estimate of html5ever's depth.

    Only for speed: every safety decision is taken on nh3's own tree afterwards.
    """
    if html.count("<") <= RAW_DEPTH:
        return html
    stack: list[str] = []
    out: list[str] = []
    position = 0
    for match in _RAW_TAG.finditer(html):
        name = match.group(2).lower()
        if match.group(1):
            for i in range(len(stack) - 1, -1, -1):
                if stack[i] == name:
                    del stack[i:]
                    break
                if stack[i] in _RAW_SCOPE:
                    break
            continue
        if name in _RAW_VOID:
            continue
        if name in _RAW_SELF_CLOSING:
            for i in range(len(stack) - 1, max(len(stack) - 8, 0) - 1, -1):
                if stack[i] == name:
                    del stack[i:]
                    break
        if len(stack) >= RAW_DEPTH:
            out.append(html[position:match.start()])
            position = match.end()
            continue
        stack.append(name)
    out.append(html[position:])
    return "".join(out)
