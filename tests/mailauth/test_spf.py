"""SPF (RFC 7208) checks against zones served by the DNS fixture."""

from __future__ import annotations

import pytest
import pytest_twisted

from mailserve.mailauth.spf import check_spf, check_spf_helo
from tests import dnsfixture

dns_server = dnsfixture.dns_server

CLIENT = "192.0.2.10"


@pytest.fixture
def zone(dns_server):
    dns_server.add("example.org", "TXT", "v=spf1 ip4:192.0.2.0/24 include:_spf.partner.example -all")
    dns_server.add("example.org", "TXT", "google-site-verification=unrelated")
    dns_server.add("_spf.partner.example", "TXT", "v=spf1 ip6:2001:db8::/32 a:relay.partner.example -all")
    dns_server.add("relay.partner.example", "A", "198.51.100.20")
    dns_server.add("soft.example", "TXT", "v=spf1 ip4:203.0.113.1 ~all")
    dns_server.add("neutral.example", "TXT", "v=spf1 ?all")
    dns_server.add("mx.example", "TXT", "v=spf1 mx -all")
    dns_server.add("mx.example", "MX", (10, "in1.mx.example"))
    dns_server.add("mx.example", "MX", (20, "in2.mx.example"))
    dns_server.add("in2.mx.example", "A", "192.0.2.99")
    dns_server.add("in1.mx.example", "A", "192.0.2.98")
    dns_server.add("redirect.example", "TXT", "v=spf1 redirect=example.org")
    dns_server.add("syntax.example", "TXT", "v=spf1 ip4:192.0.2.300 -all")
    dns_server.add("unknownmech.example", "TXT", "v=spf1 frobnicate -all")
    dns_server.add("two.example", "TXT", "v=spf1 -all")
    dns_server.add("two.example", "TXT", "v=spf1 +all")
    # A chain of includes that needs more than the 10 DNS-querying terms allowed.
    for index in range(12):
        dns_server.add(f"l{index}.loop.example", "TXT", f"v=spf1 include:l{index + 1}.loop.example -all")
    dns_server.add("l12.loop.example", "TXT", "v=spf1 +all")
    dns_server.add("voids.example", "TXT", "v=spf1 a:n1.voids.example a:n2.voids.example a:n3.voids.example -all")
    dns_server.add("broken.example", "TXT", "v=spf1 include:down.example -all")
    dns_server.add("ptr.example", "TXT", "v=spf1 ptr -all")
    dns_server.add_ptr(CLIENT, "host.ptr.example")
    dns_server.add("host.ptr.example", "A", CLIENT)
    dns_server.add("explained.example", "TXT", "v=spf1 -all exp=why.explained.example")
    dns_server.add("why.explained.example", "TXT", "%{i} is not one of %{d}'s designated mail servers.")
    dns_server.add("mail.example.org", "TXT", "v=spf1 a -all")
    dns_server.add("mail.example.org", "A", CLIENT)
    dns_server.add("macro.example", "TXT", "v=spf1 exists:%{ir}.allow.macro.example -all")
    dns_server.add("10.2.0.192.allow.macro.example", "A", "127.0.0.2")
    return dns_server


async def spf(zone, mail_from, ip=CLIENT, helo="mail.example.org"):
    return await check_spf(zone.resolver(), ip, mail_from, helo)


@pytest_twisted.ensureDeferred
async def test_pass_fail_through_include(zone):
    assert (await spf(zone, "alice@example.org")).result == "pass"
    assert (await spf(zone, "alice@example.org", ip="2001:db8::5")).result == "pass"
    assert (await spf(zone, "alice@example.org", ip="198.51.100.20")).result == "pass"
    failed = await spf(zone, "alice@example.org", ip="203.0.113.5")
    assert failed.result == "fail"
    assert failed.domain == "example.org"
    assert failed.identity == "mailfrom"


@pytest_twisted.ensureDeferred
async def test_softfail_neutral_none(zone):
    assert (await spf(zone, "bob@soft.example")).result == "softfail"
    assert (await spf(zone, "bob@soft.example", ip="203.0.113.1")).result == "pass"
    assert (await spf(zone, "bob@neutral.example")).result == "neutral"
    assert (await spf(zone, "bob@nospf.example")).result == "none"


