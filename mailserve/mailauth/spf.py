"""Sender Policy Framework (RFC 7208) evaluation over the shared async resolver.

pyspf implements the RFC's evaluation rules (mechanisms, macros, processing limits), but
it does its DNS lookups synchronously through a module-global hook, which is neither
asynchronous nor thread-safe.  So evaluation runs in rounds: pyspf evaluates against the
answers fetched so far, and every lookup it still needs is recorded instead of performed;
we fetch those answers asynchronously through :class:`mailserve.dns.Resolver` and evaluate
again.  pyspf's own counters enforce the RFC 7208 section 4.6.4 limits (10 DNS-querying
mechanisms, 2 void lookups, 10 MX/PTR names), and :data:`MAX_DNS_QUERIES` bounds the total
number of distinct queries one check may cause, so a hostile record cannot make us query
without end.  The final evaluation needs nothing outside its answer table, so it runs on
the reactor thread without blocking.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import reduce

import spf as pyspf
from twisted.internet import defer
from twisted.logger import Logger

from mailserve.dns import DNSTemporaryError, InvalidDomainName, Resolver

__all__ = ["MAX_DNS_QUERIES", "SPFResult", "check_spf", "check_spf_helo"]

log = Logger()

#: Upper bound on distinct DNS queries one SPF check may cause.  RFC 7208 section 4.6.4
#: allows 10 DNS-querying terms, each "mx"/"ptr" up to 10 further address lookups, plus
#: the record lookups themselves; anything beyond this is an abuse and is a permerror.
MAX_DNS_QUERIES = 130

#: Every result name RFC 7208 section 2.6 defines.
RESULTS = ("none", "neutral", "pass", "fail", "softfail", "temperror", "permerror")


@dataclass(frozen=True)
class SPFResult:
    """The outcome of one SPF check (RFC 7208 section 2.6).

    ``identity`` is ``"mailfrom"`` or ``"helo"`` (RFC 7208 sections 2.3 and 2.4);
    ``sender`` is the checked identity as SPF sees it (``postmaster@helo`` for the HELO
    identity or a null reverse-path); ``domain`` is the domain whose policy was checked.
    ``explanation`` is the text for the SMTP reply on ``fail`` (section 6.2), or the
    reason for an error result.
    """

    result: str
    domain: str
    explanation: str
    identity: str = "mailfrom"
    sender: str = ""
    client_ip: str = ""
    mechanism: str | None = None


class _LookupNeeded(Exception):
    """Raised inside pyspf when an answer is not yet in the table."""


class _TemporaryAnswer:
    """Marks a table entry whose lookup failed temporarily."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class _TabledQuery(pyspf.query):
    """A pyspf query that answers DNS lookups from a table instead of the network.

    Lookups not in the table are recorded in ``missing``.  They are also raised, so
    evaluation stops early; pyspf swallows exceptions in a few places (``exp=``), which
    is why the recording, not the exception, is what the driver relies on.
    """

    def __init__(self, answers: dict, *args, **kwargs) -> None:
        self.answers = answers
        self.missing: list[tuple[str, str]] = []
        super().__init__(*args, **kwargs)

    def dns(self, name, qtype, cnames=None, ignore_void=False):
        if not name:
            raise pyspf.PermError("empty domain name in DNS lookup")
        name = str(name).rstrip(".").lower()
        # Same name sanity rule as pyspf's own resolver path (RFC 7208 section 4.3).
        if not reduce(lambda ok, label: ok and 0 < len(label) < 64, name.split("."), True):
            return []
        key = (name, qtype)
        if key not in self.answers:
            self.missing.append(key)
            raise _LookupNeeded(key)
        answer = self.answers[key]
        if isinstance(answer, _TemporaryAnswer):
            raise pyspf.TempError(f"DNS {qtype} lookup for {name}: {answer.reason}")
        result = list(answer)
        if not result and not ignore_void:
            # RFC 7208 section 4.6.4: at most two lookups may return no answer.
            self.void_lookups += 1
            if self.void_lookups > pyspf.MAX_VOID_LOOKUPS:
                raise pyspf.PermError(f"Void lookup limit of {pyspf.MAX_VOID_LOOKUPS} exceeded")
        return result


