"""One POP3 connection: RFC 1939 with CAPA, RESP-CODES, AUTH-RESP-CODE and PIPELINING (RFC 2449),
SASL PLAIN (RFC 5034) and STLS (RFC 2595).

Why not ``twisted.mail.pop3.POP3``: its mailbox contract is synchronous and file based
(``IMailbox.getMessage`` returns an open file, ``deleteMessage`` acts at once unless the mailbox
buffers it), it has no STLS, and its CAPA advertises capabilities that do not exist. A POP3
session over the mail core is small enough to write plainly, the way that module is laid out:
one ``do_X`` handler per command, a table of the commands each state accepts, and
``twisted.protocols.policies.TimeoutMixin`` for the RFC 1939 §3 inactivity timer.

Commands are read one line at a time and run strictly in order. A handler that has to wait
(authentication, reading a message, the UPDATE commit) stops the reading of further lines until
it has answered, so pipelined commands (RFC 2449 §6.6) get their answers in order while the
reactor keeps serving other connections. That loop is ``mailserve.commandloop.CommandLoop``,
shared with ManageSieve; this module supplies how a line is read and how refusals are worded.

``pop3.idle_timeout`` and ``pop3.auth_failure_delay`` are live settings: the context reads them
from the server's current configuration when a session starts and at every login, so a change
through the admin API needs no restart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, interfaces, threads
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from mailserve.commandloop import CloseAfterReply, CommandLoop
from mailserve.pop3.maildrop import Maildrop, MaildropLocks, MaildropMessage, load_maildrop
from mailserve.pop3.transfer import MultilineEncoder, count_lines, cut_after_lines
from mailserve.sasl import (
    MECHANISMS,
    Credentials,
    LineReader,
    LineTooLong,
    LoginGuard,
    LoginMechanism,
    LoginOutcome,
    PlainMechanism,
    SASLCancelled,
    SASLError,
    decode_response,
    encode_challenge,
    start_mechanism,
)

AUTHORIZATION = "AUTHORIZATION"
TRANSACTION = "TRANSACTION"
UPDATE = "UPDATE"

#: Which commands each state accepts (RFC 1939 §§4-6, RFC 2449 §5, RFC 2595 §4, RFC 5034 §4).
COMMANDS: dict[str, frozenset[str]] = {
    AUTHORIZATION: frozenset({"CAPA", "USER", "PASS", "AUTH", "STLS", "QUIT"}),
    TRANSACTION: frozenset({"CAPA", "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL", "QUIT"}),
    UPDATE: frozenset(),
}

#: Longest line accepted. RFC 2449 §4 caps commands at 255 octets, but RFC 5034 §4 lets a SASL
#: response line be longer; anything past this is an attack or a broken client.
MAX_LINE_LENGTH = 4096
#: Unprocessed input held while a command runs before the socket stops being read.
MAX_PENDING_INPUT = 64 * 1024
#: Unknown or misplaced commands tolerated before the connection is closed.
MAX_BAD_COMMANDS = 20
#: Bytes of a message read from the blob store at a time while sending it.
CHUNK_SIZE = 64 * 1024
#: Message numbers and TOP line counts are small decimal numbers.
MAX_NUMBER_DIGITS = 10


@dataclass(frozen=True)
class POP3Context:
    """What every session of one listener shares: collaborators and settings."""

    core: Any
    directory: Any
    locks: MaildropLocks
    hostname: str
    implicit_tls: bool
    starttls: bool
    allow_plaintext_auth: bool
    #: The ``[pop3]`` section of the server's current configuration (the live settings).
    settings: Callable[[], Any]
    max_auth_failures: int
    tls_context_factory: Callable[[], Any]
    reactor: Any

    @property
    def idle_timeout(self) -> float:
        """RFC 1939 §3's inactivity autologout timer, as configured now."""
        return self.settings().idle_timeout

    @property
    def auth_failure_delay(self) -> float:
        """Seconds before a failed login is answered, as configured now."""
        return self.settings().auth_failure_delay


