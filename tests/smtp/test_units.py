"""Pure parts of the SMTP package: argument syntax, DSN rendering, MX routing, the pipeline."""

from __future__ import annotations

import email
import email.policy

import pytest
import pytest_twisted

from mailserve.smtp.dsn import RecipientReport, build_report, report_needs_smtputf8
from mailserve.smtp.mx import NoMailService, RouteTemporaryFailure, resolve_mail_hosts
from mailserve.smtp.pipeline import (
    DeliveryContext,
    DeliveryPipeline,
    Envelope,
    MessageRejected,
    PassThroughStage,
    RecipientContext,
)
from mailserve.smtp.syntax import (
    SyntaxProblem,
    parse_address,
    parse_parameters,
    parse_path,
    xtext_decode,
    xtext_encode,
)
from tests import dnsfixture

dns_server = dnsfixture.dns_server


# -- syntax ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argument, address, rest", [
    ("FROM:<a@b.test>", "a@b.test", ""),
    ("from: <a@b.test> SIZE=10", "a@b.test", "SIZE=10"),
    ("FROM:<>", "", ""),
    ('FROM:<"odd > name"@b.test>', '"odd > name"@b.test', ""),
    ("FROM:<@relay.test,@other.test:a@b.test>", "a@b.test", ""),
    ("FROM:<a@[192.0.2.1]>", "a@[192.0.2.1]", ""),
    ("FROM:<a@[IPv6:2001:db8::1]>", "a@[IPv6:2001:db8::1]", ""),
])
def test_paths(argument, address, rest):
    path = parse_path(argument, "FROM", allow_null=True, utf8=False)
    assert (path.address, path.rest) == (address, rest)


@pytest.mark.parametrize("argument, status", [
    ("FROM:a@b.test", "5.5.4"),
    ("TO:<a@b.test>", "5.5.4"),
    ("FROM:<a@b.test", "5.5.4"),
    ("FROM:<a@b.test>x", "5.5.4"),
    ("FROM:<a..b@b.test>", "5.1.7"),
    ("FROM:<" + "x" * 65 + "@b.test>", "5.1.7"),
    ("FROM:<a@-bad-.test>", "5.1.7"),
    ("FROM:<a@[999.1.1.1]>", "5.1.7"),
    ("FROM:<ä@b.test>", "5.6.7"),
    ("FROM:<a@" + "b" * 250 + ".test>", "5.1.7"),
])
def test_bad_paths(argument, status):
    with pytest.raises(SyntaxProblem) as info:
        parse_path(argument, "FROM", allow_null=True, utf8=False)
    assert info.value.status == status
    if status == "5.1.7":  # RFC 3463 §3.2: X.1.7 is the sender's, X.1.3 a recipient's bad syntax
        with pytest.raises(SyntaxProblem) as info:
            parse_path("TO:" + argument[5:], "TO", allow_null=False, utf8=False)
        assert info.value.status == "5.1.3"


def test_null_path_only_where_allowed():
    with pytest.raises(SyntaxProblem):
        parse_path("TO:<>", "TO", allow_null=False, utf8=False)


def test_utf8_addresses():
    assert parse_address("jöran@exämple.test", utf8=True) == "jöran@exämple.test"
    with pytest.raises(SyntaxProblem):
        parse_address("jöran@example.test", utf8=False)


def test_parameters():
    assert parse_parameters("SIZE=10 body=8BITMIME SMTPUTF8") == {"SIZE": "10", "BODY": "8BITMIME", "SMTPUTF8": None}
    for bad in ("SIZE=1 SIZE=2", "=x", "SI_ZE=1", "SIZE=a=b c=\x01"):
        with pytest.raises(SyntaxProblem):
            parse_parameters(bad)


def test_xtext_round_trip():
    assert xtext_decode("a+2Bb+3Dc") == "a+b=c"
    assert xtext_encode("a+b=c d") == "a+2Bb+3Dc+20d"
    for text in ("plain", "ünï+=code", "x;y@z"):
        assert xtext_decode(xtext_encode(text)) == text
    for bad in ("+2", "+zz", "a=b"):
        with pytest.raises(SyntaxProblem):
            xtext_decode(bad)


