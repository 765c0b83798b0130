"""An authoritative DNS server for tests, serving zones given as Python data.

Any test that needs DNS (SPF, DKIM, DMARC, MX routing, DANE, DNSBLs) starts one of these on
127.0.0.1 with an ephemeral port (UDP and TCP on the same port number, so truncated UDP
answers fall back to TCP as in real life) and builds a :class:`mailserve.dns.Resolver`
pointing at it.  Names can be made to answer SERVFAIL or not answer at all, to exercise the
temporary-error paths.

Usage with pytest (bind the fixture in your test module or conftest.py)::

    from tests import dnsfixture

    dns_server = dnsfixture.dns_server

    @pytest_twisted.ensureDeferred
    async def test_mx(dns_server):
        dns_server.add("example.org", "MX", (10, "mx.example.org"))
        resolver = dns_server.resolver()
        assert await resolver.mx("example.org") == [(10, "mx.example.org")]

Record values by type:

* ``A`` / ``AAAA``: address strings.
* ``MX``: ``(preference, exchange)``; exchange ``""`` or ``"."`` is a null MX (RFC 7505).
* ``TXT``: ``str`` or ``bytes`` (split into 255-octet character-strings when longer), or a
  list of them for an explicitly multi-string record.
* ``PTR`` / ``CNAME`` / ``NS``: a domain name.  :meth:`DNSFixtureServer.add_ptr` takes an IP.
* ``TLSA``: ``(usage, selector, matching_type, data)`` with ``data`` as bytes or hex.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet import reactor as global_reactor
from twisted.names import common, dns, server

from mailserve.dns import TLSA_TYPE, Resolver, normalize_domain

_TYPE_CODES = {
    "A": dns.A,
    "AAAA": dns.AAAA,
    "MX": dns.MX,
    "TXT": dns.TXT,
    "PTR": dns.PTR,
    "CNAME": dns.CNAME,
    "NS": dns.NS,
    "SOA": dns.SOA,
    "TLSA": TLSA_TYPE,
}


def _type_code(record_type: str | int) -> int:
    if isinstance(record_type, int):
        return record_type
    try:
        return _TYPE_CODES[record_type.upper()]
    except KeyError as exc:
        raise ValueError(f"unsupported record type {record_type!r}") from exc


def _txt_strings(value: Any) -> list[bytes]:
    if isinstance(value, (list, tuple)):
        return [v.encode() if isinstance(v, str) else bytes(v) for v in value]
    data = value.encode() if isinstance(value, str) else bytes(value)
    if not data:
        return [b""]
    return [data[i : i + 255] for i in range(0, len(data), 255)]


class _ServerFailure(Exception):
    """The fixture was told to answer this name with SERVFAIL."""


class _NameError(dns.AuthoritativeDomainError):
    """NXDOMAIN, carrying the SOA for the authority section (RFC 2308 section 3)."""

    def __init__(self, soa: dns.RRHeader) -> None:
        super().__init__(soa)
        self.soa = soa


class _FixtureAuthority(common.ResolverBase):
    """Answers from the fixture's record table."""

    def __init__(self, fixture: DNSFixtureServer) -> None:
        super().__init__()
        self.fixture = fixture

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> defer.Deferred:
        return defer.maybeDeferred(self.fixture._answer, name, type)


class _FixtureServerFactory(server.DNSServerFactory):
    """A DNS server factory whose failures carry the right RCODE and no log noise."""

    def gotResolverError(self, failure, protocol, message, address):
        if failure.check(_NameError):
            response = self._responseFromMessage(
                message=message, rCode=dns.ENAME, authority=[failure.value.soa]
            )
            response.auth = 1
        elif failure.check(_ServerFailure):
            response = self._responseFromMessage(message=message, rCode=dns.ESERVER)
        else:
            return super().gotResolverError(failure, protocol, message, address)
        self.sendReply(protocol, response, address)

    def gotResolverResponse(self, response, protocol, message, address):
        ans, auth, add = response
        reply = self._responseFromMessage(
            message=message, rCode=dns.OK, answers=ans, authority=auth, additional=add
        )
        reply.auth = 1
        self.sendReply(protocol, reply, address)


