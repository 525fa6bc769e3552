"""Who really sent a message: DMARC for the domain in `From:`, by aligned DKIM or aligned SPF.

Two methods (config `auth_method`):

- `dkim` (default): verify the DKIM signatures whose `d=` aligns with the From domain (dkimpy),
  evaluate SPF for the client address and envelope sender Postfix gave (pyspf), and read the
  domain's DMARC record (`_dmarc.<domain>`, else `_dmarc.<organizational domain>`, from the
  public suffix list). DNS goes through dnspython with one time budget for the whole message
  (`dns_timeout_seconds`); a lookup that times out or fails is a `temperror` verdict, never an
  exception.
- `authentication-results`: trust only the topmost `Authentication-Results` header carrying our
  own `authserv_id` (added by a milter such as OpenDKIM/OpenDMARC or rspamd; Postfix removes
  every incoming one first: `make install AUTH_METHOD=authentication-results`, docs/postfix.md).
  No DNS here.

The verdict, in this order: `pass` (a valid signature aligned with the From domain that covers
the whole body, or SPF `pass` for an envelope sender aligned with it), `temperror` (a DNS lookup
the verdict depends on failed), `fail` (an aligned signature that does not verify, or the domain
publishes DMARC and nothing aligned passed), `none` (no DMARC record and nothing aligned:
nothing says either way).

What a pass vouches for (`Auth.vouched`): DKIM verifiers hash the bottom-most copy of each header
named in `h=`, while the parser reads the top-most, so a header added on top of a signed message
leaves the signature valid. Only headers that appear once and are named in the passing
signature's `h=` are vouched for; a second From, Subject, Message-ID or List-* header makes that
signature `fail` (a reader would see the unsigned copy). An SPF pass vouches for every header that
appears once: the whole message came from a server the domain authorizes.

Before any verification, the work is capped: at most `MAX_SIGNATURE_HEADERS` DKIM-Signature
headers are examined, and keys outside what RFC 8301 asks verifiers to handle (RSA moduli of
1024-4096 bits; public exponents up to 64 bits) are refused; each is a `permerror` for its
signature, with its reason in the detail.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .config import host_port
from .log import printable

if TYPE_CHECKING:
    from email.message import Message

    from .config import Settings
    from .parse import ParsedMessage

PASS, FAIL, NONE, TEMPERROR = "pass", "fail", "none", "temperror"
POLICIES = ("none", "quarantine", "reject")
MAX_SIGNATURES = 5  # aligned signatures verified per message; more is abuse, not mail
MAX_SIGNATURE_HEADERS = 10  # DKIM-Signature headers examined at all (dkimpy is quadratic in them)
MIN_KEY_BITS, MAX_KEY_BITS = 1024, 4096  # RFC 8301 3.1: what verifiers must handle
MAX_EXPONENT_BITS = 64  # a larger RSA public exponent only costs time (OpenSSL refuses them too)
MAX_DETAIL = 300
#: headers whose second copy makes a signature fail: what a reader sees or the dedup key uses
#: (and every List-* header)
SINGLE = frozenset({"from", "subject", "message-id"})


@dataclass(frozen=True, slots=True)
class Auth:
    """The verdict for one message and what it rests on."""

    verdict: str  # pass | fail | none | temperror
    signing_domain: str | None = None  # d= of the valid signature aligned with From
    dmarc_policy: str | None = None  # p= (sp= for a subdomain) of the record found
    detail: str = ""
    #: the header names (lower-case) whose values a pass vouches for: each appears once and is
    #: covered by the passing signature's h= (by SPF: every header that appears once)
    vouched: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        """Whatever a signature or record quoted is stored and shown: no NUL, no controls."""
        for name in ("signing_domain", "dmarc_policy", "detail"):
            value = getattr(self, name)
            if value is not None and (not value.isprintable() or "\\" in value):
                object.__setattr__(self, name, printable(value))

    @property
    def authenticated(self) -> bool:
        return self.verdict == PASS

    def vouches(self, *names: str) -> bool:
        """Whether authenticated mail vouches for the value of each header in `names`."""
        return self.authenticated and all(n in self.vouched for n in names)

    def refusal(self, from_domain: str | None) -> str | None:
        """Why the message is quarantined under DMARC `p=reject`, or None."""
        if self.verdict == FAIL and self.dmarc_policy == "reject":
            return f"dmarc: fail for {from_domain} (p=reject): {self.detail}"[:500]
        return None


class DnsTemporary(Exception):
    """A lookup timed out or the resolver failed: the answer is unknown, not negative."""


def domain_of(address: str | None) -> str | None:
    if not address or "@" not in address:
        return None
    domain = address.rpartition("@")[2].strip().strip(".").lower()
    return domain or None


def judge(settings: Settings, raw: bytes, msg: ParsedMessage | None, remaining: float,
          envelope_sender: str | None = None, client_address: str | None = None
          ) -> tuple[Auth | None, str | None]:
    """The verdict for a parsed message (None for an unparsable one) and, by the operator's
    policy, why it is quarantined instead of shown. DNS gets at most a third of `remaining`.
    `envelope_sender` and `client_address` are what Postfix says (for SPF)."""
    if msg is None:
        return None, None
    auth = authenticate(raw, msg.from_address, settings,
                        min(settings.dns_timeout_seconds, remaining / 3),
                        Smtp(client_address, envelope_sender))
    refusal = auth.refusal(domain_of(msg.from_address))
    return auth, refusal if settings.dmarc_reject_quarantine else None


@dataclass(frozen=True, slots=True)
class Smtp:
    """The SMTP client's address and the envelope sender (MAIL FROM), as Postfix gave them."""

    client_address: str | None = None
    sender: str | None = None


