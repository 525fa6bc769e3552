"""Click-tracker targets read from the URL itself, thumbnail candidates, and the store step that
drops the image every issue of a newsletter repeats (its logo), through the real process."""

from __future__ import annotations

import base64
import json
import zlib
from urllib.parse import quote

import psycopg
import pytest

from bombom_pipe.parse import parse_message
from bombom_pipe.parse.clicks import target
from bombom_pipe.parse.images import is_tracking_image
from bombom_pipe.parse.newsletter import size_hint

from .conftest import Env

DEST = "https://news.example/2025/07/issue-42?utm_source=email"


def b64(text: str, urlsafe: bool = True) -> str:
    data = text.encode()
    raw = base64.urlsafe_b64encode(data) if urlsafe else base64.b64encode(data)
    return raw.decode().rstrip("=")


@pytest.mark.parametrize(
    "url",
    [
        # the destination base64-encoded in a path segment (Stibee, ConvertKit, Axios shapes)
        f"https://event.stibee.com/v2/click/MTk3NTEwLzEyMDY4MjQvMzkzLw/{b64(DEST)}",
        f"https://click.convertkit-mail4.com/p9unqonzo5/6qheh8h/{b64(DEST, urlsafe=False)}==",
        f"https://link.news.example/click/123/{b64(DEST)}/5f2a9c",
        # base64 JSON (Substack's /redirect/2/ shape), and zlib-compressed JSON (Mailgun)
        "https://substack.com/redirect/2/" + b64(json.dumps({"e": DEST, "p": 1})) + ".sig",
        "https://email.mg.news.example/c/"
        + base64.urlsafe_b64encode(zlib.compress(json.dumps({"url": DEST}).encode())).decode(),
        # percent-encoded in the path (Amazon SES) or in a URL-valued parameter
        f"https://abc.r.us-east-1.awstrack.me/L0/{quote(DEST, safe='')}/1/0100-abc=",
        f"https://clicks.news.example/redirect?u=1&url={quote(DEST, safe='')}",
    ],
)
def test_target_recovered_from_the_url_alone(url: str) -> None:
    assert target(url) == DEST


@pytest.mark.parametrize(
    "url",
    [
        # opaque tokens: nothing to recover (Mailchimp, SendGrid, HubSpot shapes)
        "https://x.us14.list-manage.com/track/click?u=3f21937f0f&id=594eb744a2&e=042ea43672",
        "https://u28034542.ct.sendgrid.net/ls/click?upn=AbCdEfGhIjKlMnOpQrStUvWxYz012345",
        # not a redirect: an unsubscribe page's own return address stays as it is
        f"https://news.example/unsubscribe?id=7&redirect={quote(DEST, safe='')}",
        "https://news.example/2025/07/issue-42",
        "mailto:leave@news.example",
        None,
    ],
)
def test_no_target_when_the_url_does_not_carry_one(url: str | None) -> None:
    assert target(url) is None


def mail(html: str, subject: str = "weekly 1", mid: str = "m1@news.example") -> bytes:
    return (f"From: Letter <letter@news.example>\r\nTo: alice@bombom.news\r\n"
            f"Subject: {subject}\r\nMessage-ID: <{mid}>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/html; charset=utf-8\r\n\r\n" + html).encode()


STIBEE_WEB = f"https://event.stibee.com/v2/click/MTk3NTEw/{b64('https://page.stibee.com/p/42')}"
STIBEE_UNSUB = f"https://event.stibee.com/v2/click/MTk3NTEw/{b64('https://stibee.com/u/9')}"


def test_parsed_message_carries_targets_beside_the_originals() -> None:
    m = parse_message(mail(f"<p><a href='{STIBEE_WEB}'>웹에서 보기</a></p><p>본문입니다.</p>"
                           f"<p><a href='{STIBEE_UNSUB}'>수신거부</a></p>"))
    assert (m.web_version_url, m.web_version_target) == (STIBEE_WEB, "https://page.stibee.com/p/42")
    assert (m.unsubscribe.http, m.unsubscribe.http_target) == (STIBEE_UNSUB,
                                                                "https://stibee.com/u/9")


# --- thumbnail candidates in the parser ---

@pytest.mark.parametrize(
    ("src", "width", "height", "tracking"),
    [
        ("https://open.sender.example/o/abc.gif", None, None, True),  # tracking host, no size
        ("https://x.list-manage.com/track/open.php?u=1", None, None, True),
        ("https://event.stibee.com/v2/open/NDczNDMv", None, None, True),
        ("https://u28034542.ct.sendgrid.net/x/AbCdEf.gif", None, None, True),  # tracking host
        ("https://u28034542.ct.sendgrid.net/x/AbCdEf.gif", 600, 300, False),  # sized: content
        ("https://img.stibee.com/20221_1608387771.jpg", None, None, False),
        ("https://t1.daumcdn.net/news/photo.jpg", None, None, False),
    ],
)
def test_tracking_images(src: str, width: int | None, height: int | None, tracking: bool) -> None:
    assert is_tracking_image(src, width, height) is tracking


