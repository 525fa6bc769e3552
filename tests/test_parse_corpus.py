"""The real-mail corpus in ../shared/corpus: golden values and invariants for every file."""

from __future__ import annotations

import email
import email.header
import statistics
import time
from email.policy import compat32
from pathlib import Path

import pytest

from bombom_pipe.parse import Attachment, ParsedMessage, ParseError, parse_message

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
KOREAN_LABELS = {"euc-kr", "ks_c_5601-1987", "ks_c_5601", "ksc5601", "windows-949", "uhc", "cp949"}

pytestmark = pytest.mark.skipif(not (CORPUS / "MANIFEST.tsv").is_file(), reason="no corpus")


def manifest() -> list[dict[str, str]]:
    if not (CORPUS / "MANIFEST.tsv").is_file():
        return []
    lines = (CORPUS / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:] if line]


FILES = [row["file"] for row in manifest()]
UNUSABLE = {"unstructured-io/empty.eml", "jhillyerd-enmime/erroneous.raw.eml"}

# (file, subject, from, preview, unsubscribe http, unsubscribe mailto, one-click, source)
GOLDEN = [
    ("mikel-mail/raw_email.eml", "NOTE: 한국말로 하는 것", "jamis@37signals.com",
     "대부분의 마찬가지로, 우리는 하나님을 믿습니다. 제 이름은 Jamis입니다.",
     None, None, False, None),
    ("mnako-letters/test_korean_plaintext_euc-kr_over_quoted-printable.txt.eml",
     "📧 Test 한국어 팬그램", "alice.bonaeneunsalam@example.com",
     "키스의 고유조건은 입술끼리 만나야 하고 특별한 기술은 필요치 않다.", None, None, False, None),
    ("mnako-letters/test_korean_multipart_related_euc-kr_over_quoted-printable.txt.eml",
     "📧 Test 한국어 팬그램", "alice.bonaeneunsalam@example.com",
     "키스의 고유조건은 입술끼리 만나야 하고 특별한 기술은 필요치 않다.", None, None, False, None),
    ("php-mime-mail-parser/m0018.eml", "[Korea] Name", "name@company.com",
     "My traveling companions! My friend, Le Pliage!", None, None, False, None),
    ("unspy-email-analyzer/2023-01-17-schreibsuchti.u1.eml", "Der fiese Schlüssel zum Ca$h",
     "walterepp@schreibsuchti.de",
     '"Gleich ist es zu spät !" Meine Tochter musste dringend auf Toilette. Als wir das '
     "erlösende Häuschen betraten, stand dort ein Kassenautomat.",
     "https://schreibsuchti.us3.list-manage.com/unsubscribe?u=5e78d7ef2297cc80842b7591e"
     "&id=93b720b585&e=6496a8003f&c=2ed1232679",
     "mailto:unsubscribe-mc.us3_5e78d7ef2297cc80842b7591e.2ed1232679-6496a8003f"
     "@unsubscribe.mailchimpapp.net?subject=unsubscribe", True, "header"),
    ("unspy-email-analyzer/2023-01-03-oekoligenta.u1.eml", "Wandel-Newsletter Janur 2023",
     "langer@oekoligenta.de",
     "Liebe Leute, das politische Klima ist kälter geworden, dafür sind die Temperaturen am "
     "Steigen. Umgekehrt wäre uns das lieber. Trotzdem wollen wir uns",
     "https://oekoligenta.fairmailing.net/lists/?p=unsubscribe"
     "&uid=a3415d1d918ccd0639a9a7a2bc2f3198&jo=1", None, True, "header"),
    ("spamscope-mail-parser/mail_test_13.eml", "New Webinar: So, You Have A Disaster... Now What?",
     "info@continuityinsights.com", "Upcoming Webinar – So, You Have A Disaster... Now What?",
     "https://cimanagementconference.us14.list-manage.com/unsubscribe?u=3f21937f0f636c8cec1db30bf"
     "&id=9bc9573bd6&e=042ea43672&c=199bb58d0b",
     "mailto:unsubscribe-mc.us14_3f21937f0f636c8cec1db30bf.199bb58d0b-042ea43672"
     "@mailin.mcsv.net?subject=unsubscribe", True, "header"),
    ("mikel-mail/content_transfer_encoding_with_8bits.eml", "The Original Advantage #e13011",
     "announcements@provantage.com",
     # the leading date, issue number, unsubscribe notice (over two lines), do-not-reply
     # line and customer address are not the letter
     "Holiday Gift Ideas for the Computer Professional! 11Mbps Wireless Cable/DSL Router By "
     "Belkin The Belkin Wireless Cable/DSL Gateway Router lets you",
     "http://www.provantage.com/unsubscribe.htm", None, False, "body"),
    ("apache-james-project/frnog.eml", "[FRnOG] [BIZ] Collecte de liens C2E/CELAN en DOM",
     "ggenty@waycom.net",
     "Bonjour le FRnOG, Je cherche un partenaire dans les DOM avec de la collecte C2E et/ou "
     "CELAN capable de revendre des liens et de remonter le trafic (en",
     None, "mailto:sympa@frnog.org?subject=unsubscribe%20frnog", False, "header"),
    ("rspamd/newsletter.eml", "🎉 Monthly Newsletter - Exclusive Deals & Product Updates!",
     "newsletter@example.com",
     "🎉 Exclusive Monthly Offers! Dear Valued Subscriber, This month we're excited to bring you "
     "our BIGGEST SALE of the year!",
     "https://example.com/unsubscribe?id=123", None, False, "header"),
    ("unspy-email-analyzer/2023-01-16-norma.u1.eml", "Grün & Günstig ‒ ab 18.01. in Ihrer Filiale",
     "newsletter@norma-online.info",
     "Angebote ab Mittwoch, 18.01. Grünpflanzen XL je Pflanze 8,99* Hochwertiges "
     "Bromelien-Arrangement je Pflanze",
     "https://www.norma-online.de/de/newsletter/abmeldung?pk_campaign=NewsletterV2-23_01_18-DE"
     "&pk_kwd=Newsletter-abbestellen", None, False, "body"),
]