def authenticate(raw: bytes, from_address: str | None, settings: Settings,
                 seconds: float, smtp: Smtp | None = None) -> Auth:
    """The verdict for `raw` (whose From is `from_address`) within `seconds`. Never raises."""
    domain = domain_of(from_address)
    if domain is None:
        return Auth(NONE, detail="no From domain")
    try:
        if settings.auth_method == "authentication-results":
            return from_header(raw, domain, settings.authserv_id or "")
        return verify(raw, domain, Dns(settings.dns_servers, seconds), smtp or Smtp())
    except Exception as e:  # noqa: BLE001 - never lose a message over its authentication
        return Auth(TEMPERROR, detail=f"authentication error: {type(e).__name__}: {e}"[:MAX_DETAIL])


# -- DNS ------------------------------------------------------------------------------------------

class Dns:
    """Lookups under one time budget; `servers` empty means the system resolver."""

    def __init__(self, servers: tuple[str, ...], seconds: float) -> None:
        self.servers = servers
        self.until = time.monotonic() + seconds
        self._resolver = None

    def resolver(self):  # noqa: ANN201 - dns.resolver.Resolver, imported lazily
        if self._resolver is None:
            import dns.nameserver
            import dns.resolver

            r = dns.resolver.Resolver(configure=not self.servers)
            if self.servers:
                r.nameservers = [dns.nameserver.Do53Nameserver(*host_port(s))
                                 for s in self.servers]
            self._resolver = r
        return self._resolver

    def txt(self, name: str) -> list[bytes]:
        """The TXT records at `name` ([] when there are none); DnsTemporary when unknown."""
        return [b"".join(rdata.strings) for rdata in self.resolve(name, "TXT")]

    def resolve(self, name: str, rdtype: str) -> list:  # type: ignore[type-arg]
        """The records of `rdtype` at `name` (dnspython rdata; [] when there are none);
        DnsTemporary when unknown."""
        import dns.exception
        import dns.name
        import dns.resolver

        left = self.until - time.monotonic()
        if left <= 0.01:
            raise DnsTemporary(f"{name}: no time left for DNS")
        try:
            qname = dns.name.from_text(name)
        except dns.exception.DNSException:
            return []  # not a name DNS can hold (too long, bad IDN): nothing published there
        try:
            r = self.resolver()  # no /etc/resolv.conf: NoResolverConfiguration, below
            r.timeout = left
            answer = r.resolve(qname, rdtype, lifetime=left, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.Timeout:
            raise DnsTemporary(f"{name}: DNS timeout") from None
        except dns.exception.DNSException as e:
            raise DnsTemporary(f"{name}: {type(e).__name__}") from None
        return list(answer)


# -- organizational domain and alignment ----------------------------------------------------------

_PSL = None


def org_domain(domain: str) -> str:
    """The registrable domain (public suffix list): `news.example.co.kr` -> `example.co.kr`."""
    global _PSL
    if _PSL is None:
        from publicsuffixlist import PublicSuffixList

        _PSL = PublicSuffixList()
    return _PSL.privatesuffix(domain) or domain


def aligned(signing_domain: str, from_domain: str, strict: bool = False) -> bool:
    if signing_domain == from_domain:
        return True
    if strict:
        return False
    if signing_domain.split(".")[-2:] != from_domain.split(".")[-2:]:
        return False  # an organizational domain has two labels at least: no list needed
    return org_domain(signing_domain) == org_domain(from_domain)


# -- DMARC record ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Dmarc:
    policy: str  # none | quarantine | reject
    strict_dkim: bool
    strict_spf: bool = False


def parse_dmarc(record: bytes, subdomain: bool) -> Dmarc | None:
    """RFC 7489 tag list; None when it is not a DMARC record."""
    text = record.decode("ascii", "replace")
    tags = {}
    for part in text.split(";"):
        key, eq, value = part.partition("=")
        if eq:
            tags.setdefault(key.strip().lower(), value.strip().lower())
    if tags.get("v") != "dmarc1":
        return None
    policy = tags.get("p")
    if subdomain and tags.get("sp") in POLICIES:
        policy = tags["sp"]
    return Dmarc(policy if policy in POLICIES else "none", tags.get("adkim") == "s",
                 tags.get("aspf") == "s")


def lookup_dmarc(dns: Dns, domain: str) -> Dmarc | None:
    """The record at `_dmarc.<domain>`, else at the organizational domain (RFC 7489 6.6.3)."""
    for name in (domain, None):
        if name is None and (name := org_domain(domain)) == domain:
            break
        records = [r for r in dns.txt(f"_dmarc.{name}") if r[:8].lower() == b"v=dmarc1"]
        if len(records) == 1:
            return parse_dmarc(records[0], subdomain=name != domain)
        if records:
            return None  # more than one record: no policy
    return None


# -- the verdict ----------------------------------------------------------------------------------

def verify(raw: bytes, domain: str, dns: Dns, smtp: Smtp) -> Auth:
    """DMARC for `domain`: aligned DKIM, else aligned SPF, within the DNS budget."""
    notes: list[str] = []
    temporary = False
    try:
        dmarc = lookup_dmarc(dns, domain)
    except DnsTemporary as e:
        dmarc, temporary = None, True
        notes.append(f"dmarc lookup: {e}")
    policy = dmarc.policy if dmarc else None
    counts = header_counts(raw)
    passed, failed = _check_signatures(raw, domain, bool(dmarc and dmarc.strict_dkim), dns,
                                       notes, counts)
    if passed:
        signer, covered = passed
        unsigned = sorted(n for n in counts if _shown(n) and n not in covered)
        if unsigned:  # for operators: what this pass says nothing about
            notes.insert(0, f"not signed: {', '.join(unsigned)}"[:120])
        return Auth(PASS, signer, policy, _join([f"dkim=pass d={signer}", *notes]),
                    _once(counts, covered))
    spf = check_spf(smtp, domain, bool(dmarc and dmarc.strict_spf), dns, notes)
    if spf == PASS:
        return Auth(PASS, None, policy, _join(notes), _once(counts, counts))
    if TEMPERROR in (*failed, spf):
        temporary = True
    if temporary:
        return Auth(TEMPERROR, None, policy, _join(notes))
    if failed or dmarc:
        return Auth(FAIL, None, policy, _join(notes or [f"no aligned DKIM signature for {domain}"]))
    return Auth(NONE, None, None, _join(notes or ["no DMARC record, no aligned signature"]))


# -- what a signature covers ----------------------------------------------------------------------

_FIELD_NAME = re.compile(rb"^([^ \t\r\n:][^:\r\n]*):", re.M)


def header_counts(raw: bytes) -> Counter[str]:
    """How often each header field (lower-case name) appears in the header block, as the parser
    (email, compat32) and DKIM verifiers (dkimpy) would each split it: the larger count of the two
    views, so a copy that only one of them sees still counts."""
    from email.parser import BytesHeaderParser
    from email.policy import compat32

    head = _head(raw)
    ours = Counter(m[1].strip().lower().decode("ascii", "replace")
                   for m in _FIELD_NAME.finditer(head))
    theirs = Counter(str(name).strip().lower() for name in
                     BytesHeaderParser(policy=compat32).parsebytes(head + b"\r\n\r\n"))
    return ours | theirs


def _once(counts: Counter[str], names: Counter[str] | set[str] | frozenset[str]
          ) -> frozenset[str]:
    """Of `names`, those that appear exactly once in the message."""
    return frozenset(n for n in names if counts.get(n) == 1)


def _shown(name: str) -> bool:
    """A header a reader sees or the dedup key uses (From, Subject, Message-ID, List-*)."""
    return name in SINGLE or name.startswith("list-")


def repeated(counts: Counter[str]) -> list[str]:
    """Headers a reader sees or the dedup key uses that appear more than once: whichever copy
    a signature covers, the parser shows the top-most one."""
    return sorted(n for n, c in counts.items() if c > 1 and _shown(n))


# -- DKIM -----------------------------------------------------------------------------------------

_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_SIGNATURE = re.compile(rb"^dkim-signature[ \t]*:", re.I | re.M)


def _head(raw: bytes) -> bytes:
    """The header block: up to the first blank line."""
    end = _BLANK_LINE.search(raw)
    return raw[: end.start() if end else len(raw)]


class KeyRefused(Exception):
    """A DKIM key outside what verifiers are asked to handle: a permerror, checked before any
    signature arithmetic."""


def check_key(record: bytes) -> None:
    """Raise KeyRefused for an RSA key whose modulus is outside 1024-4096 bits (RFC 8301) or
    whose public exponent is over 64 bits; anything unreadable is left to dkimpy to report."""
    import base64

    from dkim.crypto import parse_public_key
    from dkim.util import parse_tag_value

    try:
        tags = parse_tag_value(record)
        if tags.get(b"k", b"rsa").strip().lower() != b"rsa":
            return
        key = parse_public_key(base64.b64decode(re.sub(rb"\s+", b"", tags[b"p"])))
    except Exception:  # noqa: BLE001 - dkimpy says what is wrong with it
        return
    bits = int(key["modulus"]).bit_length()
    if not MIN_KEY_BITS <= bits <= MAX_KEY_BITS:
        raise KeyRefused(f"RSA key of {bits} bits, outside {MIN_KEY_BITS}-{MAX_KEY_BITS}"
                         " (RFC 8301)")
    exponent = int(key["publicExponent"])
    if exponent < 3 or exponent.bit_length() > MAX_EXPONENT_BITS:
        raise KeyRefused(f"RSA public exponent of {exponent.bit_length()} bits"
                         f" (at most {MAX_EXPONENT_BITS})")


def _check_signatures(raw: bytes, domain: str, strict: bool, dns: Dns, notes: list[str],
                      counts: Counter[str]) -> tuple[tuple[str, set[str]] | None, list[str]]:
    """((the aligned domain whose signature verified, the headers its h= names) or None;
    results of the others)."""
    present = len(_SIGNATURE.findall(_head(raw)))
    if not present:
        notes.append("no DKIM signature")
        return None, []
    if present > MAX_SIGNATURE_HEADERS:  # before dkimpy: its cost grows with their square
        notes.append(f"dkim=permerror ({present} DKIM-Signature headers, more than"
                     f" {MAX_SIGNATURE_HEADERS}: none examined)")
        return None, [FAIL]
    import logging

    import dkim

    quiet = logging.getLogger("bombom.dkim")  # dkimpy logs every failure; nothing may print
    if not quiet.handlers:  # once per process: a warm worker verifies message after message
        quiet.addHandler(logging.NullHandler())
        quiet.propagate = False

    def txt(name: bytes, timeout: float = 5) -> bytes | None:
        records = dns.txt(name.decode("ascii", "replace").rstrip("."))
        if records:
            check_key(records[0])
        return records[0] if records else None

    checker = dkim.DKIM(raw, logger=quiet, minkey=MIN_KEY_BITS)
    count = sum(1 for k, _ in checker.headers if k.lower() == b"dkim-signature")
    results: list[str] = []
    checked = 0
    for idx in range(min(count, MAX_SIGNATURE_HEADERS)):
        try:
            prep = checker.verify_headerprep(idx)
            signer = prep[0][b"d"].decode("ascii", "replace").lower().rstrip(".") if prep else ""
        except dkim.DKIMException as e:
            notes.append(f"dkim=permerror ({e})"[:120])
            continue
        if not aligned(signer, domain, strict):
            notes.append(f"dkim d={signer} not aligned")
            continue
        if checked == MAX_SIGNATURES:
            break
        checked += 1
        covered = {n.strip().decode("ascii", "replace") for n in prep[1]}  # h=, before dkimpy adds
        try:
            ok = checker.verify(idx, dnsfunc=txt)
            why = "" if ok else "signature or key did not verify"
        except DnsTemporary as e:
            results.append(TEMPERROR)
            notes.append(f"dkim=temperror d={signer} ({e})")
            continue
        except KeyRefused as e:
            results.append(FAIL)
            notes.append(f"dkim=permerror d={signer} ({e})"[:160])
            continue
        except dkim.DKIMException as e:
            ok, why = False, str(e)
        if ok and _partial_body(checker):
            notes.append(f"dkim d={signer} signs only part of the body (l=)")
            continue
        if ok and (twice := repeated(counts)):
            results.append(FAIL)
            notes.append(f"dkim=fail d={signer} ({', '.join(twice)} more than once: the"
                         " signature covers one copy, a reader sees another)"[:160])
            continue
        if ok:
            return (signer, covered), results
        results.append(FAIL)
        notes.append(f"dkim=fail d={signer} ({why})"[:160])
    return None, results


# -- SPF ------------------------------------------------------------------------------------------

_SPF_DNS: ContextVar[Dns] = ContextVar("bombom_spf_dns")


def check_spf(smtp: Smtp, domain: str, strict: bool, dns: Dns, notes: list[str]) -> str | None:
    """SPF (pyspf) for the envelope sender and client address when the sender's domain is
    aligned with `domain`: PASS, TEMPERROR, another SPF result, or None when there is nothing
    to check (no client address or sender, or not aligned). Its DNS goes through `dns`."""
    sender_domain = domain_of(smtp.sender)
    if not smtp.client_address or not sender_domain:
        return None
    if not aligned(sender_domain, domain, strict):
        notes.append(f"spf: smtp.mailfrom={sender_domain} not aligned")
        return None
    import spf

    spf.DNSLookup = _spf_lookup  # every pyspf query asks our resolver, within our budget
    token = _SPF_DNS.set(dns)
    try:
        query = spf.query(i=smtp.client_address, s=smtp.sender, h="unknown",
                          timeout=max(0.01, dns.until - time.monotonic()))
        result = query.check()[0]
    except Exception as e:  # noqa: BLE001 - a bad client address and the like: no result
        notes.append(f"spf=permerror ({type(e).__name__})")
        return "permerror"
    finally:
        _SPF_DNS.reset(token)
    notes.append(f"spf={result} smtp.mailfrom={sender_domain} client={smtp.client_address}"[:160])
    return result


def _spf_lookup(name: str, qtype: str, strict: bool = True, timeout: float = 20
                ) -> list[tuple[tuple[str, str], object]]:
    """pyspf's DNSLookup, answered by the current message's Dns (see pyspf's dnspython one)."""
    import spf

    dns = _SPF_DNS.get()
    try:
        answer = dns.resolve(name, qtype)
    except DnsTemporary as e:
        raise spf.TempError(f"DNS {e}") from None
    out: list[tuple[tuple[str, str], object]] = []
    for rdata in answer:
        if qtype in ("A", "AAAA"):
            out.append(((name, qtype), rdata.address))
        elif qtype == "MX":
            out.append(((name, qtype), (rdata.preference, rdata.exchange)))
        elif qtype == "PTR":
            out.append(((name, qtype), rdata.target.to_text(True)))
        elif qtype in ("TXT", "SPF"):
            out.append(((name, qtype), rdata.strings))
    return out


def _partial_body(checker) -> bool:  # noqa: ANN001 - a dkim.DKIM after verify()
    """The signature's `l=` leaves body bytes unsigned: someone may have appended content."""
    import dkim

    sig = checker.signature_fields
    if b"l" not in sig:
        return False
    policy = dkim.CanonicalizationPolicy.from_c_value(sig.get(b"c", b"simple/simple"))
    return int(sig[b"l"]) < len(policy.canonicalize_body(checker.body))


def _join(notes: list[str]) -> str:
    return "; ".join(notes)[:MAX_DETAIL]


# -- Authentication-Results from our own MTA ------------------------------------------------------

_POLICY_IN_COMMENT = re.compile(r"\b(?:p|policy|policy\.dmarc)=(none|quarantine|reject)\b", re.I)


def from_header(raw: bytes, domain: str, authserv_id: str) -> Auth:
    """The verdict our own authserv-id recorded in the topmost matching header."""
    from email.parser import BytesHeaderParser
    from email.policy import compat32

    import authres

    headers = BytesHeaderParser(policy=compat32).parsebytes(_head(raw))  # not the body
    for value in headers.get_all("Authentication-Results") or []:
        text = " ".join(str(value).split())
        try:
            parsed = authres.parse_value(text)
        except Exception:  # noqa: BLE001 - unparsable: not ours to trust
            continue
        if str(parsed.authserv_id).lower() != authserv_id.lower():
            continue
        return _covered_by_milter(raw, headers, _from_results(parsed.results, domain, text))
    return Auth(NONE, detail=f"no Authentication-Results from {authserv_id}")


def _covered_by_milter(raw: bytes, headers: Message, auth: Auth) -> Auth:
    """What the milter's pass vouches for: by DKIM, the headers that appear once and that every
    DKIM-Signature of the passing domain names in h= (the milter does not say which one it
    verified); by SPF, every header that appears once. A repeated From, Subject, Message-ID or
    List-* header makes a DKIM pass a `fail`, as in `verify`."""
    if not auth.authenticated:
        return auth
    counts = header_counts(raw)
    if auth.signing_domain is None:
        return replace(auth, vouched=_once(counts, counts))
    if twice := repeated(counts):
        return Auth(FAIL, None, auth.dmarc_policy,
                    _join([f"{', '.join(twice)} more than once", auth.detail]))
    from dkim.util import parse_tag_value

    covered: set[str] | None = None
    for value in headers.get_all("DKIM-Signature") or []:
        try:
            tags = parse_tag_value(" ".join(str(value).split()).encode("ascii", "replace"))
        except Exception:  # noqa: BLE001 - not a signature the milter could have verified
            continue
        if tags.get(b"d", b"").decode("ascii", "replace").lower().rstrip(".") != \
                auth.signing_domain:
            continue
        names = {n.strip().lower().decode("ascii", "replace")
                 for n in tags.get(b"h", b"").split(b":")}
        covered = names if covered is None else covered & names
    return replace(auth, vouched=_once(counts, covered or set()))


def _from_results(results: list, domain: str, text: str) -> Auth:  # type: ignore[type-arg]
    dkim_pass = None
    dkim_results = []
    dmarc = None
    for r in results:
        method, result = str(r.method).lower(), str(r.result).lower()
        props = {f"{p.type}.{p.name}".lower(): str(p.value).lower() for p in r.properties}
        if method == "dmarc" and dmarc is None:
            dmarc = result
        elif method == "dkim":
            signer = props.get("header.d", "").rstrip(".")
            if signer and aligned(signer, domain):
                dkim_results.append(result)
                if result == PASS and dkim_pass is None:
                    dkim_pass = signer
    m = _POLICY_IN_COMMENT.search(text)
    policy = m[1].lower() if m else None
    detail = text[:MAX_DETAIL]
    if dmarc in (PASS, FAIL, NONE, TEMPERROR):
        return Auth(dmarc, dkim_pass if dmarc == PASS else None, policy, detail)
    if dmarc == "permerror":
        return Auth(NONE, None, None, detail)
    if dkim_pass:
        return Auth(PASS, dkim_pass, policy, detail)
    if TEMPERROR in dkim_results:
        return Auth(TEMPERROR, None, policy, detail)
    return Auth(FAIL if dkim_results else NONE, None, policy, detail)