def test_size_hints_in_urls() -> None:
    assert size_hint("https://rp.example/imgs/w644_h147_x600_y151_Header.jpg") == (644, 147)
    assert size_hint("https://cdn.example/a/150x150/author.jpg") == (150, 150)
    assert size_hint("https://cdn.example/p.jpg?w=150&h=150") == (150, None)
    assert size_hint("https://cdn.example/p.jpg") == (None, None)


def test_logo_masthead_author_photo_and_banner_are_not_thumbnails() -> None:
    html = ('<img src="https://cdn.example/brand/masthead.png" width="600">'
            '<img src="https://cdn.example/a.png" alt="Weekly logo" width="600">'
            '<img src="https://cdn.example/b.png" alt="로고" width="600">'
            '<img src="https://cdn.example/people/150x150/kim.jpg">'
            '<img src="https://cdn.example/c.png" width="600" height="80">'  # a 7.5:1 banner
            '<img src="https://open.tracker.example/p.gif">'
            '<p>본문입니다.</p><img src="https://cdn.example/story.jpg" width="560" height="315">')
    m = parse_message(mail(html))
    assert m.thumbnail_url == "https://cdn.example/story.jpg"
    assert m.thumbnail_candidates == ("https://cdn.example/story.jpg",)


@pytest.mark.parametrize(
    "image",
    [
        '<img src="https://cdn.example/imgs/unterschrift-chefredaktion.jpg" width="290">',
        '<img src="https://cdn.example/imgs/Signatur_Redaktion.png" width="300">',
        '<img src="https://cdn.example/imgs/a81.png" alt="편집장 서명" width="300">',
        '<img src="https://cdn.example/imgs/a82.png" alt="編集長の署名" width="300">',
        '<img src="https://cdn.example/imgs/trennlinie.png" width="600" height="160">',
    ],
)
def test_signatures_and_dividers_named_in_other_languages_are_not_thumbnails(image: str) -> None:
    """The words that mark a picture as not the letter's own come from the phrase file, in
    every language it lists."""
    html = f'<p>Liebe Leserinnen und Leser,</p>{image}<p>Ihre Redaktion</p>' \
           '<img src="https://cdn.example/imgs/w640_h480_story.jpg" width="160">'
    m = parse_message(mail(html))
    assert m.thumbnail_url == "https://cdn.example/imgs/w640_h480_story.jpg"


# --- the store: previous issues show which image is the newsletter's own ---

def issue(n: int, photo: str) -> bytes:
    # shaped like a picture (2:1, not a banner the parser passes over): only the store can tell
    header = f'<img src="https://cdn.news.example/top.png?s={n}" width="600" height="300">'
    return mail(f"{header}<p>Issue {n} text.</p><img src='{photo}' width='600' height='300'>"
                f"<p><a href='{STIBEE_WEB}'>View in browser</a> · "
                f"<a href='{STIBEE_UNSUB}'>Unsubscribe</a></p>",
                subject=f"weekly {n}", mid=f"issue-{n}@news.example")


def test_recurring_header_image_is_skipped_from_the_second_issue_on(
    env: Env, db: psycopg.Connection
) -> None:
    for n, photo in ((1, "https://cdn.news.example/one.jpg"),
                     (2, "https://cdn.news.example/two.jpg")):
        assert env.deliver(issue(n, photo)).returncode == 0
    rows = db.execute("SELECT subject, thumbnail_url, image_urls, web_version_target,"
                      " unsubscribe_http_target FROM articles ORDER BY id").fetchall()
    assert [(r[0], r[1]) for r in rows] == [
        ("weekly 1", "https://cdn.news.example/top.png?s=1"),  # no history yet
        ("weekly 2", "https://cdn.news.example/two.jpg"),  # top.png came back: the masthead
    ]
    assert rows[1][2] == ["https://cdn.news.example/top.png?s=2", "https://cdn.news.example/two.jpg"]
    assert rows[1][3:] == ("https://page.stibee.com/p/42", "https://stibee.com/u/9")
    target_row = db.execute("SELECT unsubscribe_http, unsubscribe_http_target FROM subscriptions")
    assert target_row.fetchone() == (STIBEE_UNSUB, "https://stibee.com/u/9")


def test_a_second_copy_of_the_same_issue_is_not_history(env: Env, db: psycopg.Connection) -> None:
    first = issue(1, "https://cdn.news.example/one.jpg")
    assert env.deliver(first).returncode == 0
    copy = first.replace(b"issue-1@", b"issue-1-copy@")  # another recipient's copy
    assert env.deliver(copy).returncode == 0
    thumbs = [r[0] for r in db.execute("SELECT thumbnail_url FROM articles ORDER BY id")]
    assert thumbs == ["https://cdn.news.example/top.png?s=1"] * 2
