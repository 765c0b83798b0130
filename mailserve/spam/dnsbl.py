"""DNS block- and allowlists (RFC 5782) for the client address and the domains of a message.

An IP list is asked about ``<reversed address>.<zone>`` (IPv4 octets reversed, IPv6 as
reversed nibbles, RFC 5782 sections 2.1 and 2.4); a domain list about
``<registered domain>.<zone>`` (section 3).  Every lookup of one message runs in
parallel through :class:`mailserve.dns.Resolver`, whose TTL cache remembers answers across
messages.  A list that fails (SERVFAIL, timeout) costs nothing: the message is scored as if
it were not listed, and the failure is logged -- a broken list must not bounce mail.

Answers are only believed inside 127.0.0.0/8 (section 2.1); anything else is what a
"helpful" resolver returns for every name, and would list the whole Internet.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from twisted.internet import defer
from twisted.logger import Logger

from mailserve.dns import DNSTemporaryError, InvalidDomainName, Resolver, normalize_domain
from mailserve.spam.settings import DNSListSettings

__all__ = ["DNSListChecker", "is_internal_address", "reversed_ip_name"]

_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
#: Internal address space (RFC 1918, RFC 6598, RFC 4193): never listed, never sent to lists.
_INTERNAL = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7",
))


def is_internal_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if address.is_loopback or address.is_link_local or address.is_unspecified or address.is_multicast:
        return True
    return any(address.version == net.version and address in net for net in _INTERNAL)


def reversed_ip_name(ip: str) -> str:
    """The query label sequence for ``ip`` (RFC 5782 sections 2.1 and 2.4)."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        return ".".join(reversed(str(address).split(".")))
    return ".".join(reversed(address.exploded.replace(":", "")))


def _rules_for_answers(dnsbl: DNSListSettings, answers: Iterable[str]) -> list[str]:
    rules: list[str] = []
    for answer in answers:
        try:
            address = ipaddress.IPv4Address(answer)
        except ValueError:
            continue
        if address not in _LOOPBACK:
            continue
        rule = dnsbl.codes.get(str(address))
        if rule and rule not in rules:
            rules.append(rule)
        last_octet = int(address) & 0xFF
        for bit, bit_rule in dnsbl.bitmask.items():
            if last_octet & bit and bit_rule not in rules:
                rules.append(bit_rule)
    return rules


class DNSListChecker:
    """Looks a message's client address and domains up in the configured DNS lists."""

    log = Logger()

    def __init__(self, resolver: Resolver, lists: Sequence[DNSListSettings]) -> None:
        self.resolver = resolver
        self.lists = tuple(lists)

    def check(self, ip: str | None, domains: Sequence[str], ip_literals: Sequence[str] = ()) -> defer.Deferred:
        """Fires with ``[(rule, what was listed)]`` for every list that lists something."""
        queries: list[tuple[DNSListSettings, str, str]] = []
        addresses = ([ip] if ip else []) + [a for a in ip_literals if a != ip]
        for dnsbl in self.lists:
            if dnsbl.kind == "ip":
                for address in addresses:
                    try:
                        address_obj = ipaddress.ip_address(address)
                    except ValueError:
                        continue
                    if is_internal_address(address_obj):
                        continue  # lists never list private space; don't leak it to them
                    queries.append((dnsbl, f"{reversed_ip_name(address)}.{dnsbl.zone}", address))
            else:
                for domain in domains:
                    try:
                        name = normalize_domain(f"{domain}.{dnsbl.zone}")
                    except InvalidDomainName:
                        continue
                    queries.append((dnsbl, name, domain))

        def one(dnsbl: DNSListSettings, name: str, subject: str) -> defer.Deferred:
            d = self.resolver.a(name)

            def failed(failure):
                failure.trap(DNSTemporaryError, InvalidDomainName)
                self.log.info("DNS list {zone} unavailable for {subject}: {error}",
                              zone=dnsbl.zone, subject=subject, error=failure.value)
                return []

            d.addErrback(failed)
            d.addCallback(lambda answers: [(rule, subject) for rule in _rules_for_answers(dnsbl, answers)])
            return d

        deferreds = [one(*query) for query in queries]
        gathered = defer.gatherResults(deferreds, consumeErrors=True)
        gathered.addCallback(lambda results: [hit for hits in results for hit in hits])
        return gathered
