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
