"""The "sieve" stage of the inbound delivery pipeline: each recipient's active script, carried out.

For every local recipient (``RecipientContext``) the account's active script (``SieveScripts``)
runs against the message as that recipient will receive it (the trace and spam header fields
of the earlier stages included, so scripts can test ``X-Spam-Status``), and its actions are
turned into what delivery and the outbound queue do:

* ``keep`` / ``fileinto`` (RFC 5228 §4.1, §4.3) become ``RecipientContext.copies``, one
  :class:`~mailserve.smtp.pipeline.MailboxCopy` per mailbox with that copy's flags (RFC 5232);
  ``fileinto :create`` creates the mailbox at delivery (RFC 5490 §3.2);
* ``discard`` (RFC 5228 §4.4) discards the copy; ``reject``/``ereject`` (RFC 5429) refuse this
  recipient with the script's reason, which the SMTP session reports in its reply or a DSN;
* ``redirect`` (RFC 5228 §4.2, ``:copy`` RFC 3894) queues the message for the new address
  with the original envelope sender, behind a loop guard (below);
* ``vacation`` (RFC 5230, RFC 6131) queues an auto-reply from the null reverse-path with
  ``Auto-Submitted: auto-replied`` (RFC 3834 §5);
* ``editheader`` (RFC 5293) replaces the recipient's copy (``RecipientContext.content``).

What a script must remember between messages (vacation replies, RFC 5230 §4.2; duplicate IDs,
RFC 7352 §3; redirects already sent) is kept in the metadata store under
``keys.sieve_tracking`` and committed, together with the queued messages, before the SMTP
session answers ``250``.

The script is read, compiled (cached by the SHA-256 of its text) and run in a worker thread,
never on the reactor.  A script that fails (a limit hit, a bad regex, an invalid stored
script) leaves the recipient's default delivery in place (the implicit keep, RFC 5228
§2.10.6) and the reason is logged.

Loop guard for ``redirect``.  Postfix refuses to forward a message that already carries its
own ``Delivered-To:`` for the recipient; Pigeonhole does not redirect the same message twice.
We do both: the redirected copy gets ``Delivered-To: <recipient>`` on top, a message that
already has it for this recipient is kept instead of redirected, a redirect to one of the
recipient's own addresses is a keep, a message with too many ``Received:`` fields is not sent
on, and a redirect of one Message-ID to one address is sent only once a day.
"""

from __future__ import annotations

import datetime
import email.utils
import hashlib
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from email.header import Header
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from mailserve.core import keys
from mailserve.core.errors import NoSuchMailbox
from mailserve.sieve.environment import IResponseTracker, SieveEnvironment
from mailserve.sieve.errors import SieveSyntaxError
from mailserve.sieve.interpreter import Script, SieveLimits, compile_script, run
from mailserve.sieve.message import SieveMessage, decode_header_value, unfold
from mailserve.sieve.result import (
    Discard,
    Ereject,
    FileInto,
    Keep,
    Redirect,
    Reject,
    SieveResult,
    Vacation,
)
from mailserve.sieve.scripts import ScriptError, SieveScripts
from mailserve.smtp.pipeline import DeliveryContext, IDeliveryStage, MailboxCopy, RecipientContext

__all__ = ["CompiledScripts", "OutboundMessage", "SieveStage", "StoredResponseTracker", "spam_test_values"]

#: Compiled scripts kept per stage (one per distinct script text).
SCRIPT_CACHE_SIZE = 256
#: How long a redirect of one Message-ID to one address is remembered (Pigeonhole's
#: ``sieve_redirect_duplicate_period`` is 12 hours; a day covers a sender's retries).
REDIRECT_MEMORY_SECONDS = 86400
#: Longest reject reason put into an SMTP reply or DSN (RFC 5321 §4.5.3.1.5: 512-octet replies).
MAX_REASON_LENGTH = 400
#: Expired tracking records removed per commit (bounded work per delivery).
PRUNE_SCAN = 64
#: RFC 3463 §3.8: X.7.1 "delivery not authorized, message refused" (what Pigeonhole reports).
REJECT_STATUS = (550, "5.7.1")
#: IMAP system flags a script may set (RFC 9051 §2.3.2; ``\\Recent`` is the server's alone).
SYSTEM_FLAGS = frozenset({"\\seen", "\\answered", "\\flagged", "\\deleted", "\\draft"})
#: RFC 9051 §9 ``atom``: any CHAR except atom-specials; a keyword is an atom.
_KEYWORD = re.compile(r"[!#$&'+-\[^-z|}~]+")
MAX_KEYWORD_LENGTH = 100
MAX_KEYWORDS_PER_COPY = 64
#: Longest In-Reply-To/References copied into a vacation reply.
MAX_REFERENCES_LENGTH = 900


