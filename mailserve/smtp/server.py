"""The ESMTP server session (RFC 5321) for the MX and submission listeners.

Written on ``twisted.internet.protocol.Protocol`` rather than ``twisted.mail.smtp``: the
latter answers NOOP/VRFY/HELP with 500, ignores SIZE/BODY/DSN parameters, refuses SMTPUTF8
and has no BDAT, so the session is small enough to own outright.  Dispatch keeps Twisted's
naming convention: the handler of ``VERB`` is ``do_VERB``.

What a session enforces, and where each rule comes from:

* Extensions advertised are exactly those implemented: PIPELINING (RFC 2920), SIZE (RFC
  1870), 8BITMIME (RFC 6152), ENHANCEDSTATUSCODES (RFC 2034, codes from RFC 3463), STARTTLS
  (RFC 3207), AUTH PLAIN LOGIN (RFC 4954, RFC 4616), SMTPUTF8 (RFC 6531), CHUNKING (RFC
  3030) and DSN (RFC 3461).
* No open relay: recipients outside the local domains need an authenticated session; the
  submission listener (RFC 6409) wants AUTH before MAIL and checks the sender.
* ``250`` after DATA/BDAT only when the message is durable for every accepted recipient
  (local copies committed by the core, remote ones in the outbound queue): RFC 5321 §6.1.
* Limits: command and data line lengths, message size, recipients per transaction, errors
  per session, idle timeouts (RFC 5321 §4.5.3), message rates per client and sender.
"""

from __future__ import annotations

import email.utils
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin

from mailserve.sasl import (
    Credentials,
    LoginGuard,
    LoginMechanism,
    PlainMechanism,
    SASLCancelled,
    SASLError,
    decode_response,
    encode_challenge,
    start_mechanism,
)
from mailserve.smtp.pipeline import (
    DeliveryContext,
    Envelope,
    MessageRejected,
    RecipientContext,
    Reply,
)
from mailserve.smtp.syntax import SyntaxProblem, parse_domain, parse_parameters, parse_path, xtext_decode

__all__ = ["SMTPSession", "SessionSettings"]

#: RFC 4954 §4: a SASL response line may be up to 12288 octets.
MAX_AUTH_LINE = 12288
#: Bytes of pipelined input held while a command is being answered before reading pauses.
MAX_PENDING_INPUT = 1 << 20
#: RFC 3461 §4.4: ENVID is at most 100 characters.
MAX_ENVID = 100

_VERB = re.compile(rb"[A-Za-z]{1,16}")
_RECEIVED = re.compile(rb"(?im)^received[ \t]*:")


@dataclass(frozen=True)
class SessionSettings:
    """The limits and behaviour of one listener's sessions, taken from the configuration."""

    hostname: str
    submission: bool = False
    implicit_tls: bool = False
    starttls: bool = True
    allow_plaintext_auth: bool = False
    max_message_size: int = 50 << 20
    max_recipients: int = 100
    max_line_length: int = 4096
    max_command_length: int = 2048
    command_timeout: float = 300.0
    data_timeout: float = 600.0
    max_errors: int = 10
    max_received: int = 50


@dataclass
class AcceptedRecipient:
    """A recipient that got 250 to RCPT: where its copies go and what DSNs it asked for."""

    address: str
    accounts: tuple[int, ...] = ()
    remote: tuple[str, ...] = ()
    detail: str | None = None
    notify: tuple[str, ...] = ()
    orcpt: str | None = None


@dataclass
class Transaction:
    """One mail transaction: MAIL, RCPTs, then DATA or BDAT chunks (RFC 5321 §3.3)."""

    mail_from: str
    body: str = "7BIT"
    smtputf8: bool = False
    declared_size: int = 0
    ret: str | None = None
    envid: str | None = None
    recipients: list[AcceptedRecipient] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    received_bytes: int = 0
    bdat_used: bool = False
    too_big: bool = False
    failed_chunk: bool = False