@pytest_twisted.ensureDeferred
async def test_mx_and_redirect(zone):
    assert (await spf(zone, "x@mx.example", ip="192.0.2.99")).result == "pass"
    assert (await spf(zone, "x@mx.example", ip="192.0.2.97")).result == "fail"
    redirected = await spf(zone, "x@redirect.example")
    assert redirected.result == "pass"


@pytest_twisted.ensureDeferred
async def test_permerror_syntax(zone):
    bad_ip = await spf(zone, "x@syntax.example")
    assert bad_ip.result == "permerror"
    assert "192.0.2.300" in bad_ip.explanation
    assert (await spf(zone, "x@unknownmech.example")).result == "permerror"
    # RFC 7208 section 4.5: two SPF records is a permerror.
    assert (await spf(zone, "x@two.example")).result == "permerror"


@pytest_twisted.ensureDeferred
async def test_permerror_too_many_lookups(zone):
    result = await spf(zone, "x@l0.loop.example")
    assert result.result == "permerror"
    assert "lookups" in result.explanation.lower()
    # The limit stops the queries: the 12th include is never fetched.
    assert ("l12.loop.example", "TXT") not in zone.queries


@pytest_twisted.ensureDeferred
async def test_permerror_void_lookups(zone):
    result = await spf(zone, "x@voids.example", ip="203.0.113.9")
    assert result.result == "permerror"
    assert "void" in result.explanation.lower()


@pytest_twisted.ensureDeferred
async def test_temperror_on_servfail(zone):
    zone.fail("down.example")
    result = await spf(zone, "x@broken.example", ip="203.0.113.9")
    assert result.result == "temperror"
    zone.fail("example.org", "TXT")
    assert (await spf(zone, "alice@example.org")).result == "temperror"


@pytest_twisted.ensureDeferred
async def test_temperror_on_timeout(zone):
    zone.drop("soft.example")
    result = await check_spf(zone.resolver(timeout=0.3), CLIENT, "x@soft.example", "mail.example.org")
    assert result.result == "temperror"


@pytest_twisted.ensureDeferred
async def test_ptr_mechanism(zone):
    assert (await spf(zone, "x@ptr.example")).result == "pass"
    assert (await spf(zone, "x@ptr.example", ip="192.0.2.11")).result == "fail"


@pytest_twisted.ensureDeferred
async def test_macro_exists(zone):
    assert (await spf(zone, "x@macro.example")).result == "pass"
    assert (await spf(zone, "x@macro.example", ip="192.0.2.11")).result == "fail"


@pytest_twisted.ensureDeferred
async def test_explanation_on_fail(zone):
    result = await spf(zone, "x@explained.example")
    assert result.result == "fail"
    assert result.explanation == "192.0.2.10 is not one of explained.example's designated mail servers."


@pytest_twisted.ensureDeferred
async def test_helo_identity(zone):
    result = await check_spf_helo(zone.resolver(), CLIENT, "mail.example.org")
    assert (result.result, result.identity, result.sender) == ("pass", "helo", "postmaster@mail.example.org")
    assert (await check_spf_helo(zone.resolver(), "192.0.2.11", "mail.example.org")).result == "fail"
    literal = await check_spf_helo(zone.resolver(), CLIENT, "[192.0.2.10]")
    assert literal.result == "none"


@pytest_twisted.ensureDeferred
async def test_null_reverse_path_checks_helo(zone):
    result = await check_spf(zone.resolver(), CLIENT, "", "mail.example.org")
    assert (result.result, result.identity) == ("pass", "helo")
    result = await check_spf(zone.resolver(), "192.0.2.11", "<>", "mail.example.org")
    assert result.result == "fail"


@pytest_twisted.ensureDeferred
async def test_ipv4_mapped_client(zone):
    assert (await spf(zone, "alice@example.org", ip="::ffff:192.0.2.10")).result == "pass"


def test_bad_client_ip_is_rejected(zone):
    with pytest.raises(ValueError):
        check_spf(zone.resolver(), "not-an-ip", "a@example.org", "mail.example.org")
