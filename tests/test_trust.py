"""Who sent it: real DKIM signatures (dkimpy, a key made here), keys and DMARC records served by
the loopback DNS server, through the real `bombom-deliver` and PostgreSQL. A stranger's mail
must not suppress, overwrite or impersonate a publisher."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage

import dkim
import psycopg
import pytest

from .conftest import ALICE, BOB, DKIM_DOMAIN, DKIM_SELECTOR, Env
from .dns_fixture import DnsServer
from .test_admin import bombom

DOMAIN, SELECTOR = DKIM_DOMAIN, DKIM_SELECTOR


def mail(subject: str = "Issue 42", *, sender: str = f"news@{DOMAIN}", name: str = "The Digest",
         mid: str | None = f"issue-42@{DOMAIN}", body: str = "<p>This week: spring.</p>",
         unsubscribe: str = f"https://{DOMAIN}/unsub/abc", one_click: bool = True,
         list_id: str = f"weekly.{DOMAIN}", extra: str = "") -> bytes:
    lines = [f"From: {name} <{sender}>", f"To: {ALICE}", f"Subject: {subject}",
             "Date: Mon, 30 Nov 2026 08:00:00 +0900", f"List-Id: Weekly <{list_id}>",
             f"List-Unsubscribe: <{unsubscribe}>"]
    if one_click:
        lines.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    if mid:
        lines.append(f"Message-ID: <{mid}>")
    lines += ["MIME-Version: 1.0", "Content-Type: text/html; charset=utf-8"]
    head = "\r\n".join(lines) + "\r\n" + extra
    return (head + "\r\n" + f"<html><body>{body}</body></html>\r\n").encode()


def sign(raw: bytes, key: tuple[bytes, str], domain: str = DOMAIN, length: bool = False
         ) -> bytes:
    header = dkim.sign(raw, SELECTOR.encode(), domain.encode(), key[0], length=length,
                       include_headers=[b"from", b"to", b"subject", b"date", b"message-id",
                                        b"list-id", b"list-unsubscribe",
                                        b"list-unsubscribe-post"])
    return header + raw


def article(db: psycopg.Connection, where: str = "true", *params: object) -> tuple:
    return db.execute(
        "SELECT auth_verdict, auth_signing_domain, auth_dmarc_policy, auth_detail, subject "
        f"FROM articles WHERE {where} ORDER BY id DESC LIMIT 1", params).fetchone()


def stored(r: subprocess.CompletedProcess[bytes], what: str = "stored") -> None:
    assert r.returncode == 0, r
    assert r.stdout.decode().startswith(f"2.0.0 {what}"), r.stdout


def newsletter(db: psycopg.Connection, member: str = ALICE) -> tuple:
    """The shared row's name and List-Id, `member`'s own unsubscribe link and one-click flag,
    and whether the newsletter was ever seen authenticated."""
    return db.execute(
        "SELECT n.display_name, n.list_id, s.unsubscribe_http, s.unsubscribe_one_click,"
        " n.authenticated_at IS NOT NULL FROM newsletters n LEFT JOIN subscriptions s"
        " ON s.newsletter_id = n.id AND s.member_id = (SELECT id FROM members WHERE address = %s)",
        (member,)).fetchone()


# -- verdicts -------------------------------------------------------------------------------------

def test_signature_aligned_with_from_passes(env: Env, db: psycopg.Connection, dns: DnsServer,
                                            key: tuple[bytes, str]) -> None:
    dns.txt[f"_dmarc.{DOMAIN}"] = ["v=DMARC1; p=quarantine; rua=mailto:d@example.com"]
    stored(env.deliver(sign(mail(), key)))
    verdict, domain, policy, detail, _ = article(db)
    assert (verdict, domain, policy) == ("pass", DOMAIN, "quarantine")
    assert "dkim=pass" in detail
    assert newsletter(db)[4] is True


def test_parent_domain_signature_aligns_relaxed_but_not_strict(
        env: Env, db: psycopg.Connection, dns: DnsServer, key: tuple[bytes, str]) -> None:
    raw = sign(mail(), key, domain="example.com")  # d=example.com, From: …@digest.example.com
    stored(env.deliver(raw))
    assert article(db)[:3] == ("pass", "example.com", None)
    dns.txt["_dmarc.example.com"] = ["v=DMARC1; p=none; adkim=s"]  # found at the org domain
    stored(env.deliver(raw, recipient=BOB))
    assert article(db)[:3] == ("fail", None, "none")


def test_third_party_signature_is_not_authentication(
        env: Env, db: psycopg.Connection, dns: DnsServer, key: tuple[bytes, str]) -> None:
    stored(env.deliver(sign(mail(), key, domain="esp.example.net")))
    verdict, domain, policy, detail, _ = article(db)
    assert (verdict, domain, policy) == ("none", None, None)
    assert "d=esp.example.net not aligned" in detail
    assert newsletter(db)[4] is False


def test_body_changed_after_signing_fails(env: Env, db: psycopg.Connection, dns: DnsServer,
                                          key: tuple[bytes, str]) -> None:
    raw = sign(mail(), key).replace(b"spring", b"winter")
    stored(env.deliver(raw))
    verdict, domain, _, detail, _ = article(db)
    assert (verdict, domain) == ("fail", None)
    assert "body hash mismatch" in detail


def test_content_appended_after_a_partial_body_signature_is_not_authenticated(
        env: Env, db: psycopg.Connection, dns: DnsServer, key: tuple[bytes, str]) -> None:
    raw = sign(mail(), key, length=True)  # l=: the signature covers this many body bytes
    stored(env.deliver(raw))
    assert article(db)[:2] == ("pass", DOMAIN)
    stored(env.deliver(raw + b"<p>Verify your account: http://evil.example.org/</p>\r\n",
                       recipient=BOB))
    verdict, domain, _, detail, _ = article(db)
    assert (verdict, domain) == ("none", None) and "only part of the body" in detail


def test_no_signature_is_none_or_fail_under_dmarc(env: Env, db: psycopg.Connection,
                                                  dns: DnsServer) -> None:
    stored(env.deliver(mail()))
    assert article(db)[:3] == ("none", None, None)
    dns.txt[f"_dmarc.{DOMAIN}"] = ["v=DMARC1; p=none"]
    stored(env.deliver(mail(), recipient=BOB))
    assert article(db)[:3] == ("fail", None, "none")


def test_dns_timeout_is_temperror_and_still_stored(env: Env, db: psycopg.Connection,
                                                   dns: DnsServer, key: tuple[bytes, str]
                                                   ) -> None:
    env.write_config(env.config.read_text() + "dns_timeout_seconds = 1\n")
    dns.silent.add(f"_dmarc.{DOMAIN}")
    stored(env.deliver(mail()))
    verdict, _, policy, detail, _ = article(db)
    assert (verdict, policy) == ("temperror", None) and "DNS timeout" in detail
    dns.silent = {f"{SELECTOR}._domainkey.{DOMAIN}"}  # the key lookup hangs, DMARC answers
    stored(env.deliver(sign(mail(), key), recipient=BOB))
    assert article(db)[0] == "temperror"
    assert db.execute("SELECT count(*) FROM articles").fetchone()[0] == 2


def test_dmarc_reject_failure_is_quarantined_and_replayable(
        env: Env, pg, db: psycopg.Connection, dns: DnsServer,  # noqa: ANN001
        key: tuple[bytes, str]) -> None:
    dns.txt["_dmarc.example.com"] = ["v=DMARC1; p=reject"]  # inherited by digest.example.com
    forged = mail(subject="Reset your password", mid="phish@evil.example.org")
    r = env.deliver(forged)
    stored(r, "quarantined")
    assert b"dmarc" in r.stdout
    assert db.execute("SELECT count(*) FROM articles").fetchone()[0] == 0
    listed = bombom(env, "quarantine", "list", owner_url=pg.url())
    assert f"dmarc: fail for {DOMAIN} (p=reject)" in listed.stdout
    stored(env.deliver(sign(mail(), key)))  # the real publisher still gets through
    assert article(db)[:3] == ("pass", DOMAIN, "reject")
    # the operator turns the policy off and replays: stored, with its verdict for the app
    env.write_config(env.config.read_text() + "dmarc_reject_quarantine = false\n")
    r = bombom(env, "replay", owner_url=pg.url(), as_delivery_user=True)
    assert "stored 1" in r.stdout, r
    assert article(db, "subject = %s", "Reset your password")[:3] == ("fail", None, "reject")


# -- SPF: DMARC also passes by an envelope sender aligned with From that SPF authorizes ----------

BOUNCES = f"bounces@{DOMAIN}"


def spf(dns: DnsServer, record: str = "v=spf1 ip4:192.0.2.0/24 -all", at: str = DOMAIN) -> None:
    dns.txt[at] = [record]


def test_aligned_spf_pass_passes_dmarc_without_a_signature(
        env: Env, db: psycopg.Connection, dns: DnsServer) -> None:
    dns.txt["_dmarc.example.com"] = ["v=DMARC1; p=reject"]
    spf(dns)
    unsigned = mail(subject="Sent from our own server", mid="own@digest.example.com")
    stored(env.deliver(unsigned, "--sender", BOUNCES, "--client-address", "192.0.2.7"))
    verdict, signer, policy, detail, _ = article(db)
    assert (verdict, signer, policy) == ("pass", None, "reject")
    assert f"spf=pass smtp.mailfrom={DOMAIN} client=192.0.2.7" in detail
    assert DOMAIN in dns.queries  # SPF asked the loopback server, like everything else
    assert newsletter(db) == ("The Digest", f"weekly.{DOMAIN}", f"https://{DOMAIN}/unsub/abc",
                              True, True)
    # the same envelope from a client SPF does not authorize: quarantined under p=reject
    r = env.deliver(mail(subject="Forged", mid="forged@evil.example.org"),
                    "--sender", BOUNCES, "--client-address", "198.51.100.9", recipient=BOB)
    stored(r, "quarantined")
    assert b"spf=fail" in r.stdout


def test_an_aligned_envelope_sender_alone_is_no_exemption(
        env: Env, db: psycopg.Connection, dns: DnsServer) -> None:
    """Before SPF was evaluated, a p=reject failure with an envelope sender aligned with From was
    shown instead of quarantined: anyone can write that envelope sender."""
    dns.txt["_dmarc.example.com"] = ["v=DMARC1; p=reject"]
    stored(env.deliver(mail(), "--sender", "bounces@mail.example.com"), "quarantined")
    spf(dns, "v=spf1 -all", at="mail.example.com")
    stored(env.deliver(mail(), "--sender", "bounces@mail.example.com",
                       "--client-address", "192.0.2.7"), "quarantined")
    assert db.execute("SELECT count(*) FROM articles").fetchone()[0] == 0


def test_spf_alignment_is_relaxed_unless_the_record_says_strict(
        env: Env, db: psycopg.Connection, dns: DnsServer) -> None:
    """An ESP's bounce domain under the publisher's organizational domain aligns (relaxed);
    `aspf=s` wants the From domain itself; an ESP's own bounce domain never aligns."""
    spf(dns, "v=spf1 include:_spf.esp.example.net -all", at="bounce.example.com")
    dns.txt["_spf.esp.example.net"] = ["v=spf1 ip4:203.0.113.0/24 ~all"]
    dns.txt["_dmarc.example.com"] = ["v=DMARC1; p=quarantine"]
    envelope = ("--sender", "b-123@bounce.example.com", "--client-address", "203.0.113.5")
    stored(env.deliver(mail(), *envelope))
    assert article(db)[:3] == ("pass", None, "quarantine")
    dns.txt["_dmarc.example.com"] = ["v=DMARC1; p=quarantine; aspf=s"]
    stored(env.deliver(mail(), *envelope, recipient=BOB))
    verdict, _, _, detail, _ = article(db)
    assert verdict == "fail" and "smtp.mailfrom=bounce.example.com not aligned" in detail
    spf(dns, "v=spf1 ip4:203.0.113.0/24 -all", at="esp.example.net")
    stored(env.deliver(mail(subject="x", mid="x@y"), "--sender", "b@esp.example.net",
                       "--client-address", "203.0.113.5"))
    assert article(db)[0] == "fail"


