"""IMAP commands valid in any state, the not-authenticated state's commands, and ENABLE.

CAPABILITY, NOOP, LOGOUT and ID (RFC 9051 §6.1, RFC 2971), STARTTLS, LOGIN and
AUTHENTICATE (§6.2, with SASL-IR, RFC 4959), and ENABLE (RFC 5161, RFC 9051 §6.3.1).
``AuthCommands`` is a mixin of ``IMAPServerProtocol``: its handlers use the session's
connection state and helpers (``send``, ``flush``, ``ok``, ``capabilities``, ``framer``,
``account``, ``enabled``), and are found by the protocol's ``do_<COMMAND>`` dispatch.
The rules of a SASL exchange are ``mailserve.sasl``'s, shared with SMTP, POP3 and
ManageSieve.
"""

from __future__ import annotations

from mailserve import __version__ as VERSION
from mailserve.imap.parser import Atom, astring, is_atom, quote
from mailserve.imap.responses import AlreadyAnswered, BadCommand, CommandFailed, no_args
from mailserve.imap.states import AUTHENTICATED, LOGOUT, NOT_AUTHENTICATED
from mailserve.sasl import (
    Credentials,
    SASLCancelled,
    SASLError,
    decode_response,
    encode_challenge,
    start_mechanism,
)

#: SASL mechanisms AUTHENTICATE offers (as ``AUTH=`` capabilities, RFC 9051 §6.2.2), from the
#: shared ``mailserve.sasl`` set.  PLAIN only, as Dovecot offers by default: the SASL LOGIN
#: mechanism would only repeat the LOGIN command, which every IMAP client already has.
IMAP_MECHANISMS: tuple[str, ...] = ("PLAIN",)

#: What ENABLE accepts (RFC 5161, RFC 9051 §6.3.1, RFC 7162 §3.1.8/§3.2.3, RFC 6855 §3).
ENABLEABLE = ("IMAP4REV2", "CONDSTORE", "QRESYNC", "UTF8=ACCEPT")

MAX_ID_FIELDS = 30


