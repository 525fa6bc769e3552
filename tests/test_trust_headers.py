"""What a signature really covers, and the caps before any verification: real dkimpy signatures,
keys and records on the loopback DNS server, through the real `bombom-deliver` (and the worker).

DKIM verifiers hash the bottom-most copy of each header named in `h=`; the parser reads the
top-most. A stranger who puts a second copy on top of a genuine signed issue must not get it shown
as authenticated, nor into the newsletter row or anyone's subscription."""

from __future__ import annotations

import base64

import dkim
import psycopg
import pytest

from .builders import Worker, by_worker, with_worker_socket
from .conftest import ALICE, BOB, Env
from .dns_fixture import DnsServer
from .test_trust import DOMAIN, SELECTOR, article, mail, stored

SENDER = f"mailer@{DOMAIN}"
SIGNED = (b"from", b"to", b"subject", b"date", b"message-id", b"list-id", b"list-unsubscribe",
          b"list-unsubscribe-post", b"sender")
#: what a stranger puts on top of a genuine issue, header by header
FORGED = {
    "subject": "Subject: Action required: confirm your account",
    "message-id": f"Message-ID: <issue-99@{DOMAIN}>",
    "list-id": "List-Id: Evil <evil.example.org>",
    "list-unsubscribe": "List-Unsubscribe: <https://evil.example.org/login?steal=1>",
    "list-unsubscribe-post": "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
    "sender": "Sender: ceo@evil.example.org",
    "from": f"From: The Digest <news@{DOMAIN}>",
}
#: a second copy of these makes the signature fail (the others are just not vouched for)
READER_SEES = {"subject", "message-id", "list-id", "list-unsubscribe", "list-unsubscribe-post",
               "from"}


def issue(n: int = 42, unsubscribe: str = f"https://{DOMAIN}/unsub/abc", one_click: bool = False,
          sender: bool = True) -> bytes:
    return mail(subject=f"Issue {n}", mid=f"issue-{n}@{DOMAIN}", unsubscribe=unsubscribe,
                one_click=one_click, extra=f"Sender: {SENDER}\r\n" if sender else "")


def signed(raw: bytes, key: tuple[bytes, str], headers: tuple[bytes, ...] = SIGNED,
           oversign: bool = False, selector: str = SELECTOR) -> bytes:
    """`raw` signed by DOMAIN naming `headers` in h= once each, or twice (oversigned: a second
    copy added later breaks the signature)."""
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    present = {line.split(b":", 1)[0].strip().lower() for line in head if b":" in line}
    names = [h for h in headers if h in present]  # naming an absent one would sign its absence
    h = names + names if oversign else names
    return dkim.sign(raw, selector.encode(), DOMAIN.encode(), key[0], include_headers=h) + raw


def on_top(line: str, raw: bytes) -> bytes:
    """A forged header put above everything, where the parser reads it first."""
    return line.encode() + b"\r\n" + raw


def row(db: psycopg.Connection) -> tuple:
    return db.execute("SELECT display_name, list_id, sender_header, authenticated_at IS NOT NULL"
                      " FROM newsletters").fetchone()


def links(db: psycopg.Connection, member: str) -> tuple | None:
    return db.execute(
        "SELECT s.unsubscribe_http, s.unsubscribe_one_click FROM subscriptions s"
        " JOIN members m ON m.id = s.member_id WHERE m.address = %s", (member,)).fetchone()


REAL_ROW = ("The Digest", f"weekly.{DOMAIN}", SENDER, True)
REAL_LINK = (f"https://{DOMAIN}/unsub/abc", True)
PLAIN_LINK = (f"https://{DOMAIN}/unsub/abc", False)  # without List-Unsubscribe-Post


# -- a second copy of a signed header -------------------------------------------------------------

@pytest.mark.parametrize("oversign", [False, True], ids=["signed-once", "oversigned"])
@pytest.mark.parametrize("header", list(FORGED))
def test_a_copy_on_top_of_a_signed_header_is_never_authenticated(
        env: Env, db: psycopg.Connection, dns: DnsServer, key: tuple[bytes, str],
        header: str, oversign: bool) -> None:
    genuine = signed(issue(one_click=True), key, oversign=oversign)
    stored(env.deliver(genuine, recipient=BOB))
    assert article(db)[:2] == ("pass", DOMAIN)
    assert row(db) == REAL_ROW and links(db, BOB) == REAL_LINK

    stored(env.deliver(on_top(FORGED[header], genuine)))  # replayed to alice, one header added
    verdict, signer, _, detail, subject = article(db)
    if header in READER_SEES or oversign:
        assert (verdict, signer) == ("fail", None), detail
        if not oversign and header != "from":  # dkimpy itself names From once more
            assert f"{header} more than once" in detail, detail
        assert links(db, ALICE) == (None, False)  # the newsletter signs: nobody's word
    else:  # Sender: signed once, a second copy: the pass stands, the value is not vouched for
        assert (verdict, signer) == ("pass", DOMAIN), detail
        assert links(db, ALICE) == REAL_LINK  # the genuine issue's own, signed link
    # whatever the verdict, nothing shared and no other member's link comes from the forgery
    assert row(db) == REAL_ROW
    assert links(db, BOB) == REAL_LINK


