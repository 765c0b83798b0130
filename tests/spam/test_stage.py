"""The spam verdict stage inside the real delivery pipeline."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import task

from mailserve.smtp.pipeline import DeliveryContext, DeliveryPipeline, Envelope, MessageRejected, RecipientContext
from mailserve.spam.filter import SpamFilter
from mailserve.spam.message import GTUBE
from mailserve.spam.stage import JUNK_KEYWORD, SPAM_VERDICT_NOTE, SpamVerdictStage
from tests.spam.conftest import HAM, NOW
from tests.spam.test_filter import SPAM, passing_auth


def pipeline(metadata, overrides=None):
    clock = task.Clock()
    clock.advance(NOW)
    spam_filter = SpamFilter(metadata, hostname="mx.example.net", overrides=overrides, clock=clock)
    delivery = DeliveryPipeline()
    delivery.replace("spam verdict", SpamVerdictStage(spam_filter))
    return delivery, spam_filter


def copy_headers(context, recipient):
    """The header fields of ``recipient``'s copy as delivery stores it: (name, unfolded value)."""
    from email.parser import BytesHeaderParser

    raw = b"".join(f"{n}: {v}\r\n".encode() for n, v in context.headers + recipient.headers) + context.message
    parsed = BytesHeaderParser().parsebytes(raw)
    return [(name, " ".join(value.split())) for name, value in parsed.items()]


def spam_fields(context, recipient):
    return [(n, v) for n, v in copy_headers(context, recipient) if n.lower().startswith("x-spam")]


def delivery_context(message, recipients=(("bob@example.net", 1),), **envelope):
    values = {"mail_from": "alice@example.org", "recipients": tuple(a for a, _ in recipients),
              "helo": "localhost", "client_ip": "192.0.2.10"}
    values.update(envelope)
    return DeliveryContext(Envelope(**values), message, [RecipientContext(a, acct) for a, acct in recipients])


@pytest_twisted.ensureDeferred
async def test_clean_mail_gets_headers_and_stays_in_inbox(metadata):
    delivery, _filter = pipeline(metadata)
    context = delivery_context(HAM, helo="mail.example.org")
    context.notes["auth_verdict"] = passing_auth()
    await delivery.run(context)
    recipient = context.recipients[0]
    assert recipient.mailbox == "INBOX" and JUNK_KEYWORD not in recipient.keywords
    fields = spam_fields(context, recipient)
    assert [name for name, _value in fields] == ["X-Spam-Status", "X-Spam-Result"]
    assert fields[0][1].startswith("No, score=")
    assert "DMARC_PASS" in fields[1][1]
    assert context.notes[SPAM_VERDICT_NOTE].score == context.notes["spam_score"]


@pytest_twisted.ensureDeferred
async def test_spam_goes_to_junk(metadata):
    delivery, _filter = pipeline(metadata, {"greylist": {"enabled": False}})
    context = delivery_context(SPAM, helo="mail.example.org")
    await delivery.run(context)
    recipient = context.recipients[0]
    assert 5.0 <= context.notes["spam_score"] < 12.0
    assert recipient.mailbox == "Junk" and JUNK_KEYWORD in recipient.keywords
    assert spam_fields(context, recipient)[0][1].startswith("Yes, score=")


@pytest_twisted.ensureDeferred
async def test_gtube_is_refused_and_new_triplets_greylisted(metadata):
    delivery, _filter = pipeline(metadata)
    with pytest.raises(MessageRejected) as rejected:
        await delivery.run(delivery_context(HAM + GTUBE + b"\r\n"))
    assert (rejected.value.reply.code, rejected.value.reply.status) == (550, "5.7.1")
    with pytest.raises(MessageRejected) as deferred:
        await delivery.run(delivery_context(SPAM, helo="mail.example.org"))
    assert (deferred.value.reply.code, deferred.value.reply.status) == (451, "4.7.1")
    assert "try again in 301 seconds" in deferred.value.reply.text


@pytest_twisted.ensureDeferred
async def test_discard_threshold_drops_the_copy(metadata):
    delivery, _filter = pipeline(metadata, {"greylist": {"enabled": False},
                                            "thresholds": {"spam": 1.0, "discard": 2.0, "reject": 500.0}})
    context = delivery_context(SPAM, recipients=(("bob@example.net", 1), ("carol@example.net", 2)))
    await delivery.run(context)
    assert all(r.discarded for r in context.recipients)
