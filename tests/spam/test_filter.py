"""SpamFilter end to end: real LMDB store, real DNS fixture server, real mail authentication."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import task

from mailserve.mailauth.arc import ARCResult
from mailserve.mailauth.dkim import DKIMResult
from mailserve.mailauth.dmarc import DMARCResult
from mailserve.mailauth.results import AuthVerdict, authenticate_message
from mailserve.mailauth.spf import SPFResult
from mailserve.spam.filter import SpamFilter
from mailserve.spam.message import GTUBE
from mailserve.spam.verdict import SpamAction, SpamContext
from tests.spam.conftest import HAM, NOW

CLIENT = "192.0.2.10"
NO_GREYLIST = {"greylist": {"enabled": False}}


def make_filter(metadata, overrides=None, resolver=None, clock=None):
    if clock is None:
        clock = task.Clock()
        clock.advance(NOW)
    return SpamFilter(metadata, resolver=resolver, hostname="mx.example.net", overrides=overrides, clock=clock)


def context(**kwargs):
    values = {"client_ip": CLIENT, "helo": "mail.example.org", "mail_from": "alice@example.org",
              "recipients": ("bob@example.net",)}
    values.update(kwargs)
    return SpamContext(**values)


def passing_auth(domain="example.org"):
    return AuthVerdict(
        authserv_id="mx.example.net",
        spf=SPFResult("pass", domain, "", sender=f"alice@{domain}", client_ip=CLIENT),
        spf_helo=SPFResult("none", f"mail.{domain}", "", identity="helo"),
        dkim=(DKIMResult(domain, "sel", "pass", "rsa-sha256", "abcdefgh"),),
        arc=ARCResult("none"),
        dmarc=DMARCResult("pass", domain, policy="reject"),
        from_domain=domain,
        header=b"",
        message=b"",
    )


SPAM = (
    b"From: \"service@paypal.com\" <alert@secure-verify-login.icu>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: URGENT: VERIFY YOUR ACCOUNT NOW!!!\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b"<html><body><p>Your account is suspended.</p>"
    b"<a href=\"https://secure-verify-login.icu/login\">https://www.paypal.com/signin</a>"
    b"<form action=\"https://secure-verify-login.icu/\"><input name=pw></form></body></html>\r\n"
)


@pytest_twisted.ensureDeferred
async def test_clean_authenticated_mail_is_delivered(metadata):
    spam_filter = make_filter(metadata, NO_GREYLIST)
    verdict = await spam_filter.check(HAM, context(auth=passing_auth()))
    assert verdict.action is SpamAction.DELIVER
    assert set(verdict.rules) >= {"SPF_PASS", "DKIM_VALID", "DMARC_PASS"}
    assert verdict.score == pytest.approx(sum(verdict.rules.values()))
    assert verdict.score < 0
    assert verdict.status_header.startswith("No, score=")
    assert "DMARC_PASS=-1.00" in verdict.status_header
    assert "DMARC_PASS (-1.00)" in verdict.result_header
    for _name, value in verdict.header_fields():
        assert all(len(line) <= 78 for line in value.split("\r\n"))


@pytest_twisted.ensureDeferred
async def test_phishing_lands_in_junk_with_every_rule_explained(metadata):
    spam_filter = make_filter(metadata, NO_GREYLIST)
    verdict = await spam_filter.check(SPAM, context(helo="localhost", mail_from="alert@secure-verify-login.icu"))
    assert verdict.is_spam and verdict.action in (SpamAction.JUNK, SpamAction.DISCARD)
    for rule in ("MISSING_DATE", "MISSING_MESSAGE_ID", "FROM_NAME_HAS_ADDRESS", "SUBJECT_ALL_CAPS",
                 "HTML_ONLY", "HTML_FORM", "URL_TEXT_MISMATCH", "URL_SUSPICIOUS_TLD", "HELO_LOCALHOST"):
        assert rule in verdict.rules, rule
    for hit in verdict.hits:
        assert f"{hit.rule} ({hit.score:.2f})" in verdict.result_header.replace("\r\n\t", " ")


@pytest_twisted.ensureDeferred
async def test_gtube_is_rejected(metadata):
    verdict = await make_filter(metadata).check(HAM.replace(b"Alice\r\n", GTUBE + b"\r\n"), context())
    assert verdict.action is SpamAction.REJECT
    assert "GTUBE" in verdict.rules


@pytest_twisted.ensureDeferred
async def test_bad_input_gets_a_clear_error(metadata):
    spam_filter = make_filter(metadata)
    with pytest.raises(ValueError, match="client_ip"):
        await spam_filter.check(HAM, context(client_ip="not-an-ip"))
    with pytest.raises(TypeError):
        await spam_filter.check("text", context())


@pytest_twisted.ensureDeferred
async def test_real_authentication_results_feed_the_score(metadata, dns_server):
    dns_server.add("example.org", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    dns_server.add("_dmarc.example.org", "TXT", "v=DMARC1; p=reject")
    resolver = dns_server.resolver(timeout=1.0)
    auth = await authenticate_message(resolver, HAM, "203.0.113.66", "evil.example", "alice@example.org", "mx.example.net")
    spam_filter = make_filter(metadata, NO_GREYLIST, resolver=resolver)
    verdict = await spam_filter.check(HAM, context(client_ip="203.0.113.66", helo="evil.example", auth=auth))
    assert {"SPF_FAIL", "DMARC_REJECT", "DKIM_NONE", "RDNS_NONE"} <= set(verdict.rules)
    assert verdict.is_spam


@pytest_twisted.ensureDeferred
async def test_dns_lists_for_client_and_body_domains(metadata, dns_server):
    dns_server.add("10.2.0.192.zen.spamhaus.org", "A", "127.0.0.2")
    dns_server.add("secure-verify-login.icu.dbl.spamhaus.org", "A", "127.0.1.4")
    dns_server.add_ptr(CLIENT, "host-192-0-2-10.dsl.isp.example")
    spam_filter = make_filter(metadata, NO_GREYLIST, resolver=dns_server.resolver(timeout=1.0))
    verdict = await spam_filter.check(SPAM, context())
    assert {"RBL_SPAMHAUS_SBL", "DBL_PHISH", "RDNS_DYNAMIC"} <= set(verdict.rules)
    # Authenticated submission: the client's address is not looked up.
    before = len(dns_server.queries)
    verdict = await spam_filter.check(HAM, context(authenticated=True))
    assert "RBL_SPAMHAUS_SBL" not in verdict.rules and "AUTHENTICATED" in verdict.rules
    assert all("zen.spamhaus.org" not in name for name, _type in dns_server.queries[before:])


@pytest_twisted.ensureDeferred
async def test_training_moves_the_verdict_and_accounts_get_their_own(metadata):
    overrides = {**NO_GREYLIST, "bayes": {"min_spam": 2, "min_ham": 2, "account_min_spam": 2,
                                           "account_min_ham": 2, "autolearn": False,
                                           "account_training_updates_global": False}}
    spam_filter = make_filter(metadata, overrides)
    pharmacy = [HAM.replace(b"Quarterly report", b"cheap pills %d" % i).replace(
        b"the numbers for the third quarter are attached.", b"buy viagra cialis pharmacy discount pills now %d" % i)
        for i in range(4)]
    reports = [HAM.replace(b"report-1", b"report-%d" % (i + 10)).replace(b"third", b"quarter %d budget" % i) for i in range(4)]
    hook = spam_filter.training_hook
    for message in pharmacy[:3]:
        await hook(None, message, True)
    for message in reports[:3]:
        await hook(None, message, False)
    verdict = await spam_filter.check(pharmacy[3], context(accounts=(5,)))
    assert verdict.bayes_probability > 0.9
    assert any(rule.startswith("BAYES_9") for rule in verdict.rules)
    ham_verdict = await spam_filter.check(reports[3], context(accounts=(5,)))
    assert ham_verdict.bayes_probability < 0.1
    # Account 5 disagrees: it wants the reports as junk.  Its own database speaks for it.
    for message in reports[:3]:
        await hook(5, message, True)
    for message in pharmacy[:3]:
        await hook(5, message, False)
    verdict = await spam_filter.check(reports[3], context(accounts=(5, 6)))
    assert verdict.for_account(5).bayes_probability > 0.5 > verdict.bayes_probability
    assert verdict.for_account(6) is verdict
    assert spam_filter.store.totals(5).spam == 3
    # Correcting a message moves it between classes rather than counting it twice.
    totals = spam_filter.store.totals(None)
    outcome = await hook(None, reports[0], True)
    assert outcome.status == "relearned"
    after = spam_filter.store.totals(None)
    assert (after.spam, after.ham) == (totals.spam + 1, totals.ham - 1)


@pytest_twisted.ensureDeferred
async def test_autolearn_from_clear_verdicts(metadata):
    spam_filter = make_filter(metadata, {**NO_GREYLIST, "bayes": {"autolearn_spam_score": 8.0}})
    await spam_filter.check(SPAM, context(helo="localhost"))
    assert spam_filter.store.totals(None).spam == 1
    await spam_filter.check(HAM, context(auth=passing_auth()))
    assert spam_filter.store.totals(None).ham == 1


@pytest_twisted.ensureDeferred
async def test_greylisting_defers_then_accepts_a_retry(metadata):
    clock = task.Clock()
    clock.advance(NOW)
    spam_filter = make_filter(metadata, {"greylist": {"min_score": 0.0, "delay": 300}}, clock=clock)
    suspicious = HAM.replace(b"Message-ID: <report-1@example.org>\r\n", b"")
    first = await spam_filter.check(suspicious, context())
    assert first.action is SpamAction.GREYLIST and first.greylisted_for == 300
    clock.advance(60)
    early = await spam_filter.check(suspicious, context())
    assert early.action is SpamAction.GREYLIST and early.greylisted_for == pytest.approx(240)
    clock.advance(300)
    retry = await spam_filter.check(suspicious, context())
    assert retry.action is SpamAction.DELIVER
    # Same /24, same sender and recipient: known now.  A new recipient is not.
    again = await spam_filter.check(suspicious, context(client_ip="192.0.2.77"))
    assert again.action is SpamAction.DELIVER
    other = await spam_filter.check(suspicious, context(recipients=("carol@example.net",)))
    assert other.action is SpamAction.GREYLIST


@pytest_twisted.ensureDeferred
async def test_no_greylisting_for_authenticated_allowlisted_or_clean_mail(metadata):
    spam_filter = make_filter(metadata, {"allowlist": {"networks": ["198.51.100.0/24"]}})
    suspicious = HAM.replace(b"Message-ID: <report-1@example.org>\r\n", b"")
    assert (await spam_filter.check(HAM, context(auth=passing_auth()))).action is SpamAction.DELIVER
    assert (await spam_filter.check(suspicious, context(authenticated=True))).action is SpamAction.DELIVER
    allowed = await spam_filter.check(SPAM, context(client_ip="198.51.100.9"))
    assert allowed.action is SpamAction.DELIVER and "ALLOWLISTED" in allowed.rules
    # Spam-scored mail from an unknown triplet is greylisted by default (min_score 3).
    assert (await spam_filter.check(SPAM, context())).action is SpamAction.GREYLIST


@pytest_twisted.ensureDeferred
async def test_reputation_follows_earlier_scores(metadata):
    spam_filter = make_filter(metadata, {**NO_GREYLIST, "bayes": {"enabled": False},
                                         "reputation": {"min_messages": 2}})
    for _ in range(3):
        await spam_filter.check(SPAM, context(client_ip="203.0.113.5"))
    verdict = await spam_filter.check(HAM, context(client_ip="203.0.113.7"))
    assert verdict.rules["REPUTATION_IP"] > 0
    clean = await spam_filter.check(HAM, context(client_ip="198.51.100.5", auth=passing_auth()))
    assert "REPUTATION_IP" not in clean.rules
    # Prune forgets records past their lifetime.
    spam_filter.clock.advance(spam_filter.settings.reputation_lifetime + 1)
    assert await spam_filter.prune() >= 3


@pytest_twisted.ensureDeferred
async def test_one_outlier_counts_at_most_as_a_rejected_message_in_reputation(metadata):
    spam_filter = make_filter(metadata, {**NO_GREYLIST, "bayes": {"enabled": False}})
    gtube = await spam_filter.check(HAM.replace(b"Alice\r\n", GTUBE + b"\r\n"), context(client_ip="203.0.113.20"))
    assert gtube.score >= 1000
    [record] = spam_filter.store.reputations([("ip", "203.0.113.0/24")])
    # GTUBE weighs 1000; it enters the average as the reject threshold, no more.
    assert record.average == pytest.approx(spam_filter.settings.reject_threshold)


@pytest_twisted.ensureDeferred
async def test_blocklists(metadata):
    spam_filter = make_filter(metadata, {**NO_GREYLIST, "blocklist": {
        "networks": ["203.0.113.0/24"], "domains": ["example.org", "secure-verify-login.icu"]}})
    verdict = await spam_filter.check(HAM, context(client_ip="203.0.113.9", auth=passing_auth()))
    assert {"BLOCKLISTED_IP", "BLOCKLISTED_DOMAIN"} <= set(verdict.rules)
    assert "BLOCKLISTED_URL" in (await spam_filter.check(SPAM, context())).rules


@pytest_twisted.ensureDeferred
async def test_account_training_also_teaches_the_global_database_by_default(metadata):
    spam_filter = make_filter(metadata)
    outcome = await spam_filter.training_hook(9, SPAM, True)
    assert outcome.status == "learned"
    assert spam_filter.store.totals(9).spam == 1 and spam_filter.store.totals(None).spam == 1
    # IMAP hands over the delivered copy, with our headers on top: still the same message.
    verdict = await spam_filter.check(SPAM, context(helo="localhost"))
    delivered = verdict.header_bytes() + SPAM
    assert (await spam_filter.training_hook(9, delivered, True)).status == "already"
    assert (await spam_filter.training_hook(9, delivered, False)).status == "relearned"
    assert (spam_filter.store.totals(9).spam, spam_filter.store.totals(9).ham) == (0, 1)
