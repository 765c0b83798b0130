"""The inbound delivery pipeline: named stages between "message received" and "message stored".

Every message accepted for local recipients passes, after the end of DATA/BDAT and before
anything is committed, through an ordered list of stages (``mail authentication``, ``spam
verdict``, ``sieve``).  Each stage sees the SMTP envelope, the message bytes and one
:class:`RecipientContext` per local recipient, and may

* add header fields for every recipient (``DeliveryContext.add_header``, e.g.
  ``Authentication-Results``, RFC 8601) or for one recipient (``RecipientContext.headers``,
  e.g. a per-user spam score),
* change where one recipient's copy goes and with which flags (``mailbox``, ``keywords``),
  or store it in several mailboxes, each with its own flags (``copies``, as Sieve
  ``keep``/``fileinto``/``addflag`` do, RFC 5228 §4.1, RFC 5232),
* replace one recipient's copy by an edited one (``content``, Sieve ``editheader``, RFC 5293),
* discard one recipient's copy (Sieve ``discard``, RFC 5228 §4.4), or refuse it
  (``RecipientContext.reject``), or
* refuse the whole message by raising :class:`MessageRejected` (DMARC ``p=reject``, a spam
  verdict over the reject threshold), which the SMTP session turns into the reply.

Stages are asynchronous (they may do DNS or run in a thread) and run one after another in a
fixed order, because later stages read what earlier ones decided (Sieve tests the spam
headers).  Until the stages are filled in by their packages they pass every message through.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from zope.interface import Attribute, Interface, implementer

__all__ = [
    "DeliveryContext",
    "DeliveryPipeline",
    "Envelope",
    "IDeliveryStage",
    "MailboxCopy",
    "MessageRejected",
    "PassThroughStage",
    "RecipientContext",
    "default_stages",
]


@dataclass(frozen=True)
class Reply:
    """An SMTP reply: code, enhanced status code (RFC 3463) and text."""

    code: int
    status: str
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.status} {self.text}"

    @property
    def permanent(self) -> bool:
        return self.code >= 500


class MessageRejected(Exception):
    """A stage refuses the whole message; the session answers DATA/BDAT with ``reply``."""

    def __init__(self, code: int, status: str, text: str) -> None:
        super().__init__(f"{code} {status} {text}")
        self.reply = Reply(code, status, text)


@dataclass(frozen=True)
class Envelope:
    """What the SMTP transaction said about a message (RFC 5321 §2.3.1), plus its client.

    ``mail_from`` is ``""`` for the null reverse-path (bounces, RFC 5321 §4.5.5).
    """

    mail_from: str
    recipients: tuple[str, ...]
    helo: str
    client_ip: str
    client_port: int = 0
    authenticated_as: str | None = None
    tls: str | None = None
    protocol: str = "ESMTP"
    smtputf8: bool = False
    body: str = "7BIT"
    ret: str | None = None
    envid: str | None = None
    received_at: float = field(default_factory=time.time)
    queue_id: str = ""


@dataclass(frozen=True)
class MailboxCopy:
    """One mailbox a recipient's message is stored in, with the flags of that copy.

    RFC 5228 §2.10.3 lets a script store a message in several mailboxes (``keep`` plus
    ``fileinto``, or ``fileinto :copy`` several times, RFC 3894) and RFC 5232 §3 gives each
    copy its own flags.  ``create`` asks for the mailbox to be created when it is missing
    (``fileinto :create``, RFC 5490 §3.2); without it a missing mailbox means INBOX.
    """

    mailbox: str
    keywords: frozenset[str] = frozenset()
    create: bool = False


@dataclass
class RecipientContext:
    """One local recipient's copy of the message, as stages shape it.

    ``address`` is the recipient as the client gave it in RCPT TO; ``account`` the local
    account it resolved to; ``detail`` the sub-address (``user+detail@``, RFC 5233) that
    Sieve's ``:detail`` reads.

    ``copies``, when set, lists every mailbox the message is stored in for this recipient and
    takes the place of ``mailbox``/``keywords``; an empty list stores nothing (the script only
    redirected it).  ``content``, when set, is this recipient's whole message (header fields
    of every stage included) after a Sieve ``editheader`` changed it; only ``Return-Path`` is
    still added in front at delivery.
    """

    address: str
    account: int
    detail: str | None = None
    mailbox: str = "INBOX"
    keywords: set[str] = field(default_factory=set)
    headers: list[tuple[str, str]] = field(default_factory=list)
    discarded: bool = False
    rejection: Reply | None = None
    notify: tuple[str, ...] = ()
    orcpt: str | None = None
    copies: list[MailboxCopy] | None = None
    content: bytes | None = None

    def reject(self, code: int, status: str, text: str) -> None:
        """Refuse this recipient's copy (reported to the sender in a DSN)."""
        self.rejection = Reply(code, status, text)

    def discard(self) -> None:
        """Drop this recipient's copy silently (Sieve ``discard``)."""
        self.discarded = True

    @property
    def wanted(self) -> bool:
        return not self.discarded and self.rejection is None

    def stored_copies(self) -> list[MailboxCopy]:
        """Where this recipient's message goes: ``copies``, or the one ``mailbox`` with ``keywords``."""
        if self.copies is not None:
            return list(self.copies)
        return [MailboxCopy(self.mailbox, frozenset(self.keywords))]


