"""What an image is, before anyone fetches it: an open-tracking pixel (by its size or URL), and
its intrinsic width and height, read from the first bytes of PNG, GIF, JPEG or WebP.

Inline (``cid:``) images often carry no width/height attributes; their own header says whether
they are a logo strip or a picture. Hand-read because the formats are fixed and tiny here, and the
general libraries cost tens of milliseconds to import in a process that starts per message.
Used by the thumbnail choice (``newsletter``) and the display HTML (``sanitize``).
"""

from __future__ import annotations

import re
import struct

# open-tracking pixels by URL shape
TRACKING_SRC = re.compile(
    r"/open(?:[./?_-]|$)|/track|tracking|pixel|beacon|/o\.gif|/wf/open|/e/o/|spacer|blank\.gif"
    r"|transparent\.(?:gif|png)|1x1|/imp(?:[./?]|$)|/trk|openrate|/t\.gif|/mo/|emimp|/pxl"
    r"|/v\d/open|/ss/o/|/e2t/o/|/CI0/|read-?receipt",
    re.IGNORECASE,
)
# hosts that serve open-tracking pixels (the image often has no width or height)
TRACKING_HOST = re.compile(
    r"^(?:open|opens|track|tracking|trk|pixel|px|beacon|stats?|analytics)[.\d-]"
    r"|(?:^|\.)(?:google-analytics\.com|doubleclick\.net|list-manage\.com|sendgrid\.net"
    r"|mandrillapp\.com|mailtrack\.io|hubspotemail\.net|hubspotlinks\.com|awstrack\.me"
    r"|klclick\d?\.com|mcsv\.net|exct\.net|sailthru\.com)$",
    re.IGNORECASE,
)

JPEG_SCAN_LIMIT = 1 << 20  # EXIF and ICC come first; a frame header beyond this is junk
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers


def is_tracking_image(src: str, width: int | None, height: int | None) -> bool:
    """Open-tracking pixels: 0/1-pixel images, well-known tracking URL shapes or hosts."""
    if width is not None and width <= 2 or height is not None and height <= 2:
        return True
    bare = src.split("#", 1)[0]
    if TRACKING_SRC.search(bare):
        return True
    host = bare.split("://", 1)[-1].split("/", 1)[0].split("@")[-1].split(":")[0]
    return bool(TRACKING_HOST.search(host)) and (width is None or height is None)


def dimensions(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the image header, or None when it is not a readable image."""
    try:
        size = _png(data) or _gif(data) or _webp(data) or _jpeg(data)
    except struct.error:
        return None
    return size if size and size[0] > 0 and size[1] > 0 else None


def _png(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    return None


def _gif(data: bytes) -> tuple[int, int] | None:
    return struct.unpack("<HH", data[6:10]) if data[:6] in (b"GIF87a", b"GIF89a") else None


def _webp(data: bytes) -> tuple[int, int] | None:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and data[20:21] == b"\x2f":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return (int.from_bytes(data[24:27], "little") + 1,
                int.from_bytes(data[27:30], "little") + 1)
    return None


def _jpeg(data: bytes) -> tuple[int, int] | None:
    if data[:2] != b"\xff\xd8":
        return None
    i, end = 2, min(len(data), JPEG_SCAN_LIMIT)
    while i + 4 <= end:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _SOF:
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        if marker == 0xD9 or marker == 0xDA:  # end of image, start of scan: no frame header seen
            return None
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # standalone markers
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if length < 2:
            return None
        i += 2 + length
    return None
