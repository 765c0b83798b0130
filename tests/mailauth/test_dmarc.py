"""DMARC (RFC 7489) policy discovery, alignment and disposition."""

from __future__ import annotations

import pytest
import pytest_twisted

from mailserve.mailauth.dkim import DKIMResult
from mailserve.mailauth.dmarc import (
    DMARCRecordError,
    FromDomainError,
    check_dmarc,
    from_domain_of,
    parse_dmarc_record,
)
from mailserve.mailauth.psl import PublicSuffixList
from mailserve.mailauth.spf import SPFResult


def spf(result, domain):
    return SPFResult(result, domain, "")


def dkim(result, domain):
    return DKIMResult(domain, "sel", result, "rsa-sha256", "abcdefgh")


@pytest.fixture
def zone(dns_server):
    dns_server.add("_dmarc.example.org", "TXT", "v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@example.org")
    dns_server.add("_dmarc.strict.example", "TXT", "v=DMARC1; p=reject; adkim=s; aspf=s")
    dns_server.add("_dmarc.example.co.uk", "TXT", "v=DMARC1; p=quarantine; sp=reject")
    dns_server.add("_dmarc.sampled.example", "TXT", "v=DMARC1; p=reject; pct=20")
    dns_server.add("_dmarc.sampledq.example", "TXT", "v=DMARC1; p=quarantine; pct=50")
    dns_server.add("_dmarc.monitor.example", "TXT", "v=DMARC1; p=none")
    dns_server.add("_dmarc.twice.example", "TXT", "v=DMARC1; p=reject")
    dns_server.add("_dmarc.twice.example", "TXT", "v=DMARC1; p=none")
    dns_server.add("_dmarc.broken.example", "TXT", "v=DMARC1; p=bogus")
    dns_server.add("_dmarc.ruaonly.example", "TXT", "v=DMARC1; rua=mailto:r@ruaonly.example")
    dns_server.add("_dmarc.other.example", "TXT", "some other text")
    return dns_server


async def dmarc(zone, from_domain, spf_result=None, dkim_results=(), **kwargs):
    return await check_dmarc(zone.resolver(), from_domain, spf_result, list(dkim_results), **kwargs)


@pytest_twisted.ensureDeferred
async def test_pass_by_aligned_spf_or_dkim(zone):
    by_spf = await dmarc(zone, "example.org", spf("pass", "example.org"))
    assert (by_spf.result, by_spf.spf_aligned, by_spf.dkim_aligned) == ("pass", True, False)
    by_dkim = await dmarc(zone, "example.org", spf("fail", "example.org"), [dkim("pass", "example.org")])
    assert (by_dkim.result, by_dkim.dkim_aligned) == ("pass", True)
    assert by_dkim.disposition == "none"


@pytest_twisted.ensureDeferred
async def test_fail_applies_policy(zone):
    result = await dmarc(zone, "example.org", spf("pass", "elsewhere.example"), [dkim("pass", "esp.example")])
    assert (result.result, result.policy, result.disposition) == ("fail", "reject", "reject")
    assert "not aligned" in result.reason


@pytest_twisted.ensureDeferred
async def test_relaxed_alignment_accepts_same_organization(zone):
    result = await dmarc(zone, "example.org", spf("pass", "bounces.example.org"), [dkim("pass", "mail.example.org")])
    assert (result.result, result.spf_aligned, result.dkim_aligned) == ("pass", True, True)


@pytest_twisted.ensureDeferred
async def test_strict_alignment_needs_exact_match(zone):
    result = await dmarc(
        zone, "strict.example", spf("pass", "bounce.strict.example"), [dkim("pass", "mail.strict.example")]
    )
    assert (result.result, result.disposition) == ("fail", "reject")
    exact = await dmarc(zone, "strict.example", spf("fail", "x"), [dkim("pass", "strict.example")])
    assert exact.result == "pass"


@pytest_twisted.ensureDeferred
async def test_subdomain_uses_org_domain_record_and_sp(zone):
    result = await dmarc(zone, "news.example.org", spf("fail", "news.example.org"))
    assert (result.policy_domain, result.organizational_domain) == ("example.org", "example.org")
    assert (result.result, result.policy, result.disposition) == ("fail", "quarantine", "quarantine")