async def _fetch(resolver: Resolver, name: str, qtype: str) -> list | _TemporaryAnswer:
    """One answer in the shape pyspf's dnspython driver produces."""
    try:
        if qtype == "TXT":
            return [[value] for value in await resolver.txt(name)]
        if qtype == "A":
            return list(await resolver.a(name))
        if qtype == "AAAA":
            return list(await resolver.aaaa(name))
        if qtype == "MX":
            return [(record.preference, record.host) for record in await resolver.mx(name)]
        if qtype == "PTR":
            return list(await resolver.ptr(name))
    except DNSTemporaryError as exc:
        return _TemporaryAnswer(exc.reason)
    except InvalidDomainName:
        return []
    # "SPF" (type 99) records are obsolete (RFC 7208 section 3.1) and not consulted.
    return []


def _normalize_ip(ip: str) -> str:
    try:
        address = ipaddress.ip_address(ip.strip().removeprefix("[").removesuffix("]"))
    except ValueError as exc:
        raise ValueError(f"not an IP address: {ip!r}") from exc
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address)


def _is_fqdn(name: str) -> bool:
    """RFC 7208 section 2.3: only a fully qualified HELO name is checked."""
    name = name.rstrip(".")
    if not name or "." not in name or name.startswith("["):
        return False
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return True
    return False


async def _evaluate(
    resolver: Resolver, ip: str, sender: str, helo: str, identity: str, receiver: str
) -> SPFResult:
    answers: dict[tuple[str, str], object] = {}
    domain = sender.rpartition("@")[2].lower() if "@" in sender else sender.lower()
    for _round in range(MAX_DNS_QUERIES + 1):
        query = _TabledQuery(answers, i=ip, s=sender, h=helo, receiver=receiver, strict=True)
        try:
            result, _code, explanation = query.check()
        except _LookupNeeded:
            result, explanation = None, ""
        if query.missing:
            if len(answers) >= MAX_DNS_QUERIES:
                return SPFResult(
                    "permerror", domain, f"more than {MAX_DNS_QUERIES} DNS queries needed",
                    identity, sender, ip,
                )
            name, qtype = query.missing[0]
            answers[(name, qtype)] = await _fetch(resolver, name, qtype)
            continue
        if result == "ambiguous":  # only in pyspf's harsh mode; never expected here
            result = "permerror"
        if result not in RESULTS:
            result = "permerror"
        mechanism = query.mechanism if isinstance(query.mechanism, str) else None
        if result in ("pass", "neutral", "none"):
            explanation = "" if result == "none" else explanation
        return SPFResult(result, query.o.lower() or domain, explanation, identity, sender, ip, mechanism)
    return SPFResult("permerror", domain, "SPF evaluation did not converge", identity, sender, ip)


def check_spf(
    resolver: Resolver,
    ip: str,
    mail_from: str,
    helo: str,
    receiver: str = "unknown",
) -> defer.Deferred:
    """Check the MAIL FROM identity (RFC 7208 section 2.4); fires with an :class:`SPFResult`.

    With a null reverse-path (``mail_from == ""``) the identity checked is
    ``postmaster@<helo>``, as section 2.4 requires, and the result's ``identity`` is
    ``"helo"``.  DNS failures become ``temperror`` (section 2.6.6), never an exception.
    ``ValueError`` is raised for a client address that is not an IP address.
    """
    client_ip = _normalize_ip(ip)
    mail_from = (mail_from or "").strip().strip("<>")
    helo = (helo or "").strip()
    if not mail_from:
        return check_spf_helo(resolver, client_ip, helo, receiver)
    if "@" not in mail_from:
        # RFC 7208 section 4.3: a MAIL FROM without a local part uses "postmaster".
        mail_from = "postmaster@" + mail_from
    return defer.ensureDeferred(_evaluate(resolver, client_ip, mail_from, helo, "mailfrom", receiver))


def check_spf_helo(
    resolver: Resolver, ip: str, helo: str, receiver: str = "unknown"
) -> defer.Deferred:
    """Check the HELO identity (RFC 7208 section 2.3); fires with an :class:`SPFResult`.

    A HELO argument that is not a fully qualified domain name (an address literal, a
    bare word) cannot be checked: the result is ``none``.
    """
    client_ip = _normalize_ip(ip)
    helo = (helo or "").strip().rstrip(".")
    sender = "postmaster@" + helo
    if not _is_fqdn(helo):
        return defer.succeed(
            SPFResult("none", helo.lower(), "HELO name is not a domain", "helo", sender, client_ip)
        )
    return defer.ensureDeferred(_evaluate(resolver, client_ip, sender, helo, "helo", receiver))
