"""DMARC policy evaluation (RFC 7489).

Given the RFC 5322 From domain and the SPF and DKIM results, find the domain owner's
policy record (at ``_dmarc.<From domain>``, else at ``_dmarc.<Organizational Domain>``,
section 6.6.3), decide whether SPF or DKIM produced an *aligned* pass (section 3.1), and
work out the disposition the policy asks for (``p``/``sp``, sampled by ``pct``, section
6.6.4).
"""

from __future__ import annotations

import random as random_module
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.utils import getaddresses

from twisted.internet import defer, threads

from mailserve.dns import (
    DNSTemporaryError,
    InvalidDomainName,
    Resolver,
    normalize_domain,
)
from mailserve.mailauth.psl import PublicSuffixList

__all__ = [
    "DMARCRecord",
    "DMARCRecordError",
    "DMARCResult",
    "FromDomainError",
    "check_dmarc",
    "from_domain_of",
    "parse_dmarc_record",
]

POLICIES = ("none", "quarantine", "reject")
#: Longest record we parse; real ones are a few hundred octets.
MAX_RECORD_LENGTH = 4096


class DMARCRecordError(ValueError):
    """The TXT record is not a valid DMARC record (RFC 7489 section 6.3)."""


class FromDomainError(ValueError):
    """The message has no usable RFC 5322.From domain (RFC 7489 section 6.6.1)."""


@dataclass(frozen=True)
class DMARCRecord:
    """A parsed ``v=DMARC1`` record (RFC 7489 section 6.3)."""

    policy: str
    subdomain_policy: str
    percent: int = 100
    dkim_alignment: str = "r"
    spf_alignment: str = "r"
    rua: tuple[str, ...] = ()
    ruf: tuple[str, ...] = ()
    failure_options: str = "0"
    report_interval: int = 86400
    #: RFC 9091 section 4.1 ``np``: policy for non-existent subdomains (``None``: use sp).
    nonexistent_policy: str | None = None
    tags: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class DMARCResult:
    """The DMARC outcome for one message.

    ``result`` is ``pass``, ``fail``, ``none`` (no policy published), ``temperror`` (the
    policy could not be fetched) or ``permerror`` (the policy record is unusable).
    ``policy`` is the requested policy that applies to the From domain (``p``, or ``sp``
    for a subdomain); ``disposition`` is what to do with this message after ``pct``
    sampling: ``none``, ``quarantine`` or ``reject``.
    """

    result: str
    from_domain: str
    policy_domain: str = ""
    organizational_domain: str = ""
    policy: str = "none"
    disposition: str = "none"
    spf_aligned: bool = False
    dkim_aligned: bool = False
    sampled_out: bool = False
    record: DMARCRecord | None = None
    reason: str = ""


_TAG = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$", re.DOTALL)


def _uris(value: str) -> tuple[str, ...]:
    return tuple(uri.strip() for uri in value.split(",") if uri.strip())