# -- DSN ---------------------------------------------------------------------------------------------
ORIGINAL = b"From: a@example.test\r\nTo: b@remote.test\r\nSubject: original\r\n\r\nBody text.\r\n"


def test_failure_report_structure():
    report = build_report("mail.example.test", "a@example.test", [
        RecipientReport("b@remote.test", "failed", "5.1.1", "smtp; 550 5.1.1 no such user",
                        remote_mta="mx.remote.test", original_recipient="rfc822;B@remote.test"),
    ], ORIGINAL, envid="id-7", arrival=1_700_000_000.0, now=1_700_000_100.0)
    message = email.message_from_bytes(report, policy=email.policy.default)
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    assert message["To"].addresses[0].addr_spec == "a@example.test"
    human, status, returned = message.iter_parts()
    assert human.get_content_type() == "text/plain"
    assert "b@remote.test" in human.get_content()
    assert status.get_content_type() == "message/delivery-status"
    per_message, per_recipient = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; mail.example.test"
    assert per_message["Original-Envelope-Id"] == "id-7"
    assert per_recipient["Final-Recipient"] == "rfc822; b@remote.test"
    assert per_recipient["Original-Recipient"] == "rfc822;B@remote.test"
    assert per_recipient["Action"] == "failed" and per_recipient["Status"] == "5.1.1"
    assert per_recipient["Remote-MTA"] == "dns; mx.remote.test"
    assert per_recipient["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    assert returned.get_content_type() == "message/rfc822"
    assert returned.get_payload()[0]["Subject"] == "original"


def test_headers_only_report_and_delay_fields():
    report = build_report("mail.example.test", "a@example.test", [
        RecipientReport("b@remote.test", "delayed", "4.4.1", "smtp; 451 4.4.1 refused", will_retry_until=1e9),
    ], ORIGINAL, ret="HDRS")
    assert b"Content-Type: text/rfc822-headers" in report
    assert b"Body text." not in report and b"Subject: original" in report
    assert b"Action: delayed" in report and b"Will-Retry-Until: " in report
    assert b"Subject: Delayed Mail" in report


def test_internationalized_report_rfc6533():
    original = "From: ä@example.test\r\nTo: ü@remote.test\r\nSubject: Grüße\r\n\r\nText.\r\n".encode()
    recipients = [RecipientReport("ü@remote.test", "failed", "5.1.1", "smtp; 550 5.1.1 unknown",
                                  original_recipient="utf-8;Ü@remote.test"),
                  RecipientReport("plain@remote.test", "failed", "5.1.1")]
    assert report_needs_smtputf8("ä@example.test", recipients[1:])
    assert report_needs_smtputf8("a@example.test", recipients)
    assert not report_needs_smtputf8("a@example.test", recipients[1:])
    report = build_report("mail.example.test", "ä@example.test", recipients, original)
    assert b"Content-Type: message/global-delivery-status\r\n" in report
    assert "Final-Recipient: utf-8; ü@remote.test\r\n".encode() in report
    assert "Original-Recipient: utf-8; Ü@remote.test\r\n".encode() in report
    assert b"Final-Recipient: rfc822; plain@remote.test\r\n" in report  # ASCII stays rfc822
    assert b"Content-Type: message/global\r\n\r\n" + original in report  # RFC 6532 §3.7
    headers_only = build_report("mail.example.test", "a@example.test", recipients[1:], original, ret="HDRS")
    assert b"Content-Type: message/delivery-status\r\n" in headers_only
    assert b"Content-Type: message/global-headers\r\n" in headers_only and b"Text." not in headers_only


def test_report_needs_recipients():
    with pytest.raises(ValueError):
        build_report("h", "a@b.test", [], ORIGINAL)


# -- MX ----------------------------------------------------------------------------------------------
@pytest_twisted.ensureDeferred
async def test_mx_preference_order_and_fallbacks(dns_server):
    dns_server.add("dest.test", "MX", (20, "backup.dest.test"))
    dns_server.add("dest.test", "MX", (10, "primary.dest.test"))
    dns_server.add("dest.test", "MX", (10, "unresolvable.dest.test"))
    dns_server.add("primary.dest.test", "A", "192.0.2.1")
    dns_server.add("primary.dest.test", "AAAA", "2001:db8::1")
    dns_server.add("backup.dest.test", "A", "192.0.2.2")
    dns_server.add("other.dest.test", "A", "192.0.2.3")
    hosts = await resolve_mail_hosts(dns_server.resolver(), "dest.test", shuffle=lambda group: group.sort())
    assert [(h.name, h.addresses, h.preference) for h in hosts] == [
        ("primary.dest.test", ("192.0.2.1", "2001:db8::1"), 10),
        ("backup.dest.test", ("192.0.2.2",), 20),
    ]
    # No MX: the domain's own address records (RFC 5321 §5.1).
    [implicit] = await resolve_mail_hosts(dns_server.resolver(), "other.dest.test")
    assert implicit.addresses == ("192.0.2.3",)


@pytest_twisted.ensureDeferred
async def test_mx_failures(dns_server):
    dns_server.add("null.test", "MX", (0, "."))
    dns_server.add("empty.test", "TXT", "nothing here")
    dns_server.add("broken.test", "MX", (10, "mx.broken.test"))
    dns_server.fail("broken.test", "MX")
    resolver = dns_server.resolver(timeout=1.0)
    with pytest.raises(NoMailService) as info:
        await resolve_mail_hosts(resolver, "null.test")
    assert info.value.status == "5.1.10"
    with pytest.raises(NoMailService) as info:
        await resolve_mail_hosts(resolver, "empty.test")
    assert info.value.status == "5.1.2"
    with pytest.raises(RouteTemporaryFailure):
        await resolve_mail_hosts(resolver, "broken.test")
    [literal] = await resolve_mail_hosts(resolver, "[192.0.2.9]")
    assert literal.addresses == ("192.0.2.9",)


# -- pipeline ----------------------------------------------------------------------------------------
def _context():
    envelope = Envelope("s@remote.test", ("a@example.test",), "client.test", "192.0.2.1")
    return DeliveryContext(envelope, b"Subject: x\r\n\r\nbody\r\n", [RecipientContext("a@example.test", 1)])


@pytest_twisted.ensureDeferred
async def test_pipeline_default_stages_pass_through():
    pipeline = DeliveryPipeline()
    assert pipeline.names == ["mail authentication", "spam verdict", "sieve"]
    context = await pipeline.run(_context())
    assert context.headers == [] and context.recipients[0].wanted and context.recipients[0].mailbox == "INBOX"


@pytest_twisted.ensureDeferred
async def test_pipeline_stages_can_change_and_reject():
    class Filing(PassThroughStage):
        async def process(self, context):
            context.add_header("X-Spam-Score", "0.1")
            context.recipients[0].mailbox = "Junk"
            context.recipients[0].keywords.add("$Junk")

    class Refusing(PassThroughStage):
        def process(self, context):
            raise MessageRejected(550, "5.7.1", "rejected by policy")

    pipeline = DeliveryPipeline()
    pipeline.replace("spam verdict", Filing("spam verdict"))
    context = await pipeline.run(_context())
    assert context.headers == [("X-Spam-Score", "0.1")]
    assert (context.recipients[0].mailbox, context.recipients[0].keywords) == ("Junk", {"$Junk"})
    pipeline.replace("sieve", Refusing("sieve"))
    with pytest.raises(MessageRejected) as info:
        await pipeline.run(_context())
    assert str(info.value.reply) == "550 5.7.1 rejected by policy"
    with pytest.raises(KeyError):
        pipeline.replace("nonexistent", Refusing("x"))
