"""Korean legacy charsets: CP949 for every EUC-KR/KS C 5601 label, in bodies and headers."""

from __future__ import annotations

import base64
from urllib.parse import quote_from_bytes

import pytest

from bombom_pipe.parse import parse_message

# 똠 햏 뷁 are in CP949 (UHC) but not in strict EUC-KR (KS X 1001)
HANGUL = "똠방각하 햏자의 뷁어 사전: 봄봄 뉴스레터에 오신 것을 환영합니다"
LABELS = ["euc-kr", "EUC-KR", "ks_c_5601-1987", "ks_c_5601", "ksc5601", "windows-949", "uhc",
          "cp949"]


def message(headers: list[str], body: bytes) -> bytes:
    return ("\r\n".join(headers) + "\r\n\r\n").encode("ascii") + body


def b_word(text: str, label: str) -> str:
    return f"=?{label}?B?{base64.b64encode(text.encode('cp949')).decode()}?="


def test_fixture_really_needs_cp949() -> None:
    with pytest.raises(UnicodeDecodeError):
        HANGUL.encode("cp949").decode("euc_kr")


@pytest.mark.parametrize("label", LABELS)
@pytest.mark.parametrize("cte", ["8bit", "base64"])
def test_body_labels_decode_as_cp949(label: str, cte: str) -> None:
    data = HANGUL.encode("cp949")
    if cte == "base64":
        data = base64.encodebytes(data)
    raw = message(
        ["From: a@b.example", f'Content-Type: text/plain; charset="{label}"',
         f"Content-Transfer-Encoding: {cte}"],
        data,
    )
    m = parse_message(raw)
    assert m.text.strip() == HANGUL
    assert m.charsets == ("cp949",)
    assert m.replacement_chars is False
    assert m.fallbacks == ()


@pytest.mark.parametrize("label", LABELS)
def test_rfc2047_subject_and_from_name(label: str) -> None:
    raw = message(
        [f"From: {b_word('뷁 봄봄', label)} <News@Bombom.Example>",
         f"Subject: {b_word(HANGUL, label)}",
         "Content-Type: text/plain; charset=us-ascii"],
        b"hi\r\n",
    )
    m = parse_message(raw)
    assert m.subject == HANGUL
    assert m.from_name == "뷁 봄봄"
    assert m.from_address == "news@bombom.example"
    assert "\ufffd" not in m.subject


def test_q_encoded_subject_and_character_split_across_words() -> None:
    data = "햏똠".encode("cp949")  # 4 bytes: split in the middle of the first character
    first = base64.b64encode(data[:1]).decode()
    second = base64.b64encode(data[1:]).decode()
    q = "".join(f"={b:02X}" for b in "뷁".encode("cp949"))
    raw = message(
        [f"Subject: =?euc-kr?B?{first}?= =?euc-kr?B?{second}?= =?ks_c_5601-1987?Q?{q}?=",
         "From: a@b.example"],
        b"x\r\n",
    )
    assert parse_message(raw).subject == "햏똠뷁"


def test_raw_8bit_cp949_subject_without_encoding() -> None:
    raw = (b"From: a@b.example\r\nSubject: " + "똠 햏 뷁".encode("cp949")
           + b"\r\nContent-Type: text/plain; charset=euc-kr\r\n\r\nx\r\n")
    m = parse_message(raw)
    assert m.subject == "똠 햏 뷁"
    assert any(f.startswith("subject:") for f in m.fallbacks)


@pytest.mark.parametrize("label", ["euc-kr", "ks_c_5601-1987", "cp949"])
def test_rfc2231_and_rfc2047_filenames(label: str) -> None:
    name = "뷁똠_보고서.pdf"
    encoded = quote_from_bytes(name.encode("cp949"))
    half = len(encoded) // 2
    while encoded[half - 1] == "%" or encoded[half - 2] == "%":
        half += 1
    body = (
        "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nbody\r\n"
        f"--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment;"
        f" filename*={label}''{encoded}\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n"
        f"--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment;\r\n"
        f" filename*0*={label}''{encoded[:half]};\r\n filename*1*={encoded[half:]}\r\n\r\nx\r\n"
        f'--b\r\nContent-Type: image/jpeg; name="{b_word("햏사진.jpg", label)}"\r\n'
        "Content-Disposition: inline\r\nContent-ID: <img1@x>\r\n\r\nx\r\n--b--\r\n"
    )
    raw = message(["From: a@b.example", 'Content-Type: multipart/mixed; boundary="b"'],
                  body.encode("ascii"))
    m = parse_message(raw)
    assert [a.filename for a in m.attachments] == [name, name, "햏사진.jpg"]
    assert m.attachments[0].data == b"%PDF"
    assert m.attachments[2].content_id == "img1@x"
    assert m.attachments[2].disposition == "inline"


