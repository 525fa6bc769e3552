"""Choose the main HTML and plain-text bodies among the leaves and decode them to str."""

from __future__ import annotations

from dataclasses import dataclass, field

from .charsets import Decoded, decode_bytes
from .mime import Leaf, Tree, decode

BODY_TYPES = ("text/html", "text/plain")


@dataclass(slots=True)
class Bodies:
    """The decoded main bodies and the leaves that are not bodies (attachment candidates)."""

    html: str | None = None
    text: str | None = None
    charsets: list[str] = field(default_factory=list)
    replaced: bool = False
    fallbacks: list[str] = field(default_factory=list)
    others: list[Leaf] = field(default_factory=list)


def _is_body(leaf: Leaf) -> bool:
    return (
        leaf.content_type in BODY_TYPES
        and leaf.disposition != "attachment"
        and not leaf.filename
    )


def _scope(tree: Tree) -> int | None:
    """Which message the bodies come from: the top level, else the first embedded message."""
    if any(_is_body(leaf) for leaf in tree.leaves if leaf.inside is None):
        return None
    for leaf in tree.leaves:
        if leaf.inside is not None and _is_body(leaf):
            scope = leaf.inside
            while tree.enclosing.get(scope) is not None:
                scope = tree.enclosing[scope]  # type: ignore[assignment]
            return scope
    return None


def select(tree: Tree, hint: str | None = None) -> Bodies:
    """Decode the first text/html and text/plain body; everything else in scope goes to
    ``others``, its payload decoded.

    ``hint`` is the message's prior charset for short bodies that declare none."""
    out = Bodies()
    scope = _scope(tree)
    chosen: dict[str, Leaf] = {}
    for leaf in tree.leaves:
        if leaf.index == scope:
            continue  # the promoted embedded message: its parts are used instead
        top = leaf.inside in (None, scope)
        if not top:
            continue  # contained in an embedded message that is kept whole
        if _is_body(leaf) and leaf.content_type not in chosen:
            chosen[leaf.content_type] = leaf
        else:
            out.others.append(leaf)
    # decoded here, bodies first: parts no one uses (inside an embedded message kept whole)
    # are never decoded, and all decoding shares one budget
    chosen = {ctype: leaf for ctype, leaf in chosen.items() if decode(tree, leaf)}
    out.others = [leaf for leaf in out.others if decode(tree, leaf)]
    for ctype, leaf in chosen.items():
        decoded = _decode(leaf, ctype == "text/html", hint)
        out.charsets.append(decoded.charset)
        out.replaced = out.replaced or decoded.replaced
        if decoded.fallback:
            out.fallbacks.append(f"{ctype} body: {decoded.fallback}, read as {decoded.charset}")
        if ctype == "text/html":
            out.html = decoded.text
        else:
            out.text = decoded.text
    return out


def _decode(leaf: Leaf, html: bool, hint: str | None) -> Decoded:
    return decode_bytes(leaf.data, leaf.params.get("charset"), html=html, hint=hint)
