"""The display HTML fetches no tracker, nothing relative, and cannot cover the page.

Decisions must hold on the tree nh3 (html5ever, as browsers) builds, whatever another parser
makes of the markup. The browser-level check of the same properties is test_sanitize_browser.py.
"""

from __future__ import annotations

import hashlib
import re

import psycopg
import pytest

from bombom_pipe.parse import parse_message
from bombom_pipe.parse.sanitize import MAX_DEPTH, clean_fragment, safe_style

from .builders import html_message
from .conftest import Env

PIXEL = '<img src="https://t.example/open/x.gif" width=1 height=1>'
BACKGROUND = '<div style="background:url(https://evil.example/t.png)">body</div>'
CONTENT_IMAGE = '<img src="https://img.example.com/cover.jpg" width="600" height="300" alt="cover">'
PNG = b"\x89PNG\r\n\x1a\nimage-bytes"
SHA = hashlib.sha256(PNG).hexdigest()


def mail(html: str, *headers: str, related: bool = False) -> bytes:
    """With `related`, PNG as the inline image `cid:logo@news`."""
    head = ["From: Letter <letter@news.example.com>", "Subject: letter", "MIME-Version: 1.0",
            "Message-ID: <" + hashlib.sha256(html.encode()).hexdigest()[:16] + "@news.example.com>",
            *headers]
    return html_message(head, html, PNG if related else None, "logo@news")


def display(html: str, related: bool = False) -> str:
    shown = parse_message(mail(html, related=related)).display_html
    assert shown is not None
    return shown


def image_sources(html: str) -> list[str]:
    return re.findall(r'<img\b[^>]*?\bsrc="([^"]*)"', html)


# markup that other parsers read differently from a browser: each hides the pixel and the CSS
# background from one of them
CONFUSING_PREFIXES = ["<!-- --!>", "<![foo bar]>", "<!-->", "<?x >", "<!x>", "</x y='>'>",
                      "<p title='", "<div <div>", "<table><caption>", "<svg><desc><![CDATA[",
                      "<math><mi><!--", "<noscript>", "<xmp>", "<textarea>", "<plaintext>"]


@pytest.mark.parametrize("prefix", CONFUSING_PREFIXES)
def test_pixel_and_css_url_never_survive_confusing_markup(prefix: str) -> None:
    shown = display(prefix + PIXEL + BACKGROUND + CONTENT_IMAGE)
    markup = "".join(re.findall(r"<[^>]*>", shown))  # escaped text may say anything
    assert "t.example" not in markup
    assert "url(" not in markup and "evil.example" not in markup
    for src in image_sources(shown):
        assert src == "https://img.example.com/cover.jpg"


@pytest.mark.parametrize("container", [
    '<div style="display:none !important">{}</div>',
    '<table style="display:none"><tr><td>{}</td></tr></table>',
    '<div style="DISPLAY : NONE">{}</div>',
    '<div style="visibility:hidden"><p>{}</p></div>',
    '<span style="opacity:0">{}</span>',
    '<div style="max-height:0;overflow:hidden">{}</div>',
    '<div style="width:0px;overflow:hidden;">{}</div>',
    '<div hidden>{}</div>',
    '<div style="width:1px;height:1px;overflow:hidden">{}</div>',
    '<div style="width:2px"><p>{}</p></div>',
    '<span style="max-height:1px;overflow:clip">{}</span>',
    '<table width="1"><tr><td>{}</td></tr></table>',
    '<table><tr><td><div><table style="display:none"><tr><td><b>{}</b></td></tr></table>'
    '</div></td></tr></table>',
    '<div style="overflow:hidden;height:1pt;width:1pt">{}</div>',
    '<div style="opacity:1e-9">{}</div>',
    '<div style="opacity:.4%">{}</div>',
    '<style>.preheader{{display:none}}</style><div class="preheader">{}</div>',
])
def test_images_in_hidden_containers_are_not_fetched(container: str) -> None:
    beacons = ('<img src="https://link.news.example.com/img/5f1e2d3c/s.gif" width="100%">'
               '<img src="https://mail.naver.com/readReceipt/notify/?img=abc%40naver.com">')
    shown = display("<p>visible text</p>" + container.format(beacons) + CONTENT_IMAGE)
    assert image_sources(shown) == ["https://img.example.com/cover.jpg"]
    assert "visible text" in shown


