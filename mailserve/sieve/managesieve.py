"""ManageSieve (RFC 5804): upload, check and manage each account's Sieve scripts.

``build(server, listener)`` is the listener builder named in ``mailserve.listeners.PROTOCOLS``.
Scripts are stored through ``mailserve.sieve.scripts.SieveScripts``; every upload is compiled by
``mailserve.sieve.compile_script`` first, so a script with an error is refused with the line and
column of the error (RFC 5804 §2.6 asks for a human-readable reason) and the interpreter never
meets a script it cannot run. The ``SIEVE`` capability is exactly the interpreter's extension list.

The protocol reads like the RFC: the command table first (which commands each state accepts),
then one ``do_X`` handler per command. Parsing the IMAP-like command syntax (atoms, quoted
strings, literals ``{n}`` / ``{n+}``, RFC 5804 §4) is separate from what commands mean. The
command loop (one command at a time, pipelined input buffered, the bad-command limit) is
``mailserve.commandloop.CommandLoop``, shared with POP3.

``managesieve.max_scripts``, ``managesieve.max_script_size`` and ``auth.failure_delay`` are live
settings: the context reads them from the server's current configuration at every PUTSCRIPT,
HAVESPACE and login, so a change through the admin API applies without a restart.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, threads
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from mailserve.commandloop import BadCommand, CloseAfterReply, CommandLoop
from mailserve.config import ListenerConfig
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
from mailserve.sieve.errors import SieveSyntaxError
from mailserve.sieve.extensions import SIEVE_CAPABILITY
from mailserve.sieve.interpreter import SieveLimits, compile_script
from mailserve.sieve.scripts import ScriptError, SieveScripts

NOT_AUTHENTICATED = "NOT_AUTHENTICATED"
AUTHENTICATED = "AUTHENTICATED"

#: Which commands each state accepts (RFC 5804 §2). NOOP and CAPABILITY work everywhere.
COMMANDS: dict[str, frozenset[str]] = {
    NOT_AUTHENTICATED: frozenset({"AUTHENTICATE", "STARTTLS", "CAPABILITY", "LOGOUT", "NOOP"}),
    AUTHENTICATED: frozenset({
        "CAPABILITY", "LOGOUT", "NOOP", "HAVESPACE", "PUTSCRIPT", "LISTSCRIPTS", "SETACTIVE",
        "GETSCRIPT", "DELETESCRIPT", "RENAMESCRIPT", "CHECKSCRIPT", "UNAUTHENTICATE",
    }),
}

#: Longest command line outside literals.
MAX_LINE_LENGTH = 8192
#: Arguments any command may have (the most is two, plus a SASL initial response).
MAX_ARGUMENTS = 4
#: Unknown or malformed commands tolerated before the connection is closed.
MAX_BAD_COMMANDS = 20
#: Unprocessed input held while a command runs before the socket stops being read.
MAX_PENDING_INPUT = 64 * 1024
#: Longest string argument other than a script (names, SASL responses, NOOP tags).
MAX_SHORT_STRING = 4096
#: Largest quoted string a reply sends before it switches to a literal.
MAX_QUOTED_REPLY = 1024

_LITERAL = re.compile(rb"\{(\d{1,10})(\+?)\}\Z")


class ProtocolError(Exception):
    """A command the parser cannot accept; ``str()`` is the reason given to the client."""


@dataclass(frozen=True)
class Atom:
    """A bare word: a command name or a number (RFC 5804 §4 ``atom`` / ``number``)."""

    value: str


@dataclass(frozen=True)
class String:
    """A quoted string or a literal; ``too_large`` when its bytes were skipped, not kept."""

    value: bytes
    too_large: bool = False


class CommandReader:
    """Incremental parser of client commands: bytes in, one list of tokens per command out.

    A command is one line, except that a literal ``{n}`` or ``{n+}`` at the end of a line is
    followed by ``n`` octets and then the rest of the command (RFC 5804 §4). Literals larger
    than ``max_literal`` are counted off and dropped, not buffered, so the command can still be
    answered (``QUOTA/MAXSIZE``) without the process holding the bytes.
    """

    def __init__(self, max_literal: int) -> None:
        self.max_literal = max_literal
        self.lines = LineReader(MAX_LINE_LENGTH)
        self._tokens: list[Atom | String] = []
        self._literal_left = 0
        self._literal: bytearray | None = None
        self._literal_dropped = False
        self._in_literal = False

    def feed(self, data: bytes) -> None:
        self.lines.feed(data)

    def reset(self) -> None:
        """Forget everything unread (STARTTLS: cleartext after the command is not trusted)."""
        self.lines.clear()
        self._tokens = []
        self._in_literal = False

    @property
    def pending_bytes(self) -> int:
        return self.lines.pending_bytes

    def next_command(self) -> list[Atom | String] | None:
        """The next complete command's tokens, or ``None`` until more input arrives.

        Raises ``ProtocolError`` for a malformed command (whose remaining line is dropped).
        """
        while True:
            if self._in_literal:
                data = self.lines.take(self._literal_left)
                if not self._literal_dropped:
                    self._literal.extend(data)
                self._literal_left -= len(data)
                if self._literal_left:
                    return None
                self._in_literal = False
                if self._literal_dropped:
                    self._tokens.append(String(b"", too_large=True))
                else:
                    self._tokens.append(String(bytes(self._literal)))
                self._literal = None
            try:
                line = self.lines.next_line()
            except LineTooLong:
                self.reset()
                raise ProtocolError("line too long") from None
            if line is None:
                return None
            try:
                literal = self._tokenize(line)
            except ProtocolError:
                self._tokens = []
                raise
            if literal is None:
                tokens, self._tokens = self._tokens, []
                return tokens
            self._in_literal = True
            self._literal_left = literal
            self._literal_dropped = literal > self.max_literal
            self._literal = None if self._literal_dropped else bytearray()

    def _tokenize(self, line: bytes) -> int | None:
        """Append the tokens of ``line``; return a literal's length if the line announces one."""
        position, length = 0, len(line)
        while position < length:
            if line[position] == 0x20:
                position += 1
                continue
            if len(self._tokens) >= MAX_ARGUMENTS + 1:
                raise ProtocolError("too many arguments")
            char = line[position]
            if char == 0x22:  # '"': quoted string; only \\ and \" may be escaped (RFC 5804 §4)
                value = bytearray()
                position += 1
                while True:
                    if position >= length:
                        raise ProtocolError("unterminated quoted string")
                    c = line[position]
                    if c == 0x22:
                        position += 1
                        break
                    if c == 0x5C:
                        if position + 1 >= length or line[position + 1] not in (0x22, 0x5C):
                            raise ProtocolError("invalid escape in quoted string")
                        value.append(line[position + 1])
                        position += 2
                        continue
                    if c == 0:
                        raise ProtocolError("NUL in quoted string")
                    value.append(c)
                    position += 1
                if len(value) > MAX_SHORT_STRING:
                    raise ProtocolError("quoted string too long")
                self._tokens.append(String(bytes(value)))
            elif char == 0x7B:  # '{': a literal, which must end the line
                match = _LITERAL.match(line, position)
                if match is None:
                    raise ProtocolError("invalid literal")
                return int(match.group(1))
            else:
                end = line.find(b" ", position)
                end = length if end < 0 else end
                word = line[position:end]
                if not all(0x21 <= b <= 0x7E and b not in b'"{}()%*\\' for b in word):
                    raise ProtocolError("invalid characters in command")
                self._tokens.append(Atom(word.decode("ascii")))
                position = end
        return None