@implementer(interfaces.IPushProducer)
class POP3Session(CommandLoop, Protocol, TimeoutMixin):
    """One POP3 connection."""

    log = Logger()
    protocol_name = "POP3"
    commands = COMMANDS
    max_pending_input = MAX_PENDING_INPUT
    max_bad_commands = MAX_BAD_COMMANDS

    def __init__(self, context: POP3Context) -> None:
        super().__init__()
        self.context = context
        self.callLater = context.reactor.callLater  # TimeoutMixin: the server's reactor
        self.state = AUTHORIZATION
        self.secure = context.implicit_tls
        self.maildrop: Maildrop | None = None
        self._user: str | None = None
        self._sasl: PlainMechanism | LoginMechanism | None = None
        self._logins = LoginGuard(
            context.directory, context.reactor, context.auth_failure_delay, context.max_auth_failures
        )
        self._input = LineReader(MAX_LINE_LENGTH)
        self._write_paused = False
        self._write_waiters: list[defer.Deferred] = []
        self._locked_account: int | None = None

    # -- connection ------------------------------------------------------------------------
    def connectionMade(self) -> None:
        self._connected = True
        self.setTimeout(self.context.idle_timeout)
        self._send(f"+OK {self.context.hostname} POP3 server ready")

    def connectionLost(self, reason: Failure = None) -> None:
        # A dropped connection never reaches the UPDATE state: nothing is deleted (RFC 1939 §6).
        self._connected = False
        self.setTimeout(None)
        self._release_lock()
        waiters, self._write_waiters = self._write_waiters, []
        for waiter in waiters:
            waiter.errback(Failure(ConnectionError("connection lost")))

    def timeoutConnection(self) -> None:
        """RFC 1939 §3: an inactivity autologout timer of at least ten minutes; no UPDATE."""
        self._send("-ERR Disconnected for inactivity")
        self.transport.loseConnection()

    def _release_lock(self) -> None:
        if self._locked_account is not None:
            self.context.locks.release(self._locked_account)
            self._locked_account = None

    # -- output ------------------------------------------------------------------------------
    def _send(self, line: str) -> None:
        self.transport.write(line.encode("utf-8") + b"\r\n")

    def _ok(self, text: str = "") -> None:
        self._send(f"+OK {text}" if text else "+OK")

    def _err(self, text: str, code: str | None = None) -> None:
        """``-ERR``, with an RFC 2449 §8 / RFC 3206 response code when there is one."""
        self._send(f"-ERR [{code}] {text}" if code else f"-ERR {text}")

    # IPushProducer: the transport pauses us while its send buffer is full (RETR/TOP).
    def pauseProducing(self) -> None:
        self._write_paused = True

    def resumeProducing(self) -> None:
        self._write_paused = False
        waiters, self._write_waiters = self._write_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def stopProducing(self) -> None:
        self._write_paused = True

    def _writable(self) -> defer.Deferred:
        if not self._connected:
            return defer.fail(ConnectionError("connection lost"))
        if not self._write_paused:
            return defer.succeed(None)
        waiter: defer.Deferred = defer.Deferred()
        self._write_waiters.append(waiter)
        return waiter

    # -- input -------------------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        self.resetTimeout()
        self._input.feed(data)
        self._process()

    # -- the command loop's hooks (mailserve.commandloop) ----------------------------------------
    def _next_command(self) -> bytes | None:
        try:
            return self._input.next_line()
        except LineTooLong:
            self._err("Line too long")
            raise CloseAfterReply() from None

    def _pending_input(self) -> int:
        return self._input.pending_bytes

    def _answer_bad_command(self, text: str) -> None:
        self._err(text)

    def _answer_too_many_bad_commands(self) -> None:
        self._err("Too many invalid commands, closing connection")

    def _answer_internal_error(self) -> None:
        self._err("Internal server error", "SYS/TEMP")  # RFC 3206 §4: a transient failure

    def _dispatch(self, line: bytes) -> defer.Deferred | None:
        if self._sasl is not None:
            return self._sasl_step(line)
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            return self._bad_command("Command is not valid UTF-8")
        keyword, _, rest = text.partition(" ")
        handler = self._handler(keyword)
        if handler is None:
            return None
        if keyword.upper() == "PASS":  # a password may contain spaces: it is the rest of the line
            return handler(rest)
        return handler(*rest.split())

    def _arguments(self, args: tuple[str, ...], minimum: int, maximum: int) -> bool:
        if minimum <= len(args) <= maximum:
            return True
        self._bad_command("Wrong number of arguments")
        return False

    # -- AUTHORIZATION state -----------------------------------------------------------------
    @property
    def _may_authenticate(self) -> bool:
        """RFC 2595 §6 / RFC 8314: passwords only over TLS unless the listener allows cleartext."""
        return self.secure or self.context.allow_plaintext_auth

    @property
    def _offers_stls(self) -> bool:
        return self.context.starttls and not self.secure and self.state == AUTHORIZATION

    def capabilities(self) -> list[str]:
        """The CAPA list (RFC 2449 §6), with only what this session can do in its state."""
        caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self.state == AUTHORIZATION:
            if self._may_authenticate:
                caps += ["USER", "SASL " + " ".join(MECHANISMS)]
            if self._offers_stls:
                caps.append("STLS")
        caps += ["EXPIRE NEVER", "IMPLEMENTATION mailserve"]
        return caps

    def do_CAPA(self, *args: str) -> None:
        if not self._arguments(args, 0, 0):
            return
        self._ok("Capability list follows")
        self.transport.write(b"".join(c.encode() + b"\r\n" for c in self.capabilities()) + b".\r\n")

    def do_STLS(self, *args: str) -> None:
        """RFC 2595 §4: switch to TLS; input pipelined after STLS is discarded, not obeyed."""
        if not self._arguments(args, 0, 0):
            return
        if not self._offers_stls:
            self._err("STLS is not available" if not self.secure else "TLS is already active")
            return
        self._ok("Begin TLS negotiation now")
        # Anything the client sent after STLS arrived in cleartext and could have been injected
        # by an attacker (CVE-2011-0411): drop it.
        self._input.clear()
        self.transport.startTLS(self.context.tls_context_factory())
        self.secure = True
        self._user = None

    def do_USER(self, *args: str) -> None:
        if not self._arguments(args, 1, 1):
            return
        if not self._may_authenticate:
            self._err("Plaintext authentication is disabled; use STLS first", "AUTH")
            return
        self._user = args[0]
        self._ok("Send your password")

    def do_PASS(self, password: str) -> defer.Deferred | None:
        user, self._user = self._user, None
        if user is None:
            self._err("Send USER first")
            return None
        if not password:
            self._bad_command("Wrong number of arguments")
            return None
        return self._authenticate(Credentials("", user, password))

    def do_AUTH(self, *args: str) -> defer.Deferred | None:
        """SASL (RFC 5034 §4); bare ``AUTH`` lists the mechanisms, as many clients expect."""
        if not self._arguments(args, 0, 2):
            return None
        if not args:
            self._ok("Supported mechanisms follow")
            mechanisms = "".join(f"{name}\r\n" for name in MECHANISMS) if self._may_authenticate else ""
            self.transport.write(mechanisms.encode() + b".\r\n")
            return None
        try:
            mechanism = start_mechanism(args[0])
        except SASLError:
            self._err("Unsupported authentication mechanism")
            return None
        if not self._may_authenticate:
            self._err("Plaintext authentication is disabled; use STLS first", "AUTH")
            return None
        self._sasl = mechanism
        if len(args) == 2:
            return self._sasl_step(args[1].encode("ascii", "replace"))
        return self._sasl_advance(None)

    def _sasl_step(self, line: bytes) -> defer.Deferred | None:
        """One client response of a SASL exchange (RFC 5034 §4)."""
        try:
            response = decode_response(line)
        except SASLCancelled:
            self._sasl = None
            self._err("Authentication cancelled")  # RFC 5034 §4: "*" gets a negative response
            return None
        except SASLError as e:
            self._sasl = None
            self._err(f"Authentication failed: {e}", "AUTH")
            return None
        return self._sasl_advance(response)

    def _sasl_advance(self, response: bytes | None) -> defer.Deferred | None:
        try:
            result = self._sasl.step(response)
        except SASLError as e:
            self._sasl = None
            self._err(f"Authentication failed: {e}", "AUTH")
            return None
        if isinstance(result, Credentials):
            self._sasl = None
            return self._authenticate(result)
        self.transport.write(f"+ {encode_challenge(result)}\r\n".encode("ascii"))
        return None

    def _authenticate(self, credentials: Credentials) -> defer.Deferred:
        remote_ip = getattr(self.transport.getPeer(), "host", None)
        self._logins.failure_delay = self.context.auth_failure_delay  # a live setting
        return self._logins.login_deferred(credentials, remote_ip).addCallback(self._login_finished)

    def _login_finished(self, outcome: LoginOutcome) -> defer.Deferred | None:
        if not self._connected:
            return None
        if outcome.succeeded:
            return self._authenticated(outcome.account)
        if outcome.reason == "throttled":
            self._err("Too many failed logins from your address; try again later", "SYS/TEMP")
        elif outcome.reason == "authorization":
            self._err("Not authorized to act as that user", "AUTH")
        else:
            self._err("Invalid user name or password", "AUTH")
        if outcome.disconnect:
            raise CloseAfterReply()
        return None

    def _authenticated(self, account: Any) -> defer.Deferred | None:
        if not self.context.locks.acquire(account.id):
            # RFC 2449 §8.1.2; RFC 1939 §4: the maildrop stays with the session holding it.
            self._err("Mailbox is locked by another POP3 session", "IN-USE")
            return None
        self._locked_account = account.id
        d = threads.deferToThreadPool(
            self.context.reactor, self.context.reactor.getThreadPool(),
            load_maildrop, self.context.core, account.id,
        )

        def opened(maildrop: Maildrop) -> None:
            if not self._connected:
                return
            self.maildrop = maildrop
            self.state = TRANSACTION
            live = maildrop.live()
            self._ok(f"Logged in, {len(live)} messages ({sum(m.size for m in live)} octets)")

        def failed(failure: Failure) -> None:
            self.log.failure("opening the maildrop failed", failure, account=account.id)
            self._release_lock()
            if self._connected:
                self._err("Cannot open the mailbox now; try again later", "SYS/TEMP")

        return d.addCallbacks(opened, failed)

    # -- TRANSACTION state -------------------------------------------------------------------
    def _message(self, argument: str) -> MaildropMessage | None:
        """The message a number argument names, or an -ERR sent (RFC 1939 §5)."""
        if not argument.isdigit() or not argument.isascii() or len(argument) > MAX_NUMBER_DIGITS:
            self._err("Invalid message number")
            return None
        message = self.maildrop.get(int(argument))
        if message is None:
            self._err("No such message")
        return message

    def do_STAT(self, *args: str) -> None:
        if not self._arguments(args, 0, 0):
            return
        live = self.maildrop.live()
        self._ok(f"{len(live)} {sum(m.size for m in live)}")

    def do_LIST(self, *args: str) -> None:
        if not self._arguments(args, 0, 1):
            return
        if args:
            message = self._message(args[0])
            if message is not None:
                self._ok(f"{message.number} {message.size}")
            return
        live = self.maildrop.live()
        self._ok(f"{len(live)} messages")
        self.transport.write(b"".join(f"{m.number} {m.size}\r\n".encode() for m in live) + b".\r\n")

    def do_UIDL(self, *args: str) -> None:
        if not self._arguments(args, 0, 1):
            return
        if args:
            message = self._message(args[0])
            if message is not None:
                self._ok(f"{message.number} {message.unique_id}")
            return
        self._ok("Unique-ID listing follows")
        self.transport.write(
            b"".join(f"{m.number} {m.unique_id}\r\n".encode() for m in self.maildrop.live()) + b".\r\n"
        )

    def do_DELE(self, *args: str) -> None:
        """Mark for deletion; the core removes it only in the UPDATE state (RFC 1939 §5)."""
        if not self._arguments(args, 1, 1):
            return
        message = self._message(args[0])
        if message is not None:
            message.deleted = True
            self._ok(f"Message {message.number} deleted")

    def do_RSET(self, *args: str) -> None:
        if not self._arguments(args, 0, 0):
            return
        self.maildrop.reset()
        live = self.maildrop.live()
        self._ok(f"Maildrop has {len(live)} messages ({sum(m.size for m in live)} octets)")

    def do_NOOP(self, *args: str) -> None:
        if self._arguments(args, 0, 0):
            self._ok()

    def do_RETR(self, *args: str) -> defer.Deferred | None:
        if not self._arguments(args, 1, 1):
            return None
        message = self._message(args[0])
        if message is None:
            return None
        return defer.ensureDeferred(self._send_message(message, None))

    def do_TOP(self, *args: str) -> defer.Deferred | None:
        """Header, blank line and the first ``n`` body lines (RFC 1939 §7)."""
        if not self._arguments(args, 2, 2):
            return None
        lines = args[1]
        if not lines.isdigit() or not lines.isascii() or len(lines) > MAX_NUMBER_DIGITS:
            self._err("Invalid number of lines")
            return None
        message = self._message(args[0])
        if message is None:
            return None
        return defer.ensureDeferred(self._send_message(message, int(lines)))

    def _header_length(self, message: MaildropMessage) -> int | None:
        try:
            return self.context.core.get_parsed(message.blob_id).structure.body_start
        except KeyError:
            return None

    async def _send_message(self, message: MaildropMessage, body_lines: int | None) -> None:
        """Stream a message (or its top) from the blob store without holding it in memory."""
        core = self.context.core
        header_end = self._header_length(message) if body_lines is not None else None
        try:
            chunk = await core.read_blob(message.blob_id, 0, CHUNK_SIZE)
        except (KeyError, FileNotFoundError):
            self._err("Message was deleted by another session")
            return
        if body_lines is not None and header_end is None:
            header_end = _find_header_end(chunk)
        if body_lines is None:
            self._ok(f"{message.size} octets")
        else:
            self._ok("Top of message follows")
        encoder = MultilineEncoder()
        offset = 0
        lines_left = body_lines
        self.transport.registerProducer(self, True)
        try:
            while chunk:
                start, offset = offset, offset + len(chunk)
                done = len(chunk) < CHUNK_SIZE
                if lines_left is not None and offset > header_end:
                    split = max(0, header_end - start)
                    body = chunk[split:]
                    kept = cut_after_lines(body, lines_left)
                    lines_left -= count_lines(kept)
                    if lines_left == 0 or len(kept) < len(body):
                        done = True
                    chunk = chunk[:split] + kept
                self.transport.write(encoder.feed(chunk))
                self.resetTimeout()
                if done:
                    break
                await self._writable()
                chunk = await core.read_blob(message.blob_id, offset, CHUNK_SIZE)
            self.transport.write(encoder.finish())
        except Exception:  # noqa: BLE001 - whatever failed, the session cannot continue
            # Half a message has been sent: the only safe way out is to end the session.
            self.log.failure("sending message {number} failed", number=message.number)
            self.transport.loseConnection()
            return
        finally:
            if self._connected:
                self.transport.unregisterProducer()
        if body_lines is None:
            message.retrieved = True

    def do_QUIT(self, *args: str) -> defer.Deferred | None:
        if self.state == AUTHORIZATION:
            self._ok(f"{self.context.hostname} POP3 server signing off")
            raise CloseAfterReply()
        return defer.ensureDeferred(self._update())

    # -- UPDATE state --------------------------------------------------------------------------
    async def _update(self) -> None:
        """RFC 1939 §6: remove the messages marked deleted, then release the maildrop.

        Messages retrieved whole are also marked ``\\Seen`` (as Dovecot does) so that an IMAP
        client on the same mailbox does not show them as new.
        """
        from mailserve.core.mailcore import FLAGS_ADD

        self.state = UPDATE
        maildrop = self.maildrop
        core = self.context.core
        removed: list[int] = []
        try:
            seen = maildrop.retrieved_unseen_uids()
            if seen:
                await core.store_flags(maildrop.account, maildrop.mailbox.id, seen, FLAGS_ADD, ["\\Seen"])
            deleted = maildrop.deleted_uids()
            if deleted:
                removed = await core.remove_messages(maildrop.account, maildrop.mailbox.id, deleted)
        except Exception:  # noqa: BLE001 - reported to the client as RFC 1939 §6 asks
            self.log.failure("POP3 update failed", account=maildrop.account)
            self._err("Some deleted messages were not removed", "SYS/TEMP")
        else:
            self._ok(f"{self.context.hostname} POP3 server signing off ({len(removed)} messages deleted)")
        finally:
            self._release_lock()
        raise CloseAfterReply()


def _find_header_end(data: bytes) -> int:
    """Where the body starts when no parse is cached: after the first empty line."""
    ends = [p + len(s) for s in (b"\r\n\r\n", b"\n\n") if (p := data.find(s)) >= 0]
    return min(ends) if ends else len(data)
