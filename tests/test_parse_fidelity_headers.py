"""Header and charset fidelity: ISO-2022 escapes, RFC 6532 addresses, display names that look
like addresses, short unlabelled 8-bit text judged with a prior, and the WHATWG label table."""

from __future__ import annotations

import base64

import pytest

from bombom_pipe.parse import parse_message
from bombom_pipe.parse.charsets import codec_for, decode_bytes, guess_short


def message(headers: list[str], body: bytes = b"hello\r\n") -> bytes:
    return "\r\n".join(headers).encode("ascii", "surrogateescape") + b"\r\n\r\n" + body


def raw(text: str, codec: str) -> str:
    """Header text as the raw bytes ``codec`` gives it (surrogate-escaped for the builder)."""
    return text.encode(codec).decode("ascii", "surrogateescape")


# --- ISO-2022 escape sequences in unencoded header text ---

@pytest.mark.parametrize(
    ("codec", "text"),
    [("iso2022_jp", "日本語メールテスト"), ("iso2022_kr", "봄봄 뉴스레터"),
     ("iso2022_jp_ext", "ﾃｽﾄ 半角カナ")],
)
def test_raw_iso_2022_subject_without_encoded_word(codec: str, text: str) -> None:
    subject = text.encode(codec).decode("ascii")  # 7-bit: escapes only
    m = parse_message(message(["From: a@b.example", f"Subject: {subject} (test)"]))
    assert m.subject == f"{text} (test)"


def test_raw_iso_2022_jp_body_without_charset() -> None:
    body = "日本語が 正常に 送れているか テスト.".encode("iso2022_jp")
    m = parse_message(message(["From: a@b.example", "Content-Type: text/plain"], body))
    assert m.text == "日本語が 正常に 送れているか テスト."


# --- RFC 6532: raw UTF-8 in addresses ---

def test_raw_utf8_addresses() -> None:
    m = parse_message(message([
        raw("From: Jöran <jdöe@mächine.example>", "utf-8"),
        raw("To: 봄봄 <구독자@bombom.example>, plain@bombom.example", "utf-8"),
    ]))
    assert (m.from_name, m.from_address) == ("Jöran", "jdöe@mächine.example")
    assert m.to_addresses == ("구독자@bombom.example", "plain@bombom.example")
    assert not any("from:" in f for f in m.fallbacks)


# --- a display name that looks like an address ---

@pytest.mark.parametrize(
    ("header", "name", "address"),
    [
        ("jang.abcdef@xyzlinu <jang.abcdef@xyzlinux12345678.it>",
         "jang.abcdef@xyzlinu", "jang.abcdef@xyzlinux12345678.it"),
        ("news@old.example <letter@new.example>", "news@old.example", "letter@new.example"),
        ('"news@old.example" <letter@new.example>', "news@old.example", "letter@new.example"),
    ],
)
def test_angle_bracket_address_wins_over_display_name(header: str, name: str, address: str) -> None:
    m = parse_message(message([f"From: {header}", "Subject: x"]))
    assert (m.from_name, m.from_address) == (name, address)


def test_several_recipients_keep_unbracketed_ones() -> None:
    to = 'To: "Foo" <foo@bar.example>, baz@qux.example, x@y.example <z@w.example>'
    m = parse_message(message(["From: a@b.example", to]))
    assert m.to_addresses == ("foo@bar.example", "baz@qux.example", "z@w.example")


# --- short unlabelled 8-bit text: a prior, not a blind guess ---

@pytest.mark.parametrize(
    ("text", "codec"),
    [
        ("тест тест", "koi8-r"),
        ("Привет мир", "cp1251"),
        ("Grüße aus Köln", "cp1252"),
        ("Crème brûlée à la carte", "cp1252"),
        ("봄봄 뉴스레터 똠", "cp949"),
        ("[광고] 이번 주 소식", "cp949"),
        ("こんにちは世界", "cp932"),
        ("Καλημέρα κόσμε", "iso8859-7"),
    ],
)
def test_short_unlabelled_subject_is_read_in_its_own_script(text: str, codec: str) -> None:
    m = parse_message(message(["From: a@b.example", f"Subject: {raw(text, codec)}"]))
    assert m.subject == text