# -- tracking store ------------------------------------------------------------------------------
@implementer(IResponseTracker)
class StoredResponseTracker:
    """Vacation, duplicate and redirect memory of one account, in the metadata store.

    ``seen`` reads the store (safe from the worker thread the script runs in); ``record``
    only notes the key, so nothing is written unless the script completes (RFC 7352 §3), and
    :meth:`commit` writes every noted key in one transaction.
    """

    def __init__(self, metadata: Any, account: int, clock: Callable[[], float]) -> None:
        self.metadata = metadata
        self.account = account
        self.clock = clock
        self.pending: dict[str, tuple[int, bool]] = {}

    def _expiry(self, txn: Any, key: str) -> int | None:
        value = txn.get(keys.sieve_tracking(self.account, key))
        return keys.U64.unpack(value)[0] if value is not None else None

    def seen(self, key: str) -> bool:
        expiry = self.metadata.read(lambda txn: self._expiry(txn, key))
        return expiry is not None and expiry > self.clock()

    def record(self, key: str, seconds: int, refresh: bool) -> None:
        self.pending[key] = (seconds, refresh)

    def commit(self) -> Deferred | None:
        """Write the noted keys durably (``None`` when there are none)."""
        if not self.pending:
            return None
        pending, self.pending = dict(self.pending), {}
        now = int(self.clock())

        def transaction(txn: Any) -> None:
            for key, (seconds, refresh) in pending.items():
                expiry = self._expiry(txn, key)
                if expiry is not None and expiry > now and not refresh:
                    continue  # RFC 7352 §3.2: only :last moves the expiry of a known ID
                txn.put(keys.sieve_tracking(self.account, key), keys.U64.pack(now + seconds))
            self._prune(txn, next(iter(pending)), now)

        return self.metadata.write(transaction)

    def _prune(self, txn: Any, near: str, now: int) -> None:
        """Drop expired records among ``PRUNE_SCAN`` ones from ``near`` on (wrapping to the start
        of the account's range), so the set stays bounded at a fixed cost per delivery."""
        prefix = keys.sieve_tracking_prefix(self.account)
        start = keys.sieve_tracking(self.account, near)
        end = prefix[:-1] + bytes([prefix[-1] + 1])
        expired: list[bytes] = []
        scanned = 0
        for low, high in ((start, end), (prefix, start)):
            for key, value in txn.scan(low, high):
                if scanned >= PRUNE_SCAN:
                    break
                scanned += 1
                if len(value) == 8 and keys.U64.unpack(value)[0] <= now:
                    expired.append(key)
        for key in expired:
            txn.delete(key)


# -- compiled script cache -----------------------------------------------------------------------
class CompiledScripts:
    """Compiled scripts by the SHA-256 of their text: a script is compiled once, not per message.

    Used from worker threads, hence the lock; bounded (least recently used goes first).
    """

    def __init__(self, limits: SieveLimits, size: int = SCRIPT_CACHE_SIZE) -> None:
        #: The limits compiled with when ``get`` is not given others.
        self.limits = limits
        self.size = size
        self._scripts: OrderedDict[bytes, Script] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, text: str, limits: SieveLimits | None = None) -> Script:
        """The compiled ``text``; raises ``SieveSyntaxError`` if it does not compile."""
        digest = hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).digest()
        with self._lock:
            script = self._scripts.get(digest)
            if script is not None:
                self._scripts.move_to_end(digest)
                return script
        script = compile_script(text, limits or self.limits)
        with self._lock:
            self._scripts[digest] = script
            while len(self._scripts) > self.size:
                self._scripts.popitem(last=False)
        return script

    def __len__(self) -> int:
        return len(self._scripts)


