"""Newsletter fidelity by class: the shared phrase lists, web-version and unsubscribe links in
every listed wording, preheader-named tables that are visible, and previews built from junk."""

from __future__ import annotations

import base64
import tomllib
from importlib import resources

import pytest

from bombom_pipe.parse import Unsubscribe, parse_message
from bombom_pipe.parse.newsletter import phrase_pattern

PHRASES = tomllib.loads(
    resources.files("bombom_pipe.parse").joinpath("phrases.toml").read_text("utf-8")
)
FIRST = ("이번 주에는 봄에 읽기 좋은 책 다섯 권을 골랐습니다. "
         "첫 번째 책은 오래된 골목을 걷는 이야기입니다.")


def html_mail(body: str, head: str = "") -> bytes:
    return ("From: Letter <letter@news.example>\r\nSubject: weekly\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/html; charset=utf-8\r\n\r\n"
            f"<html><head>{head}</head><body>{body}</body></html>").encode()


def examples(kind: str, key: str = "examples") -> list[tuple[str, str]]:
    return [(lang, text) for lang, entry in PHRASES[kind].items() for text in entry.get(key, [])]


# --- the one phrase file, in every language it lists ---

def test_phrase_file_covers_the_languages() -> None:
    for kind in ("unsubscribe", "web_version"):
        assert {"ko", "en", "de", "ja"} <= set(PHRASES[kind]), kind


@pytest.mark.parametrize("kind", list(PHRASES))
def test_every_example_matches_and_no_counter_example_does(kind: str) -> None:
    pattern = phrase_pattern(kind)
    assert [t for _, t in examples(kind) if not pattern.search(t)] == []
    assert [t for _, t in examples(kind, "not") if pattern.search(t)] == []


@pytest.mark.parametrize(("lang", "text"), examples("unsubscribe"))
def test_body_unsubscribe_link_in_every_listed_wording(lang: str, text: str) -> None:
    m = parse_message(html_mail(f"<p>{FIRST}</p><p><a href='https://news.example/read'>기사</a>"
                                f"</p><p><a href='https://news.example/u/1'>{text}</a></p>"))
    assert m.unsubscribe == Unsubscribe(http="https://news.example/u/1", source="body")
    assert m.web_version_url is None


@pytest.mark.parametrize(("lang", "text"), examples("web_version"))
def test_web_version_link_in_every_listed_wording(lang: str, text: str) -> None:
    m = parse_message(html_mail(f"<p><a href='https://news.example/web/7'>{text}</a></p>"
                                f"<p>{FIRST}</p><p><a href='https://news.example/other'>기사</a></p>"))
    assert m.web_version_url == "https://news.example/web/7"


@pytest.mark.parametrize(("lang", "text"), examples("trouble_viewing"))
def test_link_after_a_trouble_viewing_sentence_is_the_web_version(lang: str, text: str) -> None:
    m = parse_message(html_mail(f"<p>{text} <a href='https://news.example/web/8'>→</a></p>"
                                f"<p>{FIRST}</p>"))
    assert m.web_version_url == "https://news.example/web/8"


def test_german_click_here_if_you_cannot_read_this_mail() -> None:
    m = parse_message(html_mail(
        "<p>Klicken Sie <a href='https://news.example/web/9'>hier</a>, wenn Sie diese E-Mail "
        f"nicht lesen können.</p><p>{FIRST}</p>"))
    assert m.web_version_url == "https://news.example/web/9"


def test_cancel_your_subscription_is_not_a_web_version() -> None:
    m = parse_message(html_mail(f"<p>{FIRST}</p><p><a href='https://news.example/c'>Cancel your "
                                "subscription</a> · <a href='https://news.example/p'>Manage "
                                "preferences</a></p>"))
    assert m.unsubscribe.http == "https://news.example/c"
    assert m.web_version_url is None


# --- a visible link inside a table named "pre-header" ---

PREHEADER_TABLE = """<table class="pre-header" width="100%"><tr><td style="font-size:11px">
<a href="https://news.example/web/10">View in browser</a></td></tr></table>"""


