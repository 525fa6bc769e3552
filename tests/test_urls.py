"""URLs we store: re-serialized as a browser reads them, http(s) to public hosts only."""

from __future__ import annotations

import pytest

from bombom_pipe.parse.urls import link_url, public_url, stored_url

SHA = "ab" * 32

INTERNAL = [
    "http://127.0.0.1/", "http://127.1/", "http://2130706433/", "http://0x7f.1/",
    "http://0177.0.0.1/", "http://%31%32%37.0.0.1/", "http://0/", "http://0.0.0.0/",
    "http://169.254.169.254/latest/meta-data/iam/", "http://10.1.2.3/", "http://172.16.0.1/",
    "http://192.168.1.1/", "http://100.64.0.1/", "http://224.0.0.1/", "http://255.255.255.255/",
    "http://[::1]/", "http://[::]/", "http://[fe80::1]/", "http://[fc00::1]/", "http://[ff02::1]/",
    "http://[::ffff:127.0.0.1]/", "http://[::ffff:a9fe:a9fe]/", "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2002:7f00:1::]/", "http://[::127.0.0.1]/", "http://127.0.0.1./",
    "http://0x7f000001/", "http://１２７.０.０.１/", "http://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ/", "http://localhost/", "http://LOCALHOST:8080/x",
    "http://localhost./", "http://app.localhost/", "http://metadata.google.internal/",
    "http://printer.local/", "http://intranet/", "http://nas/", "http://router.home.arpa/",
]
NOT_WEB = [
    "javascript:alert(1)", "data:image/png;base64,AAAA", "ftp://example.com/x", "file:///etc/passwd",
    "/api/logout", "//example.com/x", "x.gif", "", "http://", "http://a b/", "http://1.2.3.4.5/",
    "https://user:pass@example.com/", "https://example.com@127.0.0.1/", "mailto:a@example.com",
    "http://evil.example\\@127.0.0.1/",
]


@pytest.mark.parametrize("url", INTERNAL)
def test_internal_hosts_are_refused_in_every_spelling(url: str) -> None:
    assert public_url(url) is None
    assert stored_url(url) is None and link_url(url) is None


@pytest.mark.parametrize("url", NOT_WEB)
def test_only_absolute_http_and_https(url: str) -> None:
    result = public_url(url)
    # a backslash is a slash to a browser: the host is evil.example, not 127.0.0.1
    assert result is None or result == "http://evil.example/@127.0.0.1/"


@pytest.mark.parametrize(("url", "expected"), [
    ("HTTPS://Example.COM:443/a b", "https://example.com/a%20b"),
    ('https://example.com/p"<q>\'r?x="<\'#f"<', "https://example.com/p%22%3Cq%3E%27r?x=%22%3C%27#f%22%3C"),
    ("https://bücher.example/ü?q=봄", "https://xn--bcher-kva.example/%C3%BC?q=%EB%B4%84"),
    ("  https://example.com/x\t\n  ", "https://example.com/x"),
    ("http://8.8.8.8/p", "http://8.8.8.8/p"),
    ("https://[2001:4860:4860::8888]/", "https://[2001:4860:4860::8888]/"),
    ("https://example.com/a`b", "https://example.com/a%60b"),
])
def test_reserialized(url: str, expected: str) -> None:
    assert public_url(url) == expected
    assert public_url(expected) == expected  # stable


def test_attachment_references_and_links() -> None:
    assert stored_url(f"/attachments/{SHA}") == f"/attachments/{SHA}"
    assert stored_url(f"/attachments/{SHA}/../../api") is None
    assert public_url(f"/attachments/{SHA}") is None
    mailto = "mailto:leave@example.com?subject=bye"
    assert link_url(mailto) == mailto
    assert link_url("tel:+82-2-1234-5678") == "tel:+82-2-1234-5678"
    assert link_url("https://example.com/a") == "https://example.com/a"
