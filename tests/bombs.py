"""Hostile messages built on the fly: resource bombs for the delivery and the benchmarks."""

from __future__ import annotations

import base64

HEAD = (b"From: Bomb <bomb@example.org>\r\nTo: alice@bombom.news\r\nSubject: %s\r\n"
        b"Message-ID: <%s@example.org>\r\nMIME-Version: 1.0\r\n")


def deep_nesting(depth: int = 2000) -> bytes:
    out = [HEAD % (b"deep", b"deep")]
    for i in range(depth):
        out.append(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i))
    out.append(b"Content-Type: text/plain\r\n\r\nbottom\r\n")
    for i in reversed(range(depth)):
        out.append(b"--b%d--\r\n" % i)
    return b"".join(out)


def many_parts(n: int = 20_000) -> bytes:
    out = [HEAD % (b"parts", b"parts"), b'Content-Type: multipart/mixed; boundary="p"\r\n\r\n']
    for i in range(n):
        out.append(b"--p\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i)
    out.append(b"--p--\r\n")
    return b"".join(out)


def huge_header_line(size: int = 1_000_000) -> bytes:
    return HEAD % (b"S" * size, b"hdr") + b"Content-Type: text/plain\r\n\r\nbody\r\n"


def base64_expansion(decoded: int = 15_000_000) -> bytes:
    payload = base64.encodebytes(b"\x00" * decoded)
    return (HEAD % (b"b64", b"b64") + b'Content-Type: multipart/mixed; boundary="z"\r\n\r\n'
            b"--z\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n"
            b"--z\r\nContent-Type: application/octet-stream; name=zeros.bin\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + payload + b"--z--\r\n")


def big_message(size: int = 25_000_000) -> bytes:
    """A 25 MB newsletter: HTML body plus a base64 attachment."""
    html = b"<html><body>" + "<p>봄봄 news paragraph</p>\n".encode() * 20_000 + b"</body></html>"
    att = base64.encodebytes(bytes(range(256)) * ((size - len(html)) * 3 // 4 // 256))
    return (HEAD % (b"big", b"big") + b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n'
            b'--m\r\nContent-Type: text/html; charset=utf-8\r\n\r\n' + html +
            b"\r\n--m\r\nContent-Type: application/pdf; name=big.pdf\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + att + b"--m--\r\n")


BOMBS = {
    "deep_nesting": deep_nesting,
    "many_parts": many_parts,
    "huge_header_line": huge_header_line,
    "base64_expansion": base64_expansion,
    "big_message": big_message,
}


# -- adversarial inputs per heuristic: make(size) -> a message of about `size` bytes -----------
# Each targets one loop or pattern over untrusted text that was (or could be) super-linear.

def _rep(unit: bytes, size: int) -> bytes:
    return unit * max(1, size // len(unit))


def _html(body: bytes) -> bytes:
    return HEAD % (b"html", b"html") + b"Content-Type: text/html; charset=utf-8\r\n\r\n" + body


def _html_base64(body: bytes) -> bytes:
    return (HEAD % (b"html64", b"html64") + b"Content-Type: text/html; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(body))


def _text(body: bytes) -> bytes:
    return HEAD % (b"text", b"text") + b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + body


def _addresses(size: int) -> bytes:
    fields = [b"From", b"Sender", b"X-Original-To", b"Delivered-To"] + [b"To"] * 20
    value = _rep(b"=?", size // len(fields))
    return (b"".join(name + b": " + value + b"\r\n" for name in fields)
            + b"Subject: addresses\r\nMessage-ID: <addr@example.org>\r\n\r\nbody\r\n")


def _nested_messages(size: int, levels: int = 38) -> bytes:
    out = [HEAD % (b"nested", b"nested")]
    for i in range(levels):
        out.append(b"Content-Type: message/rfc822\r\n\r\nFrom: n%d@example.org\r\n"
                   b"Subject: level %d\r\n" % (i, i))
    out.append(b"Content-Type: application/octet-stream\r\n\r\n")
    out.append(_rep(b"0123456789abcdef" * 4 + b"\r\n", size))
    return b"".join(out)


ADVERSARIAL = {
    # html.py: hidden-style test on every tag; the tag-stripping fallback; unterminated
    # constructs an HTML parser could rescan to the end (html.parser did); link text; deep markup
    "hidden_style": lambda n: _html(b'<div style="' + _rep(b"height:0;", n) + b'">x</div>'),
    "hidden_style_base64": lambda n: _html_base64(
        b'<div style="' + _rep(b"height:0;", n * 3 // 4) + b'">x</div>'),
    "fallback_text_head": lambda n: _html(b"<![foo bar" + _rep(b"<head ", n)),
    "fallback_text_tags": lambda n: _html(b"<![foo bar" + _rep(b"<a ", n)),
    "unterminated_start_tags": lambda n: _html(_rep(b"<meta ", n)),
    "unterminated_comments": lambda n: _html(_rep(b"<!--x>", n)),
    "unterminated_end_tags": lambda n: _html(_rep(b"</", n)),
    "unterminated_sections": lambda n: _html(_rep(b"<![CDATA[ ]>", n)),
    "unterminated_processing": lambda n: _html(_rep(b"<?", n)),
    "bare_character_refs": lambda n: _html(_rep(b"&#", n) + b";"),
    "inline_links": lambda n: _html(_rep(b'<a href="https://x.example/">y</a> ', n)),
    "nested_links": lambda n: _html(_rep(b'<a href="https://x.example/">', n // 2)
                                    + _rep(b"t<i></i>", n // 2)),
    "deep_markup_text": lambda n: _html(_rep(b"<span>x ", n)),
    "misnested_formatting": lambda n: _html(_rep(b"<font>x</b>", n)),
    "nested_tables": lambda n: _html(_rep(b"<table><tr><td>x", n)),
    "tiny_tags": lambda n: _html(_rep(b"<p>x</p>", n)),
    # newsletter.py: preview, URL-only blocks, plain-text links, reading time
    "url_like_block": lambda n: _html(b"<p>" + _rep(b"www.", n) + b" x</p>"),
    "edge_junk_block": lambda n: _html(b"<p>" + _rep(b"- ", n) + b"x</p>"),
    "text_url_line": lambda n: _text(_rep(b"https://a.example/ ", n)),
    "text_short_lines": lambda n: _text(_rep(b"www.x\n", n)),
    "text_hangul": lambda n: _text(_rep("봄봄 소식 ".encode(), n)),
    # headers.py: address fields full of address-like garbage
    "address_garbage": _addresses,
    # mime.py: nesting, line counts, transfer encodings, header repair
    "nested_messages": _nested_messages,
    "short_lines": lambda n: (HEAD % (b"lines", b"lines")
                              + b"Content-Type: application/octet-stream\r\n\r\n"
                              + _rep(b"ab\n", n)),
    "base64_junk": lambda n: (
        HEAD % (b"b64", b"b64") + b'Content-Type: multipart/mixed; boundary="z"\r\n\r\n'
        b"--z\r\nContent-Type: application/pdf; name=a.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + _rep(b"QUJD= \t!", n) + b"\r\n--z--\r\n"),
    "uuencode_lines": lambda n: (
        HEAD % (b"uu", b"uu") + b'Content-Type: multipart/mixed; boundary="z"\r\n\r\n'
        b"--z\r\nContent-Type: application/octet-stream; name=a\r\n"
        b"Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 a\r\n"
        + _rep(b"M" + b"86)C" * 15 + b"\r\n", n) + b"end\r\n--z--\r\n"),
    "long_parameters": lambda n: (
        HEAD % (b"params", b"params") + b'Content-Type: multipart/mixed; boundary="p"\r\n\r\n'
        + _rep(b"--p\r\nContent-Type: application/x; " + b"n*0*=a;" * 2300
               + b'\r\nContent-Disposition: attachment; ' + b'a="\\;' * 2600 + b"\r\n\r\nx\r\n", n)
        + b"--p--\r\n"),
    "damaged_header": lambda n: b"junk\r\n" + HEAD % (b"dmg", b"dmg") + b"bad line\r\n\r\n"
    + _rep(b"body line\n", n),
}