def test_iso_2022_kr_body_and_subject() -> None:
    text = "봄봄 뉴스레터 안녕하세요"
    data = text.encode("iso2022_kr")
    subject = base64.b64encode("한글 제목".encode("iso2022_kr")).decode()
    raw = message(["From: a@b.example", f"Subject: =?ISO-2022-KR?B?{subject}?=",
                   "Content-Type: text/plain; charset=ISO-2022-KR"], data)
    m = parse_message(raw)
    assert m.text.strip() == text
    assert m.subject == "한글 제목"
    assert m.charsets == ("iso2022_kr",)


def test_unlabelled_iso_2022_kr_is_recognised() -> None:
    text = "봄봄 뉴스레터 안녕하세요"
    raw = message(["From: a@b.example", "Content-Type: text/plain"], text.encode("iso2022_kr"))
    assert parse_message(raw).text.strip() == text


@pytest.mark.parametrize(
    ("label", "text", "codec", "expected_charset"),
    [
        ("iso-8859-8-i", "שלום עולם", "iso8859-8", "iso8859-8"),
        ("gb2312", "朱镕基 你好", "gb18030", "gb18030"),  # 镕 is outside GB2312
        ("windows-874", "สวัสดี €5", "cp874", "cp874"),  # € is 0x80 in cp874 only
    ],
)
def test_other_mislabels(label: str, text: str, codec: str, expected_charset: str) -> None:
    raw = message(["From: a@b.example", f"Content-Type: text/plain; charset={label}"],
                  text.encode(codec))
    m = parse_message(raw)
    assert m.text == text
    assert m.charsets == (expected_charset,)
    assert not m.replacement_chars


def test_html_meta_charset_used_when_header_has_none() -> None:
    html = f'<html><head><meta charset="euc-kr"></head><body><p>{HANGUL}</p></body></html>'
    raw = message(["From: a@b.example", "Content-Type: text/html"], html.encode("cp949"))
    m = parse_message(raw)
    assert HANGUL in m.html
    assert m.text == HANGUL
    assert m.charsets == ("cp949",)
    assert any("no charset declared" in f for f in m.fallbacks)


def test_http_equiv_meta_charset_with_unknown_label() -> None:
    html = ('<meta http-equiv="Content-Type" content="text/html; charset=ks_c_5601-1987">'
            f"<p>{HANGUL}</p>")
    raw = message(["From: a@b.example", "Content-Type: text/html; charset=x-bogus"],
                  html.encode("cp949"))
    m = parse_message(raw)
    assert m.text == HANGUL
    assert any("unknown charset 'x-bogus'" in f for f in m.fallbacks)


def test_unknown_label_detected_by_charset_normalizer() -> None:
    text = ("안녕하세요. 이번 주 봄봄 뉴스레터에서는 봄에 읽기 좋은 책 다섯 권을 소개합니다. "
            "첫 번째 책은 소설이고, 두 번째 책은 에세이입니다. 즐거운 독서 되세요.\n") * 3
    raw = message(["From: a@b.example", "Content-Type: text/plain; charset=x-unknown-kr"],
                  text.encode("cp949"))
    m = parse_message(raw)
    assert m.text == text
    assert m.charsets == ("cp949",)
    assert not m.replacement_chars


def test_undecodable_bytes_fall_back_with_replacement_flag() -> None:
    raw = message(["From: a@b.example", "Content-Type: text/plain; charset=utf-8"],
                  b"caf\xc3\xa9 \xff ok")
    m = parse_message(raw)
    assert m.text == "café \ufffd ok"
    assert m.replacement_chars is True
    assert m.charsets == ("utf-8",)


def test_korean_reading_minutes_count_characters() -> None:
    body = ("가" * 1500).encode("cp949")
    raw = message(["From: a@b.example", "Content-Type: text/plain; charset=euc-kr"], body)
    assert parse_message(raw).reading_minutes == 3  # 1500 chars at 500/min
