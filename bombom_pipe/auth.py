"""Who really sent a message: DKIM and DMARC alignment for the domain in `From:`.

Two methods (config `auth_method`):

- `dkim` (default): verify the DKIM signatures whose `d=` aligns with the From domain (dkimpy),
  and read the domain's DMARC record (`_dmarc.<domain>`, else `_dmarc.<organizational domain>`,
  from the public suffix list). DNS goes through dnspython with one time budget for the whole
  message (`dns_timeout_seconds`); a lookup that times out or fails is a `temperror` verdict,
  never an exception.
- `authentication-results`: trust only the topmost `Authentication-Results` header carrying our
  own `authserv_id` (added by a milter such as OpenDKIM/OpenDMARC or rspamd, which must remove
  forged ones with that id). No DNS here.

The verdict, in this order: `pass` (a valid signature aligned with the From domain that covers
the whole body: an `l=` shorter than the body leaves room for appended content), `temperror`
(a DNS lookup the verdict depends on failed), `fail` (an aligned signature that does not verify,
or the domain publishes DMARC and nothing aligned passed), `none` (no DMARC record and no aligned
signature: nothing says either way). SPF is not evaluated: newsletters are DKIM-signed, and the
envelope path says nothing about the From domain the member sees. Because DMARC also passes on
SPF aligned with From, a `fail` is quarantined under `p=reject` only when the envelope sender's
domain is not aligned with the From domain (where SPF could have passed, the member sees the
message, with the verdict `fail` for the app to show).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .config import host_port
from .log import printable

if TYPE_CHECKING:
    from .config import Settings
    from .parse import ParsedMessage

PASS, FAIL, NONE, TEMPERROR = "pass", "fail", "none", "temperror"
POLICIES = ("none", "quarantine", "reject")
MAX_SIGNATURES = 5  # aligned signatures verified per message; more is abuse, not mail
MAX_DETAIL = 300


@dataclass(frozen=True, slots=True)
class Auth:
    """The verdict for one message and what it rests on."""

    verdict: str  # pass | fail | none | temperror
    signing_domain: str | None = None  # d= of the valid signature aligned with From
    dmarc_policy: str | None = None  # p= (sp= for a subdomain) of the record found
    detail: str = ""

    def __post_init__(self) -> None:
        """Whatever a signature or record quoted is stored and shown: no NUL, no controls."""
        for name in ("signing_domain", "dmarc_policy", "detail"):
            value = getattr(self, name)
            if value is not None and (not value.isprintable() or "\\" in value):
                object.__setattr__(self, name, printable(value))

    @property
    def authenticated(self) -> bool:
        return self.verdict == PASS

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
          envelope_sender: str | None = None) -> tuple[Auth | None, str | None]:
    """The verdict for a parsed message (None for an unparsable one) and, by the operator's
    policy, why it is quarantined instead of shown. DNS gets at most a third of `remaining`.

    SPF is not evaluated, so an envelope sender aligned with From (where SPF could make DMARC
    pass) is never quarantined on a DKIM failure alone."""
    if msg is None:
        return None, None
    auth = authenticate(raw, msg.from_address, settings,
                        min(settings.dns_timeout_seconds, remaining / 3))
    from_domain = domain_of(msg.from_address)
    refusal = auth.refusal(from_domain)
    bounce_domain = domain_of(envelope_sender)
    if refusal and from_domain and bounce_domain and aligned(bounce_domain, from_domain):
        refusal = None
    return auth, refusal if settings.dmarc_reject_quarantine else None


def authenticate(raw: bytes, from_address: str | None, settings: Settings,
                 seconds: float) -> Auth:
    """The verdict for `raw` (whose From is `from_address`) within `seconds`. Never raises."""
    domain = domain_of(from_address)
    if domain is None:
        return Auth(NONE, detail="no From domain")
    try:
        if settings.auth_method == "authentication-results":
            return from_header(raw, domain, settings.authserv_id or "")
        return verify(raw, domain, Dns(settings.dns_servers, seconds))
    except Exception as e:  # noqa: BLE001 - never lose a message over its authentication
        return Auth(TEMPERROR, detail=f"authentication error: {type(e).__name__}: {e}"[:MAX_DETAIL])


# -- DNS ------------------------------------------------------------------------------------------

class Dns:
    """TXT lookups under one time budget; `servers` empty means the system resolver."""

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
            answer = r.resolve(qname, "TXT", lifetime=left, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.Timeout:
            raise DnsTemporary(f"{name}: DNS timeout") from None
        except dns.exception.DNSException as e:
            raise DnsTemporary(f"{name}: {type(e).__name__}") from None
        return [b"".join(rdata.strings) for rdata in answer]


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
    return Dmarc(policy if policy in POLICIES else "none", tags.get("adkim") == "s")


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


# -- DKIM -----------------------------------------------------------------------------------------

_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_SIGNATURE = re.compile(rb"^dkim-signature[ \t]*:", re.I | re.M)


def _head(raw: bytes) -> bytes:
    """The header block: up to the first blank line."""
    end = _BLANK_LINE.search(raw)
    return raw[: end.start() if end else len(raw)]


def verify(raw: bytes, domain: str, dns: Dns) -> Auth:
    """DKIM signatures aligned with `domain`, and its DMARC record, within the DNS budget."""
    notes: list[str] = []
    temporary = False
    try:
        dmarc = lookup_dmarc(dns, domain)
    except DnsTemporary as e:
        dmarc, temporary = None, True
        notes.append(f"dmarc lookup: {e}")
    policy = dmarc.policy if dmarc else None
    strict = bool(dmarc and dmarc.strict_dkim)
    passed, failed = _check_signatures(raw, domain, strict, dns, notes)
    if passed:
        return Auth(PASS, passed, policy, _join([f"dkim=pass d={passed}", *notes]))
    if "temperror" in failed:
        temporary = True
    if temporary:
        return Auth(TEMPERROR, None, policy, _join(notes))
    if failed or dmarc:
        return Auth(FAIL, None, policy, _join(notes or [f"no aligned DKIM signature for {domain}"]))
    return Auth(NONE, None, None, _join(notes or ["no DMARC record, no aligned signature"]))


def _check_signatures(raw: bytes, domain: str, strict: bool, dns: Dns, notes: list[str]
                      ) -> tuple[str | None, list[str]]:
    """(the aligned domain whose signature verified, or None; results of the others)."""
    if not _SIGNATURE.search(_head(raw)):
        notes.append("no DKIM signature")
        return None, []
    import logging

    import dkim

    quiet = logging.getLogger("bombom.dkim")  # dkimpy logs every failure; nothing may print
    if not quiet.handlers:  # once per process: a warm worker verifies message after message
        quiet.addHandler(logging.NullHandler())
        quiet.propagate = False

    def txt(name: bytes, timeout: float = 5) -> bytes | None:
        records = dns.txt(name.decode("ascii", "replace").rstrip("."))
        return records[0] if records else None

    checker = dkim.DKIM(raw, logger=quiet, minkey=1024)
    count = sum(1 for k, _ in checker.headers if k.lower() == b"dkim-signature")
    results: list[str] = []
    checked = 0
    for idx in range(count):
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
        try:
            ok = checker.verify(idx, dnsfunc=txt)
            why = "" if ok else "signature or key did not verify"
        except DnsTemporary as e:
            results.append(TEMPERROR)
            notes.append(f"dkim=temperror d={signer} ({e})")
            continue
        except dkim.DKIMException as e:
            ok, why = False, str(e)
        if ok and _partial_body(checker):
            notes.append(f"dkim d={signer} signs only part of the body (l=)")
            continue
        if ok:
            return signer, results
        results.append(FAIL)
        notes.append(f"dkim=fail d={signer} ({why})"[:160])
    return None, results


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
        return _from_results(parsed.results, domain, text)
    return Auth(NONE, detail=f"no Authentication-Results from {authserv_id}")


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
