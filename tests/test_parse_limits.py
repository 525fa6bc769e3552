"""Resource safety and attachment limits: bounded time, no exceptions, sanitized names."""

from __future__ import annotations

import base64
import time

import pytest

from bombom_pipe.parse import parse_message
from bombom_pipe.parse.attachments import sanitize_filename

HEAD = b"From: Bomb <bomb@example.org>\r\nTo: a@bombom.example\r\nSubject: bomb\r\n"


def timed(raw: bytes, limit: float = 5.0):  # noqa: ANN201 - returns ParsedMessage
    """Parse within `limit` CPU seconds: a guard against blow-ups, not a speed figure (CPU, not
    wall-clock time, so a loaded machine does not fail it)."""
    start = time.process_time()
    m = parse_message(raw)
    assert time.process_time() - start < limit
    return m


def nested(depth: int) -> bytes:
    out = [HEAD]
    for i in range(depth):
        out.append(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i))
    out.append(b"Content-Type: text/plain\r\n\r\nbottom\r\n")
    out.extend(b"--b%d--\r\n" % i for i in reversed(range(depth)))
    return b"".join(out)


def test_deep_mime_nesting_beyond_the_stdlib_parser() -> None:
    m = timed(nested(3000))
    assert "bottom" in m.text
    assert any("nesting too deep" in f for f in m.fallbacks)


def test_mime_nesting_over_the_walk_limit_is_skipped() -> None:
    m = timed(nested(60))
    assert m.text is None
    assert any("MIME nesting" in s for s in m.skipped_attachments)


def test_tens_of_thousands_of_parts() -> None:
    parts = b"".join(b"--p\r\nContent-Type: application/octet-stream; name=f%d.bin\r\n\r\n"
                     b"part %d\r\n" % (i, i) for i in range(30_000))
    raw = HEAD + b'Content-Type: multipart/mixed; boundary="p"\r\n\r\n' + parts + b"--p--\r\n"
    m = timed(raw)
    assert len(m.attachments) == 50
    assert m.attachments[0].filename == "f0.bin"
    assert "f50.bin (application/octet-stream, 7): over the 50-part limit" in m.skipped_attachments
    assert any("over the 2000-part limit" in s for s in m.skipped_attachments)


def test_megabyte_header_line() -> None:
    raw = (b"From: a@b.example\r\nSubject: " + b"=?utf-8?q?a?= " * 80_000 + b"\r\nTo: "
           + b"x" * 1_000_000 + b"\r\n\r\nbody\r\n")
    m = timed(raw)
    assert m.subject.startswith("aaaa")
    assert len(m.subject) <= 16384
    assert m.text == "body\r\n"


def test_nul_bytes_everywhere() -> None:
    raw = (b"From: a\x00@b.example\r\nSubject: \x00x\x00\r\nContent-Type: text/html\r\n\r\n"
           + b"<p>a\x00b</p>" * 1000)
    m = timed(raw)
    assert m.subject == "x"
    assert "\x00" not in m.html and "\x00" not in m.text and "\x00" not in m.display_html


def test_total_size_limit() -> None:
    big = base64.encodebytes(b"\x01" * (15 * 1024 * 1024))
    part = (b"--z\r\nContent-Type: application/pdf; name=%s\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n")
    raw = (HEAD + b'Content-Type: multipart/mixed; boundary="z"\r\n\r\n'
           b"--z\r\nContent-Type: text/plain\r\n\r\nsee attachments\r\n"
           + part % b"one.pdf" + big + part % b"two.pdf" + big + b"--z--\r\n")
    m = timed(raw, 10.0)
    assert [a.filename for a in m.attachments] == ["one.pdf"]
    assert m.skipped_attachments == (
        f"two.pdf (application/pdf, {15 * 1024 * 1024}): over the 25 MB total limit",
    )


def test_deeply_nested_html_stays_bounded() -> None:
    html = b"<div>" * 20_000 + b"deep text" + b"</div>" * 20_000
    m = timed(HEAD + b"Content-Type: text/html\r\n\r\n" + html, 10.0)
    assert "deep text" in m.display_html
    assert m.text == "deep text"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\x\\report.pdf", "report.pdf"),
        ("evil\u202egnp.exe", "evilgnp.exe"),
        ("a\x00b\x07c\r\n.txt", "abc.txt"),
        ("..", None),
        ("   ", None),
        ("보고서 최종.hwp", "보고서 최종.hwp"),
        ("x" * 300 + ".pdf", "x" * 196 + ".pdf"),
    ],
)
def test_filename_sanitizing(name: str, expected: str | None) -> None:
    assert sanitize_filename(name) == expected


def test_embedded_messages_decoded_within_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    from bombom_pipe.parse import mime

    part = (b"--z\r\nContent-Type: application/pdf; name=%s\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n")
    inner = (b"From: x@y.example\r\nSubject: inner\r\n"
             b'Content-Type: multipart/mixed; boundary="z"\r\n\r\n'
             + part % b"a.pdf" + base64.encodebytes(b"\x01" * 3000) + b"--z--\r\n")
    raw = (HEAD + b'Content-Type: multipart/mixed; boundary="o"\r\n\r\n'
           b"--o\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
           + b"".join(b"--o\r\nContent-Type: message/rfc822\r\n\r\n" + inner for _ in range(3))
           + b"--o--\r\n")
    m = timed(raw)
    assert [a.content_type for a in m.attachments] == ["message/rfc822"] * 3
    assert all(b"Subject: inner\n" in a.data for a in m.attachments)
    assert not m.skipped_attachments

    monkeypatch.setattr(mime, "MAX_DECODED_BYTES", 2 * len(inner))
    m = parse_message(raw)
    assert m.text == "see attached"
    assert len(m.attachments) == 2
    [skipped] = m.skipped_attachments
    assert skipped.startswith("part ") and " (message/rfc822, " in skipped
    assert skipped.endswith("): over the 0 MB decoding budget for one message, not decoded")


def test_millions_of_short_lines_parse_the_header_only() -> None:
    raw = HEAD + b"Content-Type: text/plain\r\n\r\n" + b"ab\n" * 1_000_000
    m = timed(raw)
    assert m.subject == "bomb"
    assert not m.text
    assert any("header only, body unparsed" in f for f in m.fallbacks)


def test_unknown_marked_section_is_a_comment_not_a_rejected_document() -> None:
    html = b'<![foo bar]><p>Hello <img src="https://t.example/open/x.gif" width=1 height=1></p>'
    m = timed(HEAD + b"Content-Type: text/html\r\n\r\n" + html)
    assert m.text == "Hello"
    assert "foo bar" not in m.display_html
    assert "t.example" not in m.display_html
