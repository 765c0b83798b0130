"""mailserve.dns.Resolver against the fixture name server over real UDP/TCP sockets."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock

from mailserve.dns import (
    DNSTemporaryError,
    InvalidDomainName,
    MXRecord,
    Resolver,
    TLSARecord,
    is_null_mx,
    normalize_domain,
    read_resolv_conf,
)
from tests import dnsfixture

dns_server = dnsfixture.dns_server


@pytest_twisted.ensureDeferred
async def test_address_records(dns_server):
    dns_server.add("host.example.org", "A", "192.0.2.10")
    dns_server.add("host.example.org", "A", "192.0.2.11")
    dns_server.add("host.example.org", "AAAA", "2001:db8:0:0::25")
    resolver = dns_server.resolver()
    assert sorted(await resolver.a("host.example.org")) == ["192.0.2.10", "192.0.2.11"]
    assert await resolver.aaaa("HOST.Example.org.") == ["2001:db8::25"]


@pytest_twisted.ensureDeferred
async def test_mx_sorted_by_preference(dns_server):
    dns_server.add("example.org", "MX", (20, "backup.example.org"))
    dns_server.add("example.org", "MX", (5, "primary.example.org"))
    dns_server.add("example.org", "MX", (10, "Second.Example.org"))
    records = await dns_server.resolver().mx("example.org")
    assert records == [(5, "primary.example.org"), (10, "second.example.org"), (20, "backup.example.org")]
    assert isinstance(records[0], MXRecord)
    assert not is_null_mx(records)


@pytest_twisted.ensureDeferred
async def test_null_mx_is_visible(dns_server):
    dns_server.add("nomail.example.org", "MX", (0, "."))
    records = await dns_server.resolver().mx("nomail.example.org")
    assert records == [(0, "")]
    assert is_null_mx(records)


@pytest_twisted.ensureDeferred
async def test_txt_multi_string_records_are_joined(dns_server):
    dns_server.add("example.org", "TXT", ["v=spf1 ip4:192.0.2.0/24 ", "-all"])
    dns_server.add("example.org", "TXT", "unrelated")
    records = await dns_server.resolver().txt("example.org")
    assert sorted(records) == [b"unrelated", b"v=spf1 ip4:192.0.2.0/24 -all"]


@pytest_twisted.ensureDeferred
async def test_long_txt_falls_back_to_tcp(dns_server):
    # 2048-bit DKIM keys and several of them exceed the 512-octet UDP limit.
    long_value = ("v=DKIM1; k=rsa; p=" + "A" * 400).encode()
    dns_server.add("sel._domainkey.example.org", "TXT", long_value)
    dns_server.add("sel._domainkey.example.org", "TXT", b"x" * 300)
    records = await dns_server.resolver().txt("sel._domainkey.example.org")
    assert long_value in records
    assert b"x" * 300 in records


@pytest_twisted.ensureDeferred
async def test_ptr(dns_server):
    dns_server.add_ptr("192.0.2.7", "mail.example.org")
    dns_server.add_ptr("2001:db8::7", "mail6.example.org")
    resolver = dns_server.resolver()
    assert await resolver.ptr("192.0.2.7") == ["mail.example.org"]
    assert await resolver.ptr("2001:db8::7") == ["mail6.example.org"]
    with pytest.raises(ValueError):
        await resolver.ptr("not-an-ip")


@pytest_twisted.ensureDeferred
async def test_cname_chain_is_followed(dns_server):
    dns_server.add("www.example.org", "CNAME", "web.example.org")
    dns_server.add("web.example.org", "CNAME", "final.example.net")
    dns_server.add("final.example.net", "A", "198.51.100.4")
    assert await dns_server.resolver().a("www.example.org") == ["198.51.100.4"]


@pytest_twisted.ensureDeferred
async def test_tlsa(dns_server):
    digest = bytes(range(32))
    dns_server.add("_25._tcp.mx.example.org", "TLSA", (3, 1, 1, digest))
    records = await dns_server.resolver().tlsa("_25._tcp.mx.example.org")
    assert records == [TLSARecord(3, 1, 1, digest)]


@pytest_twisted.ensureDeferred
async def test_nxdomain_and_nodata_are_empty(dns_server):
    dns_server.add("exists.example.org", "A", "192.0.2.1")
    resolver = dns_server.resolver()
    assert await resolver.txt("missing.example.org") == []  # NXDOMAIN
    assert await resolver.mx("exists.example.org") == []  # NODATA
    # An empty non-terminal exists (RFC 8020): NODATA, not NXDOMAIN.
    dns_server.add("sel._domainkey.example.org", "TXT", "v=DKIM1; p=")
    assert await resolver.txt("_domainkey.example.org") == []


@pytest_twisted.ensureDeferred
async def test_servfail_is_temporary(dns_server):
    dns_server.add("broken.example.org", "TXT", "v=spf1 -all")
    dns_server.fail("broken.example.org")
    with pytest.raises(DNSTemporaryError) as info:
        await dns_server.resolver().txt("broken.example.org")
    assert "SERVFAIL" in str(info.value)
    dns_server.heal("broken.example.org")
    assert await dns_server.resolver().txt("broken.example.org") == [b"v=spf1 -all"]


@pytest_twisted.ensureDeferred
async def test_timeout_is_temporary(dns_server):
    dns_server.drop("slow.example.org")
    with pytest.raises(DNSTemporaryError) as info:
        await dns_server.resolver(timeout=0.4).a("slow.example.org")
    assert "timeout" in str(info.value)


@pytest_twisted.ensureDeferred
async def test_unreachable_server_is_temporary(dns_server):
    port = dns_server.port
    await dns_server.stop()
    resolver = Resolver(servers=[("127.0.0.1", port)], timeout=0.4)
    with pytest.raises(DNSTemporaryError):
        await resolver.a("example.org")


@pytest_twisted.ensureDeferred
async def test_positive_answers_cached_until_ttl(dns_server):
    clock = Clock()
    dns_server.add("cached.example.org", "A", "192.0.2.1", ttl=100)
    resolver = dns_server.resolver(clock=clock)
    assert await resolver.a("cached.example.org") == ["192.0.2.1"]
    dns_server.set("cached.example.org", "A", ["192.0.2.2"])
    assert await resolver.a("cached.example.org") == ["192.0.2.1"]
    assert dns_server.queries.count(("cached.example.org", "A")) == 1
    clock.advance(101)
    assert await resolver.a("cached.example.org") == ["192.0.2.2"]
    assert dns_server.queries.count(("cached.example.org", "A")) == 2


@pytest_twisted.ensureDeferred
async def test_negative_answers_cached_per_soa_with_cap(dns_server):
    clock = Clock()
    dns_server.negative_ttl = 3600
    resolver = dns_server.resolver(clock=clock, negative_ttl_cap=30)
    assert await resolver.txt("later.example.org") == []
    dns_server.add("later.example.org", "TXT", "now here")
    assert await resolver.txt("later.example.org") == []  # negatively cached
    clock.advance(31)  # the cap, not the SOA's hour, bounds the negative TTL
    assert await resolver.txt("later.example.org") == [b"now here"]


@pytest_twisted.ensureDeferred
async def test_failures_are_not_cached(dns_server):
    dns_server.fail("flaky.example.org")
    resolver = dns_server.resolver()
    with pytest.raises(DNSTemporaryError):
        await resolver.a("flaky.example.org")
    dns_server.heal("flaky.example.org")
    dns_server.add("flaky.example.org", "A", "192.0.2.9")
    assert await resolver.a("flaky.example.org") == ["192.0.2.9"]


@pytest_twisted.ensureDeferred
async def test_cache_is_bounded(dns_server):
    for index in range(5):
        dns_server.add(f"h{index}.example.org", "A", f"192.0.2.{index + 1}")
    resolver = dns_server.resolver(cache_entries=2)
    for index in range(5):
        await resolver.a(f"h{index}.example.org")
    assert len(resolver._cache) == 2
    await resolver.a("h0.example.org")  # evicted: asked again
    assert dns_server.queries.count(("h0.example.org", "A")) == 2


@pytest_twisted.ensureDeferred
async def test_concurrent_identical_lookups_share_one_query(dns_server):
    dns_server.add("busy.example.org", "A", "192.0.2.3")
    resolver = dns_server.resolver()
    results = await defer.gatherResults([resolver.a("busy.example.org") for _ in range(5)])
    assert results == [["192.0.2.3"]] * 5
    assert dns_server.queries.count(("busy.example.org", "A")) == 1


@pytest_twisted.ensureDeferred
async def test_invalid_names_rejected_before_sending(dns_server):
    resolver = dns_server.resolver()
    with pytest.raises(InvalidDomainName):
        await resolver.a("a..example.org")
    with pytest.raises(InvalidDomainName):
        await resolver.a(("x" * 64) + ".example.org")
    with pytest.raises(InvalidDomainName):
        await resolver.txt(".".join(["abcdefghi"] * 30))
    assert dns_server.queries == []


def test_normalize_domain_idna():
    assert normalize_domain("Bücher.Example.") == "xn--bcher-kva.example"
    with pytest.raises(InvalidDomainName):
        normalize_domain("")


def test_read_resolv_conf(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nsearch example.org\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nnameserver bogus\n")
    assert read_resolv_conf(str(conf)) == [("192.0.2.53", 53), ("fe80::1", 53)]
    assert read_resolv_conf(str(tmp_path / "missing")) == [("127.0.0.1", 53)]


def test_timeout_must_be_positive():
    with pytest.raises(ValueError):
        Resolver(servers=[("127.0.0.1", 53)], timeout=0)
