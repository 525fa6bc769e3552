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
from collections.abc import Mapping
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

Declarations = Mapping[str, tuple[str, bool]]  # name -> (value, lower case, !important)
EMPTY: Declarations = {}

_DIMENSION_ATTRIBUTE = re.compile(r"[\t\n\f\r ]*(\d+(?:\.\d+)?)(%?)")
_MAYBE_RELEVANT = re.compile(r"display|visib|opacity|overflow|width|height|\\", re.IGNORECASE)
_SIMPLE_PART = re.compile(r"^[a-z0-9_-]*(?:[.#][a-z0-9_-]+)+$")


@functools.lru_cache(maxsize=8192)
def declarations(style: str) -> Declarations:
    """The relevant declarations of a style attribute or rule body, in order, last one wins."""
    if not style or len(style) > MAX_STYLE_CHARS or not _MAYBE_RELEVANT.search(style):
        return EMPTY
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
    """The top-level rules of style sheet text whose last compound selector is classes or ids."""
    if not css or not _MAYBE_RELEVANT.search(css):
        return Sheet()
    import tinycss2

    rules = []
    for rule in tinycss2.parse_stylesheet(css[:MAX_SHEET_CHARS], skip_comments=True,
                                          skip_whitespace=True):
        if rule.type != "qualified-rule":
            continue  # @media and other at-rules apply on some screens or to other things
        decls = declarations(tinycss2.serialize(rule.content))
        if not decls:
            continue
        for selector in tinycss2.serialize(rule.prelude).split(","):
            parts = selector.strip().lower().replace(">", " ").replace("+", " ").split()
            if not parts or not _SIMPLE_PART.match(parts[-1]):
                continue  # pseudo-classes, attribute selectors, bare tags: not modelled
            last = parts[-1]
            tag = re.match(r"[a-z0-9_-]*", last).group(0)  # type: ignore[union-attr]
            ids = re.findall(r"#([a-z0-9_-]+)", last)
            if len(ids) > 1:
                continue
            need = frozenset(re.findall(r"\.([a-z0-9_-]+)", last))
            rules.append((tag, need, ids[0] if ids else None, decls))
    names = frozenset(n for _, need, ident, _ in rules for n in (*need, ident) if n)
    return Sheet(tuple(rules), names)


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


def image_hidden(attributes: Mapping[str, str | None], css: Declarations, in_tiny: bool
                 ) -> bool:
    """An image not seen: hidden, at most 2 px, or sized in percent of a tiny box it is in."""
    if hidden(attributes, css) or tiny(attributes, css):
        return True
    return in_tiny and percent_sized(attributes, css)


def _value(css: Declarations, name: str) -> str:
    found = css.get(name)
    return found[0] if found else ""