def test_replay_evaluates_spf_on_the_recorded_client_address(
        env: Env, pg, db: psycopg.Connection, dns: DnsServer) -> None:  # noqa: ANN001
    dns.txt["_dmarc.example.com"] = ["v=DMARC1; p=reject"]
    spf(dns, "v=spf1 ip4:192.0.2.0/24 -all")
    stored(env.deliver(mail(), "--sender", BOUNCES, "--client-address", "198.51.100.9"),
           "quarantined")
    spf(dns, "v=spf1 ip4:192.0.2.0/24 ip4:198.51.100.0/24 -all")  # the publisher's new server
    r = bombom(env, "replay", owner_url=pg.url(), as_delivery_user=True)
    assert "stored 1" in r.stdout, r
    assert article(db)[:3] == ("pass", None, "reject")


def test_spf_dns_timeout_is_temperror_within_the_budget(
        env: Env, db: psycopg.Connection, dns: DnsServer) -> None:
    env.write_config(env.config.read_text() + "dns_timeout_seconds = 1\n")
    dns.txt["_dmarc.example.com"] = ["v=DMARC1; p=reject"]
    dns.silent.add(DOMAIN)
    r = env.deliver(mail(), "--sender", BOUNCES, "--client-address", "192.0.2.7")
    stored(r)  # unknown is not a failure: stored, not quarantined
    verdict, _, _, detail, _ = article(db)
    assert verdict == "temperror" and "spf=temperror" in detail, detail


