"""Attachments and inline parts: sanitized filenames, hashes, size and count limits.

Inline parts referenced as ``cid:`` from the HTML are served by the app at the stable URL
``/attachments/<sha256 hex of the part's bytes>``; ``cid_map`` maps each Content-ID to it.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from urllib.parse import unquote

from . import images
from .mime import Leaf
from .result import Attachment

MAX_ATTACHMENTS = 50
MAX_TOTAL_BYTES = 25 * 1024 * 1024
MAX_FILENAME_CHARS = 200

_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def attachment_url(sha256: str) -> str:
    """The app URL of a stored part."""
    return f"/attachments/{sha256}"


def inline_url(cid_map: dict[str, str], src: str) -> str | None:
    """The app URL of the inline part a ``cid:`` reference names (RFC 2392: percent-encoded,
    compared as written or lower-cased), else None."""
    if src[:4].lower() != "cid:":
        return None
    cid = unquote(src[4:]).strip().strip("<>")
    return cid_map.get(cid) or cid_map.get(cid.lower())


def sanitize_filename(name: str | None) -> str | None:
    """A display- and filesystem-safe name: no path, no control/format chars, bounded length."""
    if not name:
        return None
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cf", "Cs"))
    name = re.sub(r"\s+", " ", _UNSAFE.sub("", name)).strip().lstrip(".").strip()
    if len(name) > MAX_FILENAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16 and stem:
            name = stem[: MAX_FILENAME_CHARS - len(ext) - 1].rstrip() + "." + ext
        else:
            name = name[:MAX_FILENAME_CHARS].rstrip()
    return name or None


@dataclass(slots=True)
class Files:
    """Stored parts, parts over the limits, and the cid -> URL map for the display HTML."""

    attachments: list[Attachment] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    cid_map: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # cid part URL -> its w, h


def collect(leaves: list[Leaf]) -> Files:
    """Turn non-body leaves into Attachments, in order, within the count and size limits."""
    files = Files()
    total = 0
    for leaf in leaves:
        filename = sanitize_filename(leaf.filename)
        size = len(leaf.data)
        reason = None
        if len(files.attachments) >= MAX_ATTACHMENTS:
            reason = f"over the {MAX_ATTACHMENTS}-part limit"
        elif total + size > MAX_TOTAL_BYTES:
            reason = f"over the {MAX_TOTAL_BYTES // (1024 * 1024)} MB total limit"
        if reason:
            files.skipped.append(f"{filename or 'unnamed'} ({leaf.content_type}, {size}): {reason}")
            continue
        total += size
        digest = hashlib.sha256(leaf.data).hexdigest()
        disposition = leaf.disposition or ("inline" if leaf.content_id else "attachment")
        files.attachments.append(
            Attachment(
                filename=filename,
                content_type=leaf.content_type,
                content_id=leaf.content_id,
                disposition=disposition,
                data=leaf.data,
                sha256=digest,
            )
        )
        if leaf.content_id and (size_wh := images.dimensions(leaf.data)):  # cid: images only
            files.sizes[attachment_url(digest)] = size_wh
        if leaf.content_id:
            files.cid_map.setdefault(leaf.content_id, attachment_url(digest))
            files.cid_map.setdefault(leaf.content_id.lower(), attachment_url(digest))
    return files
