"""OutboundSigner: DKIM signatures for submissions and ARC seals for forwards, over real stores."""

from __future__ import annotations

from dataclasses import asdict

import dkim
import pytest
import pytest_twisted

from mailserve.core import keys
from mailserve.core.model import pack
from mailserve.mailauth.keystore import DKIMKey, DKIMKeyStore
from mailserve.mailauth.outbound import OutboundSigner, sender_domain_of
from tests.mailauth.conftest import SAMPLE_MESSAGE

AUTH_RESULTS = "mx.example.net; spf=pass smtp.mailfrom=alice@example.org; dkim=none; arc=none"


def put_key(metadata, domain: str, selector: str, algorithm: str, private: bytes | str, txt: str) -> DKIMKey:
    """Store a key the way ``DKIMKeyStore.generate`` does (keys made once per session: RSA is slow)."""
    key = DKIMKey(domain, selector, algorithm, private.decode() if isinstance(private, bytes) else private, txt, 0)

    def fn(txn):
        txn.put(keys.domain(domain), pack({"name": domain}))
        txn.put(keys.dkim_key(domain, selector), pack(asdict(key)))

    metadata.write_sync(fn)
    return key


@pytest.fixture
def signer(metadata, rsa_key, ed25519_key):
    put_key(metadata, "example.org", "r1", "rsa-sha256", *rsa_key)
    put_key(metadata, "example.org", "e1", "ed25519-sha256", *ed25519_key)
    put_key(metadata, "example.net", "arc", "rsa-sha256", *rsa_key)
    return OutboundSigner(DKIMKeyStore(metadata), "mx.example.net")


def key_table(*keys_: DKIMKey):
    records = {f"{k.selector}._domainkey.{k.domain}": k.txt.encode() for k in keys_}

    def lookup(name, timeout=5):
        name = (name.decode() if isinstance(name, bytes) else name).rstrip(".").lower()
        return records.get(name)

    return lookup


@pytest_twisted.ensureDeferred
async def test_submission_is_signed_with_every_key_of_the_domain(signer):
    signed = await signer.sign_submission(SAMPLE_MESSAGE, "example.org")
    assert signed.endswith(SAMPLE_MESSAGE)
    added = signed[: -len(SAMPLE_MESSAGE)].decode()
    assert added.count("DKIM-Signature:") == 2
    # RSA first: the algorithm every verifier knows.
    assert added.index("a=rsa-sha256") < added.index("a=ed25519-sha256")
    table = key_table(*signer.keys_for("example.org"))
    verifier = dkim.DKIM(signed)
    assert verifier.verify(idx=0, dnsfunc=table) and verifier.verify(idx=1, dnsfunc=table)
    # From is over-signed: adding a second From breaks the signature (RFC 6376 section 8.15).
    forged = signed.replace(b"From: Alice", b"From: Mallory <m@evil.example>\r\nFrom: Alice", 1)
    assert not dkim.DKIM(forged).verify(idx=0, dnsfunc=table)


@pytest_twisted.ensureDeferred
async def test_domain_without_keys_or_signing_off_leaves_the_message_alone(signer, metadata):
    assert await signer.sign_submission(SAMPLE_MESSAGE, "nokeys.example") is SAMPLE_MESSAGE
    assert await signer.sign_submission(SAMPLE_MESSAGE, "") is SAMPLE_MESSAGE
    off = OutboundSigner(DKIMKeyStore(metadata), "mx.example.net", sign=False)
    assert await off.sign_submission(SAMPLE_MESSAGE, "example.org") is SAMPLE_MESSAGE


@pytest_twisted.ensureDeferred
async def test_a_damaged_key_is_skipped_and_the_others_still_sign(metadata, ed25519_key):
    put_key(metadata, "example.org", "broken", "rsa-sha256", "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n", "v=DKIM1; p=")
    put_key(metadata, "example.org", "e1", "ed25519-sha256", *ed25519_key)
    signer = OutboundSigner(DKIMKeyStore(metadata), "mx.example.net")
    signed = await signer.sign_submission(SAMPLE_MESSAGE, "example.org")
    assert signed.count(b"DKIM-Signature:") == 1 and b"a=ed25519-sha256" in signed


@pytest_twisted.ensureDeferred
async def test_forward_is_sealed_and_the_chain_verifies(signer):
    forged = b"Authentication-Results: mx.example.net; dkim=pass header.d=bank.example\r\n" + SAMPLE_MESSAGE
    sealed = await signer.seal_forward(forged, AUTH_RESULTS)
    header = sealed.split(b"\r\n\r\n", 1)[0].decode()
    assert header.startswith("ARC-Seal: i=1;")
    assert "d=example.net" in header and "s=arc" in header  # the parent domain of mx.example.net
    # Exactly one Authentication-Results of ours: the forged one is gone, the given one added.
    assert header.count("Authentication-Results: mx.example.net;") == 1 and "bank.example" not in header
    cv, _details, reason = dkim.arc_verify(sealed, dnsfunc=key_table(*signer.keys_for("example.net")))
    assert cv == b"pass", reason


@pytest_twisted.ensureDeferred
async def test_without_a_sealing_key_only_the_results_are_added(metadata):
    signer = OutboundSigner(DKIMKeyStore(metadata), "mx.nowhere.example")
    assert signer.sealing_key() is None
    forwarded = await signer.seal_forward(SAMPLE_MESSAGE, AUTH_RESULTS)
    assert forwarded.endswith(SAMPLE_MESSAGE)
    added = forwarded[: -len(SAMPLE_MESSAGE)].decode()
    assert added.startswith("Authentication-Results: mx.example.net;") and "ARC-" not in added
    assert " ".join(added.split()) == f"Authentication-Results: {AUTH_RESULTS}"


@pytest_twisted.ensureDeferred
async def test_an_explicit_arc_domain_wins(signer, metadata, rsa_key):
    put_key(metadata, "forwarder.example", "fw", "rsa-sha256", *rsa_key)
    named = OutboundSigner(DKIMKeyStore(metadata), "mx.example.net", arc_domain="forwarder.example")
    assert named.sealing_key().domain == "forwarder.example"
    sealed = await named.seal_forward(SAMPLE_MESSAGE, AUTH_RESULTS)
    assert b"d=forwarder.example" in sealed.split(b"\r\n\r\n")[0]


@pytest_twisted.ensureDeferred
async def test_results_without_an_authserv_id_are_refused(signer):
    with pytest.raises(ValueError):
        await signer.seal_forward(SAMPLE_MESSAGE, "   ")


def test_sender_domain_is_the_from_domain_else_the_envelope_domain():
    assert sender_domain_of(SAMPLE_MESSAGE, "bounce@lists.example.com") == "example.org"
    no_from = b"To: bob@example.net\r\nSubject: x\r\n\r\nbody\r\n"
    assert sender_domain_of(no_from, "bob@Example.COM") == "example.com"
    two_domains = b"From: a@one.example, b@two.example\r\n\r\nbody\r\n"
    assert sender_domain_of(two_domains, "") == ""
    folded = b"From: \"Alice\"\r\n <alice@folded.example>\r\n\r\nbody\r\n"
    assert sender_domain_of(folded) == "folded.example"