def test_visible_link_in_a_pre_header_table_is_found() -> None:
    m = parse_message(html_mail(PREHEADER_TABLE + f"<p>{FIRST}</p>"))
    assert m.web_version_url == "https://news.example/web/10"
    assert m.text.startswith("View in browser")
    assert m.preview == FIRST  # the whole first paragraph (under the preview's length)


def test_preheader_hidden_by_the_style_sheet_stays_hidden() -> None:
    head = "<style>p{margin:0} .preheader, .x { display: none !important; }</style>"
    body = (f"<span class='preheader'>봄에 읽기 좋은 책 다섯 권을 소개하는 이번 주 레터</span>"
            f"<p>{FIRST}</p>")
    m = parse_message(html_mail(body, head))
    assert "이번 주 레터" not in m.text
    assert m.preview == "봄에 읽기 좋은 책 다섯 권을 소개하는 이번 주 레터"


def test_rules_inside_media_queries_do_not_hide() -> None:
    head = "<style>@media (max-width:480px){ .desktop{display:none} }</style>"
    m = parse_message(html_mail(f"<div class='desktop'><p>{FIRST}</p></div>", head))
    assert m.text == FIRST


# --- the preheader is judged before it is trusted; junk lines at the top are dropped ---

HIDDEN = '<div style="display:none;max-height:0;overflow:hidden">{}</div>'


@pytest.mark.parametrize(
    "preheader",
    [
        "#최강자엔비디아 #엔비디아시총",  # hashtags only, left over from an earlier issue
        "#AI #Nvidia #markets",
        "봄봄 레터",  # too short to stand for the letter, and not in it
        "🕢 2025/07/21 07:30",
        "5분 읽기",
        "View this email in your browser",
        "https://news.example/web/1",
    ],
)
def test_junk_preheader_gives_way_to_the_first_sentence(preheader: str) -> None:
    m = parse_message(html_mail(HIDDEN.format(preheader) + f"<p>{FIRST}</p>"))
    assert m.preview == FIRST


def test_short_preheader_that_the_letter_repeats_is_kept() -> None:
    m = parse_message(html_mail(HIDDEN.format("봄에 읽기 좋은 책") + "<h1>봄에 읽기 좋은 책</h1>"
                                + f"<p>{FIRST}</p>"))
    assert m.preview == "봄에 읽기 좋은 책"


@pytest.mark.parametrize(
    "lines",
    [
        ["🕢 2025/07/21 07:30"],
        ["2025년 7월 21일 월요일", "제128호"],
        ["Vol.12", "⏱ 5분 읽기"],
        ["Issue #42", "July 21, 2025", "7 min read"],
        ["Ausgabe 17", "Lesezeit: 5 Minuten"],
    ],
)
def test_leading_date_issue_and_reading_time_lines_are_dropped(lines: list[str]) -> None:
    top = "".join(f"<p>{line}</p>" for line in lines)
    m = parse_message(html_mail(top + f"<p>{FIRST}</p>"))
    assert m.preview == FIRST


@pytest.mark.parametrize("top", ["=09", "369", "01 / 03", "★ ★ ★", "—", "=20=20"])
def test_leading_blocks_without_a_letter_are_not_the_preview(top: str) -> None:
    """Stray escapes and counters above the letter: HTML5 parsing puts text found in the head
    ("=09" from a broken QP escape) at the top of the body, as a browser shows it."""
    m = parse_message(html_mail(f"<p>{FIRST}</p>", head=top))
    assert m.preview == FIRST
    m = parse_message(html_mail(f"<div>{top}</div><p>{FIRST}</p>"))
    assert m.preview == FIRST


def test_a_date_inside_the_text_is_kept() -> None:
    text = "2025년 7월 21일에 있었던 일을 정리했습니다. " + FIRST
    m = parse_message(html_mail(f"<p>{text}</p>"))
    assert m.preview.startswith("2025년 7월 21일에 있었던 일")


