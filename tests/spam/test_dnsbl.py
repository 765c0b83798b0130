"""DNS list lookups (RFC 5782) against an authoritative fixture server on loopback."""

from __future__ import annotations

import pytest
import pytest_twisted

from mailserve.spam.dnsbl import DNSListChecker, reversed_ip_name
from mailserve.spam.settings import load_settings


def test_reversed_names():
    assert reversed_ip_name("192.0.2.99") == "99.2.0.192"
    assert reversed_ip_name("::ffff:192.0.2.99") == "99.2.0.192"
    assert reversed_ip_name("2001:db8::1").startswith("1.0.0.0.0.0.0.0.")
    assert reversed_ip_name("2001:db8::1").endswith(".8.b.d.0.1.0.0.2")
    assert len(reversed_ip_name("2001:db8::1").split(".")) == 32


@pytest.fixture
def checker(dns_server):
    return DNSListChecker(dns_server.resolver(timeout=1.0), load_settings().dnsbls)


@pytest_twisted.ensureDeferred
async def test_listed_ip_and_domains(dns_server, checker):
    dns_server.add("99.2.0.192.zen.spamhaus.org", "A", "127.0.0.2")
    dns_server.add("99.2.0.192.zen.spamhaus.org", "A", "127.0.0.4")
    dns_server.add("99.2.0.192.list.dnswl.org", "A", "127.0.0.3")
    dns_server.add("spam-shop.example.dbl.spamhaus.org", "A", "127.0.1.2")
    dns_server.add("spam-shop.example.multi.surbl.org", "A", "127.0.0.72")  # 64 + 8
    hits = await checker.check("192.0.2.99", ["spam-shop.example", "clean.example"])
    assert sorted(hits) == sorted([
        ("RBL_SPAMHAUS_SBL", "192.0.2.99"), ("RBL_SPAMHAUS_XBL", "192.0.2.99"),
        ("RCVD_IN_DNSWL_HI", "192.0.2.99"), ("DBL_SPAM", "spam-shop.example"),
        ("SURBL_PHISH", "spam-shop.example"), ("SURBL_ABUSE", "spam-shop.example"),
    ])


@pytest_twisted.ensureDeferred
async def test_answers_outside_loopback_and_unknown_codes_are_ignored(dns_server, checker):
    dns_server.add("99.2.0.192.zen.spamhaus.org", "A", "198.51.100.1")  # a wildcarding resolver
    dns_server.add("99.2.0.192.bl.spamcop.net", "A", "127.255.255.254")  # "query refused" code
    assert await checker.check("192.0.2.99", []) == []


@pytest_twisted.ensureDeferred
async def test_failing_lists_cost_nothing(dns_server):
    dns_server.add("99.2.0.192.bl.spamcop.net", "A", "127.0.0.2")
    dns_server.fail("99.2.0.192.zen.spamhaus.org")
    dns_server.drop("99.2.0.192.list.dnswl.org")
    checker = DNSListChecker(dns_server.resolver(timeout=0.5), load_settings().dnsbls)
    assert await checker.check("192.0.2.99", []) == [("RBL_SPAMCOP", "192.0.2.99")]


@pytest_twisted.ensureDeferred
async def test_lookups_are_cached_and_internal_addresses_never_sent(dns_server, checker):
    await checker.check("192.0.2.99", ["a.example"])
    first = len(dns_server.queries)
    assert first == 3 + 3  # three IP lists, three domain lists, in one go
    await checker.check("192.0.2.99", ["a.example"])
    assert len(dns_server.queries) == first  # NXDOMAIN answers cached for their SOA TTL
    await checker.check("10.1.2.3", [], ip_literals=["127.0.0.1", "192.168.1.1", "fe80::1"])
    assert len(dns_server.queries) == first
