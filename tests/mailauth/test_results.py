"""Authentication-Results (RFC 8601) and the combined authenticate_message entry point."""

from __future__ import annotations

import authres
import pytest
import pytest_twisted

from mailserve.mailauth.arc import arc_seal
from mailserve.mailauth.dkim import DKIMResult, sign_dkim
from mailserve.mailauth.results import (
    authenticate_message,
    authentication_results_value,
    format_authentication_results,
    split_header_section,
    strip_authentication_results,
)
from mailserve.mailauth.spf import SPFResult

AUTHSERV = "mx.example.net"
CLIENT = "192.0.2.10"


@pytest.fixture
def zone(dns_server, rsa_key):
    dns_server.add("example.org", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    dns_server.add("mail.example.org", "TXT", "v=spf1 a -all")
    dns_server.add("mail.example.org", "A", CLIENT)
    dns_server.add("_dmarc.example.org", "TXT", "v=DMARC1; p=reject")
    dns_server.add("sel._domainkey.example.org", "TXT", rsa_key[1])
    dns_server.add("list.example", "TXT", "v=spf1 ip4:198.51.100.0/24 -all")
    dns_server.add("arc._domainkey.list.example", "TXT", rsa_key[1])
    return dns_server


def parse(header: bytes):
    """Parse our header back with an independent RFC 8601 parser (the authres package)."""
    unfolded = header.decode().replace("\r\n", "")
    return authres.AuthenticationResultsHeader.parse(unfolded)


def results_by_method(parsed):
    by_method = {}
    for result in parsed.results:
        by_method.setdefault(result.method, []).append(result)
    return by_method


@pytest_twisted.ensureDeferred
async def test_fully_authenticated_message(zone, rsa_key, message):
    signed = sign_dkim(message, "example.org", "sel", rsa_key[0]) + message
    verdict = await authenticate_message(
        zone.resolver(), signed, CLIENT, "mail.example.org", "alice@example.org", AUTHSERV
    )
    assert (verdict.spf.result, verdict.spf_helo.result) == ("pass", "pass")
    assert [d.result for d in verdict.dkim] == ["pass"]
    assert (verdict.dmarc.result, verdict.disposition, verdict.arc.result) == ("pass", "none", "none")
    assert verdict.aligned_pass
    assert verdict.from_domain == "example.org"
    assert verdict.header.startswith(b"Authentication-Results: mx.example.net;")
    assert all(len(line) <= 78 for line in verdict.header.split(b"\r\n"))
    parsed = parse(verdict.header)
    assert parsed.authserv_id == AUTHSERV
    methods = results_by_method(parsed)
    assert [r.result for r in methods["spf"]] == ["pass", "pass"]
    assert methods["dkim"][0].result == "pass"
    assert methods["dmarc"][0].result == "pass"
    assert methods["arc"][0].result == "none"
    properties = {(p.type, p.name): p.value for p in methods["dkim"][0].properties}
    assert properties[("header", "d")] == "example.org"
    assert properties[("header", "s")] == "sel"
    smtp = {(p.type, p.name): p.value for p in methods["spf"][0].properties}
    assert smtp[("smtp", "mailfrom")] == "alice@example.org"


@pytest_twisted.ensureDeferred
async def test_spoofed_message_gets_reject_disposition(zone, message):
    verdict = await authenticate_message(
        zone.resolver(), message, "203.0.113.66", "evil.example", "alice@example.org", AUTHSERV
    )
    assert verdict.spf.result == "fail"
    assert verdict.dkim == ()
    assert (verdict.dmarc.result, verdict.disposition) == ("fail", "reject")
    methods = results_by_method(parse(verdict.header))
    assert methods["dkim"][0].result == "none"
    assert methods["dmarc"][0].result == "fail"


@pytest_twisted.ensureDeferred
async def test_forged_results_are_stripped(zone, rsa_key, message):
    forged = (
        b"Authentication-Results: MX.Example.NET; dkim=pass header.d=example.org;\r\n"
        b"\tdmarc=pass header.from=example.org\r\n"
        b"Authentication-Results: other.example; spf=pass smtp.mailfrom=example.org\r\n"
    ) + message
    verdict = await authenticate_message(
        zone.resolver(), forged, "203.0.113.66", "evil.example", "alice@example.org", AUTHSERV
    )
    assert b"MX.Example.NET" not in verdict.message
    assert b"dmarc=pass header.from" not in verdict.message
    assert b"Authentication-Results: other.example;" in verdict.message
    assert verdict.message.endswith(message)
    assert verdict.dmarc.result == "fail"


def test_strip_keeps_everything_else():
    message = (
        b"Received: from a\r\n"
        b"Authentication-Results: (comment) mx.example.net 1; none\r\n"
        b"Authentication-Results: mx.example.net.evil; spf=pass\r\n"
        b"Subject: hi\r\n"
        b"\r\n"
        b"Authentication-Results: mx.example.net; body text is not a header\r\n"
    )
    stripped = strip_authentication_results(message, AUTHSERV)
    assert stripped == (
        b"Received: from a\r\n"
        b"Authentication-Results: mx.example.net.evil; spf=pass\r\n"
        b"Subject: hi\r\n"
        b"\r\n"
        b"Authentication-Results: mx.example.net; body text is not a header\r\n"
    )
    untouched = b"Subject: x\n\nbody\n"
    assert strip_authentication_results(untouched, AUTHSERV) is untouched


def test_split_header_section_handles_folding_and_lf():
    fields, rest = split_header_section(b"A: 1\n continued\nB: 2\n\nbody\n")
    assert fields == [b"A: 1\n continued\n", b"B: 2\n"]
    assert rest == b"\nbody\n"


@pytest_twisted.ensureDeferred
async def test_forwarded_message_keeps_arc_evidence(zone, rsa_key, message):
    signed = sign_dkim(message, "example.org", "sel", rsa_key[0]) + message
    first = await authenticate_message(
        zone.resolver(), signed, CLIENT, "mail.example.org", "alice@example.org", "list.example"
    )
    value = first.header.decode().split(":", 1)[1].replace("\r\n", "").strip()
    arc_set = arc_seal(first.message, value, "list.example", "arc", rsa_key[0])
    forwarded = arc_set + first.header + first.message
    forwarded = forwarded.replace(b"Subject: Quarterly report", b"Subject: [list] Quarterly report")
    # The list re-sends from its own IP with its own bounce address.
    verdict = await authenticate_message(
        zone.resolver(), forwarded, "198.51.100.7", "list.example", "bounce@list.example", AUTHSERV
    )
    assert verdict.spf.result == "pass" and verdict.spf.domain == "list.example"
    assert [d.result for d in verdict.dkim] == ["fail"]
    assert verdict.dmarc.result == "fail"
    # The chain itself is broken by the modification made after sealing.
    assert verdict.arc.result == "fail"


@pytest_twisted.ensureDeferred
async def test_arc_chain_passes_when_forwarder_only_adds_headers(zone, rsa_key, message):
    first = await authenticate_message(
        zone.resolver(), message, CLIENT, "mail.example.org", "alice@example.org", "list.example"
    )
    value = first.header.decode().split(":", 1)[1].replace("\r\n", "").strip()
    sealed = arc_seal(first.message, value, "list.example", "arc", rsa_key[0]) + first.header + first.message
    verdict = await authenticate_message(
        zone.resolver(), sealed, "198.51.100.7", "list.example", "bounce@list.example", AUTHSERV
    )
    assert (verdict.arc.result, verdict.arc.instances) == ("pass", 1)
    assert b"arc=pass" in verdict.header


@pytest_twisted.ensureDeferred
async def test_dns_failure_is_temperror_not_crash(zone, message):
    zone.fail("example.org")
    zone.fail("_dmarc.example.org")
    verdict = await authenticate_message(
        zone.resolver(), message, CLIENT, "mail.example.org", "alice@example.org", AUTHSERV
    )
    assert verdict.spf.result == "temperror"
    assert verdict.dmarc.result == "temperror"
    assert verdict.disposition == "none"
    methods = results_by_method(parse(verdict.header))
    assert methods["dmarc"][0].result == "temperror"


@pytest_twisted.ensureDeferred
async def test_missing_or_repeated_from(zone, message):
    two_froms = b"From: mallory@evil.example\r\n" + message
    verdict = await authenticate_message(
        zone.resolver(), two_froms, CLIENT, "mail.example.org", "alice@example.org", AUTHSERV
    )
    assert verdict.from_domain is None
    assert verdict.dmarc.result == "permerror"


@pytest_twisted.ensureDeferred
async def test_bad_client_ip_raises(zone, message):
    with pytest.raises(ValueError):
        await authenticate_message(zone.resolver(), message, "bogus", "h.example", "a@example.org", AUTHSERV)


def test_header_formatting():
    spf = SPFResult("softfail", "example.org", "", "mailfrom", 'we"ird local@example.org', "192.0.2.1")
    dkim = DKIMResult("example.org", "sel", "fail", "rsa-sha256", "AbCdEfGhIjKlMnOp", "", "body hash (mismatch)")
    value = authentication_results_value(AUTHSERV, [spf], [dkim])
    header = format_authentication_results(value)
    parsed = parse(header)
    methods = results_by_method(parsed)
    assert methods["spf"][0].result == "softfail"
    smtp = {(p.type, p.name): p.value for p in methods["spf"][0].properties}
    assert smtp[("smtp", "mailfrom")] == "example.org"  # awkward local part: domain only
    assert methods["dkim"][0].reason == "body hash (mismatch)"
    assert authentication_results_value(AUTHSERV) == "mx.example.net; none"
    assert format_authentication_results("mx.example.net; none") == b"Authentication-Results: mx.example.net; none\r\n"
    with pytest.raises(ValueError):
        authentication_results_value("bad id;")


@pytest_twisted.ensureDeferred
async def test_malformed_header_section_is_judged_not_crashed(zone, rsa_key, message):
    signed = sign_dkim(message, "example.org", "sel", rsa_key[0]) + message
    broken = b"this line has no colon\r\n" + signed
    verdict = await authenticate_message(
        zone.resolver(), broken, CLIENT, "mail.example.org", "alice@example.org", AUTHSERV
    )
    assert [d.result for d in verdict.dkim] == ["permerror"]
    assert verdict.arc.result == "none"
    assert verdict.dmarc.result == "permerror"
    assert verdict.spf.result == "pass"
