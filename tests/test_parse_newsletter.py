"""Newsletter fidelity: preview, unsubscribe, web version, thumbnail, confirmation, display HTML."""

from __future__ import annotations

import base64
import hashlib

import pytest

from bombom_pipe.parse import ParsedMessage, Unsubscribe, parse_message

from .builders import html_message

ARTICLE = ("안녕하세요, 봄봄입니다. 이번 주에는 봄에 읽기 좋은 책 다섯 권을 골랐습니다. "
           "첫 번째 책은 오래된 골목을 걷는 이야기입니다. ") * 20
LOGO_PNG = b"\x89PNG\r\n\x1a\nlogo-bytes"


def html_mail(html: str, *headers: str, related: bytes | None = None) -> bytes:
    """With `related`, those bytes as the inline image `cid:logo@bombom`."""
    head = ["From: 봄봄 <letter@stibee.example>", "Subject: =?utf-8?B?"
            + base64.b64encode("봄봄 레터".encode()).decode() + "?=", "MIME-Version: 1.0", *headers]
    return html_message(head, html, related, "logo@bombom")


STIBEE = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>봄봄</title>
<style>.preheader {{ display:none }}</style></head><body>
<span class="preheader" style="display:none;max-height:0;overflow:hidden;mso-hide:all;opacity:0">
이번 주 봄봄 레터: 봄에 읽기 좋은 책 다섯 권&zwnj;&nbsp;&zwnj;&nbsp;&#847;&zwnj;&nbsp;&#8204;</span>
<table width="100%" cellpadding="0" cellspacing="0"><tr><td align="center"
 style="font-size:12px;color:#999999">이 메일이 잘 안보이시나요?
 <a href="https://stib.ee/web/123" target="_blank">웹에서 보기</a></td></tr></table>
<table width="600" align="center" style="background-color:#ffffff;position:fixed">
<tr><td><img src="https://img.stibee.example/logo.png" alt="봄봄 로고" width="120"
 height="40"></td></tr>
<tr><td><a href="https://bombom.example/a/1"><img src="https://img.stibee.example/123/cover.jpg"
 width="600" height="300" alt="표지"></a></td></tr>