# -- spamtest / virustest ------------------------------------------------------------------------
def spam_test_values(notes: dict[str, Any], account: int) -> tuple[int | None, int | None, int | None]:
    """``(spamtest 1..10, spamtestplus percent 0..100, virustest 1..5)`` from the spam stage's notes.

    RFC 5235 §3.2 leaves the scale to the site: the score is mapped linearly so that 0 (or
    less) is 1 "clear", the filter's own threshold ``required`` is 6 / 50 %, and twice the
    threshold or more is 10 / 100 %.  ``None`` means "not tested" (no verdict, RFC 5235 §3.1).
    The spam rules look at attachments too: an executable attachment makes virustest 4
    ("possibly contains a known virus", RFC 5235 §3.4), otherwise 1 ("no known viruses").
    """
    verdict = notes.get("spam_verdict")
    virus: int | None = None
    if verdict is not None:
        if hasattr(verdict, "for_account"):
            verdict = verdict.for_account(account)
        score, required = float(verdict.score), float(getattr(verdict, "required", 5.0))
        rules = getattr(verdict, "rules", {}) or {}
        virus = 4 if "EXECUTABLE_ATTACHMENT" in rules else 1
    elif notes.get("spam_score") is not None:
        score, required = float(notes["spam_score"]), 5.0
    else:
        return None, None, None
    if required > 0:
        percent = round(100 * min(max(score / (2 * required), 0.0), 1.0))
    else:
        percent = 100 if score > 0 else 0
    level = 1 + int(percent * 9 / 100 + 0.5)
    return level, percent, virus


# -- the plan a script run produces --------------------------------------------------------------
@dataclass(frozen=True)
class OutboundMessage:
    """A message for the outbound queue: a redirect or a vacation reply."""

    mail_from: str
    recipient: str
    message: bytes
    notify: tuple[str, ...] = ()
    kind: str = "redirect"


@dataclass
class _Plan:
    """What one script run decided for one recipient, computed in the worker thread."""

    script: str
    result: SieveResult
    copies: list[MailboxCopy] = field(default_factory=list)
    content: bytes | None = None
    rejection: str | None = None
    discard: bool = False
    outbound: list[OutboundMessage] = field(default_factory=list)
    tracker: StoredResponseTracker | None = None
    notes: list[str] = field(default_factory=list)


def clean_reason(reason: str) -> str:
    """A reject reason fit for one SMTP reply line and a DSN diagnostic (RFC 5321 §4.2)."""
    text = " ".join(reason.split())
    text = "".join(char if 0x20 <= ord(char) < 0x7F else "?" for char in text)
    if len(text) > MAX_REASON_LENGTH:
        text = text[: MAX_REASON_LENGTH - 3] + "..."
    return text or "Message rejected"


def clean_flags(flags: tuple[str, ...] | frozenset[str] | set[str]) -> frozenset[str]:
    """Flags an IMAP client can see: system flags and atom keywords; others are dropped, as
    Pigeonhole ignores invalid flags (RFC 5232 §3 leaves invalid flags to the server)."""
    kept: list[str] = []
    for flag in flags:
        if flag.startswith("\\"):
            if flag.lower() in SYSTEM_FLAGS:
                kept.append(flag)
        elif len(flag) <= MAX_KEYWORD_LENGTH and _KEYWORD.fullmatch(flag):
            kept.append(flag)
    return frozenset(kept[:MAX_KEYWORDS_PER_COPY])


