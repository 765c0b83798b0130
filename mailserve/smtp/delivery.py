"""Local delivery: one message into the mailboxes of its local recipients, durably.

The bytes are parsed and written to the blob store once (``core.ingest``) however many
recipients share them, then each recipient's copy is one ``core.append_ingested``
transaction (which also checks that account's quota).  The caller (the SMTP session) answers
``250`` only after every one of these Deferreds has fired, so an acknowledged message is on
disk for every recipient (RFC 5321 §6.1: the server takes responsibility with its 250).

A ``Return-Path:`` field carrying the reverse-path is prepended at delivery (RFC 5321
§4.4: "the final delivery SMTP server" adds it), together with whatever header fields the
pipeline stages asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.logger import Logger

from mailserve.core.errors import MailError, NoSuchMailbox, QuotaExceeded
from mailserve.smtp.pipeline import DeliveryContext, RecipientContext, Reply, render_headers

__all__ = ["LocalDelivery", "RecipientOutcome", "return_path_header"]


def return_path_header(mail_from: str) -> bytes:
    """``Return-Path: <reverse-path>`` (RFC 5321 §4.4; ``<>`` for the null path, RFC 5322 §3.6.7)."""
    return f"Return-Path: <{mail_from}>\r\n".encode()


@dataclass(frozen=True)
class RecipientOutcome:
    """What happened to one recipient's copy: stored (``uid`` set), discarded, or failed."""

    recipient: RecipientContext
    uid: int | None = None
    mailbox: int | None = None
    failure: Reply | None = None

    @property
    def delivered(self) -> bool:
        return self.uid is not None


class LocalDelivery:
    """Stores messages for local accounts through the mail core."""

    log = Logger()

    def __init__(self, core, quota_full_permanent: bool = False) -> None:
        self.core = core
        self.quota_full_permanent = quota_full_permanent

    def quota_reply(self) -> Reply:
        """RFC 3463 §3.3: X.2.2 "mailbox full"; temporary by default, as Postfix and Dovecot do."""
        if self.quota_full_permanent:
            return Reply(552, "5.2.2", "Mailbox full")
        return Reply(452, "4.2.2", "Mailbox full, try again later")

    def deliver(self, context: DeliveryContext) -> Deferred:
        """Store ``context.message`` for every wanted recipient; fires with a RecipientOutcome each.

        Recipients whose copies end up byte-identical share one ingest.  Discarded copies count
        as delivered with no mailbox (the user asked for it); rejected ones carry their reply.
        """
        return ensureDeferred(self._deliver(context))

    async def _deliver(self, context: DeliveryContext) -> list[RecipientOutcome]:
        envelope = context.envelope
        common = return_path_header(envelope.mail_from) + render_headers(context.headers)
        outcomes: dict[int, RecipientOutcome] = {}
        by_content: dict[bytes, list[tuple[int, RecipientContext]]] = {}
        seen_accounts: set[int] = set()
        for index, recipient in enumerate(context.recipients):
            if recipient.rejection is not None:
                outcomes[index] = RecipientOutcome(recipient, failure=recipient.rejection)
                continue
            if recipient.discarded or recipient.account in seen_accounts:
                # One copy per account however many of its addresses were named (as Postfix's
                # duplicate elimination does); discards are successful deliveries to nowhere.
                outcomes[index] = RecipientOutcome(recipient, uid=0)
                continue
            seen_accounts.add(recipient.account)
            prefix = common + render_headers(recipient.headers)
            by_content.setdefault(prefix, []).append((index, recipient))
        for prefix, group in by_content.items():
            raw = prefix + context.message
            ingested = await self.core.ingest(raw)
            results = await DeferredList(
                [self._append(recipient, ingested) for _, recipient in group], consumeErrors=True
            )
            for (index, recipient), (ok, value) in zip(group, results):
                if ok:
                    outcomes[index] = value
                else:
                    outcomes[index] = RecipientOutcome(recipient, failure=self._failure_reply(value))
        return [outcomes[i] for i in range(len(context.recipients))]

    def _failure_reply(self, failure) -> Reply:
        if failure.check(QuotaExceeded):
            return self.quota_reply()
        if failure.check(MailError):
            return Reply(550, "5.2.0", f"Mailbox unavailable: {failure.value}")
        self.log.failure("local delivery failed", failure)
        return Reply(451, "4.3.0", "Local delivery failed, try again later")

    def _append(self, recipient: RecipientContext, ingested) -> Deferred:
        account = recipient.account
        try:
            mailbox = self.core.find_mailbox(account, recipient.mailbox)
        except NoSuchMailbox:
            # A Sieve fileinto to a missing folder files into INBOX (RFC 5228 §4.1 leaves this to
            # the implementation; Dovecot and Stalwart do the same without :create).
            mailbox = self.core.find_mailbox(account, "INBOX")
        d = self.core.append_ingested(account, mailbox.id, ingested, sorted(recipient.keywords))
        d.addCallback(lambda result: RecipientOutcome(recipient, uid=result.uid, mailbox=mailbox.id))
        return d


def delivered_count(outcomes: Sequence[RecipientOutcome]) -> int:
    return sum(1 for outcome in outcomes if outcome.delivered)