# one rule decides what is hidden, for the text and preview as for the display HTML: inline
# styles and top-level <style> rules, CSS read as a browser reads it
HIDDEN = [
    '<div style="display:none">{}</div>',
    '<div style="visibility:collapse">{}</div>',
    '<div style="opacity:1e-9">{}</div>',
    '<div style="overflow:hidden;height:1pt;width:1pt">{}</div>',
    '<div style="overflow:clip;max-height:.2mm">{}</div>',
    '<div style="disp\\6c ay:none">{}</div>',
    '<div hidden>{}</div>',
    '<style>.preheader{{display:none}}</style><div class="preheader">{}</div>',
    '<style>td.pre {{ display : none !important }}</style><table><tr><td class="x pre">{}</td>'
    '</tr></table>',
    '<style>#top .pre, .other{{visibility:hidden}}</style><div id="pre" class="pre">{}</div>',
    '<style>.hide{{display:none !important}}</style><div class="hide" style="display:block">'
    '{}</div>',
    '<style>.box{{width:0.01in;height:1px;overflow:hidden}}</style><p class="box">{}</p>',
]
SHOWN = [
    '<div style="max-height:0">{}</div>',  # overflows: a browser draws it
    '<div style="opacity:0.5">{}</div>',
    '<div style="width:1px">{}</div>',  # text overflows a tiny box that does not clip
    '<style>.hide{{display:none}}</style><div class="hide" style="display:block">{}</div>',
    '<style>@media (max-width:600px){{.m{{display:none}}}}</style><div class="m">{}</div>',
    '<style>.pre:hover{{display:none}}</style><div class="pre">{}</div>',
]


@pytest.mark.parametrize("container", HIDDEN + SHOWN)
def test_one_rule_hides_from_text_preview_and_display(container: str) -> None:
    secret = 'secret words <img src="https://cdn.news.example.com/u/9f9f.png" width="600">'
    m = parse_message(mail("<p>The letter starts here.</p>" + container.format(secret)
                           + CONTENT_IMAGE))
    assert m.display_html is not None and m.text is not None
    shown = [("secret words" in m.display_html), ("secret words" in m.text),
             ("9f9f.png" in m.display_html), ("9f9f.png" in m.thumbnail_candidates[0])]
    assert shown == [container in SHOWN] * 4
    assert "secret" not in (m.preview or "") if container in HIDDEN else True


@pytest.mark.parametrize("size", [
    'width="1;" height="1;"', 'width="1x" height="300"', 'width="600" height="1e0"',
    'width=" 1.9px"', 'style="width:1pt;height:1pt"', 'style="height:.2mm"',
    'style="width:0.01in"', 'style="max-height:1e0px"', 'style="width:2PX"', 'width="0"',
])
def test_one_pixel_images_in_every_spelling_are_dropped(size: str) -> None:
    shown = display(f'<img src="https://cdn.news.example.com/u/1a2b.png" {size}>' + CONTENT_IMAGE)
    assert image_sources(shown) == ["https://img.example.com/cover.jpg"]


@pytest.mark.parametrize("size", ['width="3x" height="3;"', 'style="width:3pt;height:.1in"',
                                  'style="width:600px;height:30e1px"'])
def test_small_but_visible_images_are_kept(size: str) -> None:
    shown = display(f'<img src="https://cdn.news.example.com/u/1a2b.png" {size}>')
    assert image_sources(shown) == ["https://cdn.news.example.com/u/1a2b.png"]


def test_tables_declaring_no_width_keep_their_images() -> None:
    shown = display('<table width="0"><tr><td width="1">' + CONTENT_IMAGE + "</td></tr></table>")
    assert image_sources(shown) == ["https://img.example.com/cover.jpg"]


def test_tracking_images_by_size_and_shape() -> None:
    shown = display(
        '<img src="https://a.example.com/x.gif" width="1" height="1">'
        '<img src="https://a.example.com/y.gif" style="width:0;height:0">'
        '<img src="https://a.example.com/z.gif" style="max-height:1px">'
        '<img src="https://mail.naver.com/readReceipt/notify/?img=abc" width="100" height="100">'
        + CONTENT_IMAGE)
    assert image_sources(shown) == ["https://img.example.com/cover.jpg"]


