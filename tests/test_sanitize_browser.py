"""Every display_html rendered in a real browser: nothing runs, navigates, tracks or covers.

Debian's Chromium (package ``chromium``), driven by Playwright through the system executable (no
browser download), renders each document at https://app.bombom.test/article with every request
intercepted. Allowed: images from public http(s) hosts whose URL does not look like a beacon, and
our own /attachments/<sha256> (both answered with a 200x100 PNG). Anything else requested is a
failure, and so is: a script compiled, a navigation or frame, an image that fetches while
invisible or at most 2 px, a box whose height follows the viewport's, a positioned box, a box
that escapes the article's top or left edge, an href/src that is relative (other than our
attachments) or not http(s)/mailto/tel.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bombom_pipe.parse import ParseError, parse_message
from bombom_pipe.parse.images import is_tracking_image
from bombom_pipe.parse.urls import public_url

from .conftest import corpus_files
from .test_sanitize import CONFUSING_PREFIXES, CONTENT_IMAGE, mail

COVER = re.search(r'src="([^"]+)"', CONTENT_IMAGE)[1]  # type: ignore[index]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# as root `make deps` installs it (CI): missing there is a failure, not a skip
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).is_file() and os.geteuid() != 0,
                                reason="Debian's chromium is not installed (make deps installs it)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ORIGIN = "https://app.bombom.test"
ARTICLE = f"{ORIGIN}/article"
ATTACHMENT = re.compile(rf"{re.escape(ORIGIN)}/attachments/[0-9a-f]{{64}}")
PAGE = ('<!DOCTYPE html><html><head><meta charset="utf-8"></head><body style="margin:0">'
        '<div id="article" style="display:flow-root;width:700px;margin:40px">{}</div>'
        '</body></html>')
WIDTH, HEIGHTS = 1000, (700, 1600)

# in the page: every problem the DOM shows, and each box's height (to compare across viewports)
INSPECT = """() => {
  const root = document.getElementById('article'), box = root.getBoundingClientRect();
  const problems = [], heights = [], images = [];
  const allowed = /^(https?:|mailto:|tel:)/i, ours = /^\\/attachments\\/[0-9a-f]{64}$/;
  for (const el of root.querySelectorAll('*')) {
    const tag = el.tagName.toLowerCase(), style = getComputedStyle(el);
    const r = el.getBoundingClientRect();
    heights.push(Math.round(r.height));
    if (/^(script|style|link|meta|base|iframe|frame|object|embed|form|svg|math|video|audio)$/
        .test(tag)) problems.push('element ' + tag);
    for (const a of el.attributes) {
      if (/^on/i.test(a.name)) problems.push('handler ' + a.name);
      if ((a.name === 'href' || a.name === 'src') && !allowed.test(a.value)
          && !ours.test(a.value)) problems.push(a.name + ' ' + a.value.slice(0, 80));
    }
    if (!['static', 'relative'].includes(style.position))
      problems.push('position ' + style.position + ' on ' + tag);
    if (r.width > 0 && r.height > 0 && (r.top < box.top - 1 || r.left < box.left - 1))
      problems.push('escapes the article: ' + tag + ' at ' + Math.round(r.left - box.left)
                    + ',' + Math.round(r.top - box.top));
    if (tag === 'img' && el.currentSrc) {
      images.push(el.currentSrc);
      const shown = el.checkVisibility({opacityProperty: true, visibilityProperty: true});
      if (!shown || r.width <= 2 || r.height <= 2)
        problems.push('image fetched but not shown: ' + el.currentSrc.slice(0, 80));
    }
  }
  return {problems, heights, images, title: document.title};
}"""


def png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\xcc\xdd\xee" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0,
                                                              0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


IMAGE = png(200, 100)


@dataclass
class Render:
    """What one document did in the browser."""

    allowed: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    text: str = ""  # the article's rendered text
    size: tuple[int, int] = (0, 0)  # the article's scroll width and height


class Browser:
    """One Chromium page; ``render`` shows a display_html and reports what it did."""

    def __init__(self, context) -> None:  # noqa: ANN001
        self.context = context
        self.page = context.new_page()
        self.document = ""
        self.current = Render()
        self.navigations = 0
        self.scripts: list[str] = []
        self.page.route("**/*", self._route)
        self.page.on("framenavigated", lambda frame: self._navigated())
        self.page.on("dialog", lambda d: self.current.problems.append(f"dialog {d.message}"))
        self.cdp = context.new_cdp_session(self.page)
        self.cdp.on("Debugger.scriptParsed", self._script)
        self.cdp.send("Debugger.enable")

    def _navigated(self) -> None:
        self.navigations += 1

    def _script(self, event: dict) -> None:
        # the page's own scripts (inline ones and handlers too) carry its URL; Playwright's none
        if event.get("url"):
            self.scripts.append(event["url"])

    def _route(self, route) -> None:  # noqa: ANN001
        request = route.request
        url = request.url
        if request.is_navigation_request() and url == ARTICLE and self.navigations == 0:
            route.fulfill(status=200, content_type="text/html; charset=utf-8",
                          body=self.document)
            return
        remote = public_url(url) is not None and not url.startswith(ORIGIN)
        if request.resource_type == "image" and (ATTACHMENT.fullmatch(url) or
                                                 remote and not is_tracking_image(url, None, None)):
            self.current.allowed.append(url)
            route.fulfill(status=200, content_type="image/png", body=IMAGE)
            return
        self.current.blocked.append(f"{request.resource_type} {url[:100]}")
        route.abort()

    def render(self, display_html: str) -> Render:
        self.current = Render()
        self.navigations = 0
        self.scripts.clear()
        self.document = PAGE.format(display_html)
        self.page.set_viewport_size({"width": WIDTH, "height": HEIGHTS[0]})
        self.page.goto(ARTICLE, wait_until="load")
        first = self.page.evaluate(INSPECT)
        self.page.set_viewport_size({"width": WIDTH, "height": HEIGHTS[1]})
        second = self.page.evaluate(INSPECT)
        found = self.current
        found.text, *size = self.page.evaluate(
            "() => { const a = document.getElementById('article');"
            " return [a.innerText, a.scrollWidth, a.scrollHeight]; }")
        found.size = (size[0], size[1])
        found.problems += first["problems"]
        if first["heights"] != second["heights"]:
            changed = sum(a != b for a, b in zip(first["heights"], second["heights"],
                                                 strict=False))
            found.problems.append(f"{changed} boxes follow the viewport's height")
        if self.navigations != 1 or len(self.page.frames) != 1:
            found.problems.append(f"navigations {self.navigations}, frames "
                                  f"{len(self.page.frames)}")
        if self.scripts:
            found.problems.append(f"scripts compiled: {self.scripts[:3]}")
        if first["title"] or second["title"]:
            found.problems.append(f"title changed to {second['title']!r}")
        found.problems += [f"requested {b}" for b in found.blocked]
        found.problems += [f"image fetched, not by an <img>: {url[:100]}"
                           for url in found.allowed if url not in first["images"]]
        return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="bombom-chromium-") as profile, \
            sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=FLAGS,
            service_workers="block", viewport={"width": WIDTH, "height": HEIGHTS[0]})
        try:
            yield Browser(context)
        finally:
            context.close()


ATTACKS = {
    "comment confusion": "<!-- --!>" + '<img src="https://t.example.com/open/x.gif" width=1 '
                         'height=1><div style="background:url(https://evil.example.com/t.png)">',
    "cdata confusion": "<![foo bar]>" + '<img src="https://t.example.com/o/x.gif" width=1 '
                       'height=1><div style="background:url(https://evil.example.com/t.png)">',
    "hidden sailthru-like pixel": '<div style="display:none !important"><img '
                                  'src="https://link.news.example.com/img/5f1e/s.gif"></div>',
    "hidden read receipt": '<table style="display:none"><tr><td><img src="https://mail.naver.com'
                           '/readReceipt/notify/?img=abc"></td></tr></table>',
    "tiny boxes": '<div style="width:1px;height:1px;overflow:hidden"><img src="https://cdn.news.'
                  'example.com/u/1a2b.png" width="600" height="300"></div><div style="width:2px">'
                  '<img src="https://cdn.news.example.com/u/3c4d.png" style="width:100%"></div>'
                  '<table width="1"><tr><td><img src="https://cdn.news.example.com/u/5e6f.png" '
                  'style="max-width:100%"></td></tr></table><div style="font-size:0"><img '
                  'src="https://cdn.news.example.com/u/7a8b.png" style="width:1em;height:1em">'
                  '</div>',
    "closed details": f"<details><summary>more</summary>{CONTENT_IMAGE}</details>",
    "relative image": '<img src="/api/logout"><img src="logout.gif" width="300" height="200">',
    "session expired box": '<div style="position:fixed;top:0;left:0;width:100vw;height:100vh;'
                           'z-index:2147483647;background:#fff">Your session expired, <a '
                           'href="https://phish.example.com/">log in</a></div>',
    "percentage box": '<table height="100%" style="min-height:100%"><tr><td style="height:100%">'
                      'x</td></tr></table>',
    "negative margins": '<div style="margin:-300px 0 0 -300px">over the app</div>',
    "scripts": '<script>document.title="ran"</script><img src=x onerror="document.title=\'ran\'">'
               '<svg onload="document.title=\'ran\'"></svg><a href="javascript:void(0)">j</a>'
               '<iframe src="https://evil.example.com/"></iframe><object data="x.swf"></object>'
               '<form action="https://evil.example.com/"><input name="q"></form>',
    "navigation": '<meta http-equiv="refresh" content="0;url=https://evil.example.com/">'
                  '<base href="https://evil.example.com/"><link rel="stylesheet" href="/x.css">'
                  '<style>@import url(https://evil.example.com/x.css); body{background:url(x)}'
                  '</style>',
    "fetching css": '<p style="background:image-set(&quot;https://evil.example.com/a.png&quot; '
                    '1x);list-style:url(https://evil.example.com/b.png);font-family:x">x</p>'
                    '<table background="https://evil.example.com/c.png"><tr><td '
                    'background="https://evil.example.com/d.png">x</td></tr></table>',
    "internal hosts": '<img src="http://169.254.169.254/latest/meta-data/" width="300">'
                      '<img src="http://2130706433/x.png" width="300"><img '
                      'src="http://localhost:8080/x.png" width="300">',
    **{f"confusing {p}": p + '<img src="https://t.example.com/open/x.gif" width=1 height=1>'
       for p in CONFUSING_PREFIXES},
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attacks_render_harmlessly(browser: Browser, name: str) -> None:
    shown = parse_message(mail(ATTACKS[name] + CONTENT_IMAGE)).display_html
    # the letter itself (its picture) stays, except after a confusing prefix that swallows it in
    # the browser too (an unclosed attribute, <textarea>, <plaintext>: the raw markup is judged)
    prefix = name.removeprefix("confusing ")
    letter = prefix == name or COVER in browser.render(prefix + CONTENT_IMAGE).allowed
    assert shown or not letter, "no display_html: nothing was rendered"
    found = browser.render(shown or "")
    # an image that was fetched and is not shown, or a beacon-shaped URL, is among the problems
    assert found.problems == []
    assert not any("t.example.com" in url or "evil" in url for url in found.allowed)
    assert COVER in found.allowed or not letter, found.allowed


# each hides words or an image from a reader in a browser, or draws a box larger than any article
UNSEEN = {
    "preheader class": '<style>.preheader{display:none}</style><div class="preheader">unseen '
                       'words <img src="https://cdn.news.example.com/u/pre.png" width="600" '
                       'height="300"></div>',
    "width 1;": '<img src="https://cdn.news.example.com/u/a.png" width="1;" height="1;">',
    "width 1x": '<img src="https://cdn.news.example.com/u/b.png" width="1x" height="300">',
    "height 1e0": '<img src="https://cdn.news.example.com/u/c.png" width="600" height="1e0">',
    "1pt": '<img src="https://cdn.news.example.com/u/d.png" style="width:1pt;height:1pt">',
    ".2mm": '<img src="https://cdn.news.example.com/u/e.png" style="width:.2mm">',
    "0.01in": '<img src="https://cdn.news.example.com/u/f.png" style="height:0.01in">',
    "clipped container": '<div style="overflow:hidden;height:1pt;width:1pt">unseen words <img '
                         'src="https://cdn.news.example.com/u/g.png" width="600" height="300">'
                         '</div>',
    "exponent opacity": '<div style="opacity:1e-9">unseen words <img src="https://cdn.news.'
                        'example.com/u/h.png" width="600" height="300"></div>',
    "10000-px box": '<div style="width:10000px;height:10000px;background:#eee">a box</div>',
}
LARGEST_ARTICLE = 2000  # px, either way (the article is 700 px wide, the letter a few screens)


def unseen_problems(found: Render) -> list[str]:
    problems = list(found.problems)
    problems += [f"fetched {url}" for url in found.allowed if "/u/" in url]
    if "unseen words" in found.text:
        problems.append("hidden words shown")
    if max(found.size) > LARGEST_ARTICLE:
        problems.append(f"article of {found.size}")
    return problems


@pytest.mark.parametrize("name", list(UNSEEN))
def test_what_a_browser_would_not_show_is_not_in_the_display(browser: Browser, name: str
                                                              ) -> None:
    assert unseen_problems(browser.render(UNSEEN[name] + CONTENT_IMAGE)), "the check sees it"
    shown = parse_message(mail(UNSEEN[name] + CONTENT_IMAGE)).display_html
    assert unseen_problems(browser.render(shown or "")) == []


def test_the_check_itself_sees_each_kind_of_harm(browser: Browser) -> None:
    """Unsanitized markup must fail the checks above: the test can fail."""
    raw = {
        "tracker": '<div style="display:none"><img src="https://t.example.com/open/x.gif"></div>',
        "relative": '<img src="/api/logout">',
        "cover": '<div style="width:100vw;height:100vh">expired</div>',
        "script": '<img src="x" onerror="document.title=\'ran\'">',
        "fixed": '<div style="position:fixed;top:0">x</div>',
        "margin": '<div style="margin-top:-100px">x</div>',
        "frame": '<iframe srcdoc="<b>x</b>"></iframe>',
        "details": f"<details><summary>more</summary>{CONTENT_IMAGE}</details>",
        "css": '<div style="background:url(https://evil.example.com/t.png)">x</div>',
    }
    for name, html in raw.items():
        assert browser.render(html).problems, name


class _Plain(HTMLParser):
    """What a page shows, read plainly with the standard library (not by our parser): text
    outside head, title, style and script, and images not sized to one pixel."""

    UNSHOWN = {"head", "title", "style", "script", "template", "noscript"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.inside: list[str] = []
        self.shows = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.UNSHOWN:
            self.inside.append(tag)
        a = dict(attrs)
        if tag == "img" and not any((a.get(k) or "").strip() in ("0", "1", "1px")
                                    for k in ("width", "height")):
            self.shows = True

    def handle_endtag(self, tag: str) -> None:
        if tag in self.inside:
            del self.inside[self.inside.index(tag):]

    def handle_data(self, data: str) -> None:
        if data.strip() and not self.inside:
            self.shows = True


def _shows_something(html: str) -> bool:
    """Visible text or a picture in the raw HTML, read plainly (not by the parser)."""
    plain = _Plain()
    plain.feed(html)
    plain.close()
    return plain.shows


def test_every_corpus_display_html_renders_harmlessly(browser: Browser) -> None:
    files = corpus_files()
    if not files:
        pytest.skip("no corpus")
    rendered = allowed = blocked = 0
    failures = []
    for path in files:
        try:
            m = parse_message(path.read_bytes())
        except ParseError:  # unparsable messages are quarantined, not shown
            continue
        shown = m.display_html
        if not shown:
            if m.html and _shows_something(m.html):
                failures.append((path.name, ["an HTML body with content, no display_html"]))
            continue
        found = browser.render(shown)
        rendered += 1
        allowed += len(found.allowed)
        blocked += len(found.blocked)
        if found.problems:
            failures.append((path.name, found.problems[:3]))
    print(f"\nbrowser: {rendered} display_html rendered, {allowed} image requests allowed, "
          f"{blocked} requests blocked")
    assert rendered > 0
    assert failures == []