# -- the stage -----------------------------------------------------------------------------------
@implementer(IDeliveryStage)
class SieveStage:
    """Runs each recipient's active Sieve script and carries out its actions (module docstring)."""

    name = "sieve"
    log = Logger()

    def __init__(
        self,
        scripts: SieveScripts,
        core: Any,
        directory: Any,
        queue: Any,
        hostname: str,
        reactor: Any = None,
        limits: SieveLimits | Callable[[], SieveLimits] | None = None,
        max_received: int = 50,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.scripts = scripts
        self.core = core
        self.directory = directory
        self.queue = queue
        self.hostname = hostname
        self.reactor = reactor
        #: Fixed limits, or a callable giving the current ones (the server's live configuration).
        self._limits = limits or SieveLimits()
        self.max_received = max_received
        self.clock = clock
        self.compiled = CompiledScripts(self.limits)

    @property
    def limits(self) -> SieveLimits:
        """The limits in force now: ``managesieve.max_script_size`` is a live setting, and a
        script accepted under a raised limit must also run at delivery."""
        return self._limits() if callable(self._limits) else self._limits

    @limits.setter
    def limits(self, value: SieveLimits | Callable[[], SieveLimits]) -> None:
        self._limits = value

    @classmethod
    def from_server(cls, server: Any) -> SieveStage:
        """The stage of an assembled ``MailServer`` (what ``mailserve.smtp.stages`` calls)."""
        config = server.config

        def limits() -> SieveLimits:
            current = server.config.managesieve
            return SieveLimits(max_script_size=current.max_script_size, max_redirects=current.max_redirects)

        return cls(
            SieveScripts(server.metadata),
            server.core,
            server.directory,
            server.outbound_queue,
            config.server.hostname,
            reactor=server.reactor,
            limits=limits,
            max_received=config.smtp.max_received_headers,
        )

    def _in_thread(self, fn: Callable, *args: Any) -> Deferred:
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), fn, *args)

    def process(self, context: DeliveryContext) -> Deferred:
        return ensureDeferred(self._process(context))

    async def _process(self, context: DeliveryContext) -> None:
        first_of_account: dict[int, RecipientContext] = {}
        for recipient in context.recipients:
            if not recipient.wanted:
                continue
            first = first_of_account.get(recipient.account)
            if first is not None:
                # One account named by two of its addresses gets one copy (delivery keeps the
                # first); its script runs once, so a redirect or vacation is not sent twice.
                _follow(first, recipient)
                continue
            first_of_account[recipient.account] = recipient
            try:
                await self._filter(context, recipient)
            except Exception:  # noqa: BLE001 - a failing script must never lose the message
                self.log.failure("sieve for account {account} failed; delivering to the default mailbox",
                                 account=recipient.account)
                recipient.copies = None
                recipient.content = None

    async def _filter(self, context: DeliveryContext, recipient: RecipientContext) -> None:
        plan: _Plan | None = await self._in_thread(self._evaluate, context, recipient)
        if plan is None:
            return  # no active script: implicit keep (RFC 5228 §2.10.2)
        for note in plan.notes:
            self.log.info("sieve script {script!r} of account {account}: {note}", script=plan.script,
                          account=recipient.account, note=note)
        if plan.result.error is not None:
            self.log.warn("sieve script {script!r} of account {account} failed: {error}; keeping the message",
                          script=plan.script, account=recipient.account, error=plan.result.error)
            return
        for outbound in plan.outbound:
            await self.queue.enqueue(outbound.mail_from, [(outbound.recipient, outbound.notify, None)],
                                     outbound.message)
            self.log.info("sieve {kind} for account {account} queued to <{to}>", kind=outbound.kind,
                          account=recipient.account, to=outbound.recipient)
        if plan.tracker is not None:
            committed = plan.tracker.commit()
            if committed is not None:
                await committed
        if plan.rejection is not None:
            recipient.reject(REJECT_STATUS[0], REJECT_STATUS[1], plan.rejection)
            return
        if plan.discard and not plan.copies:
            recipient.discard()
            return
        recipient.copies = plan.copies
        recipient.content = plan.content

    # -- in the worker thread ------------------------------------------------------------------
    def _evaluate(self, context: DeliveryContext, recipient: RecipientContext) -> _Plan | None:
        active = self.scripts.active_script(recipient.account)
        if active is None:
            return None
        name, text = active
        try:
            script = self.compiled.get(text, self.limits)
        except SieveSyntaxError as error:
            return _Plan(name, SieveResult([Keep((), implicit=True)], True, f"script does not compile: {error}"))
        raw = context.message_for(recipient)
        envelope = context.envelope
        message = SieveMessage(raw, envelope_from=envelope.mail_from, envelope_to=recipient.address)
        tracker = StoredResponseTracker(self.core.metadata, recipient.account, self.clock)
        addresses = tuple(self.directory.addresses_of(recipient.account))
        spam, percent, virus = spam_test_values(context.notes, recipient.account)
        env = SieveEnvironment(
            mailbox_exists=lambda mailbox: self._mailbox_exists(recipient.account, mailbox),
            duplicate_tracker=tracker,
            vacation_tracker=tracker,
            include_resolver=lambda include, location: self._include(recipient.account, include, location),
            now=lambda: datetime.datetime.fromtimestamp(self.clock()).astimezone(),
            spam_score=spam,
            spam_percent=percent,
            virus_score=virus,
            user_addresses=addresses,
            subaddress_separator=self.directory.subaddress_separator or "+",
            envelope_to_parts=_recipient_parts(recipient, self.directory.subaddress_separator or "+"),
        )
        result = run(script, message, env, self.limits)
        plan = _Plan(name, result, tracker=tracker)
        if result.error is not None:
            return plan
        if result.headers is not None:
            plan.content = result.header_bytes() + b"\r\n" + message.body
        delivered = plan.content if plan.content is not None else raw
        for action in result.actions:
            if isinstance(action, Keep):
                plan.copies.append(MailboxCopy(recipient.mailbox, clean_flags(action.flags) | clean_flags(recipient.keywords)))
            elif isinstance(action, FileInto):
                plan.copies.append(MailboxCopy(action.mailbox, clean_flags(action.flags), action.create))
            elif isinstance(action, Discard):
                plan.discard = True
            elif isinstance(action, (Reject, Ereject)):
                plan.rejection = clean_reason(action.reason)
            elif isinstance(action, Redirect):
                self._plan_redirect(plan, action, message, delivered, recipient, addresses, tracker)
            elif isinstance(action, Vacation):
                plan.outbound.append(self._vacation_reply(action, recipient))
        return plan

    def _mailbox_exists(self, account: int, name: str) -> bool:
        """``mailboxexists`` (RFC 5490 §3.1)."""
        try:
            self.core.find_mailbox(account, name)
        except NoSuchMailbox:
            return False
        return True

    def _include(self, account: int, name: str, location: str) -> str | None:
        """RFC 6609 §3.2: ``:personal`` scripts are the account's own; there are no global ones."""
        if location != "personal":
            return None
        try:
            return self.scripts.get_script(account, name)
        except ScriptError:
            return None

    def _plan_redirect(
        self,
        plan: _Plan,
        action: Redirect,
        message: SieveMessage,
        delivered: bytes,
        recipient: RecipientContext,
        addresses: tuple[str, ...],
        tracker: StoredResponseTracker,
    ) -> None:
        target = action.address
        own = {address.lower() for address in addresses} | {recipient.address.lower()}
        delivered_to = {unfold(value).strip("<> ").lower() for value in message.header_values("delivered-to")}
        received = len(message.header_values("received"))
        reason = None
        if target.lower() in own:
            reason = f"redirect to <{target}> is to the recipient itself"
        elif own & delivered_to:
            reason = f"mail forwarding loop: the message was already delivered to <{recipient.address}>"
        elif received >= self.max_received:
            reason = f"mail forwarding loop: {received} Received fields"
        if reason is None:
            message_ids = message.header_values("message-id")
            if message_ids:
                key = "redirect:" + hashlib.sha256(
                    f"{message_ids[0].strip()}\0{target.lower()}".encode("utf-8", "surrogateescape")).hexdigest()
                if tracker.seen(key):
                    plan.notes.append(f"the message was already redirected to <{target}>")
                    return
                tracker.record(key, REDIRECT_MEMORY_SECONDS, False)
            header = f"Delivered-To: {recipient.address}\r\n".encode("utf-8", "surrogateescape")
            mail_from = message.envelope_from
            plan.outbound.append(OutboundMessage(mail_from, target, header + delivered))
            return
        # Not sending it on must not lose it: the message is kept (RFC 5228 §2.10.6 spirit).
        plan.notes.append(reason + "; keeping the message instead")
        if not action.copy and not any(copy.mailbox == recipient.mailbox for copy in plan.copies):
            plan.copies.append(MailboxCopy(recipient.mailbox, clean_flags(recipient.keywords)))

    def _vacation_reply(self, action: Vacation, recipient: RecipientContext) -> OutboundMessage:
        """The auto-reply of RFC 5230 §5, sent from the null reverse-path (RFC 3834 §3.3)."""
        from_header = _from_header(action.from_address, recipient.address)
        lines = [
            ("From", from_header),
            ("To", f"<{action.to}>"),
            ("Subject", _encode_header(action.subject[:998], "Subject")),
            ("Date", email.utils.formatdate(self.clock(), localtime=True)),
            ("Message-ID", email.utils.make_msgid(domain=self.hostname)),
        ]
        in_reply_to = _one_line(action.in_reply_to)
        references = _one_line(action.references)
        if len(references) > MAX_REFERENCES_LENGTH:
            # Keep the newest identifiers (RFC 5322 §3.6.4 lets a long References be trimmed).
            references = references[-MAX_REFERENCES_LENGTH:].partition(" ")[2]
        if in_reply_to:
            lines.append(("In-Reply-To", in_reply_to[:MAX_REFERENCES_LENGTH]))  # RFC 5230 §5.8
        if references:
            lines.append(("References", references))
        lines.append(("Auto-Submitted", "auto-replied"))  # RFC 3834 §5, RFC 5230 §5.1
        lines.append(("MIME-Version", "1.0"))
        body = action.body.replace("\r\n", "\n").replace("\r", "\n")
        if action.mime and _looks_like_mime_entity(body):
            # RFC 5230 §4.4: with :mime the reason is a whole MIME entity, headers included.
            entity = body.replace("\n", "\r\n").encode("utf-8")
        else:
            if body.isascii():
                encoded, transfer = body.replace("\n", "\r\n").encode("ascii"), "7bit"
            else:
                import quopri

                encoded = quopri.encodestring(body.encode("utf-8")).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
                transfer = "quoted-printable"
            entity = (
                b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: "
                + transfer.encode() + b"\r\n\r\n" + encoded
            )
        if not entity.endswith(b"\r\n"):
            entity += b"\r\n"
        head = "".join(f"{name}: {value}\r\n" for name, value in lines).encode("utf-8")
        return OutboundMessage("", action.to, head + entity, ("NEVER",), "vacation reply")


