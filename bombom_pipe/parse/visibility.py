"""Whether an element is drawn: one model, over parsed CSS, for the text and the display HTML.

An element's declarations are those of the top-level ``<style>`` rules whose selector names its
classes or id (``.preheader``, ``td.x``, ``#top .y``; rules inside ``@media`` apply on some
screens only and are left out), overridden by its inline style (``!important`` in a sheet wins).
Declarations are read with tinycss2, a CSS Syntax tokenizer: escapes, comments, exponents and
units as a browser reads them. Lengths are in CSS px (absolute units converted); width and
height attributes are read as HTML reads dimension attributes (the leading digits: ``1;``,
``1x``, ``1e0`` are 1 px).

Hidden (the element and everything in it is not drawn): the ``hidden`` attribute,
``display:none``, ``visibility:hidden|collapse``, opacity below 0.05, and a box that clips its
overflow (``overflow:hidden|clip``) while declaring at most 2 px of width or height. What a
tiny box holds without clipping overflows it and is drawn, except images sized in percent of
it (a table part grows to fit its content, but not around those).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

TINY_PX = 2.0  # a box or image this small is not seen
MIN_OPACITY = 0.05
MAX_STYLE_CHARS = 16_384  # a longer style attribute is not read (and not kept for display)
MAX_SHEET_CHARS = 200_000
# CSS absolute units in px (CSS Values 4)
PX_PER_UNIT = {"px": 1.0, "pt": 4 / 3, "pc": 16.0, "in": 96.0, "cm": 96 / 2.54,
               "mm": 96 / 25.4, "q": 96 / 101.6}
SIZES = ("width", "height", "max-width", "max-height")
# what the model reads; other declarations are not tokenized
RELEVANT = frozenset({"display", "visibility", "opacity", "overflow", "overflow-x", "overflow-y",
                      *SIZES})

Declarations = Mapping[str, tuple[str, bool]]  # name -> (value in lower case, !important)
EMPTY: Declarations = {}

_DIMENSION_ATTRIBUTE = re.compile(r"[\t\n\f\r ]*(\d+(?:\.\d+)?)(%?)")
_NOT_PLAIN = re.compile(r"[\"'(\\/]")
_MAYBE_RELEVANT = re.compile(r"display|visib|opacity|overflow|width|height|\\", re.IGNORECASE)
_SIMPLE_PART = re.compile(r"^[a-z0-9_-]*(?:[.#][a-z0-9_-]+)+$")


@functools.lru_cache(maxsize=8192)
def declarations(style: str) -> Declarations:
    """The relevant declarations of a style attribute or rule body, in order, last one wins."""
    if not style or len(style) > MAX_STYLE_CHARS or not _MAYBE_RELEVANT.search(style):
        return EMPTY
    if not _NOT_PLAIN.search(style):  # no string, function, escape or comment: ";" ends each
        style = ";".join(d for d in style.split(";") if _MAYBE_RELEVANT.search(d))
    import tinycss2

    found: dict[str, tuple[str, bool]] = {}
    for item in tinycss2.parse_blocks_contents(style, skip_comments=True, skip_whitespace=True):
        if item.type != "declaration" or item.lower_name not in RELEVANT:
            continue
        value = tinycss2.serialize(item.value).strip().lower()
        if found.get(item.lower_name, ("", False))[1] and not item.important:
            continue
        found[item.lower_name] = (value, item.important)
    return found


@dataclass(frozen=True, slots=True)
class Sheet:
    """Declarations the top-level ``<style>`` rules give to classes and ids."""

    rules: tuple[tuple[str, frozenset[str], str | None, Declarations], ...] = ()
    names: frozenset[str] = frozenset()  # every class or id some rule needs

    def applied(self, tag: str, classes: str, ident: str, inline: Declarations) -> Declarations:
        """The element's declarations: matching sheet rules in order, then its inline style."""
        if not self.names or not (classes or ident):
            return inline
        have = set(classes.lower().split())
        ident = ident.lower()
        if have.isdisjoint(self.names) and ident not in self.names:
            return inline
        merged: dict[str, tuple[str, bool]] = {}
        for rule_tag, need, need_id, decls in self.rules:
            if rule_tag and rule_tag != tag or need_id and need_id != ident:
                continue
            if need <= have:
                for name, value in decls.items():
                    if value[1] or not merged.get(name, ("", False))[1]:
                        merged[name] = value
        if not merged:
            return inline
        for name, value in inline.items():
            if value[1] or not merged.get(name, ("", False))[1]:
                merged[name] = value
        return merged


