"""Newsletter fidelity for institutional and older bulk mailers (issue 23), by class: previews
that start at the letter (not at its letterhead) and are never empty; banners, flags, icons and
.bmp mastheads are not thumbnails; unsubscribe links the body states differently; a web version
whose wording is split around its link. Our own examples, small and built here: Korean letters
in EUC-KR / ks_c_5601-1987 with table mastheads as bulk mailers send them, English and German."""

from __future__ import annotations

import base64

import pytest

from bombom_pipe.parse import parse_message

LETTER_KO = ("회원 여러분 안녕하세요. 올봄 재단은 지역 도서관 열두 곳과 함께 어린이 독서 교실을 "
             "열었습니다. 이번 호에서는 그 현장을 전해 드립니다.")
LETTER_EN = ("Dear members, this spring the foundation opened reading rooms in twelve local "
             "libraries together with our volunteers. This issue reports from three of them.")
LETTER_DE = ("Liebe Mitglieder, in diesem Frühjahr hat die Stiftung in zwölf Stadtbibliotheken "
             "Lesezimmer eröffnet. Diese Ausgabe berichtet aus dreien davon.")
PHOTO = "https://www.foundation.example/upload/2016/05/reading-room.jpg"


def mail(body: str, *, subject: str = "weekly", charset: str = "utf-8", title: str = "",
         sender: str = "Foundation <news@foundation.example>") -> bytes:
    """A one-part HTML letter; a Korean charset label gives the bytes of that legacy encoding
    (ks_c_5601-1987 and euc-kr are read as Windows-949), base64 as bulk mailers send them."""
    html = (f"<html><head><meta http-equiv='Content-Type' content='text/html; charset={charset}'>"
            f"<title>{title}</title></head><body>{body}</body></html>")
    codec = "cp949" if charset.lower() in ("euc-kr", "ks_c_5601-1987") else charset
    encoded = base64.encodebytes(html.encode(codec)).decode("ascii")
    name, address = sender.rsplit(" ", 1)
    head = [f"From: =?{charset}?B?{base64.b64encode(name.encode(codec)).decode()}?= {address}",
            f"Subject: =?{charset}?B?{base64.b64encode(subject.encode(codec)).decode()}?=",
            "MIME-Version: 1.0", f"Content-Type: text/html; charset=\"{charset}\"",
            "Content-Transfer-Encoding: base64"]
    return ("\r\n".join(head) + "\r\n\r\n" + encoded).encode("ascii")


def masthead_table(*rows: str) -> str:
    """The old bulk mailers' layout: a fixed-width table, one row per masthead block."""
    cells = "".join(f"<tr><td align='center'>{row}</td></tr>" for row in rows)
    return f"<table width='700' border='0' cellpadding='0' cellspacing='0'>{cells}</table>"


def letter_table(*paragraphs: str) -> str:
    return masthead_table(*(f"<p>{p}</p>" for p in paragraphs))


# --- previews start at the letter, not at its letterhead ---

@pytest.mark.parametrize("rows", [
    # the publisher's name with its street address and telephone
    ["(사)봄빛문화재단 | 서울특별시 종로구 세종대로 175 | Tel. 02-123-4567"],
    ["봄빛문화재단 04524 서울시 중구 세종대로 21길 30 전화 02)732-1234 팩스 02)732-1235"],
    # an issue line, alone or after the letter's name
    ["제 123호 (2016/05/31)"],
    ["봄빛 소식지 제123호 (2016.05.31)"],
    ["봄빛 소식지 2016년 5월호"],
    # a masthead run together with its navigation links
    ["봄빛 소식지 6월호 <a href='https://www.foundation.example/'>Home</a> "
     "<a href='https://blog.foundation.example/'>Blog</a> "
     "<a href='https://www.foundation.example/donate'>후원하기</a>"],
    # an archive or print notice
    ["지난 호는 재단 홈페이지에서 보실 수 있습니다 "
     "<a href='https://www.foundation.example/print'>[인쇄하기]</a>"],
    # a section label before the first headline
    ["■ 자료"],
    ["▶ 공지사항"],
], ids=["address-tel", "address-fax", "issue-line", "name-issue-line", "monthly-issue",
        "masthead-nav", "archive-print", "section-label", "section-arrow"])
def test_korean_letterhead_is_not_the_preview(rows: list[str]) -> None:
    raw = mail(masthead_table(*rows) + letter_table(LETTER_KO), charset="ks_c_5601-1987",
               subject="봄빛 소식지 6월호", sender="봄빛문화재단 <news@foundation.example>")
    m = parse_message(raw)
    assert m.preview is not None and m.preview.startswith(LETTER_KO[:30]), m.preview