class DNSFixtureServer:
    """A small authoritative server over a table of records, for tests.

    ``records`` maps owner names to ``{type: [values]}``; see the module docstring for
    value formats.  Every answer is authoritative; names absent from the table (and with
    no names below them) answer NXDOMAIN with an SOA, names present without the asked
    type answer NODATA with an SOA, so resolvers can cache negatively (RFC 2308).
    """

    def __init__(
        self,
        records: dict[str, dict[str, list]] | None = None,
        ttl: int = 300,
        negative_ttl: int = 60,
        reactor: Any = None,
    ) -> None:
        self.reactor = reactor if reactor is not None else global_reactor
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self._records: dict[str, dict[int, list]] = {}
        self._failing: set[tuple[str, int | None]] = set()
        self._silent: set[tuple[str, int | None]] = set()
        #: Every query received, as ``(name, type name)``, for tests that count lookups.
        self.queries: list[tuple[str, str]] = []
        self._udp_port = None
        self._tcp_port = None
        self.host = "127.0.0.1"
        self.port = 0
        for name, by_type in (records or {}).items():
            for record_type, values in by_type.items():
                for value in values:
                    self.add(name, record_type, value)

    # -- zone data ------------------------------------------------------------------

    def add(self, name: str, record_type: str | int, value: Any, ttl: int | None = None) -> None:
        """Add one record."""
        owner = normalize_domain(name)
        code = _type_code(record_type)
        rr = self._make_rr(owner, code, value, self.ttl if ttl is None else ttl)
        self._records.setdefault(owner, {}).setdefault(code, []).append(rr)

    def set(self, name: str, record_type: str | int, values: Iterable, ttl: int | None = None) -> None:
        """Replace the records of one type at ``name``."""
        self.remove(name, record_type)
        for value in values:
            self.add(name, record_type, value, ttl)

    def remove(self, name: str, record_type: str | int | None = None) -> None:
        """Remove every record at ``name`` (or just those of ``record_type``)."""
        owner = normalize_domain(name)
        if record_type is None:
            self._records.pop(owner, None)
            return
        by_type = self._records.get(owner, {})
        by_type.pop(_type_code(record_type), None)
        if not by_type:
            self._records.pop(owner, None)

    def add_ptr(self, ip: str, host: str) -> None:
        """Add a PTR record in the reverse zone for ``ip``."""
        self.add(ipaddress.ip_address(ip).reverse_pointer, "PTR", host)

    def fail(self, name: str, record_type: str | int | None = None) -> None:
        """Answer SERVFAIL for ``name`` (for every type, or just ``record_type``)."""
        code = None if record_type is None else _type_code(record_type)
        self._failing.add((normalize_domain(name), code))

    def drop(self, name: str, record_type: str | int | None = None) -> None:
        """Never answer queries for ``name``, so that the client times out."""
        code = None if record_type is None else _type_code(record_type)
        self._silent.add((normalize_domain(name), code))

    def heal(self, name: str) -> None:
        """Undo :meth:`fail` and :meth:`drop` for ``name``."""
        owner = normalize_domain(name)
        self._failing = {key for key in self._failing if key[0] != owner}
        self._silent = {key for key in self._silent if key[0] != owner}

    def _make_rr(self, owner: str, code: int, value: Any, ttl: int) -> dns.RRHeader:
        if code == dns.A:
            payload = dns.Record_A(str(value), ttl)
        elif code == dns.AAAA:
            payload = dns.Record_AAAA(str(value), ttl)
        elif code == dns.MX:
            preference, exchange = value
            exchange = "" if exchange in ("", ".") else normalize_domain(exchange)
            payload = dns.Record_MX(int(preference), exchange.encode("ascii"), ttl)
        elif code == dns.TXT:
            payload = dns.Record_TXT(*_txt_strings(value), ttl=ttl)
        elif code == dns.PTR:
            payload = dns.Record_PTR(normalize_domain(value).encode("ascii"), ttl)
        elif code == dns.CNAME:
            payload = dns.Record_CNAME(normalize_domain(value).encode("ascii"), ttl)
        elif code == dns.NS:
            payload = dns.Record_NS(normalize_domain(value).encode("ascii"), ttl)
        elif code == TLSA_TYPE:
            usage, selector, matching, data = value
            if isinstance(data, str):
                data = bytes.fromhex(data)
            payload = dns.UnknownRecord(struct.pack("!BBB", usage, selector, matching) + data, ttl)
        else:
            raise ValueError(f"unsupported record type code {code}")
        return dns.RRHeader(owner.encode("ascii"), code, dns.IN, ttl, payload, auth=True)

    def _soa(self, name: str) -> dns.RRHeader:
        labels = name.split(".")
        zone = ".".join(labels[-2:]) if len(labels) >= 2 else name
        payload = dns.Record_SOA(
            mname=b"ns." + zone.encode("ascii"),
            rname=b"hostmaster." + zone.encode("ascii"),
            serial=1,
            refresh=3600,
            retry=600,
            expire=86400,
            minimum=self.negative_ttl,
            ttl=self.negative_ttl,
        )
        return dns.RRHeader(zone.encode("ascii"), dns.SOA, dns.IN, self.negative_ttl, payload, auth=True)

    def _exists(self, name: str) -> bool:
        if name in self._records:
            return True
        suffix = "." + name
        return any(owner.endswith(suffix) for owner in self._records)

    def _answer(self, raw_name: bytes, code: int) -> Any:
        name = raw_name.decode("ascii", "replace").rstrip(".").lower()
        self.queries.append((name, dns.QUERY_TYPES.get(code, "TLSA" if code == TLSA_TYPE else str(code))))
        if (name, None) in self._silent or (name, code) in self._silent:
            return defer.Deferred()  # never fires: the client times out
        if (name, None) in self._failing or (name, code) in self._failing:
            raise _ServerFailure(name)
        answers: list[dns.RRHeader] = []
        current = name
        for _hop in range(16):
            by_type = self._records.get(current, {})
            if code in by_type:
                answers.extend(by_type[code])
                return answers, [], []
            if dns.CNAME in by_type and code != dns.CNAME:
                cname = by_type[dns.CNAME][0]
                answers.append(cname)
                current = cname.payload.name.name.decode("ascii")
                if (current, None) in self._failing:
                    raise _ServerFailure(current)
                continue
            break
        if answers:
            return answers, [], []
        if not self._exists(current):
            raise _NameError(self._soa(current))
        return [], [self._soa(current)], []

    # -- lifecycle --------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> DNSFixtureServer:
        """Listen on ``host`` with UDP and TCP on the same (ephemeral unless given) port."""
        factory = _FixtureServerFactory(authorities=[_FixtureAuthority(self)])
        factory.noisy = False
        protocol = dns.DNSDatagramProtocol(factory)
        protocol.noisy = False
        last_error: Exception | None = None
        for _attempt in range(20):
            tcp = self.reactor.listenTCP(port, factory, interface=host)
            chosen = tcp.getHost().port
            try:
                udp = self.reactor.listenUDP(chosen, protocol, interface=host)
            except Exception as exc:  # UDP port of that number taken: try another
                last_error = exc
                tcp.stopListening()
                if port:
                    raise
                continue
            self._tcp_port, self._udp_port = tcp, udp
            self.host, self.port = host, chosen
            return self
        raise RuntimeError(f"could not bind UDP and TCP on one port: {last_error}")

    def stop(self) -> defer.Deferred:
        """Stop listening; the Deferred fires once both ports are closed."""
        ports = [p for p in (self._udp_port, self._tcp_port) if p is not None]
        self._udp_port = self._tcp_port = None
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports])

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def resolver(self, timeout: float = 2.0, **kwargs: Any) -> Resolver:
        """A :class:`mailserve.dns.Resolver` that asks only this server."""
        return Resolver(servers=[self.address], timeout=timeout, reactor=self.reactor, **kwargs)


@pytest.fixture
def dns_server():
    """A started :class:`DNSFixtureServer` with no records, stopped after the test."""
    fixture = DNSFixtureServer().start()
    yield fixture
    pytest_twisted.blockon(fixture.stop())