def test_control_characters_quoted_from_a_signature_are_stored_printable(
        env: Env, db: psycopg.Connection, dns: DnsServer) -> None:
    """Found by fuzzing: a NUL in a signature's d= reached auth_detail, and PostgreSQL refused
    the article (quarantined as `database refused`)."""
    raw = mail().replace(b"\r\n\r\n", b"\r\nDKIM-Signature: v=1; a=rsa-sha256; "
                         b"d=other.exam\x00ple\x1b.org; s=sel; h=from; bh=AAAA; b=AAAA\r\n\r\n", 1)
    stored(env.deliver(raw))
    detail = article(db)[3]
    assert "\x00" not in detail and "\x1b" not in detail and "other.exam" in detail, detail


# -- the attacks ----------------------------------------------------------------------------------

def test_a_stranger_cannot_suppress_an_issue_by_its_message_id(
        env: Env, db: psycopg.Connection, dns: DnsServer, key: tuple[bytes, str]) -> None:
    """Before: the stranger's mail owned bob's key and the real issue was a silent duplicate."""
    stored(env.deliver(mail(subject="Issue 42 (fake)", body="<p>buy now</p>"), recipient=BOB))
    stored(env.deliver(sign(mail(), key), recipient=BOB))
    rows = db.execute("SELECT subject, auth_verdict FROM articles ORDER BY id").fetchall()
    assert rows == [("Issue 42 (fake)", "none"), ("Issue 42", "pass")]