@pytest.mark.parametrize(
    ("subject", "heading"),
    [
        ("Wandel-Newsletter Januar 2023", "Wandel-Newsletter Januar 2023"),
        ("봄봄 레터 128호: 봄에 읽기 좋은 책", "봄봄 레터 128호 — 봄에 읽기 좋은 책"),
        ("The Weekly Dispatch", "THE WEEKLY DISPATCH"),
    ],
)
def test_a_leading_heading_that_repeats_the_subject_is_not_the_preview(
        subject: str, heading: str) -> None:
    encoded = f"=?utf-8?b?{base64.b64encode(subject.encode()).decode()}?="
    mail = html_mail(f"<h3>{heading}</h3><p>{FIRST}</p>").replace(
        b"Subject: weekly", f"Subject: {encoded}".encode())
    assert parse_message(mail).preview == FIRST


def test_a_letter_that_is_only_its_subject_keeps_it_as_the_preview() -> None:
    mail = html_mail("<h3>weekly</h3>")
    assert parse_message(mail).preview == "weekly"


@pytest.mark.parametrize(
    "menu",
    [
        '<a href="https://site.example/p">Profile</a> <a href="https://site.example/m">Messages</a>'
        ' <a href="https://site.example/c">Contacts</a>',
        '<a href="https://shop.example/a">Angebote</a> | <a href="https://shop.example/r">Rezepte'
        '</a> | <a href="https://shop.example/f">Filialen</a>',
        '<a href="https://news.example/1">정치</a>·<a href="https://news.example/2">경제</a>·'
        '<a href="https://news.example/3">사회</a>',
    ],
)
def test_a_leading_menu_of_links_is_not_the_preview(menu: str) -> None:
    m = parse_message(html_mail(f"<table><tr><td>{menu}</td></tr></table><p>{FIRST}</p>"))
    assert m.preview == FIRST


def test_a_leading_linked_headline_is_the_preview() -> None:
    m = parse_message(html_mail('<h2><a href="https://news.example/s">봄에 읽기 좋은 책 다섯 권</a>'
                                f"</h2><p>{FIRST}</p>"))
    assert m.preview.startswith("봄에 읽기 좋은 책 다섯 권 " + FIRST[:10])


@pytest.mark.parametrize(
    "lines",
    [
        ["(Do Not Reply to this email)", "Customer: jane.doe@example.com"],
        ["Bitte antworten Sie nicht auf diese E-Mail.", "Abonnent: max@example.de"],
        ["본 메일은 발신 전용입니다.", "수신자: kim@example.kr"],
        ["このメールは送信専用です。"],
    ],
)
def test_leading_notices_about_the_mail_itself_are_dropped(lines: list[str]) -> None:
    top = "".join(f"<p>{line}</p>" for line in lines)
    assert parse_message(html_mail(top + f"<p>{FIRST}</p>")).preview == FIRST


@pytest.mark.parametrize(
    "notice",
    [
        "To unsubscribe from the<br>Weekly Digest click here",
        "Wenn Sie den Newsletter abbestellen<br>möchten, klicken Sie hier",
        "수신을 원치 않으시면<br>여기를 눌러 주세요",
    ],
)
def test_an_unsubscribe_notice_broken_over_lines_is_skipped_whole(notice: str) -> None:
    m = parse_message(html_mail(f"<p>{notice}</p><p>{FIRST}</p>"))
    assert m.preview == FIRST


def test_a_finished_unsubscribe_sentence_does_not_swallow_the_next_line() -> None:
    m = parse_message(html_mail("<p>Unsubscribe here.</p><p>Short news.</p>"
                                f"<p>{FIRST}</p>"))
    assert m.preview.startswith("Short news.")


def test_a_greeting_after_a_one_word_unsubscribe_link_is_kept() -> None:
    m = parse_message(html_mail("<p>View in browser | Unsubscribe</p><p>Hi Jane,</p>"
                                f"<p>{FIRST}</p>"))
    assert m.preview.startswith("Hi Jane, " + FIRST[:10])
def titled_mail(subject: str, body: str) -> bytes:
    return html_mail(body).replace(b"Subject: weekly", f"Subject: {subject}".encode())