def _follow(first: RecipientContext, other: RecipientContext) -> None:
    """Give ``other`` (the same account under another address) the decision made for ``first``."""
    other.copies = first.copies
    other.content = first.content
    if first.rejection is not None:
        other.rejection = first.rejection
    if first.discarded:
        other.discarded = True


def _recipient_parts(recipient: RecipientContext, separator: str) -> tuple[str, str | None]:
    """``(user, detail)`` of the envelope recipient as the directory split it (RFC 5233 §4)."""
    local = recipient.address.rpartition("@")[0] or recipient.address
    if recipient.detail is not None:
        suffix = separator + recipient.detail
        if local.lower().endswith(suffix.lower()):
            return local[: len(local) - len(suffix)], recipient.detail
        return local.split(separator, 1)[0], recipient.detail
    return local, None


def _one_line(value: str) -> str:
    """``value`` with every run of white space (line breaks decoded from encoded words
    included) made one space: copied header text can never start a header field of its own."""
    return " ".join(value.split())


def _from_header(given: str, recipient: str) -> str:
    """The reply's From: the script's ``:from`` when it is a valid address, else the recipient."""
    name, address = email.utils.parseaddr(decode_header_value(given)) if given else ("", "")
    if not address or "@" not in address or any(char in address for char in "\r\n<>"):
        return f"<{recipient}>"
    name = _one_line(name)
    if name:
        return email.utils.formataddr((name, address), charset="utf-8")
    return f"<{address}>"


def _encode_header(value: str, name: str) -> str:
    """RFC 2047 encoded words for a non-ASCII value (RFC 5230 §5.4: the subject may be any text)."""
    value = " ".join(value.split())
    if value.isascii():
        return value
    return Header(value, "utf-8", header_name=name).encode()


def _looks_like_mime_entity(body: str) -> bool:
    """Whether a ``:mime`` reason starts with MIME header fields (RFC 5230 §4.4)."""
    if "\n\n" not in body:
        return False
    head = body.split("\n\n", 1)[0]
    return any(line.lower().startswith("content-") for line in head.split("\n"))
