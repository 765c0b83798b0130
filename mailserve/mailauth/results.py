"""Authentication-Results (RFC 8601) and the one entry point the SMTP pipeline calls.

:func:`authenticate_message` runs SPF (both identities), DKIM, ARC and DMARC for a received
message, concurrently where they are independent, and returns an :class:`AuthVerdict`:
the structured results for policy decisions (spam scoring, Sieve, DMARC disposition) and
the ``Authentication-Results:`` header field to prepend.

RFC 8601 section 5: a receiver MUST remove (or make unrecognisable) any incoming
Authentication-Results field that claims to come from its own authserv-id, or a sender
could forge our verdicts; :func:`strip_authentication_results` does that, and
:func:`authenticate_message` hands back the message with them removed.
"""

from __future__ import annotations

import random as random_module
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from twisted.internet import defer, threads

from mailserve.dns import InvalidDomainName, Resolver, normalize_domain
from mailserve.mailauth.arc import ARCResult, verify_arc
from mailserve.mailauth.dkim import (
    DKIMResult,
    MalformedMessageError,
    parse_header_fields,
    verify_dkim,
)
from mailserve.mailauth.dmarc import (
    DMARCResult,
    FromDomainError,
    check_dmarc,
    from_domain_of,
)
from mailserve.mailauth.psl import PublicSuffixList
from mailserve.mailauth.spf import SPFResult, check_spf, check_spf_helo

__all__ = [
    "AuthVerdict",
    "authenticate_message",
    "authentication_results_value",
    "format_authentication_results",
    "split_header_section",
    "strip_authentication_results",
]

