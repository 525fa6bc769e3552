"""Pure mail parser: ``parse_message(raw: bytes) -> ParsedMessage``.

Design: the MIME structure is split by ``email`` with the ``compat32`` policy, which never raises
on malformed structure; every header is then decoded by this package (``headers.py``) instead of
``email.policy.default``, whose header parser can raise bare IndexErrors on garbage. Each stage
is guarded, so a failing heuristic costs only its own field and is noted in ``fallbacks``. Only
unusable input (empty, no mail header at all) raises ``ParseError``.

Modules: ``charsets`` (labels and decoding), ``headers`` (RFC 2047/2231, addresses, dates),
``mime`` (part tree, transfer encodings, limits), ``bodies`` (main body choice),
``attachments`` (files and inline parts), ``html`` (one Lexbor tree, one walk), ``visibility``
(what is drawn, for text and display alike), ``newsletter`` (preview,
unsubscribe, thumbnail, confirmation, reading time), ``sanitize`` (display HTML via nh3), ``urls``
(every URL we store or show: WHATWG parsing with ada-url, public hosts only),
``message`` (assembly). Third-party libraries are imported lazily inside the functions that
use them, so importing this package costs only stdlib ``email`` modules.
"""

from __future__ import annotations

from .message import parse_message
from .result import Attachment, ParsedMessage, ParseError, Unsubscribe

__all__ = ["Attachment", "ParseError", "ParsedMessage", "Unsubscribe", "parse_message"]
