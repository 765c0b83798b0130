"""The "spam verdict" stage of the inbound delivery pipeline (``mailserve.smtp.pipeline``).

It turns the SMTP envelope into a :class:`SpamContext`, asks :class:`SpamFilter` for a
verdict and applies it:

* ``reject`` refuses the message at the end of DATA with ``550 5.7.1`` (RFC 3463 section
  3.8: "delivery not authorized, message refused"), so the sender's own server tells them;
* ``greylist-defer`` answers ``451 4.7.1`` with the wait, so a real MTA retries later
  (RFC 5321 section 4.2.5: 4yz replies ask the client to try again);
* ``discard`` drops the recipient's copy silently;
* ``junk`` files the copy into Junk and sets the ``$Junk`` keyword (RFC 5788 section 3);
* in every case the ``X-Spam-Status``/``X-Spam-Result`` fields go on each recipient's copy,
  computed with that recipient's own Bayes database where it has one, so Sieve
  (the next stage) can test them; when every recipient has the same verdict they go right
  below our ``Received`` field in the shared message, as a Postfix milter's would.

The mail authentication stage is expected to leave its ``AuthVerdict`` in
``context.notes["auth_verdict"]``; without it the authentication rules simply do not fire.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from zope.interface import implementer

from mailserve.mailauth.stage import AUTH_VERDICT_NOTE, insert_below_own_trace
from mailserve.smtp.pipeline import DeliveryContext, IDeliveryStage, MessageRejected
from mailserve.spam.filter import SpamFilter
from mailserve.spam.verdict import SpamAction, SpamContext, SpamVerdict

__all__ = ["AUTH_VERDICT_NOTE", "JUNK_KEYWORD", "SPAM_VERDICT_NOTE", "SpamVerdictStage"]

SPAM_VERDICT_NOTE = "spam_verdict"
#: RFC 5788 section 3 registers ``$Junk`` for messages a filter judged to be spam.
JUNK_KEYWORD = "$Junk"


@implementer(IDeliveryStage)
class SpamVerdictStage:
    """Applies the spam filter's verdict to a message in the delivery pipeline."""

    name = "spam verdict"

    def __init__(self, spam_filter: SpamFilter, junk_mailbox: str = "Junk") -> None:
        self.spam_filter = spam_filter
        self.junk_mailbox = junk_mailbox

    def process(self, context: DeliveryContext) -> Deferred:
        return ensureDeferred(self._process(context))

    async def _process(self, context: DeliveryContext) -> Any:
        envelope = context.envelope
        spam_context = SpamContext(
            client_ip=envelope.client_ip,
            helo=envelope.helo,
            mail_from=envelope.mail_from,
            recipients=tuple(envelope.recipients),
            authenticated=envelope.authenticated_as is not None,
            auth=context.notes.get(AUTH_VERDICT_NOTE),
            accounts=tuple(dict.fromkeys(r.account for r in context.recipients if r.wanted)),
        )
        verdict: SpamVerdict = await self.spam_filter.check(context.message, spam_context)
        context.notes[SPAM_VERDICT_NOTE] = verdict
        context.notes["spam_score"] = verdict.score
        if verdict.action is SpamAction.REJECT:
            raise MessageRejected(550, "5.7.1", f"Message refused as spam (score {verdict.score:.1f})")
        if verdict.action is SpamAction.GREYLIST:
            raise MessageRejected(451, "4.7.1", f"Greylisted, please try again in {int(verdict.greylisted_for) + 1} seconds")
        wanted = [recipient for recipient in context.recipients if recipient.wanted]
        verdicts = {recipient.account: verdict.for_account(recipient.account) for recipient in wanted}
        shared = {own.header_bytes() for own in verdicts.values()}
        if len(shared) == 1:
            # One verdict for everyone (the usual case): the fields go below our Received
            # field, where a Postfix milter such as rspamd's puts them, in the one shared copy.
            context.message = insert_below_own_trace(context.message, shared.pop())
        for recipient in wanted:
            own = verdicts[recipient.account]
            if len(shared) > 1:
                # Accounts whose own Bayes database disagrees get their own fields.
                recipient.headers.extend(own.header_fields())
            if own.action is SpamAction.DISCARD:
                recipient.discard()
            elif own.action in (SpamAction.JUNK, SpamAction.REJECT):
                # REJECT here means only this recipient's own database rejects it: file it.
                recipient.mailbox = self.junk_mailbox
                recipient.keywords.add(JUNK_KEYWORD)
        return None