<tr><td style="padding:20px;font-family:sans-serif" onclick="steal()">
<h1>봄에 읽기 좋은 책</h1><p>{ARTICLE}</p>
<a href="javascript:alert(1)">클릭</a><img src="cid:logo@bombom" width="200" height="80" alt="">
<iframe src="https://evil.example/"></iframe><form action="https://evil.example/"><input name="q">
</form></td></tr>
<tr><td style="font-size:11px;background:url(https://track.example/bg.png)">
더 이상 받고 싶지 않으시면 <a href="https://stib.ee/unsub/abc">수신거부</a></td></tr></table>
<img src="https://stibee.example/open/abc123.gif" width="1" height="1" alt="">
<script>document.cookie</script></body></html>"""


@pytest.fixture(scope="module")
def stibee() -> ParsedMessage:
    return parse_message(html_mail(STIBEE, related=LOGO_PNG))


def test_stibee_preview_is_the_hidden_preheader(stibee: ParsedMessage) -> None:
    assert stibee.preview == "이번 주 봄봄 레터: 봄에 읽기 좋은 책 다섯 권"


def test_stibee_web_version_and_body_unsubscribe(stibee: ParsedMessage) -> None:
    assert stibee.web_version_url == "https://stib.ee/web/123"
    assert stibee.unsubscribe == Unsubscribe(http="https://stib.ee/unsub/abc", source="body")


def test_stibee_thumbnail_skips_logo_and_pixel(stibee: ParsedMessage) -> None:
    assert stibee.thumbnail_url == "https://img.stibee.example/123/cover.jpg"


def test_stibee_reading_minutes_and_text(stibee: ParsedMessage) -> None:
    assert stibee.reading_minutes == 2  # ~1000 Hangul characters at 500/min
    assert stibee.text.startswith("이 메일이 잘 안보이시나요? 웹에서 보기\n봄에 읽기 좋은 책")
    assert "document.cookie" not in stibee.text
    assert "이번 주 봄봄 레터" not in stibee.text  # hidden preheader is not visible text
    assert stibee.subject == "봄봄 레터"


def test_stibee_display_html_is_sanitized(stibee: ParsedMessage) -> None:
    out = stibee.display_html
    for banned in ("<script", "document.cookie", "onclick", "javascript:", "<iframe", "<form",
                   "<input", "position", "/open/abc123", "url(", "cid:", "<style"):
        assert banned not in out, banned
    digest = hashlib.sha256(LOGO_PNG).hexdigest()
    assert f'src="/attachments/{digest}"' in out
    assert stibee.attachments[0].sha256 == digest
    assert stibee.attachments[0].content_id == "logo@bombom"
    assert 'style="padding:20px;font-family:sans-serif"' in out
    assert 'style="background-color:#ffffff"' in out
    assert 'href="https://stib.ee/unsub/abc" rel="noopener noreferrer nofollow"' in out
    assert 'width="600"' in out


def test_display_html_is_deterministic() -> None:
    raw = html_mail(STIBEE, related=LOGO_PNG)
    assert parse_message(raw).display_html == parse_message(raw).display_html


def test_preview_skips_boilerplate_without_preheader() -> None:
    html = ("<p>View this email in your browser</p><p>이 메일이 잘 안보이시나요? "
            "<a href='https://x.example/web'>웹으로 보기</a></p><div>&zwnj;&#847;</div>"
            "<h2>오늘의 뉴스</h2><p>" + "긴 본문 내용입니다. " * 40 + "</p>")
    m = parse_message(html_mail(html))
    assert m.preview.startswith("오늘의 뉴스 긴 본문 내용입니다.")
    assert 100 <= len(m.preview) <= 150
    assert m.web_version_url == "https://x.example/web"


def test_unsubscribe_keyword_before_link() -> None:
    html = ("<p>본문</p><p>뉴스레터 구독 해지를 원하시면 <a href='https://x.example/bye'>여기</a>"
            "를 눌러주세요.</p><p><a href='https://x.example/home'>홈</a></p>")
    m = parse_message(html_mail(html))
    assert m.unsubscribe == Unsubscribe(http="https://x.example/bye", source="body")


@pytest.mark.parametrize("word", ["unsubscribe", "Unsubscribe here", "구독 취소", "구독해지",
                                  "수신 거부"])
def test_unsubscribe_anchor_text(word: str) -> None:
    html = ("<p>news</p><a href='https://x.example/other'>more</a>"
            f"<a href='mailto:u@x.example'>{word}</a>")
    m = parse_message(html_mail(html))
    assert m.unsubscribe == Unsubscribe(mailto="mailto:u@x.example", source="body")


def test_list_unsubscribe_header_with_one_click() -> None:
    raw = html_mail(
        "<p>hi</p><a href='https://x.example/unsubscribe'>unsubscribe</a>",
        "List-Unsubscribe: <mailto:leave@x.example?subject=unsub>,\r\n <https://x.example/u/1>",
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
    )
    m = parse_message(raw)
    assert m.unsubscribe == Unsubscribe(http="https://x.example/u/1",
                                        mailto="mailto:leave@x.example?subject=unsub",
                                        one_click=True, source="header")
    assert m.list_unsubscribe == "<mailto:leave@x.example?subject=unsub>, <https://x.example/u/1>"


def test_list_unsubscribe_without_post_is_not_one_click() -> None:
    m = parse_message(html_mail("<p>hi</p>", "List-Unsubscribe: <https://x.example/u/2>"))
    assert m.unsubscribe == Unsubscribe(http="https://x.example/u/2", source="header")


def test_plain_text_unsubscribe_and_web_version() -> None:
    raw = (b"From: a@b.example\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
           b"View in browser: https://x.example/web\r\n\r\nHello readers, today we talk about "
           b"tea.\r\n\r\nTo unsubscribe:\r\nhttps://x.example/unsub?id=1\r\n")
    m = parse_message(raw)
    assert m.unsubscribe == Unsubscribe(http="https://x.example/unsub?id=1", source="body")
    assert m.web_version_url == "https://x.example/web"
    assert m.preview == "Hello readers, today we talk about tea."  # footer lines are not text
    assert m.display_html.startswith('<div style="white-space:pre-wrap">View in browser')


def test_thumbnail_prefers_og_image_and_skips_pixels() -> None:
    html = ('<html><head><meta property="og:image" content="https://x.example/og.png"></head>'
            '<body><img src="https://x.example/a.jpg" width="600"></body></html>')
    assert parse_message(html_mail(html)).thumbnail_url == "https://x.example/og.png"
    html = ('<img src="https://x.example/track/open.gif?u=1"><img src="https://x.example/s.gif" '
            'width="1" height="1"><img src="https://x.example/spacer.gif">'
            '<img src="https://x.example/x.png" style="display:none">'
            '<img src="https://x.example/icons/facebook.png" width="24">'
            '<img src="https://x.example/photo.jpg" width="560" height="300">')
    m = parse_message(html_mail(html))
    assert m.thumbnail_url == "https://x.example/photo.jpg"
    assert "track/open.gif" not in m.display_html
    assert "s.gif" not in m.display_html
    assert "photo.jpg" in m.display_html


@pytest.mark.parametrize(
    ("subject", "html", "expected"),
    [
        ("[봄봄] 구독을 확인해 주세요",
         "<p>봄봄 뉴스레터 구독 신청을 완료하려면 아래 버튼을 눌러주세요.</p>"
         "<a href='https://bombom.example/web'>웹에서 보기</a>"
         "<a href='https://bombom.example/confirm?t=1'>구독 확인하기</a>"
         "<a href='https://bombom.example/unsub'>수신거부</a>",
         "https://bombom.example/confirm?t=1"),
        ("Please confirm your subscription",
         "<p>Thanks for signing up! Please confirm your subscription to The Letter.</p>"
         "<a href='https://x.us1.list-manage.example/subscribe/confirm?u=1&id=2'>"
         "Yes, subscribe me to this list.</a><a href='https://x.example/unsubscribe'>"
         "unsubscribe</a>",
         "https://x.us1.list-manage.example/subscribe/confirm?u=1&id=2"),
        ("환영합니다", "<p>이메일 인증을 완료해 주세요.</p>"
         "<a href='https://x.example/v?code=9'>인증하기</a>", "https://x.example/v?code=9"),
        ("Weekly digest", "<p>We confirmed nothing here. Read on.</p>"
         "<a href='https://x.example/confirm-article'>Confirm your seat</a>", None),
    ],
)
def test_confirmation_mails(subject: str, html: str, expected: str | None) -> None:
    raw = html_mail(html).replace(b"Subject:", b"X-Old-Subject:", 1)
    raw = f"Subject: {subject}\r\n".encode() + raw
    m = parse_message(raw)
    assert m.confirmation_url == expected
    assert m.is_confirmation is (expected is not None)


def test_reading_minutes_latin_words() -> None:
    html = "<p>" + "word " * 690 + "</p>"
    assert parse_message(html_mail(html)).reading_minutes == 3  # 690 words at 230/min


def test_reading_minutes_none_without_text() -> None:
    m = parse_message(html_mail('<img src="https://x.example/a.png">'))
    assert m.reading_minutes is None
    assert m.preview == "봄봄 레터"  # no text, no alt text, no <title>: the subject