#: RFC 5322 section 2.1.1: lines SHOULD be at most 78 characters.
FOLD_WIDTH = 78
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`{|}~@]+$")


@dataclass(frozen=True)
class AuthVerdict:
    """Everything the inbound pipeline needs to know about a message's authenticity.

    ``header`` is the complete ``Authentication-Results:`` field (with CRLF) to prepend;
    ``message`` is the received message with forged Authentication-Results removed
    (without the new header).  ``disposition`` is the DMARC-requested handling:
    ``none``, ``quarantine`` or ``reject``.
    """

    authserv_id: str
    spf: SPFResult
    spf_helo: SPFResult
    dkim: tuple[DKIMResult, ...]
    arc: ARCResult
    dmarc: DMARCResult
    from_domain: str | None
    header: bytes
    message: bytes = field(repr=False)

    @property
    def disposition(self) -> str:
        return self.dmarc.disposition if self.dmarc.result == "fail" else "none"

    @property
    def aligned_pass(self) -> bool:
        """Whether the From domain is authenticated (DMARC pass)."""
        return self.dmarc.result == "pass"


def _comment(text: str) -> str:
    """An RFC 5322 comment, with its specials escaped (section 3.2.2)."""
    # ";" would end the result stanza when the field is folded or parsed loosely.
    cleaned = " ".join(text.replace(";", ",").split())[:200]
    return "(" + re.sub(r"([()\\])", r"\\\1", cleaned) + ")"


def _value(text: str) -> str:
    """A property value: a token if it is one, else a quoted-string (RFC 8601 section 2.2)."""
    if text and _TOKEN.match(text):
        return text
    cleaned = " ".join(text.replace(";", ",").split())
    return '"' + re.sub(r'(["\\])', r"\\\1", cleaned) + '"'


def _spf_stanza(result: SPFResult) -> str:
    if result.identity == "helo":
        prop = f"smtp.helo={_value(result.domain or result.sender.rpartition('@')[2])}"
    else:
        local, _, domain = result.sender.rpartition("@")
        address = f"{local}@{domain}" if local else domain
        if not _TOKEN.match(address):
            # RFC 8601 section 2.7.2: the domain alone is allowed when the local-part is
            # awkward to represent.
            address = domain
        prop = f"smtp.mailfrom={_value(address)}"
    stanza = f"spf={result.result}"
    if result.client_ip and result.result in ("pass", "fail", "softfail", "neutral"):
        verb = "designates" if result.result == "pass" else "does not designate"
        stanza += " " + _comment(f"{result.domain}: {verb} {result.client_ip} as permitted sender")
    elif result.explanation and result.result in ("permerror", "temperror"):
        stanza += " " + _comment(result.explanation)
    return f"{stanza} {prop}"


def _dkim_stanza(result: DKIMResult) -> str:
    stanza = f"dkim={result.result}"
    if result.reason and result.result != "pass":
        stanza += f" reason={_value(result.reason[:120])}"
    props = []
    if result.domain:
        props.append(f"header.d={_value(result.domain)}")
    if result.identity:
        props.append(f"header.i={_value(result.identity)}")
    if result.selector:
        props.append(f"header.s={_value(result.selector)}")
    if result.algorithm:
        props.append(f"header.a={_value(result.algorithm)}")
    if result.header_b:
        # RFC 6008 section 4: the first eight or more characters of b= name a signature.
        props.append(f"header.b={_value(result.header_b[:12])}")
    return " ".join([stanza, *props])


def _dmarc_stanza(result: DMARCResult) -> str:
    stanza = f"dmarc={result.result}"
    if result.record is not None:
        stanza += " " + _comment(
            f"p={result.record.policy} sp={result.record.subdomain_policy} "
            f"dis={result.disposition.upper()}"
        )
    elif result.reason and result.result in ("permerror", "temperror"):
        stanza += " " + _comment(result.reason)
    if result.from_domain:
        stanza += f" header.from={_value(result.from_domain)}"
    return stanza


def _arc_stanza(result: ARCResult) -> str:
    stanza = f"arc={result.result}"
    if result.instances:
        detail = f"i={result.instances}"
        if result.result == "pass" and result.sets:
            detail += f" oldest-pass={result.oldest_pass}"
        stanza += " " + _comment(detail)
    return stanza


def authentication_results_value(
    authserv_id: str,
    spf: Sequence[SPFResult] = (),
    dkim: Sequence[DKIMResult] = (),
    dmarc: DMARCResult | None = None,
    arc: ARCResult | None = None,
) -> str:
    """The value (after ``Authentication-Results:``) of one RFC 8601 field, unfolded.

    With no results at all the field says ``none`` (RFC 8601 section 2.2).
    """
    if not authserv_id or not _TOKEN.match(authserv_id):
        raise ValueError(f"authserv-id must be a token such as a host name: {authserv_id!r}")
    stanzas = [_spf_stanza(r) for r in spf]
    stanzas += [_dkim_stanza(r) for r in dkim]
    if dkim == () and spf:
        stanzas.append("dkim=none")
    if dmarc is not None:
        stanzas.append(_dmarc_stanza(dmarc))
    if arc is not None:
        stanzas.append(_arc_stanza(arc))
    if not stanzas:
        return f"{authserv_id}; none"
    return authserv_id + ";" + ";".join(" " + s for s in stanzas)


def format_authentication_results(value: str) -> bytes:
    """``Authentication-Results: <value>`` folded at stanza and word boundaries, CRLF-ended."""
    if len(f"Authentication-Results: {value}") <= FOLD_WIDTH:
        return f"Authentication-Results: {value}\r\n".encode()
    head, *stanzas = [part.strip() for part in value.split(";")]
    lines = [f"Authentication-Results: {head}" + (";" if stanzas else "")]
    for index, stanza in enumerate(stanzas):
        suffix = ";" if index < len(stanzas) - 1 else ""
        words = (stanza + suffix).split(" ")
        line = "\t" + words[0]
        for word in words[1:]:
            if len(f"{line} {word}".expandtabs(8)) > FOLD_WIDTH:
                # Fold at the existing space: unfolding (RFC 5322 section 2.2.3) gives
                # back exactly the same text, even inside comments and quoted-strings.
                lines.append(line)
                line = " " + word
            else:
                line = f"{line} {word}"
        lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def split_header_section(message: bytes) -> tuple[list[bytes], bytes]:
    """Header fields (each with its folded continuation lines and line ending) and the rest."""
    fields: list[bytes] = []
    position = 0
    length = len(message)
    while position < length:
        end = message.find(b"\n", position)
        end = length if end == -1 else end + 1
        line = message[position:end]
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
        position = end
    return fields, message[position:]


def _claims_authserv_id(field_bytes: bytes, authserv_id: str) -> bool:
    name, _, value = field_bytes.partition(b":")
    if name.strip().lower() != b"authentication-results":
        return False
    text = value.decode("utf-8", "replace")
    # Drop leading comments (CFWS) before the authserv-id (RFC 8601 section 2.2).
    text = re.sub(r"^\s*(\([^)]*\)\s*)*", "", text)
    claimed = re.split(r"[\s;]", text.strip(), maxsplit=1)[0] if text.strip() else ""
    return claimed.lower().rstrip(".") == authserv_id.lower().rstrip(".")


def strip_authentication_results(message: bytes, authserv_id: str) -> bytes:
    """Remove every Authentication-Results field that claims ``authserv_id`` (RFC 8601 s. 5).

    Fields from other ADMDs are kept: they are information, and ARC seals refer to them.
    """
    fields, rest = split_header_section(message)
    kept = [f for f in fields if not _claims_authserv_id(f, authserv_id)]
    if len(kept) == len(fields):
        return message
    return b"".join(kept) + rest


def _from_domain(message: bytes) -> str | None:
    """The RFC 5322.From domain, or ``None`` if absent, repeated or unusable (s. 6.6.1)."""
    try:
        headers = parse_header_fields(message)
    except MalformedMessageError:
        return None
    values = [value for name, value in headers if name.lower() == b"from"]
    if len(values) != 1:
        return None
    try:
        return from_domain_of(values[0].decode("utf-8", "replace").replace("\r\n", ""))
    except FromDomainError:
        return None


async def _authenticate(
    resolver: Resolver,
    message: bytes,
    ip: str,
    helo: str,
    mail_from: str,
    authserv_id: str,
    psl: PublicSuffixList | None,
    random: Callable[[], float],
) -> AuthVerdict:
    try:
        authserv_id = normalize_domain(authserv_id) if "." in authserv_id else authserv_id
    except InvalidDomainName as exc:
        raise ValueError(f"bad authserv-id: {exc}") from exc
    stripped = await threads.deferToThread(strip_authentication_results, message, authserv_id)
    spf_d = check_spf(resolver, ip, mail_from, helo, receiver=authserv_id)
    helo_d = check_spf_helo(resolver, ip, helo, receiver=authserv_id)
    dkim_d = verify_dkim(resolver, message)
    arc_d = verify_arc(resolver, message)
    from_d = threads.deferToThread(_from_domain, message)
    spf_result, helo_result, dkim_results, arc_result, from_domain = await defer.gatherResults(
        [spf_d, helo_d, dkim_d, arc_d, from_d], consumeErrors=True
    ).addErrback(lambda failure: failure.value.subFailure)
    if from_domain is None:
        dmarc_result = DMARCResult(
            "permerror", "", reason="no single usable From header field (RFC 7489 section 6.6.1)"
        )
    else:
        dmarc_result = await check_dmarc(
            resolver, from_domain, spf_result, dkim_results, psl=psl, random=random
        )
    spf_stanzas = [spf_result]
    if helo_result.result != "none" and spf_result.identity != "helo":
        spf_stanzas.append(helo_result)
    value = authentication_results_value(
        authserv_id, spf_stanzas, tuple(dkim_results), dmarc_result, arc_result
    )
    return AuthVerdict(
        authserv_id=authserv_id,
        spf=spf_result,
        spf_helo=helo_result,
        dkim=tuple(dkim_results),
        arc=arc_result,
        dmarc=dmarc_result,
        from_domain=from_domain,
        header=format_authentication_results(value),
        message=stripped,
    )


def authenticate_message(
    resolver: Resolver,
    message: bytes,
    ip: str,
    helo: str,
    mail_from: str,
    authserv_id: str,
    psl: PublicSuffixList | None = None,
    random: Callable[[], float] = random_module.random,
) -> defer.Deferred:
    """Run SPF, DKIM, ARC and DMARC for a received message; fires with an :class:`AuthVerdict`.

    ``ip``/``helo``/``mail_from`` are the SMTP session's client address, HELO/EHLO
    argument and reverse-path (``""`` for the null reverse-path).  DNS trouble never
    raises: it shows as ``temperror`` results.  ``ValueError`` is raised (through the
    Deferred) for a client address that is not an IP address or a bad authserv-id.
    """
    return defer.ensureDeferred(
        _authenticate(resolver, message, ip, helo, mail_from, authserv_id, psl, random)
    )