@pytest.mark.parametrize(
    ("subject", "heading"),
    [
        ("봄에 읽기 좋은 책 다섯 권", "봄에 읽기 좋은 책 다섯 권"),
        ("Wandel-Newsletter Januar 2023", "Wandel-Newsletter Januar 2023"),
        ("[Weekly] The harbour, rebuilt", "Weekly: the harbour, rebuilt"),
        ("The harbour, rebuilt: what changed", "The harbour, rebuilt"),
    ],
)
def test_a_heading_that_repeats_the_subject_is_not_the_preview(subject: str, heading: str
                                                                ) -> None:
    m = parse_message(titled_mail(subject, f"<h1>{heading}</h1><p>{FIRST}</p>"))
    assert m.preview == FIRST


def test_a_letter_that_says_more_than_its_subject_keeps_its_first_line() -> None:
    heading = "<h1>Books for the spring, five of them</h1>"
    m = parse_message(titled_mail("Books", f"{heading}<p>{FIRST}</p>"))
    assert m.preview.startswith("Books for the spring")


@pytest.mark.parametrize(
    "menu",
    [
        ["Профиль", "Сообщения", "Контакты"],
        ["홈", "지난 호 보기", "구독하기"],
        ["Home", "Archive", "About us", "Shop"],
    ],
)
def test_a_menu_of_short_links_is_not_the_preview(menu: list[str]) -> None:
    cells = "".join(f'<td><a href="https://news.example/{i}">{item}</a></td>'
                    for i, item in enumerate(menu))
    m = parse_message(html_mail(f"<table><tr>{cells}</tr></table><p>{FIRST}</p>"))
    assert m.preview == FIRST


def test_a_linked_headline_is_the_letter() -> None:
    headline = "다섯 권의 책으로 만나는 오래된 골목 이야기"
    m = parse_message(html_mail(f'<h2><a href="https://news.example/a">{headline}</a></h2>'
                                f"<p>{FIRST}</p>"))
    assert m.preview.startswith(headline)


@pytest.mark.parametrize("name", ["unterschrift_sieben.jpg", "ceo-signature.png", "서명.png",
                                  "署名.jpg"])
def test_a_signature_image_is_not_the_thumbnail(name: str) -> None:
    photo = "https://cdn.news.example/photos/harbour-1200x800.jpg"
    m = parse_message(html_mail(f'<p>{FIRST}</p><img src="https://cdn.news.example/img/{name}" '
                                f'width="300" height="120"><p>{FIRST}</p><img src="{photo}">'))
    assert m.thumbnail_url == photo


# --- Korean top bars: the web version under other names, and no preview made of them ---

@pytest.mark.parametrize(("bar", "web"), [
    ("<a href='https://news.example/web/20'>잘림 없이 읽기</a> | "
     "<a href='https://news.example/app'>앱에서 보기</a>", "https://news.example/web/20"),
    ("<a href='https://news.example/web/21'>새 창에서 보기</a>│"
     "<a href='https://news.example/kakao'>카카오톡 알림받기</a>", "https://news.example/web/21"),
    ("<a href='https://news.example/web/22'>쾌적하게 보기</a> Ι "
     "<a href='https://news.example/join'>구독하기</a>", "https://news.example/web/22"),
], ids=["read-uncut", "new-window", "comfortable"])
def test_korean_web_version_wordings_in_a_top_bar(bar: str, web: str) -> None:
    m = parse_message(html_mail(f"<div>뉴스 레터 2025.07.21. 월요일 | {bar}</div><p>{FIRST}</p>"))
    assert m.web_version_url == web
    assert m.preview is not None and m.preview.startswith(FIRST[:20])


# --- what comes before the letter: mastheads, link bars, dates ---

def test_leading_blocks_made_of_links_are_not_the_preview() -> None:
    m = parse_message(html_mail(
        "<div><a href='https://news.example/'><p>봄봄레터</p></a></div>"
        "<h1><a href='https://news.example/1'>오늘의 레터</a></h1>"
        "<div><a href='https://news.example/kakao'>알림받기</a> | "
        f"<a href='https://news.example/dict'>경제사전</a></div><p>{FIRST}</p>"))
    assert m.preview is not None and m.preview.startswith(FIRST[:20])