def test_same_key_other_content_is_kept_even_without_signatures(
        env: Env, db: psycopg.Connection, dns: DnsServer) -> None:
    stored(env.deliver(mail(subject="Issue 42 (fake)", body="<p>buy now</p>")))
    r = env.deliver(mail())
    stored(r)
    detail = db.execute("SELECT detail FROM deliveries ORDER BY id DESC").fetchone()[0]
    assert "same sender and Message-ID as article 1, other content" in detail
    assert [r[0] for r in db.execute("SELECT subject FROM articles ORDER BY id")] == [
        "Issue 42 (fake)", "Issue 42"]
    stored(env.deliver(mail()), "duplicate")  # the second one, again: still two articles
    assert db.execute("SELECT count(*) FROM articles").fetchone()[0] == 2


def test_a_stranger_cannot_rewrite_the_shared_newsletter_row(
        env: Env, db: psycopg.Connection, dns: DnsServer, key: tuple[bytes, str]) -> None:
    stored(env.deliver(sign(mail(), key)))
    real = ("The Digest", f"weekly.{DOMAIN}", f"https://{DOMAIN}/unsub/abc", True, True)
    assert newsletter(db) == real
    spoof = mail(subject="Issue 43", mid=f"issue-43@{DOMAIN}", name="The Digest (new home)",
                 unsubscribe="https://evil.example.org/u", one_click=False,
                 list_id="evil.example.org")
    stored(env.deliver(spoof))
    stored(env.deliver(spoof, recipient=BOB))  # nor the link of a member who has none yet
    assert newsletter(db) == real
    assert newsletter(db, BOB) == ("The Digest", f"weekly.{DOMAIN}", None, False, True)
    # the spoof's own article keeps what it said, marked unauthenticated for the app
    assert db.execute("SELECT auth_verdict, from_name FROM articles WHERE subject = 'Issue 43'"
                      ).fetchone() == ("none", "The Digest (new home)")
    # the publisher itself renames the newsletter: authenticated, so it changes
    renamed = sign(mail(subject="Issue 44", mid=f"issue-44@{DOMAIN}", name="Digest Weekly"), key)
    stored(env.deliver(renamed))
    assert newsletter(db)[0] == "Digest Weekly"