@pytest.mark.parametrize(("rows", "letter"), [
    (["Example Foundation · 1200 Market Street, Suite 400 · San Francisco, CA 94102"], LETTER_EN),
    (["Vol. 45 | May 31, 2016"], LETTER_EN),
    (["View past issues | <a href='https://www.foundation.example/print'>Print this email</a>"],
     LETTER_EN),
    (["Stiftung Beispiel e.V. · Hauptstraße 12 · 10115 Berlin · Tel. 030 1234567"], LETTER_DE),
    (["Nr. 5 · Mai 2016"], LETTER_DE),
    (["Frühere Ausgaben im <a href='https://www.foundation.example/archiv'>Newsletter-Archiv</a>"],
     LETTER_DE),
], ids=["en-address", "en-issue-date", "en-archive-print", "de-address", "de-issue-month",
        "de-archive"])
def test_letterhead_in_other_languages_is_not_the_preview(rows: list[str], letter: str) -> None:
    m = parse_message(mail(masthead_table(*rows) + letter_table(letter)))
    assert m.preview is not None and m.preview.startswith(letter[:30]), m.preview


def test_the_whole_bulk_mailer_letterhead_is_passed_over() -> None:
    """Banner, name with issue line, navigation, archive notice and section label in one letter,
    as EUC-KR: the preview is the letter's first sentence."""
    raw = mail(masthead_table(
        "<img src='http://mail.foundation.example/img/top_bg.jpg' width='700' height='180'>",
        "봄빛 소식지 제123호 (2016/05/31)",
        "<a href='https://www.foundation.example/'>Home</a> | "
        "<a href='https://www.foundation.example/about'>재단소개</a> | "
        "<a href='https://www.foundation.example/news'>소식</a>",
        "지난 호는 재단 홈페이지에서 보실 수 있습니다 [인쇄하기]",
        "■ 자료") + letter_table(LETTER_KO), charset="euc-kr", subject="봄빛 소식지 제123호")
    m = parse_message(raw)
    assert m.preview is not None and m.preview.startswith(LETTER_KO[:30]), m.preview


@pytest.mark.parametrize("line", ["■ 자료를 모으는 일은 생각보다 오래 걸렸습니다.",
                                  "• Fed holds rates steady",
                                  "Our new office opened at 1200 Market Street in May."])
def test_a_sentence_that_looks_like_a_label_or_address_is_the_letter(line: str) -> None:
    m = parse_message(mail(letter_table(line, LETTER_EN)))
    assert m.preview is not None and m.preview.startswith(line.strip("• ")[:20]), m.preview


# --- a preview is never empty ---

def test_a_picture_letter_is_previewed_by_its_alt_text() -> None:
    alt = "2016 봄빛 가을 음악회에 초대합니다, 10월 15일 세종문화회관"
    raw = mail(masthead_table(
        f"<a href='https://www.foundation.example/concert'><img src='{PHOTO}' width='700' "
        f"height='1400' alt='{alt}'></a>"), charset="ks_c_5601-1987", title="봄빛 소식지",
        subject="가을 음악회 초대")
    assert parse_message(raw).preview == alt


def test_an_image_map_letter_is_previewed_by_its_alt_texts() -> None:
    raw = mail("<img src='https://www.foundation.example/img/0531.jpg' usemap='#m' width='700' "
               "height='1600' alt='어린이 독서 교실 참가자 모집'><map name='m'>"
               "<area shape='rect' coords='0,0,700,200' href='https://www.foundation.example/a' "
               "alt='신청하기'></map>", charset="euc-kr", subject="참가자 모집")
    assert parse_message(raw).preview.startswith("어린이 독서 교실 참가자 모집")


@pytest.mark.parametrize("alt", ["", "이미지", "image", "IMG 2", "0531_top.jpg", "로고",
                                 "수신거부"])
def test_without_telling_alt_text_the_html_title_is_the_preview(alt: str) -> None:
    raw = mail(f"<img src='{PHOTO}' width='700' height='1400' alt='{alt}'>", charset="euc-kr",
               title="봄빛 소식지 6월호: 어린이 독서 교실", subject="6월 소식")
    assert parse_message(raw).preview == "봄빛 소식지 6월호: 어린이 독서 교실"


@pytest.mark.parametrize("title", ["", "Untitled Document", "제목 없음"])
def test_without_alt_text_or_title_the_subject_is_the_preview(title: str) -> None:
    raw = mail(f"<img src='{PHOTO}' width='700' height='1400'>", charset="euc-kr",
               title=title, subject="봄빛 소식지 6월호")
    assert parse_message(raw).preview == "봄빛 소식지 6월호"


def test_an_empty_plain_letter_is_previewed_by_its_subject() -> None:
    raw = ("From: a@news.example\r\nSubject: 6월 소식\r\nMIME-Version: 1.0\r\n"
           "Content-Type: text/plain; charset=utf-8\r\n\r\n \r\n").encode()
    assert parse_message(raw).preview == "6월 소식"