def test_masthead_text_above_the_web_version_line_is_not_the_preview() -> None:
    m = parse_message(html_mail(
        "<p>봄봄 데일리</p><p>이 메일이 잘 안보이시나요? "
        f"<a href='https://news.example/web/30'>웹에서 보기</a></p><p>{FIRST}</p>"))
    assert m.web_version_url == "https://news.example/web/30"
    assert m.preview is not None and m.preview.startswith(FIRST[:20])


def test_a_date_in_front_of_the_preheader_is_dropped() -> None:
    m = parse_message(html_mail(
        "<div style='display:none'>25.07.21 (월) 오늘의 단어는 '여름휴가'입니다. "
        "예문과 함께 알아봐요</div>"
        f"<p>{FIRST}</p>"))
    assert m.preview is not None and m.preview.startswith("오늘의 단어는")


# --- thumbnails: what the picture's own name and link say ---

def test_a_newsletter_folder_does_not_make_a_picture_a_masthead() -> None:
    src = "https://img.news.example/newsletter_list_1/9f8e7d.jpg"
    m = parse_message(html_mail(f"<p>{FIRST}</p><img src='{src}' width='600' height='300'>"))
    assert m.thumbnail_url == src
    named = "https://img.news.example/img/newsletter_header.jpg"
    m = parse_message(html_mail(f"<p>{FIRST}</p><img src='{named}' width='600' height='300'>"))
    assert m.thumbnail_url is None


@pytest.mark.parametrize(("sender", "masthead"), [
    ("봄봄레터", "<a href='https://news.example/'>봄봄레터</a>"),
    ("BombomNews", "<a href='https://news.example/'><b>Bombom</b> News <i>Weekly</i></a>"),
    ("봄봄레터", "<span>봄봄 레터</span>"),
], ids=["linked-name", "name-run-on", "plain-name"])
def test_the_senders_name_at_the_top_is_not_the_preview(sender: str, masthead: str) -> None:
    raw = html_mail(f"<div>{masthead}</div><p>{FIRST}</p>").replace(
        b"From: Letter", f"From: {sender}".encode())
    m = parse_message(raw)
    assert m.preview is not None and m.preview.startswith(FIRST[:20])
    m = parse_message(html_mail(f"<div>{masthead}</div>").replace(
        b"From: Letter", f"From: {sender}".encode()))
    assert m.preview is not None  # nothing else: the name is better than no preview


@pytest.mark.parametrize(("lang", "text"), examples("arrival"))
def test_a_preheader_announcing_the_letter_gives_way_to_the_letter(lang: str, text: str) -> None:
    """The same "your letter is here" every issue says nothing of this one, hidden or on top."""
    hidden = f'<div style="display:none">{text}. 글을 읽고 생각을 남겨 보세요.</div>'
    assert parse_message(html_mail(hidden + f"<p>{FIRST}</p>")).preview == FIRST
    assert parse_message(html_mail(f"<p>{text}</p><p>{FIRST}</p>")).preview == FIRST


@pytest.mark.parametrize(
    "lines",
    [
        ["토요일의 레터", "2026. 8. 1. (토)", "No.7 · 용기"],
        ["The Sunday Letter", "July 21, 2025"],
        ["Wochenpost", "21. Juli 2025", "Ausgabe 17"],
        ["Morning Brief", "Vol. 12 | Spring"],
    ],
)
def test_a_label_above_the_date_or_issue_line_is_the_masthead(lines: list[str]) -> None:
    top = "".join(f"<p>{line}</p>" for line in lines)
    assert parse_message(html_mail(top + f"<p>{FIRST}</p>")).preview == FIRST


def test_a_sentence_before_a_date_line_is_the_letter() -> None:
    opening = "지난주에 보내 주신 답장을 모두 읽었습니다, 고맙습니다."
    m = parse_message(html_mail(f"<p>{opening}</p><p>2026. 8. 1.</p><p>{FIRST}</p>"))
    assert m.preview.startswith(opening)
