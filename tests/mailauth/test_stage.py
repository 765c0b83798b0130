"""The "mail authentication" delivery stage against a fixture zone, and how the server builds it."""

from __future__ import annotations

import dkim
import pytest
import pytest_twisted

from mailserve.config import Config
from mailserve.mailauth.stage import (
    AUTH_VERDICT_NOTE,
    AuthPolicy,
    MailAuthenticationStage,
    insert_below_own_trace,
)
from mailserve.service import MailServer
from mailserve.smtp.pipeline import (
    DeliveryContext,
    Envelope,
    MessageRejected,
    PassThroughStage,
    RecipientContext,
)
from mailserve.smtp.stages import build_pipeline
from tests.mailauth.conftest import SAMPLE_MESSAGE

AUTHSERV = "mx.example.net"
OUR_RECEIVED = (b"Received: from mail.example.org ([192.0.2.10])\r\n\tby mx.example.net (mailserve) with ESMTP id Q1;"
                b" Tue, 01 Dec 2026 10:00:01 +0000\r\n")


@pytest.fixture
def zone(dns_server, rsa_key):
    dns_server.add("example.org", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    dns_server.add("_dmarc.example.org", "TXT", "v=DMARC1; p=reject")
    dns_server.add("sel._domainkey.example.org", "TXT", rsa_key[1])
    dns_server.add("soft.example", "TXT", "v=spf1 -all")
    return dns_server


def stage(zone, **policy) -> MailAuthenticationStage:
    return MailAuthenticationStage(zone.resolver(), AuthPolicy(AUTHSERV, **policy))


def context_for(message: bytes, client_ip: str = "192.0.2.10", mail_from: str = "alice@example.org",
                **envelope) -> DeliveryContext:
    env = Envelope(mail_from=mail_from, recipients=("bob@example.net",), helo="mail.example.org",
                   client_ip=client_ip, **envelope)
    return DeliveryContext(env, OUR_RECEIVED + message, [RecipientContext("bob@example.net", 1)])


def header_names(message: bytes) -> list[str]:
    head = message.split(b"\r\n\r\n", 1)[0].decode()
    return [line.split(":", 1)[0] for line in head.split("\r\n") if line and line[0] not in " \t"]


@pytest_twisted.ensureDeferred
async def test_results_go_below_our_received_and_forged_ones_are_removed(zone, rsa_key):
    signed = dkim.sign(SAMPLE_MESSAGE, b"sel", b"example.org", rsa_key[0]) + SAMPLE_MESSAGE
    forged = b"Authentication-Results: mx.example.net; dkim=pass header.d=bank.example\r\n"
    context = context_for(forged + signed)
    await stage(zone).process(context)
    names = header_names(context.message)
    assert names[:3] == ["Received", "Authentication-Results", "DKIM-Signature"]
    assert context.message.count(b"Authentication-Results:") == 1 and b"bank.example" not in context.message
    verdict = context.notes[AUTH_VERDICT_NOTE]
    assert (verdict.spf.result, [d.result for d in verdict.dkim], verdict.dmarc.result) == ("pass", ["pass"], "pass")
    assert context.recipients[0].mailbox == "INBOX"
    # The DKIM signature still verifies on the message as it will be stored.
    assert dkim.verify(context.message, dnsfunc=lambda name, timeout=5: rsa_key[1].encode())


@pytest_twisted.ensureDeferred
async def test_authenticated_clients_are_not_checked(zone):
    context = context_for(SAMPLE_MESSAGE, client_ip="203.0.113.9", authenticated_as="alice@example.org")
    before = context.message
    assert stage(zone).process(context) is None
    assert context.message == before and AUTH_VERDICT_NOTE not in context.notes
    assert zone.queries == []


@pytest_twisted.ensureDeferred
async def test_dmarc_reject_is_550_5_7_1_by_default(zone):
    context = context_for(SAMPLE_MESSAGE, client_ip="203.0.113.9")
    with pytest.raises(MessageRejected) as refused:
        await stage(zone).process(context)
    assert (refused.value.reply.code, refused.value.reply.status) == (550, "5.7.1")
    assert "example.org" in refused.value.reply.text


@pytest_twisted.ensureDeferred
async def test_dmarc_reject_policy_can_be_softened(zone):
    context = context_for(SAMPLE_MESSAGE, client_ip="203.0.113.9")
    await stage(zone, dmarc_reject="quarantine", junk_mailbox="Spam").process(context)
    recipient = context.recipients[0]
    assert recipient.mailbox == "Spam" and "$Junk" in recipient.keywords
    assert context.notes["quarantined"] == "dmarc"

    context = context_for(SAMPLE_MESSAGE, client_ip="203.0.113.9")
    await stage(zone, dmarc_reject="none").process(context)
    assert context.recipients[0].mailbox == "INBOX"
    assert b"dmarc=fail" in context.message


@pytest_twisted.ensureDeferred
async def test_spf_fail_policy(zone):
    message = SAMPLE_MESSAGE.replace(b"alice@example.org", b"alice@soft.example")
    context = context_for(message, mail_from="alice@soft.example")
    await stage(zone).process(context)  # default: recorded and scored only
    assert context.recipients[0].mailbox == "INBOX" and b"spf=fail" in context.message

    with pytest.raises(MessageRejected) as refused:
        await stage(zone, spf_fail="reject").process(context_for(message, mail_from="alice@soft.example"))
    # RFC 7372 section 3.2: X.7.23 is "SPF validation failed".
    assert (refused.value.reply.code, refused.value.reply.status) == (550, "5.7.23")

    context = context_for(message, mail_from="alice@soft.example")
    await stage(zone, spf_fail="quarantine").process(context)
    assert context.recipients[0].mailbox == "Junk" and context.notes["quarantined"] == "spf"


def test_insert_below_own_trace():
    fields = b"X-Test: 1\r\n"
    folded = b"Received: from a\r\n\tby b; date\r\nSubject: s\r\n\r\nbody\r\n"
    assert insert_below_own_trace(folded, fields) == (
        b"Received: from a\r\n\tby b; date\r\nX-Test: 1\r\nSubject: s\r\n\r\nbody\r\n")
    assert insert_below_own_trace(b"Subject: s\r\n\r\nbody", fields) == b"X-Test: 1\r\nSubject: s\r\n\r\nbody"
    assert insert_below_own_trace(b"Received: only", fields) == b"Received: only\r\nX-Test: 1\r\n"
    assert insert_below_own_trace(folded, b"") == folded


def server_for(tmp_path, **sections) -> MailServer:
    data = {"server": {"hostname": "mx.example.net", "data_dir": str(tmp_path / "data")}, **sections}
    return MailServer(Config.from_dict(data, source="<test>"))


def test_the_server_builds_both_stages_from_its_configuration(tmp_path):
    server = server_for(tmp_path, dns={"nameservers": ["127.0.0.1:5353"], "timeout": "2s"},
                        mailauth={"authserv_id": "auth.example.net", "dmarc_quarantine": "none"})
    try:
        pipeline = build_pipeline(server)
        auth, spam = pipeline.stages[0], pipeline.stages[1]
        assert isinstance(auth, MailAuthenticationStage)
        assert auth.policy == AuthPolicy("auth.example.net", dmarc_quarantine="none")
        assert auth.resolver is server.resolver
        assert server.resolver.servers == [("127.0.0.1", 5353)] and server.resolver.timeout == 2.0
        assert spam.name == "spam verdict" and spam.spam_filter is server.spam_filter
    finally:
        server._close_stores()


def test_both_stages_can_be_turned_off(tmp_path):
    server = server_for(tmp_path, mailauth={"enabled": False}, spam={"enabled": False})
    try:
        pipeline = build_pipeline(server)
        assert isinstance(pipeline.stages[0], PassThroughStage) and isinstance(pipeline.stages[1], PassThroughStage)
        assert server.spam_filter is None
    finally:
        server._close_stores()