# --- banners, flags, icons and .bmp mastheads are not thumbnails ---

@pytest.mark.parametrize("top", [
    "<img src='http://mail.foundation.example/img/top_0531.jpg' width='700' height='180'>",
    "<a href='https://www.foundation.example/'><img src='https://www.foundation.example/m.png' "
    "width='640' height='200'></a>",
    "<img src='https://www.foundation.example/img/flags/de.gif'>",
    "<img src='https://www.foundation.example/img/flag_kr.png'>",
    "<img src='https://www.foundation.example/img/ico_mail.gif'>",
    "<img src='http://mail.foundation.example/upload/0531_01.bmp' width='700' height='300'>",
    "<img src='http://mail.foundation.example/upload/top.BMP'>",
], ids=["banner", "linked-banner", "flag-folder", "flag-name", "icon", "bmp-sized", "bmp"])
def test_a_banner_flag_icon_or_bmp_is_passed_over_for_the_content_picture(top: str) -> None:
    raw = mail(masthead_table(top) + letter_table(LETTER_EN)
               + f"<img src='{PHOTO}' width='600' height='400'>")
    assert parse_message(raw).thumbnail_url == PHOTO


@pytest.mark.parametrize("name", ["newsletter_201605.jpg", "event_banner.jpg", "header_0531.png"])
def test_a_portrait_picture_is_content_whatever_its_name(name: str) -> None:
    src = f"https://www.foundation.example/upload/{name}"
    raw = mail(masthead_table(f"<img src='{src}' width='700' height='1800' alt=''>"),
               charset="euc-kr", subject="6월 소식")
    assert parse_message(raw).thumbnail_url == src


def test_a_hero_picture_at_the_top_is_still_the_thumbnail() -> None:
    raw = mail(f"<img src='{PHOTO}' width='600' height='300'>" + letter_table(LETTER_EN))
    assert parse_message(raw).thumbnail_url == PHOTO


# --- unsubscribe links the body states differently ---

OUT = "https://www.foundation.example/newsletter/out?u=7f3a"


@pytest.mark.parametrize("footer", [
    f"If you would prefer not to receive further emails from us, please <a href='{OUT}'>click "
    "here</a>.",
    f"<a href='{OUT}'>Click here</a> to unsubscribe from this list.",
    "You are receiving this email because you signed up at our website. If you no longer wish "
    "to receive our monthly newsletter, the event announcements and the occasional survey from "
    f"the foundation, <a href='{OUT}'>click here</a>.",
    f"To stop getting these emails, go <a href='{OUT}'>Here</a>.",
    "Wenn Sie diesen Newsletter nicht mehr erhalten möchten, klicken Sie "
    f"<a href='{OUT}'>hier</a>.",
    f"Klicken Sie <a href='{OUT}'>hier</a>, um sich vom Newsletter abzumelden.",
    f"<a href='{OUT}'>Hier</a> können Sie den Newsletter abbestellen.",
    f"<a href='{OUT}'>Email Preference Center</a>",
    f"<a href='{OUT}'>Manage your communication preferences</a>",
    f"<a href='{OUT}'>Change your subscription settings</a>",
    f"<a href='{OUT}'>Newsletter-Einstellungen ändern</a>",
], ids=["prefer-not", "click-here-to", "long-sentence", "here", "de-nicht-mehr", "de-abzumelden",
        "de-hier-abbestellen", "preference-center", "communication-preferences",
        "subscription-settings", "de-einstellungen"])
def test_unsubscribe_link_stated_by_its_sentence_or_preference_center(footer: str) -> None:
    raw = mail(letter_table(LETTER_EN) + "<a href='https://www.foundation.example/'>Home</a>"
               + f"<p>{footer}</p>")
    assert parse_message(raw).unsubscribe.http == OUT


def test_an_explicit_unsubscribe_link_wins_over_the_preference_center() -> None:
    raw = mail(letter_table(LETTER_EN) + "<p><a href='https://www.foundation.example/prefs'>"
               f"Update your email preferences</a> | <a href='{OUT}'>Unsubscribe</a></p>")
    assert parse_message(raw).unsubscribe.http == OUT


def test_click_here_after_another_links_notice_is_not_the_unsubscribe_link() -> None:
    raw = mail(letter_table(LETTER_EN) + "<p><a href='https://www.foundation.example/e'>Click "
               "here</a> to read the event report. Unsubscribe requests: write to us.</p>")
    assert parse_message(raw).unsubscribe.http is None


REDIRECT = ("http://mail.mailer.example.co.kr:8080/Check.asp?mid=3391&uid=7f3a"
            "&url=http%3A%2F%2Fwww.foundation.example%2Fmail%2Fdeny.asp%3Fu%3D7f3a")