def test_a_forged_copy_is_quarantined_under_p_reject(
        env: Env, db: psycopg.Connection, dns: DnsServer, key: tuple[bytes, str]
        ) -> None:
    dns.txt[f"_dmarc.{DOMAIN}"] = ["v=DMARC1; p=reject"]
    genuine = signed(issue(), key)
    stored(env.deliver(genuine, recipient=BOB))
    r = env.deliver(on_top(FORGED["subject"], genuine))
    stored(r, "quarantined")
    detail = db.execute("SELECT detail FROM deliveries ORDER BY id DESC").fetchone()[0]
    assert "(p=reject): dkim=fail" in detail and "subject more than once" in detail, detail
    assert db.execute("SELECT count(*) FROM articles").fetchone()[0] == 1


def test_a_header_the_signature_does_not_name_is_not_vouched_for(
        env: Env, db: psycopg.Connection, dns: DnsServer, key: tuple[bytes, str]
        ) -> None:
    """Most senders sign List-Unsubscribe and List-Id; one that does not leaves them to anyone:
    the message still passes (From and the body are signed), but those values are nobody's word."""
    partial = (b"from", b"to", b"subject", b"date", b"message-id")
    stored(env.deliver(signed(issue(sender=False), key, partial), recipient=BOB))
    verdict, _, _, detail, _ = article(db)
    assert verdict == "pass" and "not signed: list-id, list-unsubscribe" in detail, detail
    assert row(db) == ("The Digest", None, None, True)  # List-Id was not signed
    assert links(db, BOB) == (None, False)  # nor List-Unsubscribe: nobody's word
    # a stranger's copy of the same issue with their own List-Id and link changes nothing shared
    forged = issue(43, unsubscribe="https://evil.example.org/u", sender=False).replace(
        f"weekly.{DOMAIN}".encode(), b"evil.example.org")
    stored(env.deliver(signed(forged, key, partial), recipient=ALICE))
    assert article(db)[0] == "pass"
    assert row(db) == ("The Digest", None, None, True)
    assert links(db, ALICE) == (None, False)
    # the same headers signed: vouched for, so they set the row and the member's own link
    stored(env.deliver(signed(issue(44, one_click=True), key), recipient=BOB))
    assert row(db) == REAL_ROW
    assert links(db, BOB) == (f"https://{DOMAIN}/unsub/abc", True)


def test_one_click_needs_a_signed_list_unsubscribe_post(
        env: Env, db: psycopg.Connection, dns: DnsServer, key: tuple[bytes, str]
        ) -> None:
    without_post = tuple(h for h in SIGNED if h != b"list-unsubscribe-post")
    stored(env.deliver(signed(issue(one_click=True), key, without_post)))
    assert article(db)[0] == "pass"
    assert links(db, ALICE) == (f"https://{DOMAIN}/unsub/abc", False)


def test_through_the_worker(env: Env, db: psycopg.Connection, dns: DnsServer,
                           key: tuple[bytes, str]) -> None:
    with_worker_socket(env)
    w = Worker(env, "--processes", "1").start()
    try:
        w.wait_ready()
        before = by_worker(env)
        genuine = signed(issue(), key)
        stored(env.deliver(genuine, recipient=BOB))
        stored(env.deliver(on_top(FORGED["list-unsubscribe"], genuine)))
        assert article(db)[0] == "fail"
        # SPF through the worker: the client address and sender reach it from bombom-deliver
        dns.txt[DOMAIN] = ["v=spf1 ip4:192.0.2.0/24 -all"]
        stored(env.deliver(issue(43), "--sender", f"bounces@{DOMAIN}",
                           "--client-address", "192.0.2.7"))
        verdict, signer, _, detail, _ = article(db)
        assert (verdict, signer) == ("pass", None) and "spf=pass" in detail, detail
        assert by_worker(env) >= before + 3
    finally:
        w.stop()
    assert row(db) == REAL_ROW and links(db, BOB) == PLAIN_LINK