def parse_dmarc_record(text: str | bytes) -> DMARCRecord:
    """Parse a DMARC TXT record (RFC 7489 section 6.3/6.4).

    ``v=DMARC1`` must be the first tag.  A missing or invalid ``p`` is accepted as
    ``p=none`` only when ``rua`` names a report address, as section 6.6.3 step 6 says;
    otherwise :class:`DMARCRecordError`.  Unknown tags are ignored (section 6.3).
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if len(text) > MAX_RECORD_LENGTH:
        raise DMARCRecordError("record too long")
    parts = [part for part in text.split(";") if part.strip()]
    tags: dict[str, str] = {}
    for index, part in enumerate(parts):
        match = _TAG.match(part)
        if not match:
            raise DMARCRecordError(f"malformed tag {part.strip()!r}")
        name, value = match.group(1).lower(), match.group(2)
        if index == 0 and (name != "v" or value != "DMARC1"):
            raise DMARCRecordError("record does not start with v=DMARC1")
        tags.setdefault(name, value)
    if not tags:
        raise DMARCRecordError("empty record")
    rua = _uris(tags.get("rua", ""))
    policy = tags.get("p", "").lower()
    if policy not in POLICIES:
        if not any(uri.lower().startswith("mailto:") for uri in rua):
            raise DMARCRecordError(f"invalid or missing p= ({tags.get('p')!r})")
        policy = "none"
    subdomain_policy = tags.get("sp", policy).lower()
    if subdomain_policy not in POLICIES:
        subdomain_policy = policy
    nonexistent = tags.get("np", "").lower() or None
    if nonexistent is not None and nonexistent not in POLICIES:
        nonexistent = None
    try:
        percent = int(tags.get("pct", "100"))
    except ValueError:
        percent = 100
    if not 0 <= percent <= 100:
        percent = 100
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    try:
        interval = int(tags.get("ri", "86400"))
    except ValueError:
        interval = 86400
    return DMARCRecord(
        policy=policy,
        subdomain_policy=subdomain_policy,
        percent=percent,
        dkim_alignment=adkim if adkim in ("r", "s") else "r",
        spf_alignment=aspf if aspf in ("r", "s") else "r",
        rua=rua,
        ruf=_uris(tags.get("ruf", "")),
        failure_options=tags.get("fo", "0"),
        report_interval=interval,
        nonexistent_policy=nonexistent,
        tags=tags,
    )


def from_domain_of(from_header_value: str) -> str:
    """The domain of an RFC 5322.From field value, for DMARC (RFC 7489 section 6.6.1).

    A From field with no address, an address without a domain, or several addresses in
    different domains cannot be evaluated: :class:`FromDomainError`.
    """
    domains = set()
    for _name, address in getaddresses([from_header_value]):
        if not address:
            continue
        try:
            domain = Address(addr_spec=address).domain
        except (ValueError, IndexError) as exc:
            raise FromDomainError(f"unparseable From address {address!r}") from exc
        if not domain:
            raise FromDomainError(f"From address {address!r} has no domain")
        try:
            domains.add(normalize_domain(domain))
        except InvalidDomainName as exc:
            raise FromDomainError(str(exc)) from exc
    if not domains:
        raise FromDomainError("no address in the From header field")
    if len(domains) > 1:
        raise FromDomainError("From header field names addresses in several domains")
    return domains.pop()


def _aligned(mode: str, authenticated: str, from_domain: str, psl: PublicSuffixList) -> bool:
    """RFC 7489 section 3.1.1/3.1.2: strict is an exact match, relaxed is the same org."""
    try:
        authenticated = normalize_domain(authenticated)
    except InvalidDomainName:
        return False
    if mode == "s":
        return authenticated == from_domain
    return psl.same_organization(authenticated, from_domain)


async def _discover(resolver: Resolver, domain: str) -> list[str]:
    """The ``v=DMARC1`` TXT records at ``_dmarc.<domain>`` (section 6.6.3 steps 1-3)."""
    records = await resolver.txt(f"_dmarc.{domain}")
    # Records that do not start with "v=DMARC1" are discarded (section 6.6.3 step 2).
    return [
        r.decode("utf-8", "replace")
        for r in records
        if re.match(rb"^\s*v\s*=\s*DMARC1\s*(;|$)", r)
    ]


async def _check(
    resolver: Resolver,
    from_header_domain: str,
    spf_result,
    dkim_results: Sequence,
    psl: PublicSuffixList | None,
    random: Callable[[], float],
) -> DMARCResult:
    try:
        from_domain = normalize_domain(from_header_domain)
    except InvalidDomainName as exc:
        return DMARCResult("permerror", str(from_header_domain), reason=str(exc))
    if psl is None:
        # Parsing the list takes tens of milliseconds: keep it off the reactor thread.
        psl = await threads.deferToThread(PublicSuffixList.bundled)
    org_domain = psl.organizational_domain(from_domain)

    policy_domain = from_domain
    try:
        candidates = await _discover(resolver, from_domain)
        if not candidates and org_domain != from_domain:
            policy_domain = org_domain
            candidates = await _discover(resolver, org_domain)
    except DNSTemporaryError as exc:
        return DMARCResult(
            "temperror", from_domain, policy_domain, org_domain, reason=str(exc)
        )
    if len(candidates) != 1:
        reason = "no DMARC record" if not candidates else "several DMARC records"
        return DMARCResult("none", from_domain, policy_domain, org_domain, reason=reason)
    try:
        record = parse_dmarc_record(candidates[0])
    except DMARCRecordError as exc:
        return DMARCResult("permerror", from_domain, policy_domain, org_domain, reason=str(exc))

    spf_aligned = bool(
        spf_result is not None
        and spf_result.result == "pass"
        and spf_result.domain
        and _aligned(record.spf_alignment, spf_result.domain, from_domain, psl)
    )
    dkim_aligned = any(
        result.result == "pass" and _aligned(record.dkim_alignment, result.domain, from_domain, psl)
        for result in dkim_results or ()
    )

    # Section 6.3: "sp" applies to subdomains of the domain the record was found at.
    policy = record.policy if policy_domain == from_domain else record.subdomain_policy
    if spf_aligned or dkim_aligned:
        return DMARCResult(
            "pass", from_domain, policy_domain, org_domain, policy, "none",
            spf_aligned, dkim_aligned, False, record,
        )
    disposition, sampled_out = policy, False
    if policy != "none" and record.percent < 100 and random() * 100 >= record.percent:
        # Section 6.6.4: a message outside the pct sample gets the next weaker policy.
        disposition = "quarantine" if policy == "reject" else "none"
        sampled_out = True
    reasons = []
    if spf_result is None or spf_result.result != "pass":
        reasons.append("SPF did not pass")
    else:
        reasons.append(f"SPF domain {spf_result.domain} not aligned")
    if not any(r.result == "pass" for r in dkim_results or ()):
        reasons.append("no passing DKIM signature")
    else:
        reasons.append("no aligned DKIM signature")
    return DMARCResult(
        "fail", from_domain, policy_domain, org_domain, policy, disposition,
        False, False, sampled_out, record, "; ".join(reasons),
    )


def check_dmarc(
    resolver: Resolver,
    from_header_domain: str,
    spf_result,
    dkim_results: Sequence,
    psl: PublicSuffixList | None = None,
    random: Callable[[], float] = random_module.random,
) -> defer.Deferred:
    """Evaluate DMARC for a message; fires with a :class:`DMARCResult`.

    ``spf_result`` is the :class:`~mailserve.mailauth.spf.SPFResult` of the MAIL FROM
    identity (or ``None``), ``dkim_results`` the list from
    :func:`~mailserve.mailauth.dkim.verify_dkim`.  ``random`` returns a float in [0, 1)
    and decides ``pct`` sampling (injectable for tests).  ``psl`` defaults to the bundled
    Public Suffix List.
    """
    return defer.ensureDeferred(
        _check(resolver, from_header_domain, spf_result, dkim_results, psl, random)
    )