def test_first_sighting_fills_the_row_until_authenticated_mail_comes(
        env: Env, db: psycopg.Connection, dns: DnsServer, key: tuple[bytes, str]) -> None:
    stored(env.deliver(mail(name="Fake Digest", unsubscribe="https://evil.example.org/u")))
    assert newsletter(db)[:3] == ("Fake Digest", f"weekly.{DOMAIN}", "https://evil.example.org/u")
    stored(env.deliver(mail(subject="Issue 43", mid="43@x", name="Other")))  # never replaces
    assert newsletter(db)[0] == "Fake Digest"
    stored(env.deliver(sign(mail(subject="Issue 44", mid="44@x"), key)))
    assert newsletter(db) == ("The Digest", f"weekly.{DOMAIN}", f"https://{DOMAIN}/unsub/abc",
                              True, True)


def test_a_stranger_cannot_fill_what_the_first_sighting_left_empty(
        env: Env, db: psycopg.Connection, dns: DnsServer) -> None:
    """A sender that never signs and sends no List-Id: a later stranger cannot give it one
    (before, an unsigned spoof set list_id of a real sender's row)."""
    stored(env.deliver(mail().replace(f"List-Id: Weekly <weekly.{DOMAIN}>\r\n".encode(), b"")))
    assert newsletter(db)[1] is None
    stored(env.deliver(mail(subject="Issue 43", mid="43@x", list_id="evil.example.org"),
                       recipient=BOB))
    assert newsletter(db)[1] is None


def test_each_member_keeps_their_own_unsubscribe_link(
        env: Env, db: psycopg.Connection, dns: DnsServer, key: tuple[bytes, str]) -> None:
    """List-Unsubscribe carries a per-recipient token or address: alice's link is never shown to
    bob (whose "unsubscribe" would unsubscribe alice and disclose her token), nor the reverse."""
    def personal(who: str, n: int) -> bytes:
        token = who.split("@")[0]
        raw = mail(subject=f"Issue {n}", mid=f"issue-{n}-{token}@{DOMAIN}",
                   unsubscribe=f"https://{DOMAIN}/disable?token={token}-{n}")
        return sign(raw.replace(
            f"List-Unsubscribe: <https://{DOMAIN}/disable?token={token}-{n}>".encode(),
            f"List-Unsubscribe: <https://{DOMAIN}/disable?token={token}-{n}>,"
            f" <mailto:{token}-{n}@unsub.{DOMAIN}>".encode()), key)

    for n in (1, 2):
        stored(env.deliver(personal(ALICE, n), recipient=ALICE))
        stored(env.deliver(personal(BOB, n), recipient=BOB))
    rows = db.execute(
        "SELECT m.address, s.unsubscribe_http, s.unsubscribe_mailto, s.unsubscribe_one_click,"
        " s.first_seen_at < s.last_seen_at FROM subscriptions s JOIN members m"
        " ON m.id = s.member_id ORDER BY m.address").fetchall()
    assert rows == [
        (ALICE, f"https://{DOMAIN}/disable?token=alice-2", f"mailto:alice-2@unsub.{DOMAIN}",
         True, True),
        (BOB, f"https://{DOMAIN}/disable?token=bob-2", f"mailto:bob-2@unsub.{DOMAIN}",
         True, True)]
    # the shared row holds no member's link
    assert db.execute("SELECT unsubscribe_http, unsubscribe_mailto, unsubscribe_one_click"
                      " FROM newsletters").fetchone() == (None, None, False)