# -- caps before any verification -----------------------------------------------------------------

def test_too_many_signatures_are_not_examined(env: Env, db: psycopg.Connection, dns: DnsServer,
                                              key: tuple[bytes, str]) -> None:
    junk = b"".join(b"DKIM-Signature: v=1; a=rsa-sha256; d=%s; s=x%d; h=from; bh=AAAA; b=AAAA\r\n"
                    % (DOMAIN.encode(), i) for i in range(10))
    genuine = signed(issue(), key)
    stored(env.deliver(genuine, recipient=BOB))
    assert article(db)[0] == "pass"  # one signature: examined
    stored(env.deliver(junk + genuine))
    verdict, _, _, detail, _ = article(db)
    assert verdict == "fail"
    assert "dkim=permerror (11 DKIM-Signature headers, more than 10: none examined)" in detail
    assert not any(q.startswith("x") for q in dns.queries)  # not one of their keys was asked


def _der_int(n: int) -> bytes:
    body = n.to_bytes(n.bit_length() // 8 + 1, "big")
    return b"\x02" + _der_len(len(body)) + body


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def rsa_public_key(modulus_bits: int, exponent: int) -> str:
    """A DKIM key record (RSAPublicKey DER) with a modulus of that size: no private key exists,
    only its cost to a verifier matters."""
    n = (1 << (modulus_bits - 1)) | 0xD1CE | 1
    seq = _der_int(n) + _der_int(exponent)
    der = b"\x30" + _der_len(len(seq)) + seq
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


@pytest.mark.parametrize(("bits", "exponent_bits", "why"), [
    (32768, 32768, "RSA key of 32768 bits, outside 1024-4096 (RFC 8301)"),  # ~63 s of CPU
    (8192, 17, "RSA key of 8192 bits, outside 1024-4096 (RFC 8301)"),
    (512, 17, "RSA key of 512 bits, outside 1024-4096 (RFC 8301)"),
    (2048, 2048, "RSA public exponent of 2048 bits (at most 64)"),
])
def test_keys_outside_rfc_8301_are_refused_before_any_arithmetic(
        env: Env, db: psycopg.Connection, dns: DnsServer, key: tuple[bytes, str],
        bits: int, exponent_bits: int, why: str) -> None:
    exponent = 65537 if exponent_bits == 17 else (1 << (exponent_bits - 1)) | 1
    dns.txt[f"huge._domainkey.{DOMAIN}"] = [rsa_public_key(bits, exponent)]
    stored(env.deliver(signed(issue(), key, selector="huge"), timeout=120))
    verdict, _, _, detail, _ = article(db)
    assert verdict == "fail"
    assert f"dkim=permerror d={DOMAIN} ({why})" in detail, detail


def test_a_key_inside_the_bounds_is_verified(env: Env, db: psycopg.Connection, dns: DnsServer,
                                            key: tuple[bytes, str]) -> None:
    """The same path with our 2048-bit key, 65537: the check refuses nothing it should verify."""
    dns.txt[f"other._domainkey.{DOMAIN}"] = [key[1]]
    stored(env.deliver(signed(issue(), key, selector="other")))
    assert article(db)[:2] == ("pass", DOMAIN)


# -- the same rules for a milter's verdict (auth_method = "authentication-results") --------------

def test_a_milters_pass_vouches_only_for_what_the_domains_signatures_name(
        env: Env, db: psycopg.Connection, dns: DnsServer, key: tuple[bytes, str]) -> None:
    """The milter says dkim=pass for the domain, not which signature: what every signature of
    that domain names, once, is vouched for; a second Subject on top is a `fail` as in dkim
    mode."""
    env.write_config(env.config.read_text() + 'auth_method = "authentication-results"\n'
                     'authserv_id = "mx.bombom.test"\n')
    ours = (f"Authentication-Results: mx.bombom.test; dkim=pass header.d={DOMAIN};"
            f" dmarc=pass (p=reject) header.from={DOMAIN}")
    partial = (b"from", b"to", b"subject", b"date", b"message-id", b"list-unsubscribe")
    stored(env.deliver(on_top(ours, signed(issue(), key, partial)), recipient=BOB))
    assert article(db)[:2] == ("pass", DOMAIN)
    assert row(db) == ("The Digest", None, None, True)  # List-Id and Sender not signed
    assert links(db, BOB) == PLAIN_LINK  # List-Unsubscribe signed
    r = env.deliver(on_top(ours, on_top(FORGED["subject"], signed(issue(44), key))))
    stored(r, "quarantined")  # fail under the p=reject the milter reported
    assert dns.queries == []