@dataclass
class DeliveryContext:
    """The message on its way through the pipeline."""

    envelope: Envelope
    message: bytes
    recipients: list[RecipientContext]
    headers: list[tuple[str, str]] = field(default_factory=list)
    #: Free-form results stages leave for later stages (e.g. ``"spam_score"``).
    notes: dict[str, Any] = field(default_factory=dict)

    def add_header(self, name: str, value: str) -> None:
        """Prepend a header field to every recipient's copy (trace fields go on top, RFC 5322 §3.6.7)."""
        self.headers.append((name, value))

    def message_for(self, recipient: RecipientContext) -> bytes:
        """``recipient``'s copy as it will be stored, without the ``Return-Path`` added at delivery."""
        if recipient.content is not None:
            return recipient.content
        return render_headers(self.headers) + render_headers(recipient.headers) + self.message


class IDeliveryStage(Interface):
    """One named step of inbound delivery."""

    name = Attribute("A short name shown in logs: 'mail authentication', 'spam verdict', 'sieve'")

    def process(context: DeliveryContext) -> Deferred | None:
        """Inspect and change ``context``; may raise :class:`MessageRejected`.

        May return a Deferred (or be ``async def``); the pipeline waits for it.
        """


@implementer(IDeliveryStage)
class PassThroughStage:
    """A stage that changes nothing: the place-holder until its package fills it in."""

    def __init__(self, name: str) -> None:
        self.name = name

    def process(self, context: DeliveryContext) -> None:
        return None


def default_stages() -> list[IDeliveryStage]:
    """The stages every inbound message goes through, in order (see the module docstring)."""
    return [PassThroughStage("mail authentication"), PassThroughStage("spam verdict"), PassThroughStage("sieve")]


class DeliveryPipeline:
    """Runs the stages in order over one message; see the module docstring."""

    def __init__(self, stages: Sequence[IDeliveryStage] | None = None) -> None:
        self.stages: list[IDeliveryStage] = list(default_stages() if stages is None else stages)

    @property
    def names(self) -> list[str]:
        return [stage.name for stage in self.stages]

    def replace(self, name: str, stage: IDeliveryStage) -> None:
        """Put ``stage`` where the stage called ``name`` is (how later packages plug in)."""
        for index, existing in enumerate(self.stages):
            if existing.name == name:
                self.stages[index] = stage
                return
        raise KeyError(f"no delivery stage named {name!r}; stages are {self.names}")

    def run(self, context: DeliveryContext) -> Deferred:
        """Fires with ``context`` once every stage has run, or fails with the first rejection."""

        async def go() -> DeliveryContext:
            for stage in self.stages:
                await maybeDeferred(stage.process, context)
            return context

        return ensureDeferred(go())


def render_headers(headers: Sequence[tuple[str, str]]) -> bytes:
    """Header fields as wire bytes, each ending in CRLF (values already folded by the stage)."""
    return b"".join(f"{name}: {value}\r\n".encode() for name, value in headers)