@pytest_twisted.ensureDeferred
async def test_org_domain_via_public_suffix_list(zone):
    # co.uk is a public suffix, so mail.example.co.uk's organization is example.co.uk.
    failed = await dmarc(zone, "mail.example.co.uk", spf("pass", "other.co.uk"))
    assert failed.organizational_domain == "example.co.uk"
    assert failed.policy_domain == "example.co.uk"
    assert (failed.result, failed.policy) == ("fail", "reject")  # sp= applies
    # Relaxed alignment within example.co.uk passes; across co.uk it must not.
    passed = await dmarc(zone, "mail.example.co.uk", spf("pass", "bounce.example.co.uk"))
    assert passed.result == "pass"
    at_org = await dmarc(zone, "example.co.uk", spf("fail", "example.co.uk"))
    assert (at_org.policy, at_org.disposition) == ("quarantine", "quarantine")


@pytest_twisted.ensureDeferred
async def test_pct_sampling_downgrades(zone):
    inside = await dmarc(zone, "sampled.example", spf("fail", "sampled.example"), random=lambda: 0.1)
    assert (inside.disposition, inside.sampled_out) == ("reject", False)
    outside = await dmarc(zone, "sampled.example", spf("fail", "sampled.example"), random=lambda: 0.5)
    assert (outside.policy, outside.disposition, outside.sampled_out) == ("reject", "quarantine", True)
    q_out = await dmarc(zone, "sampledq.example", spf("fail", "sampledq.example"), random=lambda: 0.9)
    assert q_out.disposition == "none"


@pytest_twisted.ensureDeferred
async def test_no_policy_cases(zone):
    assert (await dmarc(zone, "nodmarc.example")).result == "none"
    assert (await dmarc(zone, "other.example")).result == "none"  # TXT that is not DMARC
    twice = await dmarc(zone, "twice.example")
    assert (twice.result, twice.reason) == ("none", "several DMARC records")
    monitor = await dmarc(zone, "monitor.example", spf("fail", "monitor.example"))
    assert (monitor.result, monitor.disposition) == ("fail", "none")


@pytest_twisted.ensureDeferred
async def test_invalid_records(zone):
    assert (await dmarc(zone, "broken.example")).result == "permerror"
    # Section 6.6.3: a record without a valid p= but with rua acts as p=none.
    rua_only = await dmarc(zone, "ruaonly.example", spf("fail", "ruaonly.example"))
    assert (rua_only.result, rua_only.policy) == ("fail", "none")


@pytest_twisted.ensureDeferred
async def test_temperror(zone):
    zone.fail("_dmarc.example.org")
    result = await dmarc(zone, "example.org", spf("pass", "example.org"))
    assert result.result == "temperror"


@pytest_twisted.ensureDeferred
async def test_custom_public_suffix_list(zone):
    psl = PublicSuffixList("org\nexample.org\n")
    # With example.org declared public, news.example.org is its own organization.
    result = await dmarc(zone, "news.example.org", spf("fail", "x"), psl=psl)
    assert result.organizational_domain == "news.example.org"
    assert result.result == "none"


def test_parse_record():
    record = parse_dmarc_record("v=DMARC1;p=quarantine; pct=30; adkim=s; rua=mailto:a@x.example,mailto:b@x.example; foo=bar")
    assert (record.policy, record.subdomain_policy, record.percent, record.dkim_alignment) == (
        "quarantine", "quarantine", 30, "s",
    )
    assert record.rua == ("mailto:a@x.example", "mailto:b@x.example")
    with pytest.raises(DMARCRecordError):
        parse_dmarc_record("p=reject; v=DMARC1")
    with pytest.raises(DMARCRecordError):
        parse_dmarc_record("v=DMARC1; p=reject; " + "x" * 5000)
    assert parse_dmarc_record("v=DMARC1; p=reject; pct=250").percent == 100


def test_from_domain():
    assert from_domain_of("Alice <alice@Mail.Example.ORG>") == "mail.example.org"
    assert from_domain_of("a@example.org, b@example.org") == "example.org"
    with pytest.raises(FromDomainError):
        from_domain_of("a@example.org, b@example.net")
    with pytest.raises(FromDomainError):
        from_domain_of("undisclosed-recipients:;")
    with pytest.raises(FromDomainError):
        from_domain_of("alice")