def test_the_confirmation_link_is_the_members_own(
        env: Env, db: psycopg.Connection, dns: DnsServer) -> None:
    confirm = mail(subject="Please confirm your subscription", mid="c1@x",
                   body=f'<p>Confirm your subscription:</p><a href="https://{DOMAIN}/confirm?'
                        f't=alice-secret">Yes, subscribe me</a>')
    stored(env.deliver(confirm))
    stored(env.deliver(mail(), recipient=BOB))
    rows = db.execute(
        "SELECT m.address, s.confirmation_url FROM subscriptions s JOIN members m"
        " ON m.id = s.member_id ORDER BY m.address").fetchall()
    assert rows == [(ALICE, f"https://{DOMAIN}/confirm?t=alice-secret"), (BOB, None)]


def photo_issue(n: int, photo: str) -> bytes:
    """Issue n: the newsletter's masthead, shaped like a picture (2:1: only the history can tell
    it), then the issue's own photo."""
    body = (f'<img src="https://cdn.{DOMAIN}/top.png" width="600" height="300">'
            f"<p>Issue {n} text.</p><img src='{photo}' width='600' height='300'>")
    return mail(subject=f"Issue {n}", mid=f"issue-{n}@{DOMAIN}", body=body)


def test_a_stranger_cannot_seed_the_history_that_hides_a_thumbnail(
        env: Env, db: psycopg.Connection, dns: DnsServer, key: tuple[bytes, str]) -> None:
    """Images that come back in a newsletter's previous issues are its logo; once the newsletter
    has been seen authenticated, only its authenticated issues are that history, so mail with its
    From sent by anyone to their own address cannot hide a real issue's image from others."""
    cover = f"https://cdn.{DOMAIN}/issue-2.jpg"
    stored(env.deliver(sign(photo_issue(1, f"https://cdn.{DOMAIN}/issue-1.jpg"), key),
                       recipient=BOB))
    for n in (90, 91):  # unsigned, to the stranger's own address, with the next issue's image
        stored(env.deliver(photo_issue(n, cover), recipient=ALICE))
    stored(env.deliver(sign(photo_issue(2, cover), key), recipient=BOB))
    rows = db.execute("SELECT subject, auth_verdict, thumbnail_url FROM articles"
                      " WHERE member_id = (SELECT id FROM members WHERE address = %s)"
                      " ORDER BY id", (BOB,)).fetchall()
    assert rows == [("Issue 1", "pass", f"https://cdn.{DOMAIN}/top.png"),  # no history yet
                    ("Issue 2", "pass", cover)]  # top.png recurs: the masthead; cover does not


def test_unauthenticated_history_counts_while_no_mail_was_authenticated(
        env: Env, db: psycopg.Connection, dns: DnsServer) -> None:
    """A newsletter that never signs still has its masthead recognised."""
    for n in (1, 2):
        stored(env.deliver(photo_issue(n, f"https://cdn.{DOMAIN}/issue-{n}.jpg")))
    assert [r[0] for r in db.execute("SELECT thumbnail_url FROM articles ORDER BY id")] == [
        f"https://cdn.{DOMAIN}/top.png", f"https://cdn.{DOMAIN}/issue-2.jpg"]


# -- idempotency ----------------------------------------------------------------------------------

def test_identical_redelivery_is_one_article(env: Env, db: psycopg.Connection, dns: DnsServer,
                                             key: tuple[bytes, str]) -> None:
    raw = sign(mail(), key)
    stored(env.deliver(raw))
    stored(env.deliver(raw), "duplicate article 1")
    relayed = b"Received: from relay2 by mx; Mon, 30 Nov 2026 07:00:00 +0000\r\n" + raw
    stored(env.deliver(relayed), "duplicate article 1")
    # the same bytes whose key lookup timed out the first time are still the same article
    env.write_config(env.config.read_text() + "dns_timeout_seconds = 1\n")
    again = sign(mail(subject="Issue 43", mid=None), key)
    dns.silent.add(f"{SELECTOR}._domainkey.{DOMAIN}")
    stored(env.deliver(again))
    assert article(db)[0] == "temperror"
    dns.silent.clear()
    stored(env.deliver(again), "duplicate article 2")
    assert db.execute("SELECT count(*) FROM articles").fetchone()[0] == 2