def quoted(text: str) -> str:
    """A reply string: quoted when it can be (RFC 5804 §4), else a literal ``{n}``."""
    data = text.encode("utf-8")
    if len(data) > MAX_QUOTED_REPLY or any(c in data for c in b"\r\n\0"):
        return f"{{{len(data)}}}\r\n{text}"
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def syntax_error_message(error: SieveSyntaxError) -> str:
    """``line L, column C: message``: where the script is wrong, for the user to fix it."""
    return f"line {error.line}, column {error.column}: {error.message}"


@dataclass(frozen=True)
class ManageSieveContext:
    """What every session of one listener shares."""

    directory: Any
    scripts: SieveScripts
    hostname: str
    implicit_tls: bool
    starttls: bool
    allow_plaintext_auth: bool
    #: The server's current configuration (where the live settings are read at use time).
    config: Callable[[], Any]
    max_redirects: int
    idle_timeout: float
    max_auth_failures: int
    tls_context_factory: Callable[[], Any]
    reactor: Any

    @property
    def max_scripts(self) -> int:
        """Scripts one account may keep (RFC 5804 §1.3 QUOTA/MAXSCRIPTS), as configured now."""
        return self.config().managesieve.max_scripts

    @property
    def max_script_size(self) -> int:
        """Largest script accepted (RFC 5804 §1.3 QUOTA/MAXSIZE), as configured now."""
        return self.config().managesieve.max_script_size

    @property
    def auth_failure_delay(self) -> float:
        """Seconds before a failed login is answered, as configured now."""
        return self.config().auth.failure_delay