def test_subject_prior_carries_to_a_short_unlabelled_body() -> None:
    # the body alone ("ТЕСТ" in capitals) would read as lower-case cp1251; the subject says KOI8-R
    m = parse_message(message(["From: a@b.example", f"Subject: {raw('тест тест', 'koi8-r')}"],
                              "ТЕСТ\n".encode("koi8-r")))
    assert (m.subject, m.text.strip()) == ("тест тест", "ТЕСТ")


def test_declared_charset_elsewhere_is_the_prior() -> None:
    # GB18030 bytes also read as CP949 Hangul; the part's declared charset decides
    text = "朱镕基 你好"
    m = parse_message(message(
        ["From: a@b.example", f"Subject: {raw(text, 'gb18030')}",
         "Content-Type: text/plain; charset=gb2312"], "正文".encode("gb18030")))
    assert m.subject == text


def test_encoded_word_charset_in_another_header_is_the_prior() -> None:
    name = base64.b64encode("Иван".encode("koi8-r")).decode()
    m = parse_message(message(
        [f"From: =?koi8-r?B?{name}?= <ivan@b.example>", f"Subject: {raw('ТЕСТ тест', 'koi8-r')}"]))
    assert (m.from_name, m.subject) == ("Иван", "ТЕСТ тест")


def test_damaged_utf8_header_stays_utf8() -> None:
    data = "Юникод запрещен".encode()[:-1]  # last character cut in half
    subject = "Subject: " + data.decode("ascii", "surrogateescape")
    m = parse_message(message(["From: a@b.example", subject]))
    assert m.subject.startswith("Юникод запреще")


def test_us_ascii_label_on_legacy_bytes_in_an_encoded_word() -> None:
    m = parse_message(message(["From: a@b.example", "Subject: =?us-ascii?Q?=C7=D1=B1=DB?="]))
    assert m.subject == "한글"


def test_guess_short_prefers_a_plausible_prior() -> None:
    data = "ТЕСТ".encode("koi8-r")
    assert guess_short(data) == "cp1251"  # without evidence: lower-case reading wins
    assert guess_short(data, "koi8_r") == "koi8_r"


# --- the WHATWG Encoding Standard's labels ---

@pytest.mark.parametrize(
    ("label", "codec"),
    [
        ("big5", "big5hkscs"), ("gb2312", "gb18030"), ("GBK", "gb18030"),
        ("iso-8859-1", "cp1252"), ("us-ascii", "cp1252"), ("shift_jis", "cp932"),
        ("ks_c_5601-1987", "cp949"), ("euc-kr", "cp949"), ("x-mac-roman", "mac-roman"),
        ("x-mac-cyrillic", "mac-cyrillic"), ("x-mac-greek", "mac-greek"),
        ("x-mac-ce", "mac-latin2"), ("iso-8859-9", "cp1254"), ("tis-620", "cp874"),
        ("iso-8859-11", "cp874"), ("latin2", "iso8859-2"), ("csshiftjis", "cp932"),
        ("iso-2022-kr", "iso2022_kr"), ("x-user-defined", None), ("utf-7", None),
        (" UTF8 ", "utf-8"), ("unicode-1-1-utf-8", "utf-8"), ("x-bogus", None),
    ],
)
def test_whatwg_labels(label: str, codec: str | None) -> None:
    assert codec_for(label) == codec


def test_latin1_label_on_iso_8859_9_bytes_reads_as_windows_1254() -> None:
    m = parse_message(message(["From: a@b.example", "Content-Type: text/plain; charset=iso-8859-9"],
                              "İstanbul’da “güzel” bir gün".encode("cp1254")))
    assert m.text == "İstanbul’da “güzel” bir gün"  # quotes are C1 controls in ISO-8859-9


def test_single_byte_label_on_utf8_bytes_is_utf8() -> None:
    text = "Dear webpage team, I’m Ihor — “quoted”"
    for label in ("iso-8859-1", "us-ascii", "x-mac-cyrillic", "koi8-r"):
        decoded = decode_bytes(text.encode(), label)
        assert (decoded.text, decoded.charset) == (text, "utf-8"), label
        assert decoded.fallback


def test_part_charset_is_the_prior_for_a_short_subject() -> None:
    # alone, capitals in KOI8-R read best as lower-case cp1251; the body's label decides
    m = parse_message(message(
        ["From: a@b.example", f"Subject: {raw('ТЕСТ', 'koi8-r')}",
         "Content-Type: text/plain; charset=koi8-r"], "Привет".encode("koi8-r")))
    assert (m.subject, m.text) == ("ТЕСТ", "Привет")
