"""What the login protocols share: SASL mechanisms, the login guard, the line reader.

SMTP (``AUTH``, RFC 4954), IMAP (``AUTHENTICATE``, RFC 9051 §6.2.2, and ``LOGIN``), POP3
(``AUTH``, RFC 5034, and ``USER``/``PASS``) and ManageSieve (``AUTHENTICATE``, RFC 5804 §2.1)
each frame SASL (RFC 4422) their own way: SMTP sends challenges as ``334 base64`` replies, IMAP
and POP3 as ``+ base64`` lines, and all three read responses as bare lines; ManageSieve sends and
reads them as quoted strings or literals. Each keeps its own reply codes. What the exchange
*means* is the same for all of them and lives here once:

* ``decode_response`` / ``encode_challenge``: the base64 layer (RFC 4648 §4, strict; ``=`` is an
  empty response and ``*`` cancels, RFC 4422 §5 item 3 / RFC 5034 §4 / RFC 5804 §2.1);
* ``PlainMechanism`` (RFC 4616) and ``LoginMechanism`` (draft-murchison-sasl-login, which Outlook
  and many fetch clients still use): server-side state machines that turn responses into
  ``Credentials``;
* ``LoginGuard``: checks credentials against the directory, enforces the authorization-identity
  rule of RFC 4616 §2, slows down and finally ends sessions that keep failing;
* ``LineReader``: CRLF (or bare LF) lines with a length cap, so that a peer that never sends a
  line end cannot make the process buffer without bound.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred

from mailserve.directory.directory import AuthenticationFailed, TooManyFailures

#: RFC 4616 §2 limits each of authzid, authcid and passwd to 255 octets.
MAX_FIELD_OCTETS = 255
#: Largest base64 response worth decoding: three fields of 255 octets, two NULs, base64 overhead.
MAX_ENCODED_RESPONSE = 4 * ((3 * MAX_FIELD_OCTETS + 2 + 2) // 3)


class SASLError(Exception):
    """The client's SASL response is malformed; ``str()`` is fit to send back."""


class SASLCancelled(SASLError):
    """The client answered a challenge with ``*`` (RFC 4422 §3.5): the exchange is over."""

    def __init__(self) -> None:
        super().__init__("authentication cancelled")


@dataclass(frozen=True)
class Credentials:
    """What a completed password exchange carries.

    ``authzid`` is the identity the client asks to act as (RFC 4422 §3.4.1); empty means "the
    identity I authenticate as". LOGIN has no authorization identity.
    """

    authzid: str
    authcid: str
    password: str


def decode_response(text: str | bytes) -> bytes:
    """A client's SASL response as octets.

    Strict base64 (RFC 4648 §4) as RFC 5034 §4 and RFC 5804 §2.1 require: whitespace inside,
    missing padding or stray characters are errors, not guessed at. ``=`` alone is an empty
    response (RFC 4954 §4, RFC 5034 §4), ``*`` cancels the exchange (``SASLCancelled``).
    """
    if isinstance(text, str):
        try:
            text = text.encode("ascii")
        except UnicodeEncodeError:
            raise SASLError("response is not base64") from None
    text = text.strip()
    if text == b"*":
        raise SASLCancelled()
    if text == b"=":
        return b""
    if len(text) > MAX_ENCODED_RESPONSE:
        raise SASLError("response too long")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SASLError("response is not valid base64") from None


def encode_challenge(data: bytes) -> str:
    """A server challenge in base64; an empty challenge is the empty string (RFC 5034 §4)."""
    return base64.b64encode(data).decode("ascii")


def _field(data: bytes, what: str) -> str:
    if len(data) > MAX_FIELD_OCTETS:
        raise SASLError(f"{what} is longer than {MAX_FIELD_OCTETS} octets")
    if b"\x00" in data:
        raise SASLError(f"{what} contains NUL")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SASLError(f"{what} is not UTF-8") from None


def parse_plain(message: bytes) -> Credentials:
    """Split ``[authzid] NUL authcid NUL passwd`` (RFC 4616 §2), all UTF-8, none over 255 octets.

    RFC 4616 §2 requires authcid and passwd to be non-empty; authzid may be empty. Whether a
    non-empty authzid is allowed is decided once the authcid is known to be genuine
    (``LoginGuard``), because only then is the account it names known.
    """
    fields = message.split(b"\x00")
    if len(fields) != 3:
        raise SASLError("malformed PLAIN response (expected authzid NUL authcid NUL password)")
    authzid = _field(fields[0], "authorization identity")
    authcid = _field(fields[1], "user name")
    password = _field(fields[2], "password")
    if not authcid or not password:
        raise SASLError("empty user name or password")
    return Credentials(authzid, authcid, password)


class PlainMechanism:
    """Server side of PLAIN (RFC 4616): one client message, no server challenge.

    ``step`` takes the decoded client response (``None`` when the client gave no initial
    response) and returns either the next challenge (octets, still to be base64-encoded by
    the protocol) or the final ``Credentials``.
    """

    name = "PLAIN"

    def step(self, response: bytes | None) -> bytes | Credentials:
        if response is None:
            return b""  # RFC 4616 §2: PLAIN's client speaks first; the challenge is empty
        return parse_plain(response)