class ManageSieveSession(CommandLoop, Protocol, TimeoutMixin):
    """One ManageSieve connection."""

    log = Logger()
    protocol_name = "ManageSieve"
    commands = COMMANDS
    max_pending_input = MAX_PENDING_INPUT
    max_bad_commands = MAX_BAD_COMMANDS

    def __init__(self, context: ManageSieveContext) -> None:
        super().__init__()
        self.context = context
        self.callLater = context.reactor.callLater
        self.state = NOT_AUTHENTICATED
        self.secure = context.implicit_tls
        self.account: Any = None
        self.reader = CommandReader(context.max_script_size)
        self._sasl: PlainMechanism | LoginMechanism | None = None
        self._logins = LoginGuard(
            context.directory, context.reactor, context.auth_failure_delay, context.max_auth_failures
        )

    # -- connection --------------------------------------------------------------------------
    def connectionMade(self) -> None:
        self._connected = True
        self.setTimeout(self.context.idle_timeout)
        self._send_capabilities()  # RFC 5804 §1.7: the greeting is the capability list and OK
        self._ok("mailserve ManageSieve ready")

    def connectionLost(self, reason: Failure = None) -> None:
        self._connected = False
        self.setTimeout(None)

    def timeoutConnection(self) -> None:
        self._reply("BYE", "Disconnected for inactivity")
        self.transport.loseConnection()

    # -- output ---------------------------------------------------------------------------------
    def _write(self, text: str) -> None:
        self.transport.write(text.encode("utf-8") + b"\r\n")

    def _reply(self, status: str, text: str | None = None, code: str | None = None) -> None:
        """``OK``/``NO``/``BYE`` with an optional response code (RFC 5804 §1.3) and text."""
        parts = [status]
        if code:
            parts.append(f"({code})")
        if text:
            parts.append(quoted(text))
        self._write(" ".join(parts))

    def _ok(self, text: str | None = None, code: str | None = None) -> None:
        self._reply("OK", text, code)

    def _no(self, text: str, code: str | None = None) -> None:
        self._reply("NO", text, code)

    @property
    def _may_authenticate(self) -> bool:
        """RFC 5804 §2.1 / RFC 8314: a password only over TLS unless the listener allows cleartext."""
        return self.secure or self.context.allow_plaintext_auth

    def capabilities(self) -> list[tuple[str, str | None]]:
        """The capability list for this session's state (RFC 5804 §1.7)."""
        caps: list[tuple[str, str | None]] = [
            ("IMPLEMENTATION", "mailserve"),
            ("SASL", " ".join(MECHANISMS) if self._may_authenticate and self.state == NOT_AUTHENTICATED else ""),
            ("SIEVE", SIEVE_CAPABILITY),
        ]
        if self.context.starttls and not self.secure and self.state == NOT_AUTHENTICATED:
            caps.append(("STARTTLS", None))
        caps += [
            ("MAXREDIRECTS", str(self.context.max_redirects)),
            ("VERSION", "1.0"),
            ("UNAUTHENTICATE", None),
        ]
        if self.account is not None:
            caps.append(("OWNER", self.account.name))
        return caps

    def _send_capabilities(self) -> None:
        for name, value in self.capabilities():
            self._write(quoted(name) if value is None else f"{quoted(name)} {quoted(value)}")

    # -- input ----------------------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        self.resetTimeout()
        self.reader.max_literal = self.context.max_script_size  # a live setting
        self.reader.feed(data)
        self._process()

    # -- the command loop's hooks (mailserve.commandloop) ----------------------------------------
    def _next_command(self) -> list[Atom | String] | None:
        try:
            return self.reader.next_command()
        except ProtocolError as e:
            if str(e) == "line too long":
                self._reply("BYE", "Line too long")
                raise CloseAfterReply() from None
            raise BadCommand(f"Syntax error: {e}") from None

    def _pending_input(self) -> int:
        return self.reader.pending_bytes

    def _answer_bad_command(self, text: str) -> None:
        self._no(text)

    def _answer_too_many_bad_commands(self) -> None:
        self._reply("BYE", "Too many invalid commands")

    def _answer_internal_error(self) -> None:
        self._no("Internal server error", "TRYLATER")  # RFC 5804 §1.3: a temporary failure

    def _answer_failure(self, failure: Failure) -> None:
        """A ``ScriptError`` is an expected refusal (no such script, over quota; RFC 5804 §1.3)."""
        if failure.check(ScriptError):
            error = failure.value
            self._no(str(error), error.code)
            return
        super()._answer_failure(failure)

    def _wrong_state_text(self, command: str) -> str:
        reason = "Log in first" if self.state == NOT_AUTHENTICATED else "Not valid after login"
        return f"{command}: {reason}"

    def _dispatch(self, tokens: list[Atom | String]) -> defer.Deferred | None:
        if self._sasl is not None:
            return self._sasl_continuation(tokens)
        if not tokens:
            return self._bad_command("Empty command")
        first = tokens[0]
        if not isinstance(first, Atom):
            return self._bad_command("Command name expected")
        handler = self._handler(first.value)
        if handler is None:
            return None
        return handler(*tokens[1:])

    # -- argument helpers ------------------------------------------------------------------------
    def _strings(self, args: tuple, count: int, optional: int = 0) -> list[String] | None:
        if not count <= len(args) <= count + optional or not all(isinstance(a, String) for a in args):
            self._bad_command("Wrong arguments: expected " + (f"{count} string(s)" if count else "none"))
            return None
        return list(args)

    def _text(self, string: String, what: str) -> str | None:
        if string.too_large:
            self._no(f"{what} is too long", "QUOTA/MAXSIZE" if what == "script" else None)
            return None
        try:
            return string.value.decode("utf-8")
        except UnicodeDecodeError:
            self._no(f"{what} is not valid UTF-8")
            return None

    def _name(self, string: String) -> str | None:
        text = self._text(string, "script name")
        if text is None:
            return None
        if len(string.value) > MAX_SHORT_STRING:
            self._no("script name is too long")
            return None
        return text

    # -- commands in any state ------------------------------------------------------------------
    def do_CAPABILITY(self, *args: Any) -> None:
        if self._strings(args, 0) is not None:
            self._send_capabilities()
            self._ok("Capability completed")

    def do_NOOP(self, *args: Any) -> None:
        strings = self._strings(args, 0, 1)
        if strings is None:
            return
        if strings:  # RFC 5804 §2.13: the tag comes back as a TAG response code
            tag = strings[0].value.decode("utf-8", "replace")
            self._ok("Done", f"TAG {quoted(tag)}")
        else:
            self._ok("Done")

    def do_LOGOUT(self, *args: Any) -> None:
        self._ok("Logout completed")
        raise CloseAfterReply()

    # -- before authentication -------------------------------------------------------------------
    def do_STARTTLS(self, *args: Any) -> None:
        """RFC 5804 §2.2: negotiate TLS, then send the capabilities again."""
        if self._strings(args, 0) is None:
            return
        if self.secure or not self.context.starttls:
            self._no("TLS is already active" if self.secure else "STARTTLS is not available")
            return
        self._ok("Begin TLS negotiation now")
        self.reader.reset()  # cleartext pipelined after STARTTLS could be injected (CVE-2011-0411)
        self.transport.startTLS(self.context.tls_context_factory())
        self.secure = True
        self._send_capabilities()
        self._ok("TLS negotiation successful")

    def do_AUTHENTICATE(self, *args: Any) -> defer.Deferred | None:
        """SASL PLAIN or LOGIN, with or without an initial response (RFC 5804 §2.1, RFC 4616)."""
        strings = self._strings(args, 1, 1)
        if strings is None:
            return None
        try:
            mechanism = start_mechanism(strings[0].value.decode("utf-8", "replace"))
        except SASLError:
            self._no("Unsupported authentication mechanism")
            return None
        if not self._may_authenticate:
            self._no("Authentication requires TLS; use STARTTLS first", "ENCRYPT-NEEDED")
            return None
        self._sasl = mechanism
        if len(strings) == 2:
            return self._sasl_response(strings[1].value)
        return self._sasl_advance(None)

    def _sasl_continuation(self, tokens: list[Atom | String]) -> defer.Deferred | None:
        """A client response to a challenge: one string (RFC 5804 §2.1)."""
        if len(tokens) != 1 or not isinstance(tokens[0], String) or tokens[0].too_large:
            self._sasl = None
            self._no("Authentication failed: a string was expected", "SASL")
            return None
        return self._sasl_response(tokens[0].value)

    def _sasl_response(self, data: bytes) -> defer.Deferred | None:
        try:
            response = decode_response(data)
        except SASLCancelled:
            self._sasl = None
            self._no("Authentication cancelled")  # RFC 5804 §2.1: "*" aborts with NO
            return None
        except SASLError as e:
            self._sasl = None
            self._no(f"Authentication failed: {e}", "SASL")
            return None
        return self._sasl_advance(response)

    def _sasl_advance(self, response: bytes | None) -> defer.Deferred | None:
        try:
            result = self._sasl.step(response)
        except SASLError as e:
            self._sasl = None
            self._no(f"Authentication failed: {e}", "SASL")
            return None
        if isinstance(result, Credentials):
            self._sasl = None
            remote_ip = getattr(self.transport.getPeer(), "host", None)
            self._logins.failure_delay = self.context.auth_failure_delay  # a live setting
            return self._logins.login_deferred(result, remote_ip).addCallback(self._login_finished)
        self._write(quoted(encode_challenge(result)))
        return None

    def _login_finished(self, outcome: LoginOutcome) -> None:
        if not self._connected:
            return
        if outcome.succeeded:
            self.account = outcome.account
            self.state = AUTHENTICATED
            self._ok("Logged in")
            return
        if outcome.reason == "throttled":
            self._no("Too many failed logins from your address; try again later", "TRYLATER")
        elif outcome.reason == "authorization":
            self._no("Not authorized to act as that user")
        else:
            self._no("Invalid user name or password")
        if outcome.disconnect:
            self._reply("BYE", "Too many failed authentications")
            raise CloseAfterReply()

    # -- after authentication ------------------------------------------------------------------------
    def do_UNAUTHENTICATE(self, *args: Any) -> None:
        """RFC 5804 §2.14: back to the non-authenticated state."""
        if self._strings(args, 0) is None:
            return
        self.account = None
        self.state = NOT_AUTHENTICATED
        self._ok("Logged out")

    def _compile(self, text: str, max_script_size: int | None = None) -> defer.Deferred:
        """Compile in a thread: a large script takes longer than the reactor may be held."""
        if max_script_size is None:
            max_script_size = self.context.max_script_size
        limits = SieveLimits(max_script_size=max_script_size, max_redirects=self.context.max_redirects)
        return threads.deferToThreadPool(
            self.context.reactor, self.context.reactor.getThreadPool(), compile_script, text, limits
        )

    def do_HAVESPACE(self, *args: Any) -> None:
        """RFC 5804 §2.3: would a script of this name and size fit?"""
        if len(args) != 2 or not isinstance(args[0], String) or not isinstance(args[1], Atom):
            self._bad_command("Wrong arguments: expected a script name and a size")
            return
        name = self._name(args[0])
        if name is None:
            return
        size = args[1].value
        if not size.isdigit() or len(size) > 10:
            self._bad_command("Invalid size")
            return
        try:
            self.context.scripts.check_space(
                self.account.id, name, int(size), self.context.max_scripts, self.context.max_script_size)
        except ScriptError as e:
            self._no(str(e), e.code)
            return
        self._ok("Putscript would succeed")

    def do_PUTSCRIPT(self, *args: Any) -> defer.Deferred | None:
        """RFC 5804 §2.6: compile, check quotas, store."""
        strings = self._strings(args, 2)
        if strings is None:
            return None
        name = self._name(strings[0])
        text = self._text(strings[1], "script") if name is not None else None
        if name is None or text is None:
            return None
        context = self.context
        # One reading of the live limits for the whole command, so the check and the store agree.
        max_scripts, max_script_size = context.max_scripts, context.max_script_size
        try:
            context.scripts.check_space(
                self.account.id, name, len(strings[1].value), max_scripts, max_script_size)
        except ScriptError as e:
            self._no(str(e), e.code)
            return None
        account = self.account.id

        async def put() -> None:
            try:
                await self._compile(text, max_script_size)
            except SieveSyntaxError as e:
                self._no(syntax_error_message(e))
                return
            await context.scripts.put_script(account, name, text, max_scripts, max_script_size)
            self._ok("Script stored")

        return defer.ensureDeferred(put())

    def do_CHECKSCRIPT(self, *args: Any) -> defer.Deferred | None:
        """RFC 5804 §2.12: compile without storing."""
        strings = self._strings(args, 1)
        if strings is None:
            return None
        text = self._text(strings[0], "script")
        if text is None:
            return None

        async def check() -> None:
            try:
                await self._compile(text)
            except SieveSyntaxError as e:
                self._no(syntax_error_message(e))
                return
            self._ok("Script is valid")

        return defer.ensureDeferred(check())

    def do_LISTSCRIPTS(self, *args: Any) -> None:
        if self._strings(args, 0) is None:
            return
        for name, active in self.context.scripts.list_scripts(self.account.id):
            self._write(quoted(name) + (" ACTIVE" if active else ""))
        self._ok("Listscripts completed")

    def do_GETSCRIPT(self, *args: Any) -> None:
        strings = self._strings(args, 1)
        name = self._name(strings[0]) if strings is not None else None
        if name is None:
            return
        try:
            text = self.context.scripts.get_script(self.account.id, name)
        except ScriptError as e:
            self._no(str(e), e.code)
            return
        data = text.encode("utf-8")
        self.transport.write(b"{%d}\r\n" % len(data) + data + b"\r\n")
        self._ok("Getscript completed")

    def _change(self, operation: Callable[[], defer.Deferred], done: str) -> defer.Deferred:
        def ok(_: Any) -> None:
            if self._connected:
                self._ok(done)

        return defer.maybeDeferred(operation).addCallback(ok)

    def do_SETACTIVE(self, *args: Any) -> defer.Deferred | None:
        strings = self._strings(args, 1)
        name = self._text(strings[0], "script name") if strings is not None else None
        if name is None:
            return None
        account = self.account.id
        return self._change(lambda: self.context.scripts.set_active(account, name),
                            "Script activated" if name else "No script is active now")

    def do_DELETESCRIPT(self, *args: Any) -> defer.Deferred | None:
        strings = self._strings(args, 1)
        name = self._name(strings[0]) if strings is not None else None
        if name is None:
            return None
        account = self.account.id
        return self._change(lambda: self.context.scripts.delete_script(account, name), "Script deleted")

    def do_RENAMESCRIPT(self, *args: Any) -> defer.Deferred | None:
        strings = self._strings(args, 2)
        if strings is None:
            return None
        old, new = self._name(strings[0]), None
        if old is not None:
            new = self._name(strings[1])
        if old is None or new is None:
            return None
        account = self.account.id
        return self._change(lambda: self.context.scripts.rename_script(account, old, new), "Script renamed")


class ManageSieveFactory(ServerFactory):
    def __init__(self, context: ManageSieveContext) -> None:
        self.context = context

    def buildProtocol(self, addr: Any) -> ManageSieveSession:
        session = ManageSieveSession(self.context)
        session.factory = self
        return session


def build(server: Any, listener: ListenerConfig) -> ManageSieveFactory:
    """``build(server, listener)``: the factory for one listener of protocol managesieve."""
    config = server.config
    settings = config.managesieve
    context = ManageSieveContext(
        directory=server.directory,
        scripts=SieveScripts(server.metadata),
        hostname=config.server.hostname,
        implicit_tls=listener.tls.implicit,
        starttls=listener.tls.starttls and config.tls.has_default_certificate,
        allow_plaintext_auth=listener.allow_plaintext_auth,
        config=lambda: server.config,
        max_redirects=settings.max_redirects,
        idle_timeout=settings.idle_timeout,
        max_auth_failures=settings.max_auth_failures,
        tls_context_factory=server.tls_context_factory,
        reactor=server.reactor,
    )
    return ManageSieveFactory(context)