def test_concurrent_runs(env: Env, db: psycopg.Connection, dns: DnsServer,
                         key: tuple[bytes, str]) -> None:
    """Eight runs of one signed issue make one article; four different messages under one
    unsigned key make four."""
    same = sign(mail(), key)
    variants = [mail(subject="Issue 42", body=f"<p>variant {i}</p>") for i in range(4)]
    with ThreadPoolExecutor(12) as pool:
        runs = list(pool.map(env.deliver, [same] * 8 + variants))
    assert all(r.returncode == 0 for r in runs), runs
    rows = db.execute("SELECT auth_verdict, count(*) FROM articles GROUP BY 1 ORDER BY 1"
                      ).fetchall()
    assert rows == [("none", 4), ("pass", 1)]


# -- the operator's alternative: Authentication-Results from our own MTA --------------------------

def test_authentication_results_only_from_our_authserv_id(env: Env, db: psycopg.Connection,
                                                          dns: DnsServer) -> None:
    env.write_config(env.config.read_text() + 'auth_method = "authentication-results"\n'
                     'authserv_id = "mx.bombom.test"\n')
    ours = (f"Authentication-Results: mx.bombom.test; dkim=pass header.d={DOMAIN} "
            f"header.s=s1; dmarc=pass (p=none) header.from={DOMAIN}\r\n")
    forged = (f"Authentication-Results: mx.bombom.test.evil; dkim=pass header.d={DOMAIN}; "
              f"dmarc=pass header.from={DOMAIN}\r\n")
    stored(env.deliver(mail(extra=ours)))
    assert article(db)[:3] == ("pass", DOMAIN, "none")
    stored(env.deliver(mail(extra=forged), recipient=BOB))
    assert article(db)[:3] == ("none", None, None)
    reject = (f"Authentication-Results: mx.bombom.test; dkim=fail header.d={DOMAIN}; "
              f"dmarc=fail (p=reject dis=none) header.from={DOMAIN}\r\n")
    stored(env.deliver(mail(subject="x", mid="x@y", extra=reject)), "quarantined")
    assert dns.queries == []  # this method never asks DNS


def test_dns_settings_are_checked() -> None:
    from bombom_pipe import config

    for bad, why in [({"BOMBOM_DNS_SERVERS": "resolver.example"}, "dns_servers"),
                     ({"BOMBOM_AUTH_METHOD": "spf"}, "auth_method"),
                     ({"BOMBOM_DNS_TIMEOUT_SECONDS": "0"}, "dns_timeout_seconds"),
                     ({"BOMBOM_AUTH_METHOD": "authentication-results"}, "authserv_id")]:
        with pytest.raises(config.ConfigError, match=why):
            config.load(None, {"BOMBOM_DATABASE_URL": "dbname=bombom", **bad})
    s = config.load(None, {"BOMBOM_DATABASE_URL": "dbname=bombom",
                           "BOMBOM_DNS_SERVERS": "127.0.0.1:53,[::1]",
                           "BOMBOM_DMARC_REJECT_QUARANTINE": "false"})
    assert s.dns_servers == ("127.0.0.1:53", "[::1]") and s.dmarc_reject_quarantine is False


# -- migration 004 --------------------------------------------------------------------------------

def test_migration_rewrites_keys_and_hashes_content_like_the_code(pg) -> None:  # noqa: ANN001
    from bombom_pipe.parse import parse_message
    from bombom_pipe.schema import migrations, upgrade
    from bombom_pipe.store import content_sha256

    from .conftest import EXAMPLES

    pg.createdb("bombom_migration")
    url = pg.url("bombom_migration")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        conn.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, "
                     "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        for version, name, sql in migrations():
            if version < 4:
                conn.execute(sql)
                conn.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (version, name))
        conn.execute("INSERT INTO members (address) VALUES (%s)", (ALICE,))
        msgs = [parse_message((EXAMPLES / n).read_bytes())
                for n in ("korean-weekly-cp949.eml", "no-message-id.eml")]
        with_files = EmailMessage()
        with_files["From"], with_files["Subject"] = "a@example.org", "files"
        with_files.set_content("see attached")
        for data in (b"zz" * 50, b"aa" * 50):
            with_files.add_attachment(data, maintype="application", subtype="octet-stream")
        msgs.append(parse_message(with_files.as_bytes()))
        assert len(msgs[2].attachments) == 2
        for i, m in enumerate(msgs):
            old_key = m.message_id or f"sha256:{i}"
            aid = conn.execute(
                "INSERT INTO articles (member_id, dedup_key, message_id, subject, from_address,"
                " from_name, html, text_content, raw_sha256, raw_path) VALUES (1, %s, %s, %s,"
                " %s, %s, %s, %s, %s, 'x') RETURNING id",
                (old_key, m.message_id, m.subject, m.from_address, m.from_name, m.html, m.text,
                 str(i))).fetchone()[0]
            for a in m.attachments:
                conn.execute("INSERT INTO attachments (article_id, content_type, disposition, "
                             "size, sha256) VALUES (%s, %s, 'inline', %s, %s)",
                             (aid, a.content_type, a.size, a.sha256))
        assert "004_trust" in upgrade(conn)
        rows = conn.execute("SELECT dedup_key, content_sha256, auth_verdict FROM articles "
                            "ORDER BY id").fetchall()
    assert rows[0] == (f"from:{msgs[0].from_address} {msgs[0].message_id}",
                       content_sha256(msgs[0]), None)
    assert rows[1] == (f"from:{msgs[1].from_address} sha256:1", content_sha256(msgs[1]), None)
    assert rows[2][1] == content_sha256(msgs[2])