def test_relative_and_internal_urls_are_dropped_but_attachments_kept() -> None:
    shown = display(
        '<img src="/api/logout"><img src="logout"><img src="//evil.example/x.png">'
        '<img src="http://169.254.169.254/latest/meta-data/"><img src="http://2130706433/x.png">'
        '<img src="cid:logo@news" width="120" height="60"><img src="cid:unknown@x">'
        '<a href="/account/delete">a</a><a href="javascript:alert(1)">b</a>'
        '<a href="http://localhost:8080/admin">c</a><a href="https://news.example.com/p">d</a>'
        '<a href="mailto:letter@news.example.com">e</a>'
        '<blockquote cite="http://10.0.0.1/">q</blockquote>', related=True)
    assert image_sources(shown) == [f"/attachments/{SHA}"]
    assert re.findall(r'href="([^"]*)"', shown) == ["https://news.example.com/p",
                                                    "mailto:letter@news.example.com"]
    assert "cite=" not in shown and "localhost" not in shown


def test_urls_in_the_html_are_reserialized() -> None:
    shown = display('<a href="https://news.example.com/a b?q=&quot;x&quot;">a</a>'
                    '<img src="https://IMG.example.com/ü.png" width="300" height="200">')
    assert 'href="https://news.example.com/a%20b?q=%22x%22"' in shown
    assert image_sources(shown) == ["https://img.example.com/%C3%BC.png"]


@pytest.mark.parametrize("style", [
    "position:fixed;top:0;left:0;width:100vw;height:100vh;z-index:2147483647",
    "width:100vw;height:100vh", "min-height:100dvh", "height:calc(100vh - 1px)",
    "height:100%;min-height:100%", "margin:-200px 0 0 -200px", "margin-top:-9999px",
    "margin: 0 -50%", "width:100VW", "height:100svh", "max-width:100vmax;min-height:100vmin",
    "font-size:0;width:1em;height:1em",
])
def test_page_covering_css_is_dropped(style: str) -> None:
    shown = display(f'<div style="{style};color:red" height="100%">Your session expired, '
                    f'<a href="https://phish.example.com/login">log in</a></div>')
    assert "Your session expired" in shown
    assert not re.search(r"position|z-index|v(?:w|h|min|max)\b|-\d|-\.|100%|\dem", shown, re.I)
    assert "color:red" in shown


@pytest.mark.parametrize("box", [
    '<div style="width:10000px;height:10000px;color:red">',
    '<div style="min-height:3000px;color:red;max-width:25in">',
    '<div style="width:2.1e3px;color:red" height="9999">',
    '<table width="10000" style="color:red"><tr><td>',
])
def test_boxes_larger_than_any_article_lose_their_size(box: str) -> None:
    shown = display(f"{box}The letter, at its size.</td></tr></table></div>")
    assert "The letter, at its size." in shown and "color:red" in shown
    sizes = re.findall(r"(?:width|height)(?::|=\")\s*([\d.e]+)(px|in)?", shown)
    assert all(float(n) * (96 if unit == "in" else 1) <= 2000 for n, unit in sizes), shown


@pytest.mark.parametrize("style", [
    "background:url(https://evil.example/t.png)", "background:URL( 'https://evil.example/t' )",
    "background:image-set(\"https://evil.example/t.png\" 1x)",
    "background:-webkit-image-set(url(https://evil.example/t.png) 1x)",
    "list-style:url(https://evil.example/t.png)", "background:u\\72l(https://evil.example/t)",
    "border:1px solid;border-image:url(https://evil.example/t.png)",
    "background:red/*;background:url(https://evil.example/t)*/",
    "font-family:'a';background:var(--x)", "color:expression(alert(1))",
])
def test_css_that_fetches_is_dropped(style: str) -> None:
    assert "evil.example" not in safe_style(style)
    shown = display(f'<p style="{style.replace(chr(34), "&quot;")}">text</p>')
    assert "evil.example" not in shown and "(" not in shown.replace("rgb(", "")


