"""ARC (RFC 8617): sealing at each forwarding hop and validating the chain."""

from __future__ import annotations

import re

import pytest
import pytest_twisted

from mailserve.mailauth.arc import ARCSealError, arc_seal, arc_seal_async, verify_arc
from mailserve.mailauth.dkim import sign_dkim, verify_dkim

HOPS = ("list.example", "relay.example", "final.example")


@pytest.fixture
def keys(dns_server, rsa_key):
    for hop in HOPS:
        dns_server.add(f"arc._domainkey.{hop}", "TXT", rsa_key[1])
    dns_server.add("sel._domainkey.example.org", "TXT", rsa_key[1])
    return rsa_key


async def forward(dns_server, message, hop, key):
    """One forwarding hop: validate the chain, write A-R, seal, and modify like a list."""
    arc = await verify_arc(dns_server.resolver(), message)
    auth_results = f"{hop}; arc={arc.result}"
    arc_set = arc_seal(message, auth_results, hop, "arc", key[0])
    assert arc_set, f"{hop} could not extend the chain"
    return arc_set + b"Authentication-Results: " + auth_results.encode() + b"\r\n" + message, arc


@pytest_twisted.ensureDeferred
async def test_three_hop_chain_validates(dns_server, keys, message):
    signed = sign_dkim(message, "example.org", "sel", keys[0]) + message
    current = signed
    seen = []
    for hop in HOPS:
        current, arc_before = await forward(dns_server, current, hop, keys)
        seen.append(arc_before.result)
    assert seen == ["none", "pass", "pass"]
    assert current.count(b"ARC-Seal:") == 3
    assert b"cv=none" in current and b"cv=pass" in current
    result = await verify_arc(dns_server.resolver(), current)
    assert (result.result, result.instances) == ("pass", 3)
    assert [s.instance for s in result.sets] == [3, 2, 1]
    assert all(s.ams_valid and s.seal_valid for s in result.sets)
    assert result.oldest_pass == 1


@pytest_twisted.ensureDeferred
async def test_list_modification_breaks_dkim_but_arc_carries_results(dns_server, keys, message):
    signed = sign_dkim(message, "example.org", "sel", keys[0]) + message
    first, _ = await forward(dns_server, signed, "list.example", keys)
    # The list rewrites the subject after it sealed; the next hop seals the modified message.
    modified = first.replace(b"Subject: Quarterly report", b"Subject: [list] Quarterly report")
    second, before = await forward(dns_server, modified, "relay.example", keys)
    assert before.result == "fail"  # the list's AMS no longer verifies
    [dkim_result] = await verify_dkim(dns_server.resolver(), second)
    assert dkim_result.result == "fail"
    final = await verify_arc(dns_server.resolver(), second)
    assert final.result == "fail"  # relay.example recorded cv=fail: the chain is over


@pytest_twisted.ensureDeferred
async def test_body_changed_after_last_seal_fails(dns_server, keys, message):
    current = message
    for hop in HOPS:
        current, _ = await forward(dns_server, current, hop, keys)
    tampered = current.replace(b"numbers are attached", b"numbers are enclosed")
    result = await verify_arc(dns_server.resolver(), tampered)
    assert result.result == "fail"
    assert "ARC-Message-Signature" in result.reason


@pytest_twisted.ensureDeferred
async def test_tampered_seal_fails(dns_server, keys, message):
    current = message
    for hop in HOPS[:2]:
        current, _ = await forward(dns_server, current, hop, keys)
    # Rewrite the first hop's recorded results: its seal covers them.
    tampered = re.sub(rb"(ARC-Authentication-Results: i=1; list.example;\s*arc=)none", rb"\1pass", current)
    assert tampered != current
    result = await verify_arc(dns_server.resolver(), tampered)
    assert result.result == "fail"


@pytest_twisted.ensureDeferred
async def test_missing_key_fails(dns_server, keys, message):
    current, _ = await forward(dns_server, message, "list.example", keys)
    dns_server.remove("arc._domainkey.list.example")
    assert (await verify_arc(dns_server.resolver(), current)).result == "fail"
    dns_server.fail("arc._domainkey.list.example")
    result = await verify_arc(dns_server.resolver(), current)
    assert result.result == "fail"
    assert "key lookup failed" in result.reason


@pytest_twisted.ensureDeferred
async def test_unsealed_message_is_none(dns_server, message):
    assert (await verify_arc(dns_server.resolver(), message)).result == "none"


@pytest_twisted.ensureDeferred
async def test_too_many_instances_fail(dns_server, message):
    fake = b"ARC-Seal: i=51; cv=pass; a=rsa-sha256; d=x.example; s=a; b=AAAA\r\n" + message
    result = await verify_arc(dns_server.resolver(), fake)
    assert result.result == "fail"
    assert "50" in result.reason


@pytest_twisted.ensureDeferred
async def test_seal_async(dns_server, keys, message):
    arc_set = await arc_seal_async(message, "list.example; arc=none", "list.example", "arc", keys[0])
    stamped = arc_set + message
    assert (await verify_arc(dns_server.resolver(), stamped)).result == "pass"


def test_seal_errors(keys, ed25519_key, message):
    with pytest.raises(ARCSealError):
        arc_seal(message, "list.example; arc=none", "list.example", "arc", ed25519_key[0])
    with pytest.raises(ARCSealError):
        arc_seal(message, "   ", "list.example", "arc", keys[0])
    with pytest.raises(ARCSealError):
        arc_seal(b"no colon here\r\n" + message, "list.example; arc=none", "list.example", "arc", keys[0])