# -- migration 008 --------------------------------------------------------------------------------

def test_migration_008_gives_each_member_their_own_link_and_clears_the_shared_one(
        pg) -> None:  # noqa: ANN001
    from bombom_pipe.schema import migrations, upgrade

    pg.createdb("bombom_migration_008")
    url = pg.url("bombom_migration_008")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        conn.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, "
                     "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        for version, name, sql in migrations():
            if version < 8:
                conn.execute(sql)
                conn.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (version, name))
        conn.execute("DROP ROLE IF EXISTS deliver_007")
        conn.execute("CREATE ROLE deliver_007")  # the delivery role as init-db granted it before
        conn.execute("GRANT SELECT, INSERT ON articles TO deliver_007")
        conn.execute("GRANT SELECT, INSERT, UPDATE (display_name, list_id, sender_header, "
                     "unsubscribe_http, unsubscribe_mailto, unsubscribe_one_click, last_seen_at, "
                     "unsubscribe_http_target, authenticated_at) ON newsletters TO deliver_007")
        conn.execute("INSERT INTO members (address) VALUES (%s), (%s)", (ALICE, BOB))
        conn.execute("INSERT INTO newsletters (sender_address, unsubscribe_http, "
                     "unsubscribe_one_click, authenticated_at) VALUES (%s, %s, true, now())",
                     (f"news@{DOMAIN}", "https://x/disable?token=alice-2"))
        for member, verdict, link in [(1, "pass", "alice-1"), (1, "pass", "alice-2"),
                                      (2, "pass", "bob-1"), (2, "none", "evil")]:
            conn.execute(
                "INSERT INTO articles (member_id, newsletter_id, dedup_key, raw_sha256, raw_path,"
                " unsubscribe_http, unsubscribe_one_click, auth_verdict) VALUES (%s, 1, %s, %s,"
                " 'x', %s, %s, %s)", (member, link, link, f"https://x/disable?token={link}",
                                      link != "evil", verdict))
        assert "008_subscriptions" in upgrade(conn)
        rows = conn.execute("SELECT member_id, unsubscribe_http, unsubscribe_one_click FROM "
                            "subscriptions ORDER BY member_id").fetchall()
        shared = conn.execute("SELECT unsubscribe_http, unsubscribe_one_click FROM newsletters"
                              ).fetchone()
        grants = conn.execute(
            "SELECT has_table_privilege('deliver_007', 'subscriptions', 'INSERT'),"
            " has_column_privilege('deliver_007', 'subscriptions', 'unsubscribe_http', 'UPDATE'),"
            " has_column_privilege('deliver_007', 'subscriptions', 'member_id', 'UPDATE'),"
            " has_column_privilege('deliver_007', 'newsletters', 'unsubscribe_http', 'UPDATE'),"
            " has_column_privilege('deliver_007', 'newsletters', 'list_id', 'UPDATE')").fetchone()
        conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        conn.execute("DROP ROLE deliver_007")
    assert rows == [(1, "https://x/disable?token=alice-2", True),
                    (2, "https://x/disable?token=bob-1", True)]  # not the unauthenticated one
    assert shared == (None, False)
    assert grants == (True, True, False, False, True)