def load(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


@pytest.mark.parametrize(("name", "subject", "sender", "preview", "http", "mailto", "one_click",
                          "source"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden(name: str, subject: str, sender: str, preview: str, http: str | None,
                mailto: str | None, one_click: bool, source: str | None) -> None:
    m = parse_message(load(name))
    assert m.subject == subject
    assert m.from_address == sender
    assert m.preview == preview
    assert (m.unsubscribe.http, m.unsubscribe.mailto) == (http, mailto)
    assert (m.unsubscribe.one_click, m.unsubscribe.source) == (one_click, source)


def test_korean_rfc2231_and_rfc2047_filenames_from_corpus() -> None:
    m = parse_message(load("jhillyerd-enmime/long-filename-euckr.raw.eml"))
    assert [a.filename for a in m.attachments] == ["개.txt"]
    m = parse_message(load("php-mime-mail-parser/m0018.eml"))
    assert [a.filename for a in m.attachments] == ["사진.JPG", "ATT00001.txt"]
    assert m.attachments[0].content_type == "image/jpeg"


def test_utf16_file_and_junk_before_headers_are_recovered() -> None:
    m = parse_message(load("unstructured-io/fake-email-utf-16-le.eml"))
    assert m.subject == "Test Email"
    assert any("utf-16" in f for f in m.fallbacks)
    m = parse_message(load("demisto-parse-emails/smtp_envelope_headers.eml"))
    assert m.x_original_to == "user1@test.com"
    assert any("junk lines" in f for f in m.fallbacks)


def str_fields(m: ParsedMessage) -> list[str]:
    out = [v for v in (getattr(m, f) for f in m.__dataclass_fields__) if isinstance(v, str)]
    for name in ("to_addresses", "charsets", "fallbacks", "skipped_attachments"):
        out.extend(getattr(m, name))
    for a in m.attachments:
        assert isinstance(a, Attachment)
        out.extend(v for v in (a.filename, a.content_type, a.content_id, a.disposition) if v)
    out.extend(v for v in (m.unsubscribe.http, m.unsubscribe.mailto, m.unsubscribe.source) if v)
    return out


def assert_clean(m: ParsedMessage) -> None:
    for value in str_fields(m):
        assert "\x00" not in value
        assert not any(0xD800 <= ord(ch) <= 0xDFFF for ch in value)


def valid_cp949_bodies(raw: bytes) -> bool:
    """True when the message has Korean-labelled text parts that are all valid CP949."""
    msg = email.message_from_bytes(raw, policy=compat32)
    found = False
    for part in msg.walk():
        label = (part.get_content_charset() or "").lower()
        if part.get_content_maintype() != "text" or label not in KOREAN_LABELS:
            continue
        data = part.get_payload(decode=True) or b""
        if data.isascii():
            continue
        try:
            data.decode("cp949")
        except UnicodeDecodeError:
            return False
        found = True
    return found


def korean_subject(raw: bytes) -> bool:
    msg = email.message_from_bytes(raw, policy=compat32)
    value = msg.get("subject")
    if not isinstance(value, str):
        return False
    try:
        chunks = email.header.decode_header(value)
    except Exception:  # noqa: BLE001 - the reference decoder itself may choke
        return False
    korean = [(d, c) for d, c in chunks if c and c.lower() in KOREAN_LABELS]
    if not korean:
        return False
    try:
        for data, _ in korean:
            data.decode("cp949")
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.parametrize("name", FILES)
def test_every_corpus_file(name: str) -> None:
    raw = load(name)
    if name in UNUSABLE:
        with pytest.raises(ParseError):
            parse_message(raw)
        return
    m = parse_message(raw)
    assert_clean(m)
    assert m.from_address is None or m.from_address == m.from_address.lower()
    assert m.sent_at is None or m.sent_at.tzinfo is not None
    assert sum(a.size for a in m.attachments) <= 25 * 1024 * 1024
    assert len(m.attachments) <= 50
    if valid_cp949_bodies(raw):
        assert "\ufffd" not in (m.text or "") + (m.html or "")
        assert "cp949" in m.charsets
    if korean_subject(raw):
        assert "\ufffd" not in m.subject


def test_corpus_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """Counts and timing over the whole corpus; the numbers of the parser report. Timing is CPU
    time and only printed (`make bench` measures speed); no message may take 5 CPU seconds, a
    blow-up rather than a speed figure."""
    times: list[float] = []
    clean = with_fallback = errors = preview = unsub = thumb = 0
    for name in FILES:
        raw = load(name)
        start = time.process_time()
        try:
            m = parse_message(raw)
        except ParseError:
            errors += 1
            continue
        finally:
            times.append(time.process_time() - start)
        with_fallback += bool(m.fallbacks)
        clean += not m.fallbacks
        preview += m.preview is not None
        unsub += m.unsubscribe.source is not None
        thumb += m.thumbnail_url is not None
    times.sort()
    p95 = times[int(len(times) * 0.95)]
    with capsys.disabled():
        print(f"\ncorpus {len(FILES)}: no fallback {clean}, fallback {with_fallback}, "
              f"ParseError {errors}; preview {preview}, unsubscribe {unsub}, thumbnail {thumb}; "
              f"parse CPU median {statistics.median(times) * 1000:.1f} ms, "
              f"p95 {p95 * 1000:.1f} ms, max {times[-1] * 1000:.0f} ms")
    assert errors == len(UNUSABLE)
    assert preview >= len(FILES) * 0.8
    assert times[-1] < 5.0
