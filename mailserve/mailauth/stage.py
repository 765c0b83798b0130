"""The "mail authentication" stage of the inbound delivery pipeline (``mailserve.smtp.pipeline``).

For every message arriving on an MX listener it runs SPF (MAIL FROM and HELO identities,
RFC 7208), DKIM (every signature, RFC 6376), ARC (RFC 8617) and DMARC (RFC 7489) through
:func:`mailserve.mailauth.results.authenticate_message` -- every lookup through the server's
one async resolver, hashing and signature checks in worker threads -- and then

* removes incoming ``Authentication-Results`` fields that claim our authserv-id (RFC 8601
  section 5: otherwise a sender could forge our verdicts) by replacing ``context.message``,
* adds our own ``Authentication-Results`` field, right below the ``Received`` field the
  session wrote (where Postfix milters such as OpenDMARC put it: the receiving MTA's own
  trace field stays on top, RFC 5321 section 4.4),
* leaves the :class:`~mailserve.mailauth.results.AuthVerdict` in
  ``context.notes["auth_verdict"]`` for the spam stage and Sieve, and
* applies the configured policy: a DMARC failure under ``p=reject`` is refused at the end of
  DATA with ``550 5.7.1`` (RFC 7489 section 6.7 leaves the action to the receiver; 5.7.1 is
  RFC 3463's "delivery not authorized, message refused"), under ``p=quarantine`` each copy
  is filed into Junk; an SPF ``fail`` may be rejected with ``550 5.7.23`` (RFC 7372 section
  3.2) or quarantined, though by default it only feeds the spam score, as DMARC is the
  policy that owners of domains publish for this.

Mail from authenticated clients (submission, or AUTH on the MX port) is the user's own and
is not checked: SPF and DMARC describe the sending server, not our users.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from zope.interface import implementer

from mailserve.mailauth.psl import PublicSuffixList
from mailserve.mailauth.results import AuthVerdict, authenticate_message
from mailserve.smtp.pipeline import DeliveryContext, IDeliveryStage, MessageRejected

__all__ = [
    "AUTH_VERDICT_NOTE",
    "AuthPolicy",
    "MailAuthenticationStage",
    "authentication_results_of",
    "insert_below_own_trace",
]

#: Where the verdict is left for later stages (the spam stage reads the same key).
AUTH_VERDICT_NOTE = "auth_verdict"
#: RFC 5788 section 3: the keyword for messages judged to be junk.
JUNK_KEYWORD = "$Junk"
_HEADER_PREFIX = b"Authentication-Results:"


@dataclass(frozen=True)
class AuthPolicy:
    """What to do with failures (the ``[mailauth]`` configuration section)."""

    authserv_id: str
    dmarc_reject: str = "reject"
    dmarc_quarantine: str = "quarantine"
    spf_fail: str = "none"
    junk_mailbox: str = "Junk"

    @classmethod
    def from_config(cls, config: Any) -> AuthPolicy:
        section = config.mailauth
        return cls(
            authserv_id=section.authserv_id or config.server.hostname,
            dmarc_reject=section.dmarc_reject,
            dmarc_quarantine=section.dmarc_quarantine,
            spf_fail=section.spf_fail,
            junk_mailbox=section.junk_mailbox,
        )


def authentication_results_of(verdict: AuthVerdict) -> str:
    """The value of the verdict's ``Authentication-Results`` field (folded, without the name)."""
    header = verdict.header.removeprefix(_HEADER_PREFIX)
    return header.decode("utf-8").strip(" \r\n")


def insert_below_own_trace(message: bytes, fields: bytes) -> bytes:
    """``message`` with header ``fields`` (CRLF-terminated) inserted below its first ``Received``.

    The SMTP session prepends its own ``Received`` field before the pipeline runs; result
    fields (Authentication-Results, X-Spam-*) go right below it, as a Postfix milter's do,
    so the receiving server's trace field stays on top (RFC 5321 section 4.4).  A message
    that does not start with a Received field gets them on top.
    """
    if not fields:
        return message
    if message[:9].lower() != b"received:":
        return fields + message
    end = 0
    length = len(message)
    while True:
        newline = message.find(b"\n", end)
        if newline < 0:
            return message + b"\r\n" + fields
        end = newline + 1
        if end >= length or message[end:end + 1] not in (b" ", b"\t"):
            return message[:end] + fields + message[end:]


@implementer(IDeliveryStage)
class MailAuthenticationStage:
    """SPF, DKIM, DMARC and ARC for each inbound message; see the module docstring."""

    name = "mail authentication"
    log = Logger()

    def __init__(self, resolver: Any, policy: AuthPolicy, psl: PublicSuffixList | None = None) -> None:
        self.resolver = resolver
        self.policy = policy
        #: Parsed lazily in a thread by check_dmarc when None; kept once parsed.
        self.psl = psl

    def process(self, context: DeliveryContext) -> Deferred | None:
        envelope = context.envelope
        if envelope.authenticated_as is not None:
            return None
        return ensureDeferred(self._process(context))

    async def _process(self, context: DeliveryContext) -> None:
        envelope = context.envelope
        try:
            ipaddress.ip_address(envelope.client_ip)
        except ValueError:
            # Not an IP client (a local pipe): nothing SPF or DMARC could say about it.
            return
        if self.psl is None:
            from twisted.internet.threads import deferToThread

            self.psl = await deferToThread(PublicSuffixList.bundled)
        verdict: AuthVerdict = await authenticate_message(
            self.resolver, context.message, envelope.client_ip, envelope.helo, envelope.mail_from,
            self.policy.authserv_id, psl=self.psl,
        )
        context.message = insert_below_own_trace(verdict.message, verdict.header)
        context.notes[AUTH_VERDICT_NOTE] = verdict
        self.log.debug(
            "{queue_id}: spf={spf} dkim={dkim} dmarc={dmarc} arc={arc}",
            queue_id=envelope.queue_id, spf=verdict.spf.result,
            dkim=",".join(r.result for r in verdict.dkim) or "none", dmarc=verdict.dmarc.result,
            arc=verdict.arc.result,
        )
        self._apply_policy(context, verdict)

    def _apply_policy(self, context: DeliveryContext, verdict: AuthVerdict) -> None:
        policy = self.policy
        action = "none"
        disposition = verdict.disposition
        if disposition == "reject":
            action = policy.dmarc_reject
        elif disposition == "quarantine":
            action = policy.dmarc_quarantine
        if action == "reject":
            raise MessageRejected(
                550, "5.7.1",
                f"Message refused: {verdict.dmarc.from_domain} publishes a DMARC reject policy and the "
                "message is not authenticated by it (RFC 7489)")
        spf_action = policy.spf_fail if verdict.spf.result == "fail" and verdict.spf.identity == "mailfrom" else "none"
        if spf_action == "reject":
            text = verdict.spf.explanation or f"{verdict.spf.client_ip} is not allowed to send for {verdict.spf.domain}"
            raise MessageRejected(550, "5.7.23", f"SPF validation failed: {text}")
        if action == "quarantine" or spf_action == "quarantine":
            for recipient in context.recipients:
                if recipient.wanted:
                    recipient.mailbox = policy.junk_mailbox
                    recipient.keywords.add(JUNK_KEYWORD)
            context.notes["quarantined"] = "dmarc" if action == "quarantine" else "spf"
