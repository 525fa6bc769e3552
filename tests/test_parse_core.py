"""Core fields of parse_message: identity headers, dates, bodies, invariants."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone

import pytest

from bombom_pipe.parse import Attachment, ParsedMessage, ParseError, parse_message


def mail(headers: str, body: str = "hello\n", extra: bytes = b"") -> bytes:
    return headers.strip("\n").replace("\n", "\r\n").encode() + b"\r\n\r\n" + body.encode() + extra


BASIC = mail(
    """
Message-ID: <abc.123@example.com>
From: "Bombom News" <News@Example.COM>
Sender: Bounce <BOUNCE@mailer.example.net>
To: Reader <Reader@Bombom.Example>, other@x.example
Subject: Hello
 world
Date: Tue, 07 Mar 2023 09:30:00 +0900
List-Id: Weekly news <weekly.example.com>
List-Unsubscribe: <https://example.com/u?x=1>,
 <mailto:unsub@example.com?subject=bye>
Delivered-To: first@bombom.example
Delivered-To: second@bombom.example
X-Original-To: Alias@Bombom.Example
Content-Type: text/plain; charset=utf-8
"""
)


def test_identity_headers() -> None:
    m = parse_message(BASIC)
    assert m.message_id == "abc.123@example.com"
    assert m.from_address == "news@example.com"
    assert m.from_name == "Bombom News"
    assert m.sender_address == "bounce@mailer.example.net"
    assert m.subject == "Hello world"
    assert m.list_id == "weekly.example.com"
    assert m.list_unsubscribe == (
        "<https://example.com/u?x=1>, <mailto:unsub@example.com?subject=bye>"
    )
    assert m.delivered_to == "first@bombom.example"
    assert m.x_original_to == "alias@bombom.example"
    assert m.to_addresses == ("reader@bombom.example", "other@x.example")
    assert m.text == "hello\n"
    assert m.html is None
    assert m.fallbacks == ()


def test_date_is_kept_and_parsed_aware() -> None:
    m = parse_message(BASIC)
    assert m.date_header == "Tue, 07 Mar 2023 09:30:00 +0900"
    assert m.sent_at == datetime(2023, 3, 7, 0, 30, tzinfo=UTC)
    assert m.sent_at.utcoffset() == timedelta(hours=9)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Tue, 07 Mar 2023 09:30:00", datetime(2023, 3, 7, 9, 30, tzinfo=UTC)),  # naive -> UTC
        ("Tue, 07 Mar 2023 09:30:00 KST", datetime(2023, 3, 7, 0, 30, tzinfo=UTC)),
        ("2023-03-07T09:30:00+09:00", datetime(2023, 3, 7, 0, 30, tzinfo=UTC)),  # dateutil
        ("7 March 2023, 9:30 am GMT", datetime(2023, 3, 7, 9, 30, tzinfo=UTC)),
        ("not a date at all", None),
    ],
)
def test_date_fallbacks(header: str, expected: datetime | None) -> None:
    m = parse_message(mail(f"From: a@b.example\nDate: {header}"))
    assert m.date_header == header
    assert m.sent_at == expected
    if expected is not None:
        assert m.sent_at.tzinfo is not None


def test_html_and_text_parts_chosen_not_attachments() -> None:
    raw = mail(
        """
From: a@b.example
Content-Type: multipart/mixed; boundary="outer"
""",
        """--outer
Content-Type: multipart/alternative; boundary="alt"

--alt
Content-Type: text/plain; charset=utf-8

plain body
--alt
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: quoted-printable

<p>html =C3=A9 body</p>
--alt--
--outer
Content-Type: text/html; name="attached.html"
Content-Disposition: attachment; filename="attached.html"

<p>not the body</p>
--outer--
""",
    )
    m = parse_message(raw)
    assert m.text.strip() == "plain body"
    assert m.html.strip() == "<p>html é body</p>"
    assert [a.filename for a in m.attachments] == ["attached.html"]
    assert m.attachments[0].disposition == "attachment"
    assert isinstance(m.attachments[0], Attachment)


def test_text_extracted_from_html_when_no_plain_part() -> None:
    raw = mail(
        "From: a@b.example\nContent-Type: text/html; charset=utf-8",
        "<html><head><style>p{}</style><title>T</title></head><body><p>First para</p>"
        "<script>evil()</script><div>Second&nbsp;para</div></body></html>",
    )
    m = parse_message(raw)
    assert m.text == "First para\nSecond para"


def test_nul_bytes_and_surrogates_never_reach_str_fields() -> None:
    raw = b"From: a\x00b@c.example\r\nSubject: x\x00y \xed\xa0\x80\r\n" \
          b"Content-Type: text/plain; charset=utf-8\r\n\r\nbo\x00dy \xed\xa0\x80\r\n"
    m = parse_message(raw)
    for value in str_fields(m):
        assert "\x00" not in value
        assert not any(0xD800 <= ord(ch) <= 0xDFFF for ch in value)
    assert m.subject.startswith("xy")
    assert m.text.startswith("body")


@pytest.mark.parametrize(
    "raw", [b"", b"   \r\n\r\n", b"just some text, no header\n", b"\x89PNG\r\n\x1a\n\x00\x00"]
)
def test_unusable_input_raises_parse_error(raw: bytes) -> None:
    with pytest.raises(ParseError):
        parse_message(raw)


def test_malformed_headers_that_break_policy_default_still_parse() -> None:
    raw = mail(
        """
From: "Broken <a@b.example>
To: "
Subject: still here
Content-Type: text/plain; name*
""",
        "body survives\n",
    )
    m = parse_message(raw)
    assert m.subject == "still here"
    assert m.from_address == "a@b.example"
    assert m.text.strip() == "body survives"


def test_message_id_without_brackets_and_list_id_without_brackets() -> None:
    m = parse_message(mail("From: a@b.example\nMessage-ID: plain-id@x\nList-Id: bare.list.example"))
    assert m.message_id == "plain-id@x"
    assert m.list_id == "bare.list.example"


def test_import_pulls_in_no_third_party_modules() -> None:
    code = (
        "import sys, bombom_pipe.parse\n"
        "bad = [m for m in ('selectolax', 'tinycss2', 'nh3', 'charset_normalizer', 'dateutil')"
        " if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_result_is_frozen() -> None:
    m = parse_message(BASIC)
    assert isinstance(m, ParsedMessage)
    with pytest.raises(AttributeError):
        m.subject = "x"  # type: ignore[misc]


def str_fields(m: ParsedMessage) -> list[str]:
    """Every str reachable from a ParsedMessage."""
    out: list[str] = []
    for name in m.__dataclass_fields__:
        value = getattr(m, name)
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, tuple):
            for item in value:
                if isinstance(item, str):
                    out.append(item)
                elif isinstance(item, Attachment):
                    out.extend(v for v in (item.filename, item.content_type, item.content_id) if v)
    u = m.unsubscribe
    out.extend(v for v in (u.http, u.mailto, u.source) if v)
    return out


def test_timezone_offsets_other_than_utc_survive() -> None:
    m = parse_message(mail("From: a@b.example\nDate: Mon, 1 May 2023 10:00:00 -0700"))
    assert m.sent_at.utcoffset() == timezone(timedelta(hours=-7)).utcoffset(None)
