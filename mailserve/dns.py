"""The one asynchronous DNS resolver every part of mailserve uses.

Everything that needs DNS (SPF, DKIM, DMARC, ARC, MTA-STS, DANE, DNSBLs, outbound MX
routing) goes through :class:`Resolver`, so that there is one cache, one timeout policy and
one place where tests point the server at a fixture name server.

Two kinds of "no answer" are kept apart, because the mail authentication RFCs treat them
differently (RFC 7208 section 2.6.6/2.6.7, RFC 7489 section 6.6.3):

* NXDOMAIN and NODATA are *answers*: the lookup returns an empty list.
* SERVFAIL, REFUSED, timeouts and unparseable replies are *failures*: the lookup fails with
  :class:`DNSTemporaryError`, which callers turn into ``temperror`` rather than a crash.

The resolver is a stub: it asks recursive servers (from ``/etc/resolv.conf`` unless told
otherwise) and follows CNAME chains in their answers.  Answers are cached per
``(name, type)`` for their TTL, and negative answers for the SOA-derived TTL of RFC 2308
section 5, both capped; the cache is bounded in entries so a flood of distinct names cannot
exhaust memory.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.names import client
from twisted.names import dns as tdns
from twisted.names import error as dns_error

__all__ = [
    "DNSTemporaryError",
    "InvalidDomainName",
    "MXRecord",
    "Resolver",
    "TLSARecord",
    "is_null_mx",
    "normalize_domain",
    "read_resolv_conf",
]

#: RFC 2308 section 5: negative answers may be cached, but not for more than a few hours;
#: we keep them far shorter so a newly published record is seen quickly.
DEFAULT_NEGATIVE_TTL_CAP = 900
#: Positive answers are cached for their TTL, at most this long (RFC 2181 section 8 allows
#: resolvers to impose a ceiling).
DEFAULT_POSITIVE_TTL_CAP = 86400
DEFAULT_CACHE_ENTRIES = 10_000
#: Longest CNAME chain followed before the name is treated as a temporary failure.
MAX_CNAME_CHAIN = 8
#: RFC 1035 section 2.3.4.
MAX_NAME_LENGTH = 253
MAX_LABEL_LENGTH = 63
#: DNS type code of TLSA (RFC 6698 section 7.1); twisted.names does not know it.
TLSA_TYPE = 52


class DNSTemporaryError(Exception):
    """The lookup could not be completed (SERVFAIL, REFUSED, timeout, bad reply).

    This is "try again later", never "the name does not exist": SPF maps it to
    ``temperror`` (RFC 7208 section 5), DKIM to ``temperror`` (RFC 6376 section 6.1.2),
    outbound delivery to a retry.
    """

    def __init__(self, name: str, record_type: str, reason: str) -> None:
        super().__init__(f"DNS {record_type} lookup for {name!r} failed: {reason}")
        self.name = name
        self.record_type = record_type
        self.reason = reason


class InvalidDomainName(ValueError):
    """The name cannot be sent as a DNS query (RFC 1035 section 2.3.4 limits, bad IDNA)."""


@dataclass(frozen=True, order=True)
class MXRecord:
    """One MX answer; ``host == ""`` with preference 0 is a null MX (RFC 7505 section 3)."""

    preference: int
    host: str

    def __iter__(self):
        # Lets callers unpack ``pref, host = record`` and compare with plain tuples.
        return iter((self.preference, self.host))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, tuple):
            return (self.preference, self.host) == other
        if isinstance(other, MXRecord):
            return (self.preference, self.host) == (other.preference, other.host)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.preference, self.host))


@dataclass(frozen=True)
class TLSARecord:
    """One TLSA answer (RFC 6698 section 2.1)."""

    usage: int
    selector: int
    matching_type: int
    association_data: bytes


def is_null_mx(records: list) -> bool:
    """Whether an MX answer is the RFC 7505 "no mail accepted" record.

    RFC 7505 section 3: a domain that advertises a single MX with preference 0 and
    exchange "." accepts no mail; such a domain MUST NOT be sent mail.
    """
    return len(records) == 1 and tuple(records[0]) == (0, "")


def normalize_domain(name: str | bytes) -> str:
    """Lower-case ASCII (A-label) form of ``name`` without a trailing dot.

    Raises :class:`InvalidDomainName` for names that cannot be queried: empty labels,
    labels over 63 octets or names over 253 (RFC 1035 section 2.3.4), or names that
    IDNA cannot encode.
    """
    if isinstance(name, bytes):
        try:
            name = name.decode("ascii")
        except UnicodeDecodeError as exc:
            raise InvalidDomainName(f"non-ASCII bytes in domain name {name!r}") from exc
    name = name.strip()
    name = name.removesuffix(".")
    if not name:
        raise InvalidDomainName("empty domain name")
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise InvalidDomainName(f"cannot IDNA-encode {name!r}: {exc}") from exc
    name = name.lower()
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidDomainName(f"domain name longer than {MAX_NAME_LENGTH} octets")
    for label in name.split("."):
        if not label:
            raise InvalidDomainName(f"empty label in {name!r}")
        if len(label) > MAX_LABEL_LENGTH:
            raise InvalidDomainName(f"label longer than {MAX_LABEL_LENGTH} octets in {name!r}")
    return name


def read_resolv_conf(path: str = "/etc/resolv.conf") -> list[tuple[str, int]]:
    """The ``nameserver`` entries of a resolv.conf(5) file, as ``(host, 53)`` pairs.

    Read once when a :class:`Resolver` is built (a small local file), so no timer is left
    polling it.  Falls back to 127.0.0.1 as resolv.conf(5) specifies when there are none.
    """
    servers: list[tuple[str, int]] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as resolv:
            for line in resolv:
                fields = line.split()
                if len(fields) >= 2 and fields[0] == "nameserver":
                    host = fields[1].split("%", 1)[0]
                    try:
                        ipaddress.ip_address(host)
                    except ValueError:
                        continue
                    servers.append((host, 53))
    except OSError:
        pass
    return servers or [("127.0.0.1", 53)]


def _split_timeout(timeout: float) -> tuple[float, ...]:
    """Per-attempt timeouts summing to ``timeout``: a quick first try, then a longer retry.

    UDP loses packets; a single attempt would turn one lost datagram into a temperror.
    """
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    first = timeout * 0.3
    return (first, timeout - first)


_Section = list  # list[tdns.RRHeader]


class _CacheEntry:
    __slots__ = ("expires", "value")

    def __init__(self, expires: float, value: Any) -> None:
        self.expires = expires
        self.value = value


class Resolver:
    """Asynchronous, caching stub resolver built on ``twisted.names.client``.

    :param servers: recursive name servers as ``(host, port)`` pairs; ``None`` reads
        ``/etc/resolv.conf``.
    :param timeout: seconds a whole lookup (all retries) may take before it fails with
        :class:`DNSTemporaryError`.
    :param reactor: the reactor the queries run on (default: the global one).
    :param clock: the time source for cache expiry (default: ``reactor``); tests pass a
        ``twisted.internet.task.Clock`` to age the cache.
    """

    log = Logger()

    def __init__(
        self,
        servers: list[tuple[str, int]] | None = None,
        timeout: float = 5.0,
        reactor: Any = None,
        clock: IReactorTime | None = None,
        cache_entries: int = DEFAULT_CACHE_ENTRIES,
        negative_ttl_cap: int = DEFAULT_NEGATIVE_TTL_CAP,
        positive_ttl_cap: int = DEFAULT_POSITIVE_TTL_CAP,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        if servers is None:
            servers = read_resolv_conf()
        if not servers:
            raise ValueError("at least one name server is required")
        self.servers = [(str(host), int(port)) for host, port in servers]
        self.timeout = float(timeout)
        self._attempt_timeouts = _split_timeout(self.timeout)
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self._client = client.Resolver(
            servers=self.servers, timeout=self._attempt_timeouts, reactor=reactor
        )
        self._cache: OrderedDict[tuple[str, int], _CacheEntry] = OrderedDict()
        self._cache_entries = int(cache_entries)
        self._negative_ttl_cap = int(negative_ttl_cap)
        self._positive_ttl_cap = int(positive_ttl_cap)
        self._in_flight: dict[tuple[str, int], list[defer.Deferred]] = {}

    # -- public lookups -------------------------------------------------------------

    def txt(self, name: str) -> defer.Deferred:
        """TXT records of ``name``; each record's character-strings joined into one ``bytes``.

        RFC 7208 section 3.3 and RFC 6376 section 3.6.2.2: a long record split into several
        strings is read as their concatenation, with nothing in between.
        """
        return self._records(name, tdns.TXT, lambda rr: b"".join(rr.payload.data))

    def mx(self, name: str) -> defer.Deferred:
        """MX records of ``name`` as :class:`MXRecord` (``(preference, host)``), sorted.

        A null MX (RFC 7505) comes back as ``[MXRecord(0, "")]``; test with
        :func:`is_null_mx`.
        """

        def convert(rr: tdns.RRHeader) -> MXRecord:
            host = rr.payload.name.name.decode("ascii", "replace").rstrip(".").lower()
            return MXRecord(int(rr.payload.preference), host)

        d = self._records(name, tdns.MX, convert)
        d.addCallback(sorted)
        return d

    def a(self, name: str) -> defer.Deferred:
        """IPv4 addresses of ``name`` as dotted-quad strings."""
        return self._records(name, tdns.A, lambda rr: rr.payload.dottedQuad())

    def aaaa(self, name: str) -> defer.Deferred:
        """IPv6 addresses of ``name`` in compressed text form."""

        def convert(rr: tdns.RRHeader) -> str:
            return str(ipaddress.IPv6Address(rr.payload.address))

        return self._records(name, tdns.AAAA, convert)

    def ptr(self, ip: str) -> defer.Deferred:
        """Host names that the reverse zone gives for ``ip`` (RFC 1035 section 3.5).

        ``ip`` may also be the reverse name itself (``...in-addr.arpa`` or
        ``...ip6.arpa``), as SPF's macro and ``ptr`` processing produce it.
        """
        lowered = ip.lower().rstrip(".")
        if lowered.endswith((".in-addr.arpa", ".ip6.arpa")):
            reverse = lowered
        else:
            try:
                reverse = ipaddress.ip_address(ip).reverse_pointer
            except ValueError as exc:
                return defer.fail(ValueError(f"not an IP address: {ip!r}: {exc}"))

        def convert(rr: tdns.RRHeader) -> str:
            return rr.payload.name.name.decode("ascii", "replace").rstrip(".").lower()

        return self._records(reverse, tdns.PTR, convert)

    def tlsa(self, name: str) -> defer.Deferred:
        """TLSA records of ``name`` (e.g. ``_25._tcp.mx.example.org``), RFC 6698.

        twisted.names has no TLSA type, so the record arrives as raw RDATA and is parsed
        here per RFC 6698 section 2.1: three octets then the association data.
        """

        def convert(rr: tdns.RRHeader) -> TLSARecord | None:
            data = rr.payload.data
            if len(data) < 3:
                return None
            usage, selector, matching = struct.unpack("!BBB", data[:3])
            return TLSARecord(usage, selector, matching, bytes(data[3:]))

        d = self._records(name, TLSA_TYPE, convert)
        d.addCallback(lambda records: [r for r in records if r is not None])
        return d

    def clear_cache(self) -> None:
        """Forget every cached answer (used by tests and on configuration reload)."""
        self._cache.clear()

    # -- machinery --------------------------------------------------------------------

    def _records(
        self, name: str, record_type: int, convert: Callable[[tdns.RRHeader], Any]
    ) -> defer.Deferred:
        try:
            qname = normalize_domain(name)
        except InvalidDomainName as exc:
            return defer.fail(exc)
        d = self._lookup_rrset(qname, record_type)
        d.addCallback(lambda rrs: [convert(rr) for rr in rrs])
        return d

    def _lookup_rrset(self, qname: str, record_type: int) -> defer.Deferred:
        """The RRs of ``record_type`` at the end of ``qname``'s CNAME chain (cached)."""
        key = (qname, record_type)
        entry = self._cache.get(key)
        if entry is not None:
            if entry.expires > self._clock.seconds():
                self._cache.move_to_end(key)
                return defer.succeed(list(entry.value))
            del self._cache[key]
        waiting = self._in_flight.get(key)
        if waiting is not None:
            # Coalesce identical concurrent lookups into one query.
            d: defer.Deferred = defer.Deferred()
            waiting.append(d)
            return d
        self._in_flight[key] = []
        query_d = defer.ensureDeferred(self._resolve(qname, record_type))

        def done(rrs: list) -> list:
            for waiter in self._in_flight.pop(key, []):
                waiter.callback(list(rrs))
            return rrs

        def failed(failure: Any) -> Any:
            for waiter in self._in_flight.pop(key, []):
                waiter.errback(failure)
            return failure

        query_d.addCallbacks(done, failed)
        return query_d

    async def _resolve(self, qname: str, record_type: int) -> list:
        type_name = tdns.QUERY_TYPES.get(record_type, "TLSA" if record_type == TLSA_TYPE else str(record_type))
        current = qname
        seen: set[str] = set()
        min_ttl: int | None = None
        for _hop in range(MAX_CNAME_CHAIN + 1):
            answers, authority = await self._query(qname, current, record_type, type_name)
            if answers is None:
                # NXDOMAIN or NODATA somewhere along the chain.
                self._store(qname, record_type, [], self._negative_ttl(authority))
                return []
            rrs, target, chain_ttl = self._follow_chain(current, record_type, answers)
            min_ttl = chain_ttl if min_ttl is None else min(min_ttl, chain_ttl)
            if rrs:
                ttl = min([min_ttl] + [rr.ttl for rr in rrs])
                self._store(qname, record_type, rrs, min(ttl, self._positive_ttl_cap))
                return rrs
            if target is None or target == current:
                self._store(qname, record_type, [], self._negative_ttl(authority))
                return []
            if target in seen:
                raise DNSTemporaryError(qname, type_name, "CNAME loop")
            seen.add(current)
            current = target
        raise DNSTemporaryError(qname, type_name, "CNAME chain too long")

    async def _query(
        self, qname: str, name: str, record_type: int, type_name: str
    ) -> tuple[list | None, list]:
        """One query; ``(None, authority)`` for NXDOMAIN/NODATA, failures raised as temporary."""
        query = tdns.Query(name.encode("ascii"), record_type, tdns.IN)
        try:
            answers, authority, _additional = await self._client.query(
                query, timeout=self._attempt_timeouts
            )
        except dns_error.DNSNameError as exc:
            message = exc.args[0] if exc.args else None
            return None, list(getattr(message, "authority", []) or [])
        except dns_error.DNSServerError as exc:
            raise DNSTemporaryError(qname, type_name, "SERVFAIL") from exc
        except dns_error.DNSQueryRefusedError as exc:
            raise DNSTemporaryError(qname, type_name, "REFUSED") from exc
        except (dns_error.DNSFormatError, dns_error.DNSNotImplementedError) as exc:
            raise DNSTemporaryError(qname, type_name, "server rejected the query") from exc
        except dns_error.DNSUnknownError as exc:
            raise DNSTemporaryError(qname, type_name, "unknown DNS error") from exc
        except defer.TimeoutError as exc:
            raise DNSTemporaryError(qname, type_name, "timeout") from exc
        except Exception as exc:  # connection refused, malformed packet, ...
            self.log.debug("DNS query for {name} failed: {exc!r}", name=name, exc=exc)
            raise DNSTemporaryError(qname, type_name, f"{type(exc).__name__}: {exc}") from exc
        if not answers:
            return None, list(authority)
        return list(answers), list(authority)

    @staticmethod
    def _follow_chain(
        name: str, record_type: int, answers: list
    ) -> tuple[list, str | None, int]:
        """Walk the CNAME chain from ``name`` inside one answer section.

        Returns the matching RRs at the chain's end, the name to query next when the chain
        leaves the answer without data, and the smallest TTL seen on the chain.
        """
        current = name
        min_ttl = 2**31 - 1
        for _hop in range(MAX_CNAME_CHAIN + 1):
            matching = [
                rr
                for rr in answers
                if rr.type == record_type and rr.name.name.decode("ascii", "replace").rstrip(".").lower() == current
            ]
            if matching:
                return matching, current, min_ttl
            cnames = [
                rr
                for rr in answers
                if rr.type == tdns.CNAME and rr.name.name.decode("ascii", "replace").rstrip(".").lower() == current
            ]
            if not cnames:
                return [], (current if current != name else None), min_ttl
            min_ttl = min(min_ttl, cnames[0].ttl)
            current = cnames[0].payload.name.name.decode("ascii", "replace").rstrip(".").lower()
        return [], current, min_ttl

    def _negative_ttl(self, authority: list) -> int:
        """RFC 2308 section 5: cache a negative answer for min(SOA TTL, SOA MINIMUM).

        Without an SOA in the authority section the answer is not cached (section 5,
        "negative responses without SOA records SHOULD NOT be cached").
        """
        for rr in authority:
            if rr.type == tdns.SOA:
                return max(0, min(rr.ttl, rr.payload.minimum, self._negative_ttl_cap))
        return 0

    def _store(self, qname: str, record_type: int, rrs: list, ttl: int) -> None:
        if ttl <= 0 or self._cache_entries <= 0:
            return
        key = (qname, record_type)
        self._cache[key] = _CacheEntry(self._clock.seconds() + ttl, list(rrs))
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_entries:
            self._cache.popitem(last=False)
