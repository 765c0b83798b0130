"""Where mail for a domain goes: MX lookup with the fallbacks of RFC 5321 §5.1 and RFC 7505.

* MX records are tried in preference order; hosts of equal preference in random order
  (RFC 5321 §5.1, to spread load).
* No MX record at all: the domain itself is the mail host ("implicit MX"), through its A and
  AAAA records.
* A null MX (one record, preference 0, exchange ".") means the domain takes no mail: the
  message fails at once with 5.1.10 (RFC 7505 §4.2, RFC 7505 §3 for the code).
* DNS failures are temporary: the queue retries.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass

from mailserve.dns import DNSTemporaryError, InvalidDomainName, is_null_mx, normalize_domain

__all__ = ["MailHost", "NoMailService", "RouteTemporaryFailure", "resolve_mail_hosts"]


class NoMailService(Exception):
    """The domain cannot receive mail (permanent); ``status`` is the RFC 3463 code."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


class RouteTemporaryFailure(Exception):
    """The route could not be found now (DNS trouble); try again later."""


@dataclass(frozen=True)
class MailHost:
    """One host to try, with its addresses (IPv6 after IPv4 is not assumed: as resolved)."""

    name: str
    addresses: tuple[str, ...]
    preference: int = 0


async def _addresses(resolver, host: str) -> list[str]:
    addresses: list[str] = []
    errors = 0
    for lookup in (resolver.a, resolver.aaaa):
        try:
            addresses.extend(await lookup(host))
        except DNSTemporaryError:
            errors += 1
    if not addresses and errors:
        raise RouteTemporaryFailure(f"cannot resolve {host}")
    return addresses


async def resolve_mail_hosts(resolver, domain: str, shuffle=random.shuffle) -> list[MailHost]:
    """The hosts to try for ``domain``, best first (see the module docstring)."""
    if domain.startswith("[") and domain.endswith("]"):
        literal = domain[1:-1]
        if literal.lower().startswith("ipv6:"):
            literal = literal[5:]
        try:
            return [MailHost(domain, (str(ipaddress.ip_address(literal)),))]
        except ValueError:
            raise NoMailService(f"invalid address literal {domain}", "5.1.2") from None
    try:
        name = normalize_domain(domain)
    except InvalidDomainName as e:
        raise NoMailService(f"invalid domain {domain!r}: {e}", "5.1.2") from None
    try:
        records = await resolver.mx(name)
    except DNSTemporaryError as e:
        raise RouteTemporaryFailure(str(e)) from None
    if is_null_mx(records):
        raise NoMailService(f"domain {name} does not accept mail (null MX)", "5.1.10")
    if not records:
        addresses = await _addresses(resolver, name)
        if not addresses:
            raise NoMailService(f"domain {name} has no MX and no address records", "5.1.2")
        return [MailHost(name, tuple(addresses))]
    by_preference: dict[int, list[str]] = {}
    for record in records:
        if record.host:
            by_preference.setdefault(record.preference, []).append(record.host)
    hosts: list[MailHost] = []
    temporary = 0
    for preference in sorted(by_preference):
        group = list(by_preference[preference])
        shuffle(group)
        for host in group:
            try:
                addresses = await _addresses(resolver, host)
            except RouteTemporaryFailure:
                temporary += 1
                continue
            if addresses:
                hosts.append(MailHost(host, tuple(addresses), preference))
    if not hosts:
        if temporary:
            raise RouteTemporaryFailure(f"cannot resolve the MX hosts of {name}")
        raise NoMailService(f"no MX host of {name} has an address", "5.4.4")
    return hosts