def test_ordinary_newsletter_css_is_kept() -> None:
    style = ("font-family:'Apple SD Gothic Neo', 'Malgun Gothic', sans-serif;font-size:16px;"
             "color:rgb(51, 51, 51);letter-spacing:-0.5px;margin:0 auto;max-width:600px;"
             "width:100%;text-align:center")
    assert safe_style(style) == style
    shown = display(f'<table width="100%"><tr><td style="{style.replace(chr(39), "&#39;")}">'
                    f'봄봄</td></tr></table>')
    assert "letter-spacing:-0.5px" in shown and "max-width:600px" in shown
    assert 'width="100%"' in shown


def test_output_is_deterministic_and_depth_is_bounded() -> None:
    html = ("<!-- --!>" + PIXEL + CONTENT_IMAGE + "<div>" * 5000 + "deep" + "</div>" * 10
            + BACKGROUND)
    first = display(html)
    assert first == display(html)
    assert "deep" in first
    assert first.count("<div") <= MAX_DEPTH
    assert clean_fragment(html, {}) == clean_fragment(html, {})


def test_stored_urls_point_at_public_hosts_only() -> None:
    body = ('<html><head><meta property="og:image" content="http://127.0.0.1:8080/x.png">'
            '</head><body><p>Please confirm your subscription.</p>'
            '<a href="http://2130706433/confirm?t=1">Confirm</a>'
            '<a href="http://[::ffff:a9fe:a9fe]/web">View in browser</a>'
            '<a href="https://news.example.com/bye?a=&quot;&lt;x">unsubscribe</a></body></html>')
    m = parse_message(mail(body))
    assert m.thumbnail_url is None
    assert m.confirmation_url is None
    assert m.web_version_url is None
    assert m.unsubscribe.http == "https://news.example.com/bye?a=%22%3Cx"
    body = ('<p>hi</p><a href="https://click.news.example.com/r?url=http%3A%2F%2F169.254.169.254'
            '%2Flatest">View in browser</a><a href="https://click.news.example.com/r?url=https%3A'
            '%2F%2Fnews.example.com%2Fbye%3Fa%3D%22">unsubscribe</a><img src="http://10.0.0.1/a.jpg"'
            ' width="600" height="300"><img src="https://img.example.com/b.jpg" width="600" '
            'height="300">')
    m = parse_message(mail(body))  # click-tracker targets and thumbnail candidates too
    assert m.web_version_url is not None and m.web_version_target is None
    assert m.unsubscribe.http_target == "https://news.example.com/bye?a=%22"
    assert m.thumbnail_candidates == ("https://img.example.com/b.jpg",)
    assert m.thumbnail_url == "https://img.example.com/b.jpg"
    m = parse_message(mail("<p>hi</p>", "List-Unsubscribe: <http://169.254.169.254/latest/"
                           "meta-data/iam/>, <mailto:leave@news.example.com>",
                           "List-Unsubscribe-Post: List-Unsubscribe=One-Click"))
    assert m.unsubscribe.http is None and not m.unsubscribe.one_click
    assert m.unsubscribe.mailto == "mailto:leave@news.example.com"
    m = parse_message(mail("<p>hi</p>", "List-Unsubscribe: <http://localhost/u>, "
                           "<https://news.example.com/u?x='1'>",
                           "List-Unsubscribe-Post: List-Unsubscribe=One-Click"))
    assert m.unsubscribe.http == "https://news.example.com/u?x=%271%27"
    assert m.unsubscribe.one_click


def test_delivered_article_stores_only_safe_html_and_urls(env: Env, db: psycopg.Connection
                                                          ) -> None:
    html = ("<![foo bar]>" + PIXEL + BACKGROUND + CONTENT_IMAGE +
            '<div style="display:none !important"><img src="https://link.news.example.com/'
            'img/5f1e/s.gif" width="600"></div><img src="/api/logout">'
            '<div style="width:100vw;height:100vh">Your session expired</div>')
    r = env.deliver(mail(html, "List-Unsubscribe: <http://169.254.169.254/latest/meta-data/>"))
    assert r.returncode == 0, r.stdout
    shown, unsubscribe = db.execute(
        "SELECT display_html, unsubscribe_http FROM articles").fetchone()
    assert image_sources(shown) == ["https://img.example.com/cover.jpg"]
    assert "url(" not in shown and "100v" not in shown and "Your session expired" in shown
    assert unsubscribe is None
    assert db.execute("SELECT unsubscribe_http FROM subscriptions").fetchone()[0] is None