class SMTPSession(Protocol, TimeoutMixin):
    """One client connection; ``factory`` is the listener's ``SMTPFactory``."""

    log = Logger()

    COMMAND, DATA, BDAT, AUTH = "command", "data", "bdat", "auth"

    def __init__(self, factory: Any) -> None:
        self.factory = factory
        self.settings: SessionSettings = factory.settings
        self._buffer = b""
        self._mode = self.COMMAND
        self._busy = False
        self._closing = False
        self._paused = False
        self._discarding_line = False
        self.helo: str | None = None
        self.esmtp = False
        self.tls = self.settings.implicit_tls
        self.account: Any = None
        self.sender_addresses: frozenset[str] = frozenset()
        self.transaction: Transaction | None = None
        self.errors = 0
        self.client_ip = "unknown"
        self.client_port = 0
        # DATA state
        self._data_lines: list[bytes] = []
        self._data_long_line = False
        self._partial_is_long = False
        # BDAT state
        self._bdat_remaining = 0
        self._bdat_last = False
        self._pending_failure: tuple[int, str, str] | None = None
        # AUTH state
        self._sasl: PlainMechanism | LoginMechanism | None = None
        self._logins = LoginGuard(factory.directory, factory.reactor, factory.auth_failure_delay,
                                  self.settings.max_errors)

    # -- connection ------------------------------------------------------------------------
    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.client_ip = getattr(peer, "host", "unknown")
        self.client_port = getattr(peer, "port", 0)
        # Connection counts (server.max_connections[_per_ip]) are enforced for every listener
        # before a session exists, by the service's connection gate.
        self.setTimeout(self.settings.command_timeout)
        self._send(f"220 {self.settings.hostname} ESMTP mailserve")

    def connectionLost(self, reason: Any = None) -> None:
        self.setTimeout(None)
        self._closing = True

    def timeoutConnection(self) -> None:
        """RFC 5321 §4.5.3.2: an idle client is dropped with 421 after the timeout."""
        self._send(f"421 4.4.2 {self.settings.hostname} Error: timeout exceeded")
        self._close()

    def _close(self) -> None:
        self._closing = True
        self._buffer = b""
        self.transport.loseConnection()

    # -- output -----------------------------------------------------------------------------
    def _send(self, line: str) -> None:
        if self.transport is not None:
            self.transport.write(line.encode("utf-8") + b"\r\n")

    def reply(self, code: int, status: str, text: str) -> None:
        """Send one reply; error replies count towards ``max_errors``."""
        self._reply_lines(code, [f"{status} {text}" if status else text])

    def _reply_lines(self, code: int, lines: list[str]) -> None:
        for line in lines[:-1]:
            self._send(f"{code}-{line}")
        self._send(f"{code} {lines[-1]}")
        if code >= 400 and code != 421:
            self.errors += 1
            if self.errors > self.settings.max_errors:
                self._send(f"421 4.7.0 {self.settings.hostname} Error: too many errors")
                self._close()

    def _reply_obj(self, reply: Reply) -> None:
        self.reply(reply.code, reply.status, reply.text)

    # -- input -------------------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self.resetTimeout()
        self._buffer += data
        self._process()

    def _process(self) -> None:
        while not self._busy and not self._closing and self._buffer:
            if self._mode == self.DATA:
                if not self._consume_data():
                    break
            elif self._mode == self.BDAT:
                self._consume_bdat()
            else:
                line = self._next_line(MAX_AUTH_LINE if self._mode == self.AUTH else self.settings.max_command_length)
                if line is None:
                    break
                if self._mode == self.AUTH:
                    self._run(self._auth_continue(line))
                else:
                    self._command(line)
        if self._busy and len(self._buffer) > MAX_PENDING_INPUT and not self._paused:
            self._paused = True
            self.transport.pauseProducing()
        elif self._paused and not self._busy:
            self._paused = False
            self.transport.resumeProducing()

    def _next_line(self, limit: int) -> bytes | None:
        """The next complete line without its line end, or ``None`` until one has arrived.

        A line over ``limit`` is answered with 500 5.5.2 and skipped up to its end (RFC 5321
        §4.5.3.1.4 lets servers refuse longer command lines); it never grows the buffer.
        """
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > limit:
                    self._buffer = b""
                    if not self._discarding_line:
                        self._discarding_line = True
                        self._mode = self.COMMAND
                        self.reply(500, "5.5.2", "Error: line too long")
                return None
            line, self._buffer = self._buffer[:end], self._buffer[end + 1:]
            if self._discarding_line or end > limit + 1:
                if not self._discarding_line:
                    self._mode = self.COMMAND
                    self.reply(500, "5.5.2", "Error: line too long")
                self._discarding_line = False
                if self._closing:
                    return None
                continue
            return line[:-1] if line.endswith(b"\r") else line

    def _run(self, result: Any) -> None:
        """Wait for an asynchronous command before reading the next pipelined one (RFC 2920 §3.1)."""
        if isinstance(result, Deferred) or hasattr(result, "__await__"):
            self._busy = True
            d = ensureDeferred(result) if not isinstance(result, Deferred) else result

            def done(outcome: Any) -> Any:
                self._busy = False
                if hasattr(outcome, "getTraceback"):
                    self.log.failure("SMTP command failed", outcome)
                    self.reply(451, "4.3.0", "Error: internal error, try again later")
                if not self._closing:
                    self.resetTimeout()
                    self._process()
                return None

            d.addBoth(done)

    def _command(self, line: bytes) -> None:
        verb_bytes, _, argument_bytes = line.partition(b" ")
        if not _VERB.fullmatch(verb_bytes):
            self.reply(500, "5.5.2", "Error: command not recognized")
            return
        try:
            argument = argument_bytes.decode("utf-8").strip()
        except UnicodeDecodeError:
            self.reply(500, "5.5.2", "Error: invalid UTF-8 in command")
            return
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in argument):
            self.reply(501, "5.5.2", "Error: control characters in command")
            return
        handler = getattr(self, "do_" + verb_bytes.decode("ascii").upper(), None)
        if handler is None:
            self.reply(500, "5.5.2", "Error: command not recognized")
            return
        self._run(handler(argument))

    # -- greeting and session commands ---------------------------------------------------------
    def do_EHLO(self, argument: str) -> None:
        """RFC 5321 §4.1.1.1; the keyword list is what this session implements (RFC 1869)."""
        if not self._greet(argument):
            return
        self.esmtp = True
        lines = [f"{self.settings.hostname} Hello {self.helo} [{self.client_ip}]",
                 "PIPELINING", f"SIZE {self.settings.max_message_size}", "8BITMIME", "ENHANCEDSTATUSCODES"]
        if self._starttls_available():
            lines.append("STARTTLS")
        if self._auth_allowed() and self.account is None:
            lines.append("AUTH PLAIN LOGIN")
        lines += ["SMTPUTF8", "CHUNKING", "DSN"]
        self._reply_lines(250, lines)

    def do_HELO(self, argument: str) -> None:
        if self._greet(argument):
            self.esmtp = False
            self.reply(250, "", self.settings.hostname)

    def _greet(self, argument: str) -> bool:
        if not argument or " " in argument:
            self.reply(501, "5.5.4", "Syntax: EHLO hostname")
            return False
        try:
            parse_domain(argument, utf8=True)
        except SyntaxProblem:
            self.reply(501, "5.5.4", "Error: invalid hostname in greeting")
            return False
        self.helo = argument
        self.transaction = None  # RFC 5321 §4.1.4: EHLO resets like RSET
        return True

    def do_NOOP(self, argument: str) -> None:
        """RFC 5321 §4.1.1.9: NOOP takes an optional argument and does nothing."""
        self.reply(250, "2.0.0", "Ok")

    def do_RSET(self, argument: str) -> None:
        if argument:
            self.reply(501, "5.5.4", "Syntax: RSET")
            return
        self.transaction = None
        self.reply(250, "2.0.0", "Ok")

    def do_VRFY(self, argument: str) -> None:
        """RFC 5321 §3.5.3: 252 says "cannot verify, but will try" without revealing accounts."""
        if not argument:
            self.reply(501, "5.5.4", "Syntax: VRFY address")
            return
        self.reply(252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery")

    def do_EXPN(self, argument: str) -> None:
        """EXPN is optional (RFC 5321 §3.5.2); list members are not disclosed."""
        self.reply(502, "5.5.1", "Error: EXPN not supported")

    def do_HELP(self, argument: str) -> None:
        self._reply_lines(214, ["2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH",
                                "2.0.0 See RFC 5321"])

    def do_QUIT(self, argument: str) -> None:
        self.reply(221, "2.0.0", "Bye")
        self._close()

    # -- STARTTLS (RFC 3207) ----------------------------------------------------------------------
    def _starttls_available(self) -> bool:
        return self.settings.starttls and not self.tls and self.factory.tls_context is not None

    def do_STARTTLS(self, argument: str) -> None:
        if argument:
            self.reply(501, "5.5.4", "Syntax: STARTTLS")
            return
        if self.tls:
            self.reply(503, "5.5.1", "Error: TLS already active")
            return
        if not self._starttls_available():
            self.reply(502, "5.5.1", "Error: command not implemented")
            return
        # RFC 3207 §4.2 and CVE-2011-0411: anything pipelined after STARTTLS is discarded,
        # and the session forgets everything it learned in the clear.
        self._buffer = b""
        self.reply(220, "2.0.0", "Ready to start TLS")
        self.transport.startTLS(self.factory.tls_context())
        self.tls = True
        self.helo = None
        self.esmtp = False
        self.transaction = None
        self.account = None

    def tls_description(self) -> str | None:
        """``TLSv1.3 with cipher X (256/256 bits)`` for the Received field, or ``None``."""
        if not self.tls:
            return None
        try:
            connection = self.transport.getHandle()
            version = connection.get_protocol_version_name()
            cipher = connection.get_cipher_name()
            bits = connection.get_cipher_bits()
        except Exception:  # noqa: BLE001 - a transport without OpenSSL details still says TLS
            return "TLS"
        return f"{version} with cipher {cipher} ({bits}/{bits} bits)"

    # -- AUTH (RFC 4954) -------------------------------------------------------------------------
    # The SASL exchange itself (strict base64, PLAIN and LOGIN, field rules, the authzid check,
    # the failure delay) is ``mailserve.sasl``'s, shared with IMAP, POP3 and ManageSieve; this
    # part only frames it as RFC 4954 §4 does and answers with SMTP's reply codes (§6).
    def _auth_allowed(self) -> bool:
        return self.tls or self.settings.allow_plaintext_auth

    def do_AUTH(self, argument: str) -> Any:
        """RFC 4954 §4: ``AUTH mechanism [initial-response]``, then ``334`` challenges."""
        if not self.esmtp:
            self.reply(503, "5.5.1", "Error: send EHLO first")
            return None
        if self.account is not None:
            self.reply(503, "5.5.1", "Error: already authenticated")
            return None
        if self.transaction is not None:
            self.reply(503, "5.5.1", "Error: MAIL transaction in progress")
            return None
        name, _, initial = argument.partition(" ")
        if not name:
            self.reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]")
            return None
        try:
            mechanism = start_mechanism(name)
        except SASLError:
            self.reply(504, "5.5.4", "Error: unsupported authentication mechanism")
            return None
        if not self._auth_allowed():
            self.reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
            return None
        self._sasl = mechanism
        initial = initial.strip()
        if initial:
            return self._auth_continue(initial.encode("ascii", "replace"))
        return self._sasl_advance(None)

    def _auth_continue(self, line: bytes) -> Any:
        """One client response line of the exchange (RFC 4954 §4)."""
        self._mode = self.COMMAND
        try:
            response = decode_response(line)
        except SASLCancelled:
            # RFC 4954 §4: "*" cancels, and the server MUST answer 501 (5.7.0, §6).
            self._sasl = None
            self.reply(501, "5.7.0", "Authentication aborted")
            return None
        except SASLError as error:
            # RFC 4954 §6: 501 5.5.2 "Cannot Base64-decode Client responses".
            self._sasl = None
            self.reply(501, "5.5.2", f"Error: {error}")
            return None
        return self._sasl_advance(response)

    def _sasl_advance(self, response: bytes | None) -> Any:
        """Feed the mechanism; send its next challenge or check the credentials it produced."""
        mechanism = self._sasl
        assert mechanism is not None
        try:
            result = mechanism.step(response)
        except SASLError as error:
            # A response that decodes but is not a well-formed PLAIN/LOGIN message (RFC 4616
            # §2: NUL-separated UTF-8 fields of at most 255 octets) is a syntax error.
            self._sasl = None
            self.reply(501, "5.5.2", f"Error: {error}")
            return None
        if isinstance(result, Credentials):
            self._sasl = None
            return self._authenticate(result)
        self._mode = self.AUTH
        self._send(f"334 {encode_challenge(result)}")
        return None

    async def _authenticate(self, credentials: Credentials) -> None:
        """Check the credentials (failures come back after the configured delay)."""
        self._logins.failure_delay = self.factory.auth_failure_delay  # a live setting
        outcome = await self._logins.login(credentials, self.client_ip)
        if self._closing:
            return
        if outcome.succeeded:
            account = outcome.account
            self.account = account
            addresses = self.factory.directory.addresses_of(account.id)
            self.sender_addresses = frozenset(a.lower() for a in addresses)
            self.reply(235, "2.7.0", "Authentication successful")
            return
        if outcome.reason == "throttled":
            # RFC 4954 §6: 454 4.7.0 "Temporary authentication failure".
            self.reply(454, "4.7.0", "Too many failed authentications, try again later")
        elif outcome.reason == "authorization":
            # RFC 4616 §2: the authzid must be an identity the authcid may act as; there are
            # no proxy logins here, so that is only the account itself.
            self.reply(535, "5.7.8", "Authentication credentials invalid: not authorized to act as that identity")
        else:
            self.reply(535, "5.7.8", "Authentication credentials invalid")
        if outcome.disconnect and not self._closing:
            self._send(f"421 4.7.0 {self.settings.hostname} Error: too many failed authentications")
            self._close()

    # -- MAIL (RFC 5321 §4.1.1.2) ------------------------------------------------------------------
    def do_MAIL(self, argument: str) -> None:
        if self.helo is None:
            self.reply(503, "5.5.1", "Error: send HELO/EHLO first")
            return
        if self.transaction is not None:
            self.reply(503, "5.5.1", "Error: nested MAIL command")
            return
        if self.settings.submission and self.account is None:
            self.reply(530, "5.7.0", "Authentication required")
            return
        try:
            path = parse_path(argument, "FROM", allow_null=True, utf8=True)
            if path.rest and not self.esmtp:
                raise SyntaxProblem("parameters need EHLO", "5.5.4", 555)
            transaction = self._mail_parameters(path.address, parse_parameters(path.rest))
            if transaction is not None and not transaction.smtputf8 and not path.address.isascii():
                raise SyntaxProblem("non-ASCII address requires SMTPUTF8", "5.6.7", 553)
        except SyntaxProblem as problem:
            self.reply(problem.code, problem.status, f"Error: {problem}")
            return
        if transaction is None:
            return
        if self.settings.submission and not self._may_send_as(transaction.mail_from):
            self.reply(553, "5.7.1", f"<{transaction.mail_from}>: Sender address not owned by user {self.account.name}")
            return
        if not self.factory.ip_rate.allow(self.client_ip):
            self.reply(450, "4.7.1", "Error: too many messages from your address, slow down")
            return
        if not self.factory.sender_rate.allow(self._rate_key(transaction.mail_from)):
            self.reply(450, "4.7.1", "Error: too many messages from this sender, slow down")
            return
        self.transaction = transaction
        self.reply(250, "2.1.0", "Ok")

    def _rate_key(self, mail_from: str) -> str:
        """Who a message counts against for ``smtp.rate_per_sender``.

        The account after AUTH (whatever address it uses), otherwise the envelope sender; the
        null sender (RFC 5321 §4.5.5) is counted per client address, so that bounces from one
        host cannot starve everybody else's.
        """
        if self.account is not None:
            return "account:" + self.account.name.lower()
        if not mail_from:
            return "null:" + self.client_ip
        return "sender:" + mail_from.lower()

    def _mail_parameters(self, mail_from: str, params: dict[str, str | None]) -> Transaction | None:
        transaction = Transaction(mail_from=mail_from)
        for key, value in params.items():
            if key == "SIZE":
                # RFC 1870 §6: a declared size over the limit is refused at MAIL.
                if value is None or not value.isdigit() or len(value) > 20:
                    raise SyntaxProblem("SIZE needs a number", "5.5.4")
                transaction.declared_size = int(value)
                if transaction.declared_size > self.settings.max_message_size:
                    self.reply(552, "5.3.4", "Error: message size exceeds fixed limit")
                    return None
            elif key == "BODY":
                # RFC 6152 §3; BINARYMIME (RFC 3030 §3) is not offered, so it is refused.
                body = (value or "").upper()
                if body not in ("7BIT", "8BITMIME"):
                    raise SyntaxProblem("BODY must be 7BIT or 8BITMIME", "5.5.4", 555)
                transaction.body = body
            elif key == "SMTPUTF8":
                if value is not None:
                    raise SyntaxProblem("SMTPUTF8 takes no value", "5.5.4")
                transaction.smtputf8 = True
            elif key == "RET":
                ret = (value or "").upper()
                if ret not in ("FULL", "HDRS"):
                    raise SyntaxProblem("RET must be FULL or HDRS", "5.5.4")
                transaction.ret = ret
            elif key == "ENVID":
                if not value:
                    raise SyntaxProblem("ENVID needs a value", "5.5.4")
                envid = xtext_decode(value)
                if len(envid) > MAX_ENVID:
                    raise SyntaxProblem("ENVID longer than 100 characters", "5.5.4")
                transaction.envid = envid
            elif key == "AUTH":
                # RFC 4954 §5: the original submitter; accepted, and trusted only from our own users.
                continue
            else:
                raise SyntaxProblem(f"unsupported parameter {key}", "5.5.4", 555)
        return transaction

    def _may_send_as(self, address: str) -> bool:
        """RFC 6409 §6.1: submission checks that the user may use the sender address."""
        lowered = address.lower()
        if lowered in self.sender_addresses:
            return True
        local, _, domain = lowered.rpartition("@")
        base = local.partition("+")[0]
        return f"{base}@{domain}" in self.sender_addresses

    # -- RCPT (RFC 5321 §4.1.1.3) -----------------------------------------------------------------
    def do_RCPT(self, argument: str) -> None:
        transaction = self.transaction
        if transaction is None:
            self.reply(503, "5.5.1", "Error: need MAIL command")
            return
        if transaction.bdat_used:
            self.reply(503, "5.5.1", "Error: BDAT in progress")
            return
        try:
            path = parse_path(argument, "TO", allow_null=False, utf8=transaction.smtputf8)
            if path.rest and not self.esmtp:
                raise SyntaxProblem("parameters need EHLO", "5.5.4", 555)
            notify, orcpt = self._rcpt_parameters(parse_parameters(path.rest))
        except SyntaxProblem as problem:
            self.reply(problem.code, problem.status, f"Error: {problem}")
            return
        if len(transaction.recipients) >= self.settings.max_recipients:
            self.reply(452, "4.5.3", "Error: too many recipients")
            return
        address = path.address
        _local, _, domain = address.rpartition("@")
        directory = self.factory.directory
        if directory.is_local_domain(domain):
            resolution = directory.resolve_recipient(address)
            if not resolution.found:
                self.reply(550, "5.1.1", f"<{address}>: Recipient address rejected: User unknown")
                return
            for account in resolution.accounts:
                if self._over_quota(account, transaction.declared_size):
                    self._reply_obj(self.factory.delivery.quota_reply())
                    return
            accepted = AcceptedRecipient(address, resolution.accounts, resolution.remote, resolution.detail,
                                         notify, orcpt)
        elif self.account is not None:
            accepted = AcceptedRecipient(address, remote=(address,), notify=notify, orcpt=orcpt)
        else:
            self.reply(554, "5.7.1", f"<{address}>: Relay access denied")
            return
        if accepted.remote and self.factory.queue is None:
            self.reply(451, "4.3.2", "Error: outbound delivery is not available")
            return
        if not any(r.address.lower() == address.lower() for r in transaction.recipients):
            transaction.recipients.append(accepted)
        self.reply(250, "2.1.5", "Ok")

    @staticmethod
    def _rcpt_parameters(params: dict[str, str | None]) -> tuple[tuple[str, ...], str | None]:
        notify: tuple[str, ...] = ()
        orcpt = None
        for key, value in params.items():
            if key == "NOTIFY":
                # RFC 3461 §4.1: NEVER, or a list of SUCCESS, FAILURE, DELAY.
                words = tuple((value or "").upper().split(","))
                if not value or any(w not in ("NEVER", "SUCCESS", "FAILURE", "DELAY") for w in words) or (
                        "NEVER" in words and len(words) > 1) or len(set(words)) != len(words):
                    raise SyntaxProblem("NOTIFY must be NEVER or SUCCESS,FAILURE,DELAY", "5.5.4")
                notify = words
            elif key == "ORCPT":
                # RFC 3461 §4.2: addr-type ";" xtext.
                addr_type, semi, encoded = (value or "").partition(";")
                if not semi or not addr_type or not encoded:
                    raise SyntaxProblem("ORCPT must be addr-type;address", "5.5.4")
                orcpt = f"{addr_type.lower()};{xtext_decode(encoded)}"
            else:
                raise SyntaxProblem(f"unsupported parameter {key}", "5.5.4", 555)
        return notify, orcpt

    def _over_quota(self, account: int, size: int) -> bool:
        quota = self.factory.core.get_quota(account)
        if quota.bytes_limit and quota.bytes_used + size > quota.bytes_limit:
            return True
        return bool(quota.messages_limit and quota.messages_used >= quota.messages_limit)

    # -- DATA (RFC 5321 §4.1.1.4) ---------------------------------------------------------------------
    def do_DATA(self, argument: str) -> None:
        transaction = self.transaction
        if argument:
            self.reply(501, "5.5.4", "Syntax: DATA")
            return
        if transaction is None:
            self.reply(503, "5.5.1", "Error: need MAIL command")
            return
        if transaction.bdat_used:
            self.reply(503, "5.5.1", "Error: DATA cannot follow BDAT")
            return
        if not transaction.recipients:
            self.reply(554, "5.5.1", "Error: no valid recipients")
            return
        self._mode = self.DATA
        self._data_lines = []
        self._data_long_line = False
        self._partial_is_long = False
        self.setTimeout(self.settings.data_timeout)
        self._send("354 End data with <CR><LF>.<CR><LF>")

    def _consume_data(self) -> bool:
        """Take complete lines of message data; ``True`` if the buffer was used up or data ended."""
        transaction = self.transaction
        assert transaction is not None
        cut = self._buffer.rfind(b"\n")
        if cut < 0:
            if len(self._buffer) > self.settings.max_line_length + 2:
                # A line this long is refused at the end; keep only enough to see its end.
                self._partial_is_long = True
                self._buffer = self._buffer[-1:]
            return False
        complete, self._buffer = self._buffer[:cut], self._buffer[cut + 1:]
        limit = self.settings.max_line_length
        maximum = self.settings.max_message_size
        lines = complete.split(b"\n")
        for index, line in enumerate(lines):
            if line.endswith(b"\r"):
                line = line[:-1]
            if self._partial_is_long:
                self._partial_is_long = False
                self._data_long_line = True
                continue
            if line == b".":
                self._buffer = b"\n".join(lines[index + 1:]) + (b"\n" if index + 1 < len(lines) else b"") + self._buffer
                self._end_of_data()
                return True
            if line.startswith(b"."):
                line = line[1:]  # RFC 5321 §4.5.2 dot-unstuffing
            if len(line) > limit:
                self._data_long_line = True
            if not transaction.too_big:
                transaction.received_bytes += len(line) + 2
                if transaction.received_bytes > maximum:
                    transaction.too_big = True
                    self._data_lines = []
                else:
                    self._data_lines.append(line)
        return True

    def _end_of_data(self) -> None:
        self._mode = self.COMMAND
        self.setTimeout(self.settings.command_timeout)
        transaction = self.transaction
        lines, self._data_lines = self._data_lines, []
        if transaction.too_big:
            self.transaction = None
            self.reply(552, "5.3.4", "Error: message size exceeds fixed limit")
            return
        if self._data_long_line:
            self.transaction = None
            self.reply(500, "5.5.2", f"Error: message line longer than {self.settings.max_line_length} octets")
            return
        message = b"\r\n".join(lines) + b"\r\n" if lines else b""
        self._run(self._accept(message))

    # -- BDAT (RFC 3030) ---------------------------------------------------------------------------------
    def do_BDAT(self, argument: str) -> None:
        words = argument.split()
        if not words or not words[0].isdigit() or len(words[0]) > 12:
            # Without a size the chunk cannot be skipped; the client must recover with RSET.
            self.reply(501, "5.5.4", "Syntax: BDAT size [LAST]")
            return
        size = int(words[0])
        last = len(words) == 2 and words[1].upper() == "LAST"
        transaction = self.transaction
        failure = None
        if len(words) > 2 or (len(words) == 2 and not last):
            failure = (501, "5.5.4", "Syntax: BDAT size [LAST]")
        elif transaction is None:
            failure = (503, "5.5.1", "Error: need MAIL command")
        elif not transaction.recipients:
            failure = (554, "5.5.1", "Error: no valid recipients")
        else:
            transaction.bdat_used = True
        # RFC 3030 §2: the chunk's octets follow the command whatever the reply will be, so
        # they are always read (and, after an error, thrown away).
        self._pending_failure = failure
        self._bdat_remaining = size
        self._bdat_last = last
        if size:
            self._mode = self.BDAT
            self.setTimeout(self.settings.data_timeout)
        else:
            self._chunk_done()

    def _consume_bdat(self) -> None:
        take = self._buffer[:self._bdat_remaining]
        self._buffer = self._buffer[len(take):]
        self._bdat_remaining -= len(take)
        transaction = self.transaction
        if self._pending_failure is None and transaction is not None and not transaction.too_big:
            transaction.received_bytes += len(take)
            if transaction.received_bytes > self.settings.max_message_size:
                transaction.too_big = True
                transaction.chunks = []
            else:
                transaction.chunks.append(take)
        if self._bdat_remaining == 0:
            self._mode = self.COMMAND
            self.setTimeout(self.settings.command_timeout)
            self._chunk_done()

    def _chunk_done(self) -> None:
        if self._pending_failure is not None:
            failure, self._pending_failure = self._pending_failure, None
            self.reply(*failure)
            return
        transaction = self.transaction
        if transaction.too_big:
            # RFC 3030 §3: after a failed chunk the transaction is gone; later BDATs get 503.
            self.transaction = None
            self.reply(552, "5.3.4", "Error: message size exceeds fixed limit")
            return
        if not self._bdat_last:
            self.reply(250, "2.0.0", f"{transaction.received_bytes} octets received")
            return
        message = b"".join(transaction.chunks)
        transaction.chunks = []
        self._run(self._accept(message))

    # -- accepting a message -----------------------------------------------------------------------------
    async def _accept(self, message: bytes) -> None:
        """Trace, check and store the message; reply only once it is durable everywhere."""
        transaction = self.transaction
        self.transaction = None
        header_end = message.find(b"\r\n\r\n")
        header = message if header_end < 0 else message[:header_end + 2]
        if len(_RECEIVED.findall(header)) >= self.settings.max_received:
            self.reply(554, "5.4.6", "Error: too many hops (mail loop?)")
            return
        if self.settings.submission:
            problem = self._check_from_header(header)
            if problem is not None:
                self.reply(553, "5.7.1", problem)
                return
            message = self._complete_submission(header, message)
        queue_id = uuid.uuid4().hex[:16].upper()
        envelope = self._envelope(transaction, queue_id)
        message = self._received_field(transaction, queue_id) + message
        try:
            reply = await self.factory.accept_message(envelope, transaction.recipients, message)
        except MessageRejected as rejected:
            self._reply_obj(rejected.reply)
            return
        self._reply_obj(reply)

    def _envelope(self, transaction: Transaction, queue_id: str) -> Envelope:
        return Envelope(
            mail_from=transaction.mail_from,
            recipients=tuple(r.address for r in transaction.recipients),
            helo=self.helo or "",
            client_ip=self.client_ip,
            client_port=self.client_port,
            authenticated_as=self.account.name if self.account is not None else None,
            tls=self.tls_description(),
            protocol=self._protocol_name(transaction),
            smtputf8=transaction.smtputf8,
            body=transaction.body,
            ret=transaction.ret,
            envid=transaction.envid,
            received_at=time.time(),
            queue_id=queue_id,
        )

    def _protocol_name(self, transaction: Transaction) -> str:
        """The ``with`` keyword of Received (RFC 3848; UTF8SMTP* from RFC 6531 §3.7.3)."""
        if not self.esmtp:
            return "SMTP"
        name = ("UTF8SMTP" if transaction.smtputf8 else "ESMTP") + ("S" if self.tls else "") + (
            "A" if self.account is not None else "")
        return name

    def _received_field(self, transaction: Transaction, queue_id: str) -> bytes:
        """RFC 5321 §4.4 trace field, with the TLS parameters as Postfix writes them."""
        tls = self.tls_description()
        lines = [f"Received: from {self.helo} ([{self.client_ip}])",
                 f"\tby {self.settings.hostname} (mailserve) with {self._protocol_name(transaction)} id {queue_id}"]
        if tls:
            lines.append(f"\t(using {tls})")
        if self.account is not None:
            lines.append(f"\t(authenticated as {self.account.name})")
        if len(transaction.recipients) == 1:
            lines.append(f"\tfor <{transaction.recipients[0].address}>")
        lines[-1] += "; " + email.utils.formatdate(localtime=True)
        return ("\r\n".join(lines) + "\r\n").encode("utf-8")

    def _check_from_header(self, header: bytes) -> str | None:
        """RFC 6409 §8.1 lets submission refuse a From: the user may not use (Postfix's
        reject_sender_login_mismatch applied to the header as well as the envelope)."""
        from_values = _header_values(header, b"from")
        if not from_values:
            return "Error: message has no From: header field"
        for _, address in email.utils.getaddresses(from_values):
            if not address or not self._may_send_as(address):
                return f"<{address}>: From: address not owned by user {self.account.name}"
        return None

    def _complete_submission(self, header: bytes, message: bytes) -> bytes:
        """RFC 6409 §8.2, §8.3: add Date: and Message-ID: when the client left them out."""
        added = b""
        if not _header_values(header, b"date"):
            added += f"Date: {email.utils.formatdate(localtime=True)}\r\n".encode()
        if not _header_values(header, b"message-id"):
            added += f"Message-ID: <{uuid.uuid4().hex}@{self.settings.hostname}>\r\n".encode()
        return added + message


def _header_values(header: bytes, name: bytes) -> list[str]:
    """Unfolded values of every field called ``name`` in a header block."""
    values = []
    current: list[bytes] | None = None
    for line in header.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and current is not None:
            current.append(line)
            continue
        if current is not None:
            values.append(b" ".join(part.strip() for part in current).decode("utf-8", "replace"))
            current = None
        field_name, colon, value = line.partition(b":")
        if colon and field_name.strip().lower() == name:
            current = [value]
    if current is not None:
        values.append(b" ".join(part.strip() for part in current).decode("utf-8", "replace"))
    return values


def recipients_for_pipeline(recipients: list[AcceptedRecipient]) -> list[RecipientContext]:
    """One RecipientContext per local account reached by each accepted recipient."""
    contexts = []
    for recipient in recipients:
        for account in recipient.accounts:
            contexts.append(RecipientContext(recipient.address, account, recipient.detail,
                                             notify=recipient.notify, orcpt=recipient.orcpt))
    return contexts


__all__ += ["AcceptedRecipient", "DeliveryContext", "recipients_for_pipeline"]
