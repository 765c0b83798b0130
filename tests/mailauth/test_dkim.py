"""DKIM signing and verification with keys published on the DNS fixture."""

from __future__ import annotations

import base64

import pytest
import pytest_twisted

from mailserve.mailauth.dkim import (
    DKIMSigningError,
    generate_dkim_key,
    oversigned_headers,
    sign_dkim,
    sign_dkim_async,
    verify_dkim,
)


def publish(dns_server, key, selector="sel", domain="example.org"):
    dns_server.add(f"{selector}._domainkey.{domain}", "TXT", key[1])


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
async def test_sign_then_verify(dns_server, rsa_key, ed25519_key, message, algorithm):
    key = rsa_key if algorithm == "rsa-sha256" else ed25519_key
    publish(dns_server, key)
    header = sign_dkim(message, "example.org", "sel", key[0], algorithm)
    assert header.startswith(b"DKIM-Signature: ")
    assert header.endswith(b"\r\n")
    results = await verify_dkim(dns_server.resolver(), header + message)
    assert len(results) == 1
    result = results[0]
    assert (result.result, result.domain, result.selector, result.algorithm) == (
        "pass", "example.org", "sel", algorithm,
    )
    assert len(result.header_b) >= 8


@pytest_twisted.ensureDeferred
async def test_body_modified_in_transit_fails(dns_server, rsa_key, message):
    publish(dns_server, rsa_key)
    signed = sign_dkim(message, "example.org", "sel", rsa_key[0]) + message
    tampered = signed.replace(b"numbers are attached", b"numbers are enclosed")
    [result] = await verify_dkim(dns_server.resolver(), tampered)
    assert result.result == "fail"
    assert "body hash" in result.reason


@pytest_twisted.ensureDeferred
async def test_header_modified_in_transit_fails(dns_server, ed25519_key, message):
    publish(dns_server, ed25519_key)
    signed = sign_dkim(message, "example.org", "sel", ed25519_key[0], "ed25519-sha256") + message
    tampered = signed.replace(b"Subject: Quarterly report", b"Subject: Quarterly REPORT")
    [result] = await verify_dkim(dns_server.resolver(), tampered)
    assert result.result == "fail"


@pytest_twisted.ensureDeferred
async def test_relaxed_canonicalization_survives_refolding(dns_server, rsa_key, message):
    publish(dns_server, rsa_key)
    signed = sign_dkim(message, "example.org", "sel", rsa_key[0]) + message
    refolded = signed.replace(b"Subject: Quarterly report", b"Subject:  Quarterly\r\n\treport")
    [result] = await verify_dkim(dns_server.resolver(), refolded)
    assert result.result == "pass"


@pytest_twisted.ensureDeferred
async def test_oversigned_headers_cannot_be_added(dns_server, rsa_key, message):
    publish(dns_server, rsa_key)
    header = sign_dkim(message, "example.org", "sel", rsa_key[0])
    # An attacker prepends a second Subject and a Reply-To that the original lacked.
    for extra in (b"Subject: Urgent: wire money\r\n", b"Reply-To: thief@evil.example\r\n"):
        [result] = await verify_dkim(dns_server.resolver(), header + extra + message)
        assert result.result == "fail", extra
    # A header that is not signed (Received) may be added by relays.
    [result] = await verify_dkim(dns_server.resolver(), b"Received: by relay.example\r\n" + header + message)
    assert result.result == "pass"


def test_oversigned_header_list(message):
    include = oversigned_headers(message)
    assert include.count(b"from") == 2
    assert include.count(b"subject") == 2
    assert include.count(b"reply-to") == 1  # absent, signed once to forbid adding it
    assert b"received" not in include


@pytest_twisted.ensureDeferred
async def test_missing_and_revoked_keys_are_permerror(dns_server, rsa_key, message):
    signed = sign_dkim(message, "example.org", "sel", rsa_key[0]) + message
    [result] = await verify_dkim(dns_server.resolver(), signed)
    assert result.result == "permerror"
    assert "no key" in result.reason
    dns_server.add("sel._domainkey.example.org", "TXT", "v=DKIM1; k=rsa; p=")
    [result] = await verify_dkim(dns_server.resolver(), signed)
    assert result.result == "permerror"


