"""Newsletter heuristics over the decoded bodies (placeholder: text extraction only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .result import Unsubscribe


@dataclass(slots=True)
class Findings:
    """Everything derived from the bodies."""

    text: str | None = None
    display_html: str | None = None
    preview: str | None = None
    unsubscribe: Unsubscribe = field(default_factory=Unsubscribe)
    web_version_url: str | None = None
    thumbnail_url: str | None = None
    reading_minutes: int | None = None
    confirmation_url: str | None = None


def analyse(
    *,
    html: str | None,
    text: str | None,
    subject: str | None,
    list_unsubscribe: str | None,
    unsubscribe_post: str | None,
    cid_map: dict[str, str],
    run: Any,
) -> Findings:
    """Derive the newsletter fields."""
    from . import html as html_mod

    found = Findings()
    if html:
        doc = run.guard("html", lambda: html_mod.load(html), None)
        found.text = doc.text if doc is not None else html_mod.fallback_text(html)
    return found