BUTTON = "http://mail.mailer.example.co.kr/img/btn_01.gif"


@pytest.mark.parametrize("footer", [
    f"메일 수신을 원하지 않으시면 <a href='{REDIRECT}'>여기</a>를 눌러 주십시오.",
    f"메일 수신을 원하지 않으시면 <a href='{REDIRECT}'><img src='{BUTTON}' border='0'></a>"
    "를 클릭하세요.",
    f"<a href='{REDIRECT}'><img src='{BUTTON}' alt='수신거부' border='0'></a>",
    f"<a href='{REDIRECT}'><img src='{BUTTON}' alt='수신 거부' border='0'></a>",
    f"<map name='f'><area shape='rect' coords='0,0,80,20' href='{REDIRECT}' alt='수신거부'></map>"
    f"<img src='{BUTTON}' usemap='#f' width='700' height='40'>",
    "본 메일은 발신 전용입니다. 수신을 원하지 않으시면 "
    f"[<a href='{REDIRECT}' target='_blank'>수신거부</a>]를 클릭하세요. "
    f"If you don't want to receive this mail, click [<a href='{REDIRECT}'>here</a>].",
], ids=["here", "button-no-alt", "button-alt", "button-alt-spaced", "image-map", "two-languages"])
def test_korean_opt_out_on_buttons_and_behind_tracking_redirects(footer: str) -> None:
    raw = mail(letter_table(LETTER_KO) + f"<p>{footer}</p>", charset="ks_c_5601-1987",
               subject="6월 소식")
    assert parse_message(raw).unsubscribe.http == REDIRECT


OUT_PAGE = "https://www.foundation.example/newsletter/unsubscribe?u=7f3a"


def b64url(url: str) -> str:
    return base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


@pytest.mark.parametrize(("href", "target"), [
    # an ESP's click-tracker carrying the opt-out page in base64
    (f"https://click.mailer.example/v2/click/8812/{b64url(OUT_PAGE)}", OUT_PAGE),
    # a bulk mailer's own redirect (not one the click module unwraps) to its refusal script,
    # percent-encoded
    ("http://mail.mailer.example.co.kr/Check.asp?mid=3391&url=http%3A%2F%2Fwww.foundation.example"
     "%2Fmail%2Frefuse.asp%3Fu%3D7f3a", None),
    # and without a redirect: the refusal script itself
    ("http://www.foundation.example/servlet/mail_reject.jsp?u=7f3a", None),
], ids=["base64-tracker", "mailer-redirect", "refusal-script"])
def test_an_opt_out_button_without_words_is_found_by_where_it_leads(href: str, target: str | None
                                                                      ) -> None:
    """An image button with no alt text and no sentence around it: the target the link carries
    (or its own path) names the way out."""
    raw = mail(letter_table(LETTER_KO) + f"<p><a href='{href}'><img src='{BUTTON}'></a></p>",
               charset="euc-kr", subject="6월 소식")
    u = parse_message(raw).unsubscribe
    assert (u.http, u.http_target) == (href, target)


@pytest.mark.parametrize("href", [
    "https://news.example/2016/05/court-reject-appeal?utm_source=letter",
    "https://news.example/rejected-ideas/",
    f"https://click.mailer.example/v2/click/8812/{b64url('https://news.example/story/42')}",
])
def test_an_article_link_is_not_an_opt_out(href: str) -> None:
    raw = mail(letter_table(LETTER_EN) + f"<p><a href='{href}'><img src='{PHOTO}'></a></p>")
    assert parse_message(raw).unsubscribe.http is None


# --- a web version whose wording is split around its link ---

TRACKER = "https://click.e.foundation.example/?qs=9c1d2e3f4a5b6c7d8e9f"


@pytest.mark.parametrize("bar", [
    f"View this email in a <a href='{TRACKER}'>web browser</a>",
    f"<a href='{TRACKER}'>View this email</a> in a web browser",
    f"<a href='{TRACKER}'><span>View this</span></a> <span>email in your</span> "
    f"<a href='{TRACKER}'>web browser</a>",
    f"Diese E-Mail im <a href='{TRACKER}'>Browser</a> ansehen",
    f"<a href='{TRACKER}'>웹 브라우저</a>에서 보기",
], ids=["end-linked", "start-linked", "split-anchors", "de", "ko"])
def test_web_version_wording_split_around_its_link(bar: str) -> None:
    raw = mail(f"<p>{bar}</p>" + letter_table(LETTER_EN)
               + "<p><a href='https://www.foundation.example/'>Home</a></p>")
    m = parse_message(raw)
    assert m.web_version_url == TRACKER
    assert m.preview is not None and m.preview.startswith(LETTER_EN[:30]), m.preview
