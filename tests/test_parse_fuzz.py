"""Property tests: random and mutated messages never raise anything but ParseError, and no stage
of the parser fails on them (a guarded stage's failure is a fallback note, not a crash, so the
notes are what shows a bug)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bombom_pipe.parse import Attachment, ParsedMessage, ParseError, parse_message

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"

BUILTIN = [
    b"From: a@b.example\r\nTo: \"\r\nSubject: =?euc-kr?B?tsu=?=\r\n"
    b"Content-Type: text/plain; name*\r\n\r\nbody\r\n",
    b'From: "x" <a@b.example>\r\nContent-Type: multipart/alternative; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain; charset=ks_c_5601-1987\r\n\r\n\xb6\xcb\r\n"
    b"--b\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"PHA+aGk8L3A+\r\n--b--\r\n",
    b"Subject: x\r\nDate: yesterday\r\nList-Unsubscribe: <https://x/u>\r\n"
    b"Content-Type: text/html\r\n\r\n<span style='display:none'>pre</span><a href='x'>\xec\r\n",
]


def samples() -> list[bytes]:
    out = list(BUILTIN)
    if (CORPUS / "MANIFEST.tsv").is_file():
        files = sorted(p for p in CORPUS.rglob("*.eml") if p.stat().st_size < 40_000)
        out.extend(p.read_bytes() for p in files[::6][:40])
    return out


SAMPLES = samples()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["flip", "truncate", "dup", "nul", "insert", "crlf"]))
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[pos] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "dup":
            end = data.find(b"\n", pos)
            start = data.rfind(b"\n", 0, pos) + 1
            line = bytes(data[start : end + 1 if end >= 0 else len(data)])
            data[start:start] = line * draw(st.integers(1, 50))
        elif kind == "nul":
            data[pos:pos] = b"\x00" * draw(st.integers(1, 8))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=40))
        else:
            data[pos:pos] = draw(st.sampled_from([b"\r\n", b"\n\n", b"\r", b"\r\n "]))
    return bytes(data)


def crashes(fallbacks: tuple[str, ...] | list[str]) -> list[str]:
    """The fallback notes that stand for an exception: a guarded stage that failed
    (`Run.guard`, `mime.load`) or the last-resort headers-only parse (`parse_message`)."""
    return [f for f in fallbacks if "failed (" in f or "full parse failed" in f]


def check(raw: bytes) -> None:
    try:
        m = parse_message(raw)
    except ParseError as exc:
        assert str(exc)
        return
    assert isinstance(m, ParsedMessage)
    assert not crashes(m.fallbacks), m.fallbacks
    values: list[str] = [v for v in (getattr(m, f) for f in m.__dataclass_fields__)
                         if isinstance(v, str)]
    values += [*m.to_addresses, *m.fallbacks, *m.charsets, *m.skipped_attachments]
    values += [v for a in m.attachments for v in (a.filename, a.content_id) if v]
    values += [v for v in (m.unsubscribe.http, m.unsubscribe.mailto) if v]
    for value in values:
        assert "\x00" not in value
        assert not any(0xD800 <= ord(ch) <= 0xDFFF for ch in value)
    for a in m.attachments:
        assert isinstance(a, Attachment)
        assert a.filename is None or ("/" not in a.filename and "\\" not in a.filename)


def test_samples_parse_without_a_stage_failing() -> None:
    """Every seed as it is: a broken heuristic shows here whatever hypothesis draws."""
    for raw in SAMPLES:
        check(raw)


FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(mutated())
def test_mutated_messages(raw: bytes) -> None:
    check(raw)


@FUZZ
@given(st.binary(max_size=3000))
def test_random_bytes(raw: bytes) -> None:
    check(raw)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["From", "To", "Subject", "Date", "Content-Type",
                                           "Message-ID", "List-Unsubscribe", "List-Id",
                                           "Content-Disposition", "Sender"]),
                          st.text(max_size=80)), min_size=1, max_size=12),
       st.text(max_size=300))
def test_random_header_values(headers: list[tuple[str, str]], body: str) -> None:
    raw = "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n" + body
    check(raw.encode("utf-8", "surrogatepass"))