class LoginMechanism:
    """Server side of LOGIN (draft-murchison-sasl-login-00): user name, then password.

    Not a standard, but what many deployed clients offer first; Dovecot and Postfix accept it.
    The prompts are the customary ``Username:`` and ``Password:``. An initial response, where a
    protocol allows one, is the user name (draft §2.1).
    """

    name = "LOGIN"

    def __init__(self) -> None:
        self._user: str | None = None

    def step(self, response: bytes | None) -> bytes | Credentials:
        if response is None:
            return b"Username:"
        if self._user is None:
            self._user = _field(response, "user name")
            if not self._user:
                raise SASLError("empty user name")
            return b"Password:"
        password = _field(response, "password")
        if not password:
            raise SASLError("empty password")
        return Credentials("", self._user, password)


#: The password mechanisms offered where passwords may be sent, in preference order.
MECHANISMS: Mapping[str, type[PlainMechanism | LoginMechanism]] = MappingProxyType({
    "PLAIN": PlainMechanism,
    "LOGIN": LoginMechanism,
})


def start_mechanism(name: str) -> PlainMechanism | LoginMechanism:
    """A fresh exchange for mechanism ``name`` (case-insensitive, RFC 4422 §3.1)."""
    mechanism = MECHANISMS.get(name.upper())
    if mechanism is None:
        raise SASLError(f"unsupported authentication mechanism {name[:40]!r}")
    return mechanism()


def authzid_names_account(authzid: str, authcid: str, account: Any) -> bool:
    """Does ``authzid`` name the account the client authenticated as?

    RFC 4616 §2: the server "MUST verify that the authcid is authorized to act as the authzid".
    mailserve grants no proxy (master-user) logins, so an authorization identity is accepted
    only when it names the same account: the login used, the account's name or one of its own
    addresses, compared without regard to case as the directory compares logins.
    """
    if not authzid:
        return True
    wanted = authzid.casefold()
    names = {authcid.casefold(), str(getattr(account, "name", "")).casefold()}
    names.update(address.casefold() for address in getattr(account, "addresses", ()))
    return wanted in names


@dataclass(frozen=True)
class LoginOutcome:
    """How one login attempt ended.

    ``reason`` is ``None`` on success, else one of ``"invalid"`` (wrong user name or password),
    ``"authorization"`` (the authzid names someone else) or ``"throttled"`` (the client's
    address is over its failure budget). ``disconnect`` tells the protocol to end the session
    after its answer.
    """

    account: Any = None
    reason: str | None = None
    disconnect: bool = False

    @property
    def succeeded(self) -> bool:
        return self.reason is None


class LoginGuard:
    """One session's logins: the directory check, the authzid rule, the cost of failing.

    Every failure is answered only after ``failure_delay`` seconds (Dovecot's
    ``auth_failure_delay``), which makes guessing passwords over one connection slow without
    blocking anyone else; after ``max_failures`` failures the session is ended, so a guesser
    must reconnect (and meets the directory's per-address throttle). The delay runs on the
    reactor's clock, never as a sleep.
    """

    def __init__(self, directory: Any, reactor: Any, failure_delay: float, max_failures: int) -> None:
        self.directory = directory
        self.reactor = reactor
        self.failure_delay = failure_delay
        self.max_failures = max_failures
        self.failures = 0

    async def login(self, credentials: Credentials, remote_ip: str | None) -> LoginOutcome:
        """Check ``credentials``; a failure comes back after the delay, never as an exception."""
        try:
            account = await self.directory.authenticate(credentials.authcid, credentials.password, remote_ip)
        except TooManyFailures:
            return await self._failed("throttled")
        except AuthenticationFailed:
            return await self._failed("invalid")
        if not authzid_names_account(credentials.authzid, credentials.authcid, account):
            return await self._failed("authorization")
        return LoginOutcome(account=account)

    async def _failed(self, reason: str) -> LoginOutcome:
        self.failures += 1
        disconnect = reason == "throttled" or self.failures >= self.max_failures
        if self.failure_delay > 0:
            await task.deferLater(self.reactor, self.failure_delay, lambda: None)
        return LoginOutcome(reason=reason, disconnect=disconnect)

    def login_deferred(self, credentials: Credentials, remote_ip: str | None) -> Deferred:
        """``login`` as a Deferred, for protocols written with callbacks."""
        return ensureDeferred(self.login(credentials, remote_ip))


class LineTooLong(Exception):
    """A line (or the unterminated rest of the input) is longer than the reader's limit."""


class LineReader:
    """Lines out of a byte stream, each at most ``max_line`` octets without its line end.

    Lines end with CRLF; a bare LF is accepted too (RFC 1939 and RFC 5804 say CRLF, but being
    lenient here costs nothing and some scripts send LF). The cap applies to the partial line
    still waiting for its end as well, so a peer can never make the buffer grow past it.
    Bytes that are not lines (ManageSieve literals) can be taken with ``take``.
    """

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self.buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self.buffer.extend(data)

    def clear(self) -> None:
        """Forget everything unread (after STARTTLS/STLS, cleartext input is not trusted)."""
        self.buffer.clear()

    @property
    def pending_bytes(self) -> int:
        return len(self.buffer)

    def next_line(self) -> bytes | None:
        """The next line without its line end, ``None`` until one is complete.

        Raises ``LineTooLong`` (and forgets the input) when the limit is passed.
        """
        end = self.buffer.find(b"\n", 0, self.max_line + 2)
        if end < 0:
            if len(self.buffer) > self.max_line + 1:
                self.buffer.clear()
                raise LineTooLong(f"line longer than {self.max_line} octets")
            return None
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 1]
        line = line.removesuffix(b"\r")
        if len(line) > self.max_line:
            self.buffer.clear()
            raise LineTooLong(f"line longer than {self.max_line} octets")
        return line

    def take(self, count: int) -> bytes:
        """Up to ``count`` raw octets from the front of the buffer."""
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data