@pytest_twisted.ensureDeferred
async def test_short_rsa_key_is_permerror(dns_server, message):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    # cryptography refuses to generate keys this small; a public key is all DNS holds.
    weak = rsa.RSAPublicNumbers(65537, (1 << 511) | 0x10001).public_key()
    der = weak.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    dns_server.add("weak._domainkey.example.org", "TXT", "v=DKIM1; p=" + base64.b64encode(der).decode())
    strong_pem, _txt = generate_dkim_key("rsa-sha256")
    # Sign with a good key, then point the selector at a weak key: the key size is what fails.
    signed = sign_dkim(message, "example.org", "weak", strong_pem) + message
    [result] = await verify_dkim(dns_server.resolver(), signed)
    assert result.result == "permerror"
    assert "RFC 8301" in result.reason


@pytest_twisted.ensureDeferred
async def test_key_lookup_servfail_is_temperror(dns_server, rsa_key, message):
    publish(dns_server, rsa_key)
    dns_server.fail("sel._domainkey.example.org")
    signed = sign_dkim(message, "example.org", "sel", rsa_key[0]) + message
    [result] = await verify_dkim(dns_server.resolver(), signed)
    assert result.result == "temperror"


@pytest_twisted.ensureDeferred
async def test_every_signature_is_reported(dns_server, rsa_key, ed25519_key, message):
    publish(dns_server, rsa_key, "rsa", "example.org")
    publish(dns_server, ed25519_key, "ed", "esp.example")
    first = sign_dkim(message, "example.org", "rsa", rsa_key[0])
    second = sign_dkim(first + message, "esp.example", "ed", ed25519_key[0], "ed25519-sha256")
    results = await verify_dkim(dns_server.resolver(), second + first + message)
    assert [(r.domain, r.result) for r in results] == [("esp.example", "pass"), ("example.org", "pass")]


@pytest_twisted.ensureDeferred
async def test_malformed_signatures_are_permerror(dns_server, message):
    bad = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=sel\r\n" + message
    [result] = await verify_dkim(dns_server.resolver(), bad)
    assert result.result == "permerror"
    garbage = b"DKIM-Signature: this is not a tag list\r\n" + message
    [result] = await verify_dkim(dns_server.resolver(), garbage)
    assert result.result == "permerror"


@pytest_twisted.ensureDeferred
async def test_unsigned_message_has_no_results(dns_server, message):
    assert await verify_dkim(dns_server.resolver(), message) == []


@pytest_twisted.ensureDeferred
async def test_sign_async(dns_server, rsa_key, message):
    publish(dns_server, rsa_key)
    header = await sign_dkim_async(message, "example.org", "sel", rsa_key[0])
    [result] = await verify_dkim(dns_server.resolver(), header + message)
    assert result.result == "pass"


def test_signing_errors(rsa_key, ed25519_key, message):
    with pytest.raises(DKIMSigningError):
        sign_dkim(message, "example.org", "sel", b"not a key")
    with pytest.raises(DKIMSigningError):
        sign_dkim(message, "example.org", "sel", ed25519_key[0], "rsa-sha256")
    with pytest.raises(DKIMSigningError):
        sign_dkim(message, "example.org", "sel", rsa_key[0], "rsa-sha1")
    with pytest.raises(DKIMSigningError):
        sign_dkim(b"Subject: no from\r\n\r\nbody\r\n", "example.org", "sel", rsa_key[0])


def test_generated_keys_publish_matching_records(rsa_key, ed25519_key):
    assert rsa_key[0].startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert rsa_key[1].startswith("v=DKIM1; k=rsa; p=MII")
    raw = base64.b64decode(ed25519_key[1].split("p=")[1])
    assert len(raw) == 32
    with pytest.raises(ValueError):
        generate_dkim_key("dsa")


@pytest_twisted.ensureDeferred
async def test_rsa_sha1_is_not_accepted(dns_server, rsa_key, message):
    import dkim

    publish(dns_server, rsa_key)
    header = dkim.DKIM(message, signature_algorithm=b"rsa-sha1").sign(
        b"sel", b"example.org", rsa_key[0], include_headers=[b"from", b"subject"]
    )
    [result] = await verify_dkim(dns_server.resolver(), header + message)
    assert result.result == "permerror"
    assert "RFC 8301" in result.reason