class AuthCommands:
    """The handlers of the any-state and not-authenticated commands, and ENABLE."""

    # ============================================================================================
    # Any state (RFC 9051 §6.1)
    # ============================================================================================
    async def do_CAPABILITY(self, tag: str, args: list) -> str | None:
        no_args(args)
        self.send(b"* CAPABILITY " + self.capabilities())
        return None

    async def do_NOOP(self, tag: str, args: list) -> str | None:
        no_args(args)
        return None

    async def do_LOGOUT(self, tag: str, args: list) -> str | None:
        no_args(args)
        if self._counted_user:  # free the user's session slot before the client hears OK
            self.factory.session_ended(self.account.id)
            self._counted_user = False
        self.send(b"* BYE mailserve logging out")
        self._tagged(tag, "OK", "LOGOUT completed")
        self.flush()
        self.state = LOGOUT
        self.close()
        return None

    async def do_ID(self, tag: str, args: list) -> str | None:
        """RFC 2971: the client's identification is bounded, ours is short."""
        if len(args) != 1 or not (is_atom(args[0], "NIL") or isinstance(args[0], list)):
            raise BadCommand("ID expects NIL or a list of field/value pairs")
        if isinstance(args[0], list):
            fields = args[0]
            if len(fields) % 2 or len(fields) > 2 * MAX_ID_FIELDS:
                raise BadCommand("ID takes at most 30 field/value pairs")
            for i in range(0, len(fields), 2):
                if not isinstance(fields[i], bytes) or len(fields[i]) > 30:
                    raise BadCommand("ID field names are strings of at most 30 octets")
                value = fields[i + 1]
                if not (isinstance(value, bytes) and len(value) <= 1024) and not is_atom(value, "NIL"):
                    raise BadCommand("ID values are strings of at most 1024 octets, or NIL")
        self.send(b'* ID ("name" "mailserve" "version" ' + quote(VERSION) + b")")
        return None

    # ============================================================================================
    # Not authenticated (RFC 9051 §6.2)
    # ============================================================================================
    async def do_STARTTLS(self, tag: str, args: list) -> str | None:
        no_args(args)
        if self.secure or not self.listener.tls.starttls:
            raise BadCommand("TLS is already active" if self.secure else "STARTTLS is not offered here")
        self._tagged(tag, "OK", "Begin TLS negotiation now")
        self.flush()
        # RFC 9051 §6.2.1: anything pipelined after STARTTLS was sent in clear; drop it.
        self.framer.discard_buffer()
        self.transport.startTLS(self.server.tls_context_factory())
        self.secure = True
        self.state = NOT_AUTHENTICATED
        return self._silent()

    def _silent(self) -> str:
        # The tagged response was already sent; tell _execute to send none.
        raise AlreadyAnswered()

    async def do_LOGIN(self, tag: str, args: list) -> str | None:
        """RFC 9051 §6.2.3; checked like a SASL login (``mailserve.sasl.LoginGuard``)."""
        if len(args) != 2:
            raise BadCommand("LOGIN expects a user name and a password")
        if not self.plaintext_allowed:
            raise CommandFailed("LOGIN is disabled until TLS is active (use STARTTLS)", "PRIVACYREQUIRED")
        user = astring(args[0], "user name")
        password = astring(args[1], "password")
        return await self._authenticate(Credentials("", user, password))

    async def do_AUTHENTICATE(self, tag: str, args: list) -> str | None:
        """RFC 9051 §6.2.2: SASL with an optional initial response (SASL-IR, RFC 4959).

        The exchange's rules (strict base64, PLAIN's fields, the authzid check) are
        ``mailserve.sasl``'s, shared with SMTP, POP3 and ManageSieve.  A cancelled exchange
        (``*``) and a response that is not valid base64 get a tagged BAD, as §6.2.2 requires;
        a malformed PLAIN message is BAD as well (it is a syntax error, not a wrong password).
        """
        if not args or len(args) > 2 or not isinstance(args[0], Atom):
            raise BadCommand("AUTHENTICATE expects a mechanism name")
        if args[0].upper() not in IMAP_MECHANISMS:
            raise CommandFailed(f"unsupported SASL mechanism {args[0][:40]}", "CANNOT")
        if not self.plaintext_allowed:
            raise CommandFailed(f"{args[0].upper()} is disabled until TLS is active (use STARTTLS)",
                                "PRIVACYREQUIRED")
        mechanism = start_mechanism(args[0])
        initial: bytes | None = None
        if len(args) == 2:
            response = args[1]
            if not isinstance(response, Atom | bytes):
                raise BadCommand("invalid initial response")
            initial = response.encode() if isinstance(response, str) else bytes(response)
        try:
            # RFC 4959 §3: an initial response of "=" is an empty one; none at all means the
            # exchange starts with the server's (empty) challenge.
            result = mechanism.step(decode_response(initial) if initial is not None else None)
            while not isinstance(result, Credentials):
                self.send(b"+ " + encode_challenge(result).encode("ascii"))
                self.flush()
                result = mechanism.step(decode_response(await self.wait_for_line()))
        except SASLCancelled:
            raise BadCommand("authentication cancelled") from None
        except SASLError as error:
            raise BadCommand(f"invalid SASL response: {error}") from None
        return await self._authenticate(result)

    async def _authenticate(self, credentials: Credentials) -> str:
        """Check credentials; every failure is delayed, and too many end the session."""
        self._logins.failure_delay = self.server.config.imap.auth_failure_delay  # a live setting
        outcome = await self._logins.login(credentials, self.peer_ip)
        if not outcome.succeeded:
            if outcome.disconnect:
                # The tagged NO still tells the client why; the BYE follows it (_execute).
                self._bye_after_command = b"* BYE Too many failed authentication attempts"
            if outcome.reason == "throttled":
                raise CommandFailed("too many failed logins from your address; try later", "UNAVAILABLE")
            if outcome.reason == "authorization":
                # RFC 4616 §2 / RFC 5530 §3: the authzid names an identity this user may not use.
                raise CommandFailed("acting as another user is not allowed", "AUTHORIZATIONFAILED")
            raise CommandFailed("invalid user name or password", "AUTHENTICATIONFAILED")
        account = outcome.account
        if not self.factory.session_started(account.id):
            raise CommandFailed("too many sessions for this user", "LIMIT")
        self._counted_user = True
        self.account = account
        self.state = AUTHENTICATED
        self._unsubscribe = self.core.subscribe(account.id, self._changed)
        return self.ok("Logged in", "CAPABILITY " + self.capabilities().decode())

    # ============================================================================================
    # Authenticated (RFC 9051 §6.3): ENABLE
    # ============================================================================================
    async def do_ENABLE(self, tag: str, args: list) -> str | None:
        if not args:
            raise BadCommand("ENABLE expects capability names")
        newly = []
        for token in args:
            if not isinstance(token, Atom):
                raise BadCommand("ENABLE expects capability atoms")
            name = token.upper()
            if name in ENABLEABLE and name not in self.enabled:
                self.enabled.add(name)
                newly.append(str(token))
                if name == "QRESYNC":
                    self.enabled.add("CONDSTORE")
        self.send(("* ENABLED " + " ".join(newly)).rstrip().encode())
        return None
