"""Intrinsic image sizes, read from bytes that real encoders wrote (Chromium's canvas for PNG,
JPEG and WebP), and what they decide about inline pictures on the card."""

from __future__ import annotations

import base64
import hashlib
import struct
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from bombom_pipe.parse import parse_message
from bombom_pipe.parse.attachments import attachment_url
from bombom_pipe.parse.images import JPEG_SCAN_LIMIT, dimensions

from .test_sanitize_browser import CHROMIUM, FLAGS, png

SIZES = [(1, 1), (204, 43), (800, 979), (600, 149), (4000, 3)]
FORMATS = ["image/png", "image/jpeg", "image/webp"]


@pytest.fixture(scope="module")
def encoded() -> dict[tuple[str, int, int], bytes]:
    """Each format at each size, as Chromium's encoders write them."""
    if not Path(CHROMIUM).is_file():
        pytest.skip("Debian's chromium is not installed (make deps installs it)")
    from playwright.sync_api import sync_playwright

    out = {}
    with tempfile.TemporaryDirectory(prefix="bombom-chromium-") as profile, \
            sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = context.new_page()
        for kind in FORMATS:
            for w, h in SIZES:
                url = page.evaluate("""([w, h, kind]) => {
                    const c = document.createElement('canvas'); c.width = w; c.height = h;
                    const g = c.getContext('2d'); g.fillStyle = '#3a7'; g.fillRect(0, 0, w, h);
                    g.fillStyle = '#fff'; g.fillRect(0, 0, w / 2, h / 3);
                    return c.toDataURL(kind, 0.8); }""", [w, h, kind])
                assert url.startswith(f"data:{kind};base64,"), url[:40]  # not a PNG fallback
                out[kind, w, h] = base64.b64decode(url.split(",", 1)[1])
        context.close()
    return out


@pytest.mark.parametrize("kind", FORMATS)
@pytest.mark.parametrize(("width", "height"), SIZES)
def test_size_of_what_an_encoder_wrote(encoded: dict, kind: str, width: int, height: int) -> None:
    assert dimensions(encoded[kind, width, height]) == (width, height)


def test_gif_and_lossless_webp() -> None:
    gif = b"GIF89a" + struct.pack("<HH", 640, 360) + b"\xf7\x00\x00" + b"\x00" * 20 + b";"
    assert dimensions(gif) == (640, 360)
    bits = (640 - 1) | (360 - 1) << 14
    vp8l = b"VP8L" + struct.pack("<I", 5) + b"\x2f" + bits.to_bytes(4, "little")
    assert dimensions(b"RIFF" + struct.pack("<I", 4 + len(vp8l)) + b"WEBP" + vp8l) == (640, 360)


@pytest.mark.parametrize("data", [
    b"", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"\xff\xd8", b"\xff\xd8\xff\xe1\x00\x00",
    b"\xff\xd8\xff\xda\x00\x08" + b"\x00" * 20, b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"%PDF-1.7",
    png(0, 0)[:24], b"<svg width='100' height='100'/>",
])
def test_truncated_or_foreign_bytes_have_no_size(data: bytes) -> None:
    assert dimensions(data) is None


def test_jpeg_scan_is_bounded(encoded: dict) -> None:
    """A stranger's JPEG of endless tiny segments: read up to the limit, linearly."""
    junk = b"\xff\xd8" + b"\xff\xe1\x00\x02" * (JPEG_SCAN_LIMIT // 2)
    small, large = junk[: len(junk) // 8], junk
    times = []
    for data in (small, large):
        start = time.process_time()
        assert dimensions(data) is None
        times.append(time.process_time() - start)
    assert times[1] <= 40 * max(times[0], 0.001)
    late_frame = junk + encoded["image/jpeg", 800, 979][2:]
    assert dimensions(late_frame) is None  # beyond the scan limit


def inline_mail(parts: list[tuple[str, bytes]], body: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Letter <letter@news.example>"
    msg["To"] = "reader@bombom.news"
    msg["Subject"] = "This week"
    msg["Message-ID"] = "<inline-images@news.example>"
    msg.set_content("This week")
    msg.add_alternative(body, subtype="html")
    html = msg.get_payload()[1]
    for cid, data in parts:
        html.add_related(data, "image", "png", cid=f"<{cid}>")
    return msg.as_bytes()


def test_inline_logo_strip_without_sizes_is_not_the_thumbnail() -> None:
    """Inline images with no width/height attributes are judged by their own header."""
    logo, photo = png(204, 43), png(800, 979)
    body = ('<p><img src="cid:logo@x"></p><p>An article about the harbour, with a photograph '
            'of the new ferry and the people who built it.</p><p><img src="cid:photo@x"></p>')
    parsed = parse_message(inline_mail([("logo@x", logo), ("photo@x", photo)], body))
    assert parsed.thumbnail_url == attachment_url(hashlib.sha256(photo).hexdigest())


def test_inline_picture_without_sizes_is_still_a_thumbnail() -> None:
    photo = png(640, 480)
    parsed = parse_message(inline_mail([("photo@x", photo)], '<p>Hello</p><img src="cid:photo@x">'))
    assert parsed.thumbnail_url is not None and parsed.thumbnail_url.startswith("/attachments/")