@functools.lru_cache(maxsize=256)
def sheet(css: str) -> Sheet:
    """The top-level rules of style sheet text whose last compound selector is classes or ids.

    The text is cut into rules at its braces (comments out first); each rule's declarations are
    read with tinycss2 only when a selector can match. A brace inside a quoted string may end a
    rule early: the display HTML keeps no style sheet, so what the browser shows still follows
    the same reading."""
    css = _without_comments(css[:MAX_SHEET_CHARS])
    if not _MAYBE_RELEVANT.search(css):
        return Sheet()
    rules = []
    for selectors, body in _top_level_rules(css):
        compounds = [found for selector in selectors.split(",") if (found := _compound(selector))]
        if compounds and (decls := declarations(body)):
            rules.extend((*found, decls) for found in compounds)
    names = frozenset(n for _, need, ident, _ in rules for n in (*need, ident) if n)
    return Sheet(tuple(rules), names)


def _without_comments(css: str) -> str:
    pieces = css.split("/*")
    return pieces[0] + " ".join(piece.partition("*/")[2] for piece in pieces[1:])


_BRACE = re.compile(r"[{}]")


def _top_level_rules(css: str) -> Iterator[tuple[str, str]]:
    """(selector list, declarations) of each top-level rule; at-rules' blocks are left out."""
    depth = start = open_at = 0
    for match in _BRACE.finditer(css):
        if match.group() == "{":
            if depth == 0:
                open_at = match.start()
            depth += 1
            continue
        if depth == 0:
            start = match.end()  # a stray "}"
            continue
        depth -= 1
        if depth:
            continue
        # after an at-statement ("@import ...;") and the HTML comment marks a sheet may hold
        selectors = css[start:open_at].rsplit(";", 1)[-1].replace("<!--", "").replace("-->", "")
        body = css[open_at + 1 : match.start()]
        start = match.end()
        if "@" not in selectors and "{" not in body:
            yield selectors, body


def _compound(selector: str) -> tuple[str, frozenset[str], str | None] | None:
    """(tag, classes, id) of a selector's last compound when it names classes or an id."""
    parts = selector.strip().lower().replace(">", " ").replace("+", " ").replace("~", " ").split()
    if not parts or not _SIMPLE_PART.match(parts[-1]):
        return None  # pseudo-classes, attribute selectors, bare tags: not modelled
    last = parts[-1]
    ids = re.findall(r"#([a-z0-9_-]+)", last)
    if len(ids) > 1:
        return None
    tag = re.match(r"[a-z0-9_-]*", last).group(0)  # type: ignore[union-attr]
    return tag, frozenset(re.findall(r"\.([a-z0-9_-]+)", last)), ids[0] if ids else None


def css_length(value: str) -> float | None:
    """A CSS length in px (``1pt``, ``.2mm``, ``1e0px``, ``0``); None for percentages, font or
    viewport units, ``auto``, several values or anything unreadable."""
    value = value.replace("!important", "").strip()
    if not value:
        return None
    match = _CSS_NUMBER.fullmatch(value)
    if match is None:
        return None
    number = float(match.group(1))
    unit = match.group(2).lower()
    if not unit:
        return 0.0 if number == 0 else None  # unitless: only zero is a length
    factor = PX_PER_UNIT.get(unit)
    return number * factor if factor is not None else None


def css_percent(value: str) -> float | None:
    match = _CSS_NUMBER.fullmatch(value.replace("!important", "").strip())
    return float(match.group(1)) if match and match.group(2) == "%" else None


_CSS_NUMBER = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)([a-z]*|%)", re.IGNORECASE)


