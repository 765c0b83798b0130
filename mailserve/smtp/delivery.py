"""Local delivery: one message into the mailboxes of its local recipients, durably.

The bytes are parsed and written to the blob store once (``core.ingest``) however many
recipients share them, then each recipient's copy is one ``core.append_ingested``
transaction (which also checks that account's quota).  The caller (the SMTP session) answers
``250`` only after every one of these Deferreds has fired, so an acknowledged message is on
disk for every recipient (RFC 5321 §6.1: the server takes responsibility with its 250).

A ``Return-Path:`` field carrying the reverse-path is prepended at delivery (RFC 5321
§4.4: "the final delivery SMTP server" adds it), together with whatever header fields the
pipeline stages asked for.

A recipient may want its message in several mailboxes (``RecipientContext.copies``: Sieve
``keep`` plus ``fileinto``, RFC 5228 §2.10.3), each copy with its own flags (RFC 5232 §3).
Every copy is its own ``append_ingested`` transaction over the one ingested blob, and all of
them are committed before the recipient counts as delivered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.logger import Logger

from mailserve.core.errors import InvalidMailboxName, MailboxExists, MailError, NoSuchMailbox, QuotaExceeded
from mailserve.smtp.pipeline import DeliveryContext, MailboxCopy, RecipientContext, Reply

__all__ = ["LocalDelivery", "RecipientOutcome", "return_path_header"]


def return_path_header(mail_from: str) -> bytes:
    """``Return-Path: <reverse-path>`` (RFC 5321 §4.4; ``<>`` for the null path, RFC 5322 §3.6.7)."""
    return f"Return-Path: <{mail_from}>\r\n".encode()


@dataclass(frozen=True)
class RecipientOutcome:
    """What happened to one recipient's copy: stored (``uid`` set), discarded, or failed.

    ``uid``/``mailbox`` are those of the first stored copy; ``stored`` lists ``(mailbox id,
    uid)`` of every copy (several when Sieve filed the message into more than one mailbox).
    """

    recipient: RecipientContext
    uid: int | None = None
    mailbox: int | None = None
    failure: Reply | None = None
    stored: tuple[tuple[int, int], ...] = ()

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
        return_path = return_path_header(envelope.mail_from)
        outcomes: dict[int, RecipientOutcome] = {}
        by_content: dict[bytes, list[tuple[int, RecipientContext]]] = {}
        seen_accounts: set[int] = set()
        for index, recipient in enumerate(context.recipients):
            if recipient.rejection is not None:
                outcomes[index] = RecipientOutcome(recipient, failure=recipient.rejection)
                continue
            if recipient.discarded or recipient.account in seen_accounts or not recipient.stored_copies():
                # One copy per account however many of its addresses were named (as Postfix's
                # duplicate elimination does); discards, and scripts that only redirected, are
                # successful deliveries to nowhere.
                outcomes[index] = RecipientOutcome(recipient, uid=0)
                continue
            seen_accounts.add(recipient.account)
            raw = return_path + context.message_for(recipient)
            by_content.setdefault(raw, []).append((index, recipient))
        for raw, group in by_content.items():
            ingested = await self.core.ingest(raw)
            results = await DeferredList(
                [ensureDeferred(self._store_copies(recipient, ingested)) for _, recipient in group],
                consumeErrors=True,
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

    async def _store_copies(self, recipient: RecipientContext, ingested) -> RecipientOutcome:
        """Store every copy the recipient wants, one after another, each durably.

        The first failure is raised only when no copy was stored: once one copy is in a
        mailbox the message is the user's and a retry by the client would duplicate it, so a
        later failing copy (a quota hit by the second ``fileinto``) is logged, as Pigeonhole
        logs a failed action after others succeeded.
        """
        stored: list[tuple[int, int]] = []
        targets: set[int] = set()
        first_error = None
        for copy in recipient.stored_copies():
            try:
                mailbox = await self._target_mailbox(recipient.account, copy)
                if mailbox.id in targets:
                    continue  # RFC 5228 §2.10.3: never two copies in one mailbox
                result = await self.core.append_ingested(recipient.account, mailbox.id, ingested,
                                                         sorted(copy.keywords))
            except Exception as error:  # noqa: BLE001 - reported below or re-raised
                if first_error is None:
                    first_error = error
                self.log.warn("storing a copy for account {account} in {mailbox!r} failed: {error}",
                              account=recipient.account, mailbox=copy.mailbox, error=str(error))
                continue
            targets.add(mailbox.id)
            stored.append((mailbox.id, result.uid))
        if not stored:
            if first_error is not None:
                raise first_error
            raise MailError("no mailbox to store the message in")
        return RecipientOutcome(recipient, uid=stored[0][1], mailbox=stored[0][0], stored=tuple(stored))

    async def _target_mailbox(self, account: int, copy: MailboxCopy):
        """The mailbox of ``copy``: created first for ``:create`` (RFC 5490 §3.2), else INBOX if missing.

        RFC 5228 §4.1 leaves a missing folder to the implementation; Dovecot and Stalwart
        deliver to INBOX rather than lose or bounce the message, and so do we.
        """
        try:
            return self.core.find_mailbox(account, copy.mailbox)
        except NoSuchMailbox:
            pass
        if copy.create:
            try:
                return await self.core.create_mailbox(account, copy.mailbox)
            except MailboxExists:
                return self.core.find_mailbox(account, copy.mailbox)  # created meanwhile
            except InvalidMailboxName as error:
                self.log.warn("cannot create mailbox {mailbox!r} for account {account}: {error}",
                              mailbox=copy.mailbox, account=account, error=str(error))
        else:
            self.log.info("mailbox {mailbox!r} of account {account} does not exist; delivering to INBOX",
                          mailbox=copy.mailbox, account=account)
        return self.core.find_mailbox(account, "INBOX")


def delivered_count(outcomes: Sequence[RecipientOutcome]) -> int:
    return sum(1 for outcome in outcomes if outcome.delivered)