def attribute_length(value: str | None) -> tuple[float, bool] | None:
    """A width/height attribute as HTML reads it: (number, is_percent) from the leading digits."""
    if not value:
        return None
    match = _DIMENSION_ATTRIBUTE.match(value)
    if match is None:
        return None
    return float(match.group(1)), bool(match.group(2))


def _opacity(value: str) -> float | None:
    match = _CSS_NUMBER.fullmatch(value.strip())
    if match is None or match.group(2) not in ("", "%"):
        return None
    number = float(match.group(1))
    return number / 100 if match.group(2) else number


def hidden(attributes: Mapping[str, str | None], css: Declarations) -> bool:
    """The element and its content are not drawn."""
    if "hidden" in attributes and "display" not in css:
        return True
    if _value(css, "display") == "none":
        return True
    if _value(css, "visibility") in ("hidden", "collapse"):
        return True
    opacity = _opacity(_value(css, "opacity"))
    if opacity is not None and opacity < MIN_OPACITY:
        return True
    return clipped(css) and tiny(attributes, css)


def clipped(css: Declarations) -> bool:
    return any(_value(css, name).startswith(("hidden", "clip"))
               for name in ("overflow", "overflow-x", "overflow-y"))


def tiny(attributes: Mapping[str, str | None], css: Declarations) -> bool:
    """A declared width or height of at most 2 px (or 1 %)."""
    for name in ("width", "height"):
        read = attribute_length(attributes.get(name))
        if read is not None and read[0] <= (1 if read[1] else TINY_PX):
            return True
    for name in SIZES:
        value = _value(css, name)
        if not value:
            continue
        length = css_length(value)
        if length is not None and length <= TINY_PX:
            return True
        percent = css_percent(value)
        if percent is not None and percent <= 1:
            return True
    return False


def size(attributes: Mapping[str, str | None], css: Declarations, name: str) -> float | None:
    """The smallest of the declared width (or height) in px: attribute, CSS, CSS max-."""
    numbers = []
    read = attribute_length(attributes.get(name))
    if read is not None and not read[1]:
        numbers.append(read[0])
    for key in (name, f"max-{name}"):
        length = css_length(_value(css, key))
        if length is not None:
            numbers.append(length)
    return min(numbers) if numbers else None


def percent_sized(attributes: Mapping[str, str | None], css: Declarations) -> bool:
    if any("%" in (attributes.get(name) or "") for name in ("width", "height")):
        return True
    return any("%" in _value(css, name) for name in SIZES)


@dataclass(frozen=True, slots=True)
class Box:
    """What the model says of one element."""

    css: Declarations
    hidden: bool  # it and its content are not drawn
    tiny: bool  # it declares at most 2 px of width or height


DRAWN = Box(EMPTY, False, False)


def box(tag: str, attributes: Mapping[str, str | None], sheet: Sheet,
        seen: dict[tuple, Box]) -> Box:
    """The element's Box; ``seen`` remembers those of elements with the same attributes."""
    style = attributes.get("style")
    width, height = attributes.get("width"), attributes.get("height")
    named = sheet.names and (attributes.get("class") or attributes.get("id"))
    flag = "hidden" in attributes
    if not (style or width or height or flag or named):
        return DRAWN
    key = (style, width, height, flag, named and (tag, attributes.get("class"),
                                                  attributes.get("id")))
    found = seen.get(key)
    if found is None:
        css = declarations(style or "")
        if named:
            css = sheet.applied(tag, attributes.get("class") or "", attributes.get("id") or "",
                                css)
        found = seen[key] = Box(css, hidden(attributes, css), tiny(attributes, css))
    return found


def image_hidden(attributes: Mapping[str, str | None], seen: Box, in_tiny: bool) -> bool:
    """An image not seen: hidden, at most 2 px, or sized in percent of a tiny box it is in."""
    return seen.hidden or seen.tiny or in_tiny and percent_sized(attributes, seen.css)


def _value(css: Declarations, name: str) -> str:
    found = css.get(name)
    return found[0] if found else ""
