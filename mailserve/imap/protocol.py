"""The IMAP4rev2 / IMAP4rev1 server protocol (RFC 9051, RFC 3501) and its extensions.

Reading order, as the RFC reads: the command table (which state allows which command),
then the connection machinery (framing, pipelining, untagged updates), then one
``do_NAME`` handler per command in RFC order.  A handler receives the tag and the
tokens after the command name; it returns the text of the tagged ``OK`` (or ``None`` for
"NAME completed"), raises ``BadCommand`` for ``BAD`` and ``CommandFailed`` for ``NO``.
``UID x`` commands are handled by ``do_UID_x``.

Commands run one at a time in arrival order, so a pipelining client (RFC 9051 §5.5) gets
its responses in order; the bytes of later commands wait in the framer meanwhile.  Mail
semantics are the core's (``server.core``); this module translates.  Message data for
FETCH and the SEARCH/SORT/THREAD engines live in ``fetch.py``, ``fetchdata.py`` and
``search.py``.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, task
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin

from mailserve import __version__ as VERSION
from mailserve.core import errors as core_errors
from mailserve.core.mailcore import FLAGS_ADD, FLAGS_REMOVE, FLAGS_SET
from mailserve.core.model import SEPARATOR, SYSTEM_FLAGS, ChangeSet, Mailbox, normalise_flag
from mailserve.imap.parser import (
    MAX_NUMBER64,
    Atom,
    Command,
    CommandFramer,
    FramingError,
    LineTooLong,
    Literal,
    LiteralRefused,
    LiteralRequest,
    ParseError,
    SequenceSet,
    String,
    astring,
    decode_mailbox_name,
    encode_mailbox_name,
    format_flags,
    format_sequence_set,
    is_atom,
    number,
    quote,
    tokenize,
)
from mailserve.imap.responses import BadCommand, CommandFailed, parse_date_time
from mailserve.imap.selected import SelectedMailbox
from mailserve.sasl import (
    Credentials,
    LoginGuard,
    SASLCancelled,
    SASLError,
    decode_response,
    encode_challenge,
    start_mechanism,
)

if TYPE_CHECKING:
    from mailserve.imap.factory import IMAPFactory

# -- states and the command table (RFC 9051 §3, §6) ---------------------------------------------
NOT_AUTHENTICATED, AUTHENTICATED, SELECTED, LOGOUT = "not-authenticated", "authenticated", "selected", "logout"
_ANY = frozenset({NOT_AUTHENTICATED, AUTHENTICATED, SELECTED})
_AUTH = frozenset({AUTHENTICATED, SELECTED})
_SEL = frozenset({SELECTED})
_PRE = frozenset({NOT_AUTHENTICATED})

#: SASL mechanisms AUTHENTICATE offers (as ``AUTH=`` capabilities, RFC 9051 §6.2.2), from the
#: shared ``mailserve.sasl`` set.  PLAIN only, as Dovecot offers by default: the SASL LOGIN
#: mechanism would only repeat the LOGIN command, which every IMAP client already has.
IMAP_MECHANISMS: tuple[str, ...] = ("PLAIN",)

#: Command name -> the states it is valid in.
COMMANDS: dict[str, frozenset[str]] = {
    # any state (RFC 9051 §6.1)
    "CAPABILITY": _ANY, "NOOP": _ANY, "LOGOUT": _ANY, "ID": _ANY,
    # not authenticated (§6.2)
    "STARTTLS": _PRE, "AUTHENTICATE": _PRE, "LOGIN": _PRE,
    # authenticated (§6.3)
    "ENABLE": _AUTH, "SELECT": _AUTH, "EXAMINE": _AUTH, "CREATE": _AUTH, "DELETE": _AUTH,
    "RENAME": _AUTH, "SUBSCRIBE": _AUTH, "UNSUBSCRIBE": _AUTH, "LIST": _AUTH, "LSUB": _AUTH,
    "NAMESPACE": _AUTH, "STATUS": _AUTH, "APPEND": _AUTH, "IDLE": _AUTH,
    "GETQUOTA": _AUTH, "GETQUOTAROOT": _AUTH, "SETQUOTA": _AUTH,
    # selected (§6.4)
    "CHECK": _SEL, "CLOSE": _SEL, "UNSELECT": _SEL, "EXPUNGE": _SEL, "SEARCH": _SEL, "FETCH": _SEL,
    "STORE": _SEL, "COPY": _SEL, "MOVE": _SEL, "SORT": _SEL, "THREAD": _SEL, "UID": _SEL,
}
UID_COMMANDS = frozenset({"FETCH", "STORE", "COPY", "MOVE", "SEARCH", "EXPUNGE", "SORT", "THREAD"})

#: Commands by sequence number during which EXPUNGE must not be sent (RFC 9051 §7.5.1).
NO_EXPUNGE_DURING = frozenset({"FETCH", "STORE", "SEARCH", "SORT", "THREAD"})

#: What ENABLE accepts (RFC 5161, RFC 9051 §6.3.1, RFC 7162 §3.1.8/§3.2.3, RFC 6855 §3).
ENABLEABLE = ("IMAP4REV2", "CONDSTORE", "QRESYNC", "UTF8=ACCEPT")

#: Special-use attributes by the core's mailbox role (RFC 6154 §2).
ROLE_ATTRIBUTES = {
    "sent": "\\Sent", "drafts": "\\Drafts", "trash": "\\Trash", "junk": "\\Junk",
    "archive": "\\Archive", "all": "\\All", "flagged": "\\Flagged", "important": "\\Important",
}
ATTRIBUTE_ROLES = {v.lower(): k for k, v in ROLE_ATTRIBUTES.items()}

PERMANENT_FLAGS = b"(\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)"

_TAG_RE = re.compile(r"^[\x21-\x7e]+$")


def _ack_now(transport: Any) -> None:
    """Acknowledge what was received at once (Linux ``TCP_QUICKACK``, reset by the kernel
    after each use).  A client that writes a literal and its closing CRLF separately with
    Nagle on (Python's imaplib does) holds the CRLF until the literal is acknowledged, so
    a delayed ACK cost every APPEND 40 ms."""
    option = getattr(socket, "TCP_QUICKACK", None)
    handle = getattr(transport, "getHandle", None)
    if option is None or handle is None:
        return
    try:
        handle().setsockopt(socket.IPPROTO_TCP, option, 1)
    except (AttributeError, OSError):
        pass


_KEYWORD_RE = re.compile(r"^[\x21-\x7e]+$")
_KEYWORD_FORBIDDEN = set('(){ %*"\\]')
MAX_KEYWORD = 256
MAX_ID_FIELDS = 30
STATUS_ITEMS = ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE", "RECENT",
                "HIGHESTMODSEQ", "APPENDLIMIT", "DELETED-STORAGE")
#: Messages handled per reactor turn in long operations, so other sessions keep being served.
CHUNK = 256


class IMAPServerProtocol(Protocol, TimeoutMixin):
    """One IMAP connection."""

    log = Logger()

    def __init__(self, factory: IMAPFactory, secure: bool) -> None:
        self.factory = factory
        self.server = factory.server
        self.core = factory.server.core
        self.config = factory.server.config
        self.listener = factory.listener
        self.secure = secure
        self.state = NOT_AUTHENTICATED
        self.account: Any = None
        self.selected: SelectedMailbox | None = None
        self.enabled: set[str] = set()
        self.saved_result: list[int] = []
        self.peer_ip: str | None = None
        self._logins = LoginGuard(self.server.directory, self.server.reactor, self.config.imap.auth_failure_delay,
                                  self.config.imap.max_auth_failures)
        limits = self.config.imap
        self.framer = CommandFramer(limits.max_line_length, self._literal_limit)
        self._busy = False
        self._line_waiter: defer.Deferred | None = None
        self._idling = False
        self._unsubscribe = None
        self._out: list[bytes] = []
        self._out_size = 0
        self._paused = False
        self._closing = False
        self._current = ""
        self._counted_user = False
        self._bye_after_command: bytes | None = None

    # -- connection ----------------------------------------------------------------------------
    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.peer_ip = getattr(peer, "host", None)
        self.setTimeout(self.server.config.imap.idle_timeout)  # a live setting: the config as of now
        self.send(b"* OK [CAPABILITY " + self.capabilities() + b"] mailserve IMAP ready")
        self.flush()

    def connectionLost(self, reason: Any = None) -> None:
        self.setTimeout(None)
        self.state = LOGOUT
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._counted_user:
            self.factory.session_ended(self.account.id)
            self._counted_user = False
        if self._line_waiter is not None:
            waiter, self._line_waiter = self._line_waiter, None
            waiter.errback(ConnectionError("connection lost"))

    def timeoutConnection(self) -> None:
        # RFC 9051 §5.4: an autologout timer of at least 30 minutes.
        self.send(b"* BYE Autologout; idle for too long")
        self.flush()
        self.close()

    def close(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.loseConnection()

    def send(self, line: bytes) -> None:
        """Queue one response line (CRLF added); written at the end of the command."""
        self._out.append(line)
        self._out.append(b"\r\n")
        self._out_size += len(line) + 2
        if self._out_size > 256 * 1024:
            self.flush()

    def flush(self) -> None:
        if self._out and self.transport is not None and not self._closing:
            self.transport.writeSequence(self._out)
        self._out = []
        self._out_size = 0

    @property
    def utf8(self) -> bool:
        """Whether strings and mailbox names are UTF-8 (RFC 6855 §3, RFC 9051 §5.1)."""
        return "UTF8=ACCEPT" in self.enabled or "IMAP4REV2" in self.enabled

    @property
    def rev2(self) -> bool:
        return "IMAP4REV2" in self.enabled

    @property
    def condstore(self) -> bool:
        return "CONDSTORE" in self.enabled or "QRESYNC" in self.enabled

    @property
    def qresync(self) -> bool:
        return "QRESYNC" in self.enabled

    def _literal_limit(self, command: str) -> int:
        """Largest literal ``command`` may carry now.

        Only APPEND takes messages, and only once authenticated: before login every
        literal is held to the line limit, so an anonymous client cannot make the server
        buffer a message-sized literal.
        """
        if command == "APPEND" and self.state in _AUTH:
            return self.config.imap.max_literal_size
        return self.config.imap.max_line_length

    @property
    def plaintext_allowed(self) -> bool:
        """RFC 9051 §6.2.3 LOGINDISABLED: no passwords in clear unless configured."""
        return self.secure or self.listener.allow_plaintext_auth

    def capabilities(self) -> bytes:
        caps = ["IMAP4rev1", "IMAP4rev2", "LITERAL+", "ENABLE", "ID", "SASL-IR"]
        if self.state == NOT_AUTHENTICATED:
            if not self.secure and self.listener.tls.starttls:
                caps.append("STARTTLS")
            if self.plaintext_allowed:
                caps += [f"AUTH={name}" for name in IMAP_MECHANISMS]
            else:
                caps.append("LOGINDISABLED")
        else:
            caps += [
                "IDLE", "NAMESPACE", "UIDPLUS", "MOVE", "UNSELECT", "CHILDREN", "SPECIAL-USE",
                "CREATE-SPECIAL-USE", "LIST-EXTENDED", "LIST-STATUS", "STATUS=SIZE", "QUOTA",
                "QUOTA=RES-STORAGE", "QUOTA=RES-MESSAGE", "CONDSTORE", "QRESYNC", "ESEARCH",
                "SEARCHRES", "SORT", "SORT=DISPLAY", "THREAD=REFERENCES", "THREAD=ORDEREDSUBJECT",
                "UTF8=ACCEPT", "BINARY", f"APPENDLIMIT={self.config.imap.max_literal_size}",
            ]
        return " ".join(caps).encode()

    # -- input: framing, dispatch, pipelining ------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        self.resetTimeout()
        self.framer.feed(data)
        self._pump()
        _ack_now(self.transport)

    def _pump(self) -> None:
        while self.transport is not None and not self._closing:
            if self._line_waiter is not None:
                try:
                    line = self.framer.take_line()
                except LineTooLong:
                    self.send(b"* BYE Line too long")
                    self.flush()
                    self.close()
                    return
                if line is None:
                    break
                waiter, self._line_waiter = self._line_waiter, None
                waiter.callback(line)
                continue
            if self._busy:
                break
            try:
                event = self.framer.next()
            except LiteralRefused as e:
                # RFC 7888 §4: the refused literal's bytes are already on the way and the
                # stream cannot be resynchronised: a tagged BAD, then the session ends.
                if e.tag and _TAG_RE.match(e.tag):
                    self.send(e.tag.encode() + b" BAD [TOOBIG] " + str(e).encode())
                self.send(b"* BYE [TOOBIG] " + str(e).encode())
                self.flush()
                self.close()
                return
            except FramingError as e:
                tag = e.tag.encode("ascii", "replace") if e.tag and _TAG_RE.match(e.tag) else b"*"
                self.send(tag + b" BAD [TOOBIG] " + str(e).encode())
                self.flush()
                continue
            if event is None:
                break
            if isinstance(event, LiteralRequest):
                self._literal_requested(event)
                continue
            self._busy = True
            d = defer.ensureDeferred(self._execute(event))
            if not d.called:
                d.addBoth(self._command_done)
                break
            self._command_done(None)
        self._apply_backpressure()

    def _command_done(self, _: Any) -> None:
        self._busy = False
        self.flush()
        if self.transport is not None and not self._closing:
            self.factory.server.reactor.callLater(0, self._pump)

    def _apply_backpressure(self) -> None:
        # While commands run, later pipelined bytes wait in the framer; stop reading when
        # more than one command line and one literal are buffered.
        heavy = self.framer.buffered > self.config.imap.max_line_length * 2 and self._busy
        if heavy and not self._paused and self.transport is not None:
            self.transport.pauseProducing()
            self._paused = True
        elif not heavy and self._paused and self.transport is not None:
            self.transport.resumeProducing()
            self._paused = False

    def _literal_requested(self, request: LiteralRequest) -> None:
        if request.allowed:
            self.framer.accept_literal()
            self.send(b"+ Ready for literal data")
            self.flush()
            return
        self.framer.refuse_literal()
        tag = (request.tag or "*").encode("ascii", "replace")
        limit = self._literal_limit(request.command)
        if request.command == "APPEND" and self.state in _AUTH:
            # RFC 7889 §4: an APPEND over the limit is NO [TOOBIG].
            self.send(tag + b" NO [TOOBIG] Message is larger than APPENDLIMIT=%d" % limit)
        else:
            self.send(tag + b" BAD [TOOBIG] Literal of %d octets is over the limit" % request.size)
        self.flush()

    def wait_for_line(self) -> defer.Deferred:
        """The next raw line from the client (AUTHENTICATE responses, IDLE's DONE)."""
        self._line_waiter = defer.Deferred()
        d = self._line_waiter
        self.factory.server.reactor.callLater(0, self._pump)
        return d

    async def _execute(self, command: Command) -> None:
        try:
            tokens = tokenize(command)
        except ParseError as e:
            self._bad_line(command, str(e))
            return
        if len(tokens) < 2 or not isinstance(tokens[0], Atom) or not isinstance(tokens[1], Atom):
            self._bad_line(command, "expected a tag and a command name")
            return
        tag = str(tokens[0])
        if not _valid_tag(tag):
            self._bad_line(command, "invalid tag")
            return
        name = tokens[1].upper()
        args = tokens[2:]
        self._current = name
        try:
            allowed = COMMANDS.get(name)
            if allowed is None or not name.isalpha():
                raise BadCommand(f"unknown command {name[:40]}")
            if self.state not in allowed:
                raise BadCommand(f"{name} is not valid in the {self.state} state")
            handler = getattr(self, "do_" + name)
            result = await handler(tag, args)
        except BadCommand as e:
            self._updates(name, name == "UID")
            self._tagged(tag, "BAD", str(e), e.code)
        except ParseError as e:
            self._updates(name)
            self._tagged(tag, "BAD", str(e))
        except CommandFailed as e:
            self._updates(name)
            self._tagged(tag, "NO", str(e), e.code)
        except core_errors.MailError as e:
            self._updates(name)
            self._tagged(tag, "NO", str(e), _core_error_code(e))
        except ConnectionError:
            return
        except _AlreadyAnswered:
            return
        except Exception:  # noqa: BLE001 - one failing command must not end the session
            self.log.failure("IMAP command {command} failed", command=name)
            self._tagged(tag, "NO", "internal server error", "SERVERBUG")
        else:
            if self.state == LOGOUT:
                return
            self._updates(name, name == "UID")
            code, _, text = (result or "").rpartition("\0")
            self._tagged(tag, "OK", text or f"{self._current or name} completed", code or None)
        finally:
            self._current = ""
            if self._bye_after_command is not None:
                self.send(self._bye_after_command)
                self.flush()
                self.close()

    def _bad_line(self, command: Command, reason: str) -> None:
        first = command.segments[0] if command.segments else b""
        tag = first.split(b" ", 1)[0].strip()
        if not _valid_tag(tag.decode("ascii", "replace")):
            tag = b"*"
        self.send(tag + b" BAD " + reason.encode("utf-8", "replace"))

    def _tagged(self, tag: str, status: str, text: str, code: str | None = None) -> None:
        line = f"{tag} {status} " + (f"[{code}] " if code else "") + text
        self.send(line.encode("utf-8", "replace"))

    @staticmethod
    def ok(text: str, code: str | None = None) -> str:
        """The tagged OK's text, with a response code."""
        return f"{code}\0{text}" if code else text

    # -- untagged updates from the change log --------------------------------------------------------
    def _changed(self, changes: ChangeSet) -> None:
        view = self.selected
        if view is None or not view.changed(changes):
            return
        if self._idling:
            self._updates("IDLE")
            self.flush()

    def _updates(self, command: str, uid_command: bool = False) -> None:
        """Send what other sessions changed, where RFC 9051 §7.5.1 allows it."""
        view = self.selected
        if view is None or not view.has_updates or self.state != SELECTED:
            return
        allow_expunge = command not in NO_EXPUNGE_DURING
        updates = view.take_updates(allow_expunge)
        if updates.expunged_uids:
            if self.qresync:
                self.send(b"* VANISHED " + format_sequence_set(updates.expunged_uids).encode())
            else:
                for seq in updates.expunged_seqs:
                    self.send(b"* %d EXPUNGE" % seq)
        if updates.exists is not None:
            self._claim_recent(view)
            self.send(b"* %d EXISTS" % updates.exists)
            if not self.rev2:
                self.send(b"* %d RECENT" % len(view.recent))
        if updates.flag_changes:
            messages = self.core.get_messages(view.account, [m for _, _, m in updates.flag_changes])
            for (seq, uid, _), message in zip(updates.flag_changes, messages, strict=True):
                if message is None or view.mailbox_id not in message.mailboxes:
                    continue
                items = [b"FLAGS " + self._flags(message, uid)]
                if self.condstore or uid_command:
                    items.insert(0, b"UID %d" % uid)
                if self.condstore:
                    items.append(b"MODSEQ (%d)" % message.modseq)
                self.send(b"* %d FETCH (" % seq + b" ".join(items) + b")")
        if updates.mailbox_gone:
            self.send(b"* BYE The selected mailbox was deleted")
            self.flush()
            self.close()

    def _claim_recent(self, view: SelectedMailbox) -> None:
        """\\Recent: the first session to see a new message claims it (RFC 3501 §2.3.2)."""
        if view.readonly:
            return
        claimed = self.factory.recent_claims.get((view.account, view.mailbox_id), 0)
        if view.uids and view.uids[-1] > claimed:
            for uid in reversed(view.uids):
                if uid <= claimed:
                    break
                view.recent.add(uid)
            self.factory.recent_claims[(view.account, view.mailbox_id)] = view.uids[-1]

    def _flags(self, message: Any, uid: int) -> bytes:
        flags = set(message.keywords)
        if not self.rev2 and self.selected is not None and uid in self.selected.recent:
            flags.add("\\Recent")
        return format_flags(flags)

    # -- argument helpers --------------------------------------------------------------------------
    def mailbox_arg(self, token: Any) -> str:
        """A mailbox name argument (RFC 9051 §5.1: modified UTF-7 unless UTF-8 is enabled)."""
        name = astring(token, "mailbox name")
        if not self.utf8:
            name = decode_mailbox_name(name)
        if not name:
            raise BadCommand("empty mailbox name")
        if name.upper() == "INBOX":
            return "INBOX"
        return name

    def mailbox_out(self, name: str) -> bytes:
        return quote(name if self.utf8 else encode_mailbox_name(name), self.utf8)

    def find_mailbox(self, name: str, trycreate: bool = False) -> Mailbox:
        try:
            return self.core.find_mailbox(self.account.id, name)
        except core_errors.NoSuchMailbox:
            raise CommandFailed(f"no such mailbox: {name}", "TRYCREATE" if trycreate else "NONEXISTENT") from None

    def sequence(self, token: Any, uid: bool) -> list[tuple[int, int]]:
        """Resolve a sequence set (or ``$``, RFC 5182) to ``(seq, uid)`` pairs."""
        seqset = SequenceSet.parse(token)
        assert self.selected is not None
        if uid:
            return self.selected.by_uid(seqset, self.saved_result)
        return self.selected.by_sequence(seqset, self.saved_result)

    # ============================================================================================
    # Any state (RFC 9051 §6.1)
    # ============================================================================================
    async def do_CAPABILITY(self, tag: str, args: list) -> str | None:
        _no_args(args)
        self.send(b"* CAPABILITY " + self.capabilities())
        return None

    async def do_NOOP(self, tag: str, args: list) -> str | None:
        _no_args(args)
        return None

    async def do_LOGOUT(self, tag: str, args: list) -> str | None:
        _no_args(args)
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
        _no_args(args)
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
        raise _AlreadyAnswered()

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
    # Authenticated (RFC 9051 §6.3)
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

    async def do_SELECT(self, tag: str, args: list) -> str | None:
        return await self._select(args, readonly=False)

    async def do_EXAMINE(self, tag: str, args: list) -> str | None:
        return await self._select(args, readonly=True)

    async def _select(self, args: list, readonly: bool) -> str:
        if not args or len(args) > 2:
            raise BadCommand("expected a mailbox name and optional parameters")
        name = self.mailbox_arg(args[0])
        qresync = None
        if len(args) == 2:
            if not isinstance(args[1], list):
                raise BadCommand("SELECT parameters must be a list")
            qresync = self._select_params(args[1])
        if self.selected is not None:
            self._deselect()
            self.send(b"* OK [CLOSED] Previous mailbox closed")
        mailbox = self.find_mailbox(name)
        # Built off the reactor and kept by the core while the mailbox is unchanged.
        snapshot = await self.core.mailbox_snapshot(self.account.id, mailbox.id)
        mailbox, uids = snapshot.mailbox, snapshot.uids
        view = SelectedMailbox(self.account.id, mailbox, readonly, uids)
        keywords, first_unseen = snapshot.keywords, snapshot.first_unseen
        claimed = self.factory.recent_claims.get((self.account.id, mailbox.id), 0)
        if not readonly and uids:
            view.recent = {u for u, _ in uids if u > claimed}
            self.factory.recent_claims[(self.account.id, mailbox.id)] = max(claimed, uids[-1][0])
        self.selected = view
        view.catch_up(self.core.changes_since(self.account.id, snapshot.modseq))
        self.state = SELECTED
        flags = list(SYSTEM_FLAGS) + sorted(keywords)
        self.send(b"* %d EXISTS" % len(uids))
        if not self.rev2:
            self.send(b"* %d RECENT" % len(view.recent))
        self.send(b"* FLAGS " + format_flags(flags))
        self.send(b"* OK [PERMANENTFLAGS " + (b"()" if readonly else PERMANENT_FLAGS) + b"] Flags permitted")
        if first_unseen and not self.rev2:
            self.send(b"* OK [UNSEEN %d] First unseen message" % first_unseen)
        self.send(b"* OK [UIDVALIDITY %d] UIDs valid" % mailbox.uidvalidity)
        self.send(b"* OK [UIDNEXT %d] Predicted next UID" % mailbox.uidnext)
        self.send(b"* OK [HIGHESTMODSEQ %d] Highest modseq" % mailbox.highest_modseq)
        if self.rev2:
            self.send(b"* LIST () \"/\" " + self.mailbox_out(mailbox.name))
        if qresync is not None:
            await self._qresync_select(view, mailbox, *qresync)
        return self.ok("EXAMINE completed" if readonly else "SELECT completed",
                       "READ-ONLY" if readonly else "READ-WRITE")

    def _select_params(self, params: list) -> tuple | None:
        """``(CONDSTORE)`` and ``(QRESYNC (uidvalidity modseq [known-uids [seq-match]]))``."""
        qresync = None
        i = 0
        while i < len(params):
            token = params[i]
            if is_atom(token, "CONDSTORE"):
                self.enabled.add("CONDSTORE")
                i += 1
            elif is_atom(token, "QRESYNC"):
                if not self.qresync:
                    raise BadCommand("QRESYNC must be enabled first (RFC 7162 §3.2.5)")
                if i + 1 >= len(params) or not isinstance(params[i + 1], list):
                    raise BadCommand("QRESYNC expects (uidvalidity modseq [known-uids])")
                q = params[i + 1]
                if len(q) < 2 or len(q) > 4:
                    raise BadCommand("QRESYNC expects (uidvalidity modseq [known-uids [seq-match]])")
                uidvalidity = number(q[0], "uidvalidity", minimum=1)
                modseq = number(q[1], "modseq", MAX_NUMBER64, minimum=1)
                known = SequenceSet.parse(q[2], allow_saved=False) if len(q) > 2 else None
                if len(q) > 3 and not (isinstance(q[3], list) and len(q[3]) == 2):
                    raise BadCommand("QRESYNC seq-match-data must be (seqs uids)")
                qresync = (uidvalidity, modseq, known)
                i += 2
            else:
                raise BadCommand(f"unknown SELECT parameter {str(token)[:40]}")
        return qresync

    async def _qresync_select(self, view: SelectedMailbox, mailbox: Mailbox, uidvalidity: int,
                              modseq: int, known: SequenceSet | None) -> None:
        """RFC 7162 §3.2.5.2: what changed since the client's last sync, right in SELECT."""
        if uidvalidity != mailbox.uidvalidity:
            return
        vanished = self._vanished_since(view, modseq, known)
        if vanished:
            self.send(b"* VANISHED (EARLIER) " + format_sequence_set(vanished).encode())
        await self._fetch_changed(view, [(i + 1, u) for i, u in enumerate(view.uids)], modseq)

    def _vanished_since(self, view: SelectedMailbox, modseq: int, within: SequenceSet | None) -> list[int]:
        """UIDs removed from the mailbox after ``modseq``, from the change log."""
        from mailserve.core.model import ChangeKind

        gone: set[int] = set()
        largest = view.uids[-1] if view.uids else 0
        for changes in self.core.changes_since(view.account, modseq):
            for entry in changes.entries:
                if entry.kind is ChangeKind.MESSAGE_REMOVED and entry.mailbox == view.mailbox_id:
                    gone.add(entry.uid)
        gone -= set(view.message_ids)
        if within is not None:
            ranges = within.resolve(max(largest, max(gone, default=0)))
            gone = {u for u in gone if any(lo <= u <= hi for lo, hi in ranges)}
        return sorted(gone)

    async def _fetch_changed(self, view: SelectedMailbox, pairs: list[tuple[int, int]], modseq: int) -> None:
        for start in range(0, len(pairs), CHUNK * 4):
            batch = pairs[start:start + CHUNK * 4]
            messages = self.core.get_messages(view.account, [view.message_ids[u] for _, u in batch])
            for (seq, uid), message in zip(batch, messages, strict=True):
                if message is not None and message.modseq > modseq:
                    self.send(b"* %d FETCH (UID %d FLAGS %s MODSEQ (%d))"
                              % (seq, uid, self._flags(message, uid), message.modseq))
            await task.deferLater(self.server.reactor, 0, lambda: None)

    def _deselect(self) -> None:
        if self.selected is not None:
            self.selected.discard_expunges()
        self.selected = None
        self.saved_result = []
        self.state = AUTHENTICATED

    async def do_CREATE(self, tag: str, args: list) -> str | None:
        """CREATE, with RFC 6154 §3 ``(USE (\\Sent))``; a trailing separator is dropped."""
        if not args or len(args) > 2:
            raise BadCommand("CREATE expects a mailbox name and optional (USE (...))")
        name = self.mailbox_arg(args[0]).rstrip(SEPARATOR)
        role = None
        if len(args) == 2:
            params = args[1]
            if not (isinstance(params, list) and len(params) == 2 and is_atom(params[0], "USE")
                    and isinstance(params[1], list)):
                raise BadCommand("CREATE parameters must be (USE (attributes))")
            uses = [str(a).lower() for a in params[1]]
            if len(uses) > 1:
                raise CommandFailed("one special use per mailbox", "USEATTR")
            for use in uses:
                if use not in ATTRIBUTE_ROLES:
                    raise CommandFailed(f"unsupported special use {use}", "USEATTR")
                role = ATTRIBUTE_ROLES[use]
        if name.upper() == "INBOX":
            raise CommandFailed("INBOX already exists", "ALREADYEXISTS")
        try:
            await self.core.create_mailbox(self.account.id, name, role)
        except core_errors.MailboxExists as e:
            raise CommandFailed(str(e), "USEATTR" if role and "role" in str(e) else "ALREADYEXISTS") from None
        return None

    async def do_DELETE(self, tag: str, args: list) -> str | None:
        if len(args) != 1:
            raise BadCommand("DELETE expects a mailbox name")
        name = self.mailbox_arg(args[0])
        mailbox = self.find_mailbox(name)
        if self.selected is not None and self.selected.mailbox_id == mailbox.id:
            self._deselect()
        await self.core.delete_mailbox(self.account.id, name)
        return None

    async def do_RENAME(self, tag: str, args: list) -> str | None:
        if len(args) != 2:
            raise BadCommand("RENAME expects two mailbox names")
        old, new = self.mailbox_arg(args[0]), self.mailbox_arg(args[1]).rstrip(SEPARATOR)
        self.find_mailbox(old)
        try:
            await self.core.rename_mailbox(self.account.id, old, new)
        except core_errors.MailboxExists as e:
            raise CommandFailed(str(e), "ALREADYEXISTS") from None
        return None

    async def do_SUBSCRIBE(self, tag: str, args: list) -> str | None:
        if len(args) != 1:
            raise BadCommand("SUBSCRIBE expects a mailbox name")
        await self.core.set_subscribed(self.account.id, self.mailbox_arg(args[0]), True)
        return None

    async def do_UNSUBSCRIBE(self, tag: str, args: list) -> str | None:
        if len(args) != 1:
            raise BadCommand("UNSUBSCRIBE expects a mailbox name")
        await self.core.set_subscribed(self.account.id, self.mailbox_arg(args[0]), False)
        return None

    async def do_NAMESPACE(self, tag: str, args: list) -> str | None:
        _no_args(args)
        self.send(b'* NAMESPACE (("" "/")) NIL NIL')
        return None

    async def do_LIST(self, tag: str, args: list) -> str | None:
        """LIST with RFC 5258 LIST-EXTENDED, RFC 5819 LIST-STATUS and RFC 6154 SPECIAL-USE."""
        selection: set[str] = set()
        returns: set[str] = set()
        status_items: list[str] = []
        i = 0
        extended = False
        if args and isinstance(args[0], list):
            extended = True
            for opt in args[0]:
                if not isinstance(opt, Atom) or opt.upper() not in ("SUBSCRIBED", "REMOTE", "RECURSIVEMATCH",
                                                                     "SPECIAL-USE"):
                    raise BadCommand(f"unknown LIST selection option {str(opt)[:40]}")
                selection.add(opt.upper())
            if selection == {"RECURSIVEMATCH"} or ("RECURSIVEMATCH" in selection
                                                   and not selection & {"SUBSCRIBED", "SPECIAL-USE"}):
                raise BadCommand("RECURSIVEMATCH needs another selection option")
            i = 1
        if len(args) < i + 2:
            raise BadCommand("LIST expects a reference and a mailbox pattern")
        reference = astring(args[i], "reference")
        pattern_token = args[i + 1]
        patterns_raw = pattern_token if isinstance(pattern_token, list) else [pattern_token]
        if isinstance(pattern_token, list) and not pattern_token:
            raise BadCommand("LIST expects at least one mailbox pattern in the list")
        patterns = [astring(p, "pattern") for p in patterns_raw]
        if not self.utf8:
            reference = decode_mailbox_name(reference)
            patterns = [decode_mailbox_name(p) for p in patterns]
        rest = args[i + 2:]
        if rest:
            if len(rest) != 2 or not is_atom(rest[0], "RETURN") or not isinstance(rest[1], list):
                raise BadCommand("expected RETURN (options) after the patterns")
            opts = rest[1]
            j = 0
            while j < len(opts):
                opt = opts[j]
                if not isinstance(opt, Atom):
                    raise BadCommand("invalid LIST return option")
                upper = opt.upper()
                if upper == "STATUS":
                    if j + 1 >= len(opts) or not isinstance(opts[j + 1], list):
                        raise BadCommand("STATUS expects a list of items")
                    status_items = self._status_items(opts[j + 1])
                    j += 2
                    continue
                if upper not in ("SUBSCRIBED", "CHILDREN", "SPECIAL-USE"):
                    raise BadCommand(f"unknown LIST return option {str(opt)[:40]}")
                returns.add(upper)
                j += 1
        if len(patterns) == 1 and patterns[0] == "" and not isinstance(pattern_token, list):
            # RFC 9051 §6.3.9: an empty pattern asks for the hierarchy delimiter.
            self.send(b'* LIST (\\Noselect) "/" ""')
            return None
        extended = extended or bool(returns or status_items or isinstance(pattern_token, list) or rest)
        await self._list(reference, patterns, selection, returns, status_items, extended, lsub=False)
        return None

    async def do_LSUB(self, tag: str, args: list) -> str | None:
        if self.rev2:
            # RFC 9051 Appendix E item 5: LSUB is replaced by LIST (SUBSCRIBED).
            raise BadCommand("LSUB is not part of IMAP4rev2; use LIST (SUBSCRIBED)")
        if len(args) != 2:
            raise BadCommand("LSUB expects a reference and a pattern")
        reference, pattern = astring(args[0], "reference"), astring(args[1], "pattern")
        if not self.utf8:
            reference, pattern = decode_mailbox_name(reference), decode_mailbox_name(pattern)
        await self._list(reference, [pattern], {"SUBSCRIBED"}, set(), [], False, lsub=True)
        return None

    async def _list(self, reference: str, patterns: list[str], selection: set[str], returns: set[str],
                    status_items: list[str], extended: bool, lsub: bool) -> None:
        """The LIST / LSUB answer.

        Selection options filter names (RFC 5258 §3.1): SUBSCRIBED adds subscribed names
        that do not exist (``\\NonExistent``), SPECIAL-USE keeps mailboxes with a special
        use (RFC 6154 §3).  With RECURSIVEMATCH, a name the pattern reaches is also listed
        when a descendant the pattern does not reach matches the selection, with the
        CHILDINFO extended data item (RFC 5258 §3.5; a CHILDINFO that would repeat a
        returned descendant is suppressed).  LSUB has the same rule built in: ``LSUB "" %``
        returns ``foo`` with ``\\Noselect`` when only ``foo/bar`` is subscribed
        (RFC 3501 §6.3.9).  ``\\HasChildren`` counts existing mailboxes only (RFC 5258 §4).
        """
        mailboxes = {m.name: m for m in self.core.list_mailboxes(self.account.id)}
        subscribed = set(self.core.subscriptions(self.account.id))
        matchers = [_pattern_regex(_join_reference(reference, p)) for p in patterns]

        def matches(name: str) -> bool:
            return any(m.match(name) for m in matchers)

        def meets_selection(name: str) -> bool:
            if "SUBSCRIBED" in selection and name not in subscribed:
                return False
            if "SPECIAL-USE" in selection:
                mailbox = mailboxes.get(name)
                return mailbox is not None and mailbox.role in ROLE_ATTRIBUTES
            return True

        has_children = {ancestor for name in mailboxes for ancestor in _ancestors(name)}
        base = set(mailboxes) | (subscribed if "SUBSCRIBED" in selection else set())
        selected_names = {name for name in base if meets_selection(name)}
        childinfo: set[str] = set()
        if "RECURSIVEMATCH" in selection or lsub:
            for name in selected_names:
                if not matches(name):
                    childinfo.update(a for a in _ancestors(name) if matches(a))
        criteria = [c for c in ("SUBSCRIBED", "SPECIAL-USE") if c in selection]
        for name in sorted(selected_names | childinfo, key=lambda n: (n != "INBOX", n)):
            if not matches(name):
                continue
            mailbox = mailboxes.get(name)
            attrs: list[str] = []
            if lsub:
                if name not in selected_names or mailbox is None:
                    attrs.append("\\Noselect")
                self.send(b"* LSUB (" + " ".join(attrs).encode() + b') "/" ' + self.mailbox_out(name))
                continue
            if mailbox is None:
                attrs.append("\\NonExistent" if extended else "\\Noselect")
            attrs.append("\\HasChildren" if name in has_children else "\\HasNoChildren")
            if name in subscribed and ("SUBSCRIBED" in selection or "SUBSCRIBED" in returns):
                attrs.append("\\Subscribed")
            if (mailbox is not None and mailbox.role in ROLE_ATTRIBUTES
                    and ("SPECIAL-USE" in returns or "SPECIAL-USE" in selection or not extended)):
                attrs.append(ROLE_ATTRIBUTES[mailbox.role])
            line = b"* LIST (" + " ".join(attrs).encode() + b') "/" ' + self.mailbox_out(name)
            if name in childinfo and "RECURSIVEMATCH" in selection:
                line += b' ("CHILDINFO" (' + " ".join(f'"{c}"' for c in criteria).encode() + b"))"
            self.send(line)
            if status_items and mailbox is not None:
                # RFC 5819 §2: the STATUS of each listed selectable mailbox follows its LIST.
                self.send(b"* STATUS " + self.mailbox_out(name) + b" " + await self._status_line(mailbox, status_items))

    def _status_items(self, items: list) -> list[str]:
        out = []
        for item in items:
            if not isinstance(item, Atom) or item.upper() not in STATUS_ITEMS:
                raise BadCommand(f"unknown STATUS item {str(item)[:40]}")
            if self.rev2 and item.upper() == "RECENT":
                # RFC 9051 Appendix E item 7: \\Recent and RECENT are gone in IMAP4rev2.
                raise BadCommand("STATUS RECENT is not part of IMAP4rev2")
            out.append(item.upper())
        if not out:
            raise BadCommand("STATUS expects at least one item")
        return out

    async def _status_line(self, mailbox: Mailbox, items: list[str]) -> bytes:
        values = {
            "MESSAGES": mailbox.messages, "UIDNEXT": mailbox.uidnext, "UIDVALIDITY": mailbox.uidvalidity,
            "UNSEEN": mailbox.unseen, "DELETED": mailbox.deleted, "SIZE": mailbox.size,
            "HIGHESTMODSEQ": mailbox.highest_modseq, "APPENDLIMIT": self.config.imap.max_literal_size,
        }
        parts = []
        for item in items:
            if item == "RECENT":
                # Messages no session has seen yet, as SELECT would mark them \\Recent
                # (RFC 3501 §2.3.2): UIDs above the last claimed one.
                claimed = self.factory.recent_claims.get((self.account.id, mailbox.id), 0)
                value = max(0, min(mailbox.messages, mailbox.uidnext - 1 - claimed))
            elif item == "DELETED-STORAGE":
                value = await self._deleted_storage(mailbox)
            else:
                value = values[item]
            parts.append(f"{item} {value}")
        if "HIGHESTMODSEQ" in items:
            self.enabled.add("CONDSTORE")  # RFC 7162 §3.1: a CONDSTORE-enabling command
        return ("(" + " ".join(parts) + ")").encode()

    async def _deleted_storage(self, mailbox: Mailbox) -> int:
        """RFC 9208 §4.4 DELETED-STORAGE: octets EXPUNGE would free, in the STORAGE unit (KiB)."""
        if not mailbox.deleted:
            return 0
        uids = self.core.mailbox_uids(self.account.id, mailbox.id)
        total = 0
        for start in range(0, len(uids), CHUNK * 4):
            batch = [m for _, m in uids[start:start + CHUNK * 4]]
            total += sum(m.size for m in self.core.get_messages(self.account.id, batch) if m is not None and m.deleted)
            if start + CHUNK * 4 < len(uids):
                await task.deferLater(self.server.reactor, 0, lambda: None)
        return (total + 1023) // 1024

    async def do_STATUS(self, tag: str, args: list) -> str | None:
        if len(args) != 2 or not isinstance(args[1], list):
            raise BadCommand("STATUS expects a mailbox name and a list of items")
        name = self.mailbox_arg(args[0])
        items = self._status_items(args[1])
        mailbox = self.find_mailbox(name)
        self.send(b"* STATUS " + self.mailbox_out(mailbox.name) + b" " + await self._status_line(mailbox, items))
        return None

    async def do_APPEND(self, tag: str, args: list) -> str | None:
        """APPEND (RFC 9051 §6.3.12) with APPENDUID (RFC 4315), literal8 (RFC 3516 §4.4) and
        the ``UTF8 (~{n})`` form (RFC 6855 §4)."""
        if len(args) < 2:
            raise BadCommand("APPEND expects a mailbox name and a message literal")
        name = self.mailbox_arg(args[0])
        rest = list(args[1:])
        keywords: list[str] = []
        internal_date = None
        if rest and isinstance(rest[0], list):
            keywords = self._flag_list(rest.pop(0), for_store=True)
        if rest and isinstance(rest[0], String) and not isinstance(rest[0], Literal):
            internal_date = parse_date_time(astring(rest.pop(0), "date-time"))
        if len(rest) == 2 and is_atom(rest[0], "UTF8") and isinstance(rest[1], list) and len(rest[1]) == 1:
            if not self.utf8:
                raise BadCommand("APPEND UTF8 needs ENABLE UTF8=ACCEPT (RFC 6855 §4)")
            rest = rest[1]
        if len(rest) != 1 or not isinstance(rest[0], Literal):
            if len(rest) > 1 and isinstance(rest[0], Literal):
                raise BadCommand("MULTIAPPEND is not supported: one message per APPEND")
            raise BadCommand("APPEND expects the message as a literal")
        raw = bytes(rest[0])
        if not raw:
            raise CommandFailed("empty message", "CANNOT")
        if b"\0" in raw and not getattr(rest[0], "binary", False):
            raise BadCommand("NUL in a message requires a literal8 (RFC 3516)")
        mailbox = self.find_mailbox(name, trycreate=True)
        try:
            result = await self.core.append(self.account.id, mailbox.id, raw, keywords, internal_date)
        except core_errors.QuotaExceeded as e:
            raise CommandFailed(str(e), "OVERQUOTA") from None
        return self.ok("APPEND completed", f"APPENDUID {result.uidvalidity} {result.uid}")

    async def do_IDLE(self, tag: str, args: list) -> str | None:
        """RFC 2177: push updates until DONE.

        RFC 2177 §3 lets a server log an idling client off at the end of its inactivity timeout;
        ``imap.idle_timeout`` is a live setting, so each IDLE runs under the value configured now.
        """
        _no_args(args)
        self.setTimeout(self.server.config.imap.idle_timeout)
        self.send(b"+ idling")
        self._idling = True
        try:
            self._updates("IDLE")
            self.flush()
            line = await self.wait_for_line()
        finally:
            self._idling = False
        if line.upper() != b"DONE":
            raise BadCommand("expected DONE to end IDLE")
        return None

    async def do_GETQUOTAROOT(self, tag: str, args: list) -> str | None:
        """RFC 9208 §4.3: every mailbox of an account shares the one root ``""``.

        An account without limits has no quota root: the QUOTAROOT response names none
        and no QUOTA response follows (a ``quota-list`` needs at least one resource).
        """
        if len(args) != 1:
            raise BadCommand("GETQUOTAROOT expects a mailbox name")
        mailbox = self.find_mailbox(self.mailbox_arg(args[0]))
        resources = self._quota_resources()
        self.send(b"* QUOTAROOT " + self.mailbox_out(mailbox.name) + (b' ""' if resources else b""))
        if resources:
            self.send(b'* QUOTA "" (' + resources + b")")
        return None

    async def do_GETQUOTA(self, tag: str, args: list) -> str | None:
        """RFC 9208 §4.2: the usage and limits of a quota root; NO for a root that does not exist."""
        if len(args) != 1:
            raise BadCommand("GETQUOTA expects a quota root")
        resources = self._quota_resources()
        if astring(args[0], "quota root") != "" or not resources:
            raise CommandFailed("no such quota root", "NONEXISTENT")
        self.send(b'* QUOTA "" (' + resources + b")")
        return None

    def _quota_resources(self) -> bytes:
        """``STORAGE used limit MESSAGE used limit`` for the limits the account has."""
        quota = self.core.get_quota(self.account.id)
        resources = []
        if quota.bytes_limit:
            # STORAGE is in units of 1024 octets (RFC 9208 §5.1), usage rounded up.
            resources.append(f"STORAGE {(quota.bytes_used + 1023) // 1024} {quota.bytes_limit // 1024}")
        if quota.messages_limit:
            resources.append(f"MESSAGE {quota.messages_used} {quota.messages_limit}")
        return " ".join(resources).encode()

    async def do_SETQUOTA(self, tag: str, args: list) -> str | None:
        """Quotas are set by administrators (admin API / CLI); RFC 9208 §4.1.4 lets a server refuse."""
        if len(args) != 2 or not isinstance(args[1], list):
            raise BadCommand("SETQUOTA expects a quota root and a list of resource limits")
        astring(args[0], "quota root")
        limits = args[1]
        if len(limits) % 2:
            raise BadCommand("SETQUOTA limits are resource name and number pairs")
        for k in range(0, len(limits), 2):
            if not isinstance(limits[k], Atom):
                raise BadCommand("quota resource names are atoms")
            number(limits[k + 1], "quota limit", MAX_NUMBER64)
        raise CommandFailed("quotas are set by the administrator", "NOPERM")

    # ============================================================================================
    # Selected (RFC 9051 §6.4)
    # ============================================================================================
    async def do_CHECK(self, tag: str, args: list) -> str | None:
        _no_args(args)  # every change is already durable when acknowledged
        return None

    async def do_CLOSE(self, tag: str, args: list) -> str | None:
        """Expunge silently if read-write, then leave the selected state (RFC 9051 §6.4.1)."""
        _no_args(args)
        view = self.selected
        assert view is not None
        self._deselect()
        if not view.readonly:
            await self.core.expunge(view.account, view.mailbox_id)
        return None

    async def do_UNSELECT(self, tag: str, args: list) -> str | None:
        _no_args(args)
        self._deselect()
        return None

    async def do_EXPUNGE(self, tag: str, args: list) -> str | None:
        _no_args(args)
        view = self._writable()
        await self.core.expunge(view.account, view.mailbox_id)
        return self._expunge_ok(view)

    async def do_UID_EXPUNGE(self, tag: str, args: list) -> str | None:
        """RFC 4315 §2.1: expunge only the named UIDs."""
        if len(args) != 1:
            raise BadCommand("UID EXPUNGE expects a UID set")
        view = self._writable()
        pairs = self.sequence(args[0], uid=True)
        if pairs:
            await self.core.expunge(view.account, view.mailbox_id, [u for _, u in pairs])
        return self._expunge_ok(view)

    def _expunge_ok(self, view: SelectedMailbox) -> str | None:
        if self.condstore:
            mailbox = self.core.get_mailbox(view.account, view.mailbox_id)
            return self.ok("EXPUNGE completed", f"HIGHESTMODSEQ {mailbox.highest_modseq}")
        return None

    def _writable(self) -> SelectedMailbox:
        view = self.selected
        assert view is not None
        if view.readonly:
            raise CommandFailed("the mailbox is read-only (EXAMINE)", "READ-ONLY")
        return view

    async def do_UID(self, tag: str, args: list) -> str | None:
        if not args or not isinstance(args[0], Atom) or args[0].upper() not in UID_COMMANDS:
            raise BadCommand("UID expects FETCH, STORE, COPY, MOVE, SEARCH, SORT, THREAD or EXPUNGE")
        sub = args[0].upper()
        self._current = sub
        result = await getattr(self, "do_UID_" + sub)(tag, args[1:])
        self._current = "UID " + sub
        return result

    # FETCH ------------------------------------------------------------------------------------
    async def do_FETCH(self, tag: str, args: list) -> str | None:
        return await self._fetch(args, uid=False)

    async def do_UID_FETCH(self, tag: str, args: list) -> str | None:
        return await self._fetch(args, uid=True)

    async def _fetch(self, args: list, uid: bool) -> str | None:
        from mailserve.imap.fetch import FetchRequest, run_fetch

        if len(args) < 2:
            raise BadCommand("FETCH expects a sequence set and data items")
        request = FetchRequest.parse(args[1], args[2:], uid=uid)
        if request.vanished and not (uid and self.qresync):
            raise BadCommand("VANISHED needs UID FETCH with QRESYNC enabled (RFC 7162 §3.2.6)")
        if request.changed_since is not None or request.wants_modseq:
            self.enabled.add("CONDSTORE")
        pairs = self.sequence(args[0], uid)
        if request.vanished and request.changed_since is not None:
            view = self.selected
            assert view is not None
            vanished = self._vanished_since(view, request.changed_since, SequenceSet.parse(args[0]))
            if vanished:
                self.send(b"* VANISHED (EARLIER) " + format_sequence_set(vanished).encode())
        await run_fetch(self, pairs, request)
        return None

    # STORE ------------------------------------------------------------------------------------
    async def do_STORE(self, tag: str, args: list) -> str | None:
        return await self._store(args, uid=False)

    async def do_UID_STORE(self, tag: str, args: list) -> str | None:
        return await self._store(args, uid=True)

    async def _store(self, args: list, uid: bool) -> str | None:
        """STORE (RFC 9051 §6.4.6) with UNCHANGEDSINCE (RFC 7162 §3.1.3)."""
        if len(args) < 3:
            raise BadCommand("STORE expects a sequence set, an action and flags")
        view = self._writable()
        rest = list(args[1:])
        unchanged_since = None
        if isinstance(rest[0], list):
            mods = rest.pop(0)
            if len(mods) != 2 or not is_atom(mods[0], "UNCHANGEDSINCE"):
                raise BadCommand("unknown STORE modifier")
            unchanged_since = number(mods[1], "UNCHANGEDSINCE", MAX_NUMBER64)
            self.enabled.add("CONDSTORE")
        if len(rest) < 2 or not isinstance(rest[0], Atom):
            raise BadCommand("STORE expects FLAGS, +FLAGS or -FLAGS")
        action = rest[0].upper()
        silent = action.endswith(".SILENT")
        base = action.removesuffix(".SILENT")
        operations = {"FLAGS": FLAGS_SET, "+FLAGS": FLAGS_ADD, "-FLAGS": FLAGS_REMOVE}
        if base not in operations:
            raise BadCommand("STORE expects FLAGS, +FLAGS or -FLAGS")
        flag_tokens = rest[1] if len(rest) == 2 and isinstance(rest[1], list) else rest[1:]
        flags = self._flag_list(flag_tokens, for_store=True)
        pairs = self.sequence(args[0], uid)
        if not pairs:
            return None
        seq_of = {u: s for s, u in pairs}
        results, failed = await self.core.store_flags(
            view.account, view.mailbox_id, [u for _, u in pairs], operations[base], flags, unchanged_since)
        view.forget_flag_changes(results)
        for message_uid, (keywords, modseq) in sorted(results.items()):
            if silent and not (unchanged_since is not None and self.condstore):
                continue
            seq = view.seq_of(message_uid) or seq_of[message_uid]
            items = []
            if uid or self.condstore:
                items.append(b"UID %d" % message_uid)
            if not silent:
                flagset = set(keywords)
                if not self.rev2 and message_uid in view.recent:
                    flagset.add("\\Recent")
                items.append(b"FLAGS " + format_flags(flagset))
            if self.condstore:
                items.append(b"MODSEQ (%d)" % modseq)
            self.send(b"* %d FETCH (" % seq + b" ".join(items) + b")")
        if failed:
            numbers = sorted(failed) if uid else sorted(seq_of[u] for u in failed)
            return self.ok("Some messages were modified since UNCHANGEDSINCE",
                           "MODIFIED " + format_sequence_set(numbers))
        return None

    def _flag_list(self, tokens: Iterable, for_store: bool) -> list[str]:
        flags = []
        for token in tokens:
            if not isinstance(token, Atom):
                raise BadCommand("flags must be atoms")
            flag = str(token)
            if flag.startswith("\\"):
                canonical = normalise_flag(flag)
                if canonical not in SYSTEM_FLAGS:
                    if canonical.lower() == "\\recent":
                        raise BadCommand("\\Recent cannot be stored")
                    raise BadCommand(f"unknown system flag {flag[:40]}")
                flags.append(canonical)
                continue
            if len(flag) > MAX_KEYWORD or not _KEYWORD_RE.match(flag) or set(flag) & _KEYWORD_FORBIDDEN:
                raise BadCommand(f"invalid keyword {flag[:40]}")
            flags.append(flag)
        return flags

    # COPY / MOVE ------------------------------------------------------------------------------
    async def do_COPY(self, tag: str, args: list) -> str | None:
        return await self._copy(args, uid=False, move=False)

    async def do_UID_COPY(self, tag: str, args: list) -> str | None:
        return await self._copy(args, uid=True, move=False)

    async def do_MOVE(self, tag: str, args: list) -> str | None:
        return await self._copy(args, uid=False, move=True)

    async def do_UID_MOVE(self, tag: str, args: list) -> str | None:
        return await self._copy(args, uid=True, move=True)

    async def _copy(self, args: list, uid: bool, move: bool) -> str | None:
        """COPY (RFC 9051 §6.4.7) and MOVE (RFC 6851) with COPYUID (RFC 4315 §3)."""
        if len(args) != 2:
            raise BadCommand("expected a sequence set and a mailbox name")
        view = self._writable() if move else self.selected
        assert view is not None
        target = self.find_mailbox(self.mailbox_arg(args[1]), trycreate=True)
        pairs = self.sequence(args[0], uid)
        if not pairs:
            return None
        uids = [u for _, u in pairs]
        source = self.core.get_mailbox(view.account, view.mailbox_id)
        messages = self.core.get_messages(view.account, [view.message_ids[u] for u in uids]) \
            if _is_junk_transfer(source, target) else []
        try:
            if move:
                uidvalidity, mapping = await self.core.move(view.account, view.mailbox_id, uids, target.id)
            else:
                uidvalidity, mapping = await self.core.copy(view.account, view.mailbox_id, uids, target.id)
        except core_errors.QuotaExceeded as e:
            raise CommandFailed(str(e), "OVERQUOTA") from None
        if messages:
            self.train_spam_filter([m for m in messages if m is not None], spam=target.role == "junk")
        if not mapping:
            return None
        code = (f"COPYUID {uidvalidity} {format_sequence_set([a for a, _ in mapping])} "
                f"{format_sequence_set([b for _, b in mapping])}")
        if move:
            self.send(b"* OK [" + code.encode() + b"] Moved")
            return None
        return self.ok("COPY completed", code)

    def train_spam_filter(self, messages: list, spam: bool) -> None:
        """Tell the spam filter a user moved mail into (spam) or out of (ham) Junk.

        The hook is ``server.spam_training(account_id, messages, spam)`` where present; its
        failures are logged, never shown to the client (the move itself succeeded).
        """
        training = getattr(self.server, "spam_training", None)
        if training is None or not messages:
            return
        d = defer.maybeDeferred(training, self.account.id, messages, spam)
        d.addErrback(lambda f: self.log.failure("spam training failed", f))

    # SEARCH / SORT / THREAD ----------------------------------------------------------------------
    async def do_SEARCH(self, tag: str, args: list) -> str | None:
        return await self._search(tag, args, uid=False)

    async def do_UID_SEARCH(self, tag: str, args: list) -> str | None:
        return await self._search(tag, args, uid=True)

    async def _search(self, tag: str, args: list, uid: bool) -> str | None:
        """SEARCH; a SEARCH with SAVE that fails (NO or BAD) empties ``$`` (RFC 5182 §2.1)."""
        from mailserve.imap.searching import run_search

        has_return = len(args) > 1 and is_atom(args[0], "RETURN") and isinstance(args[1], list)
        saves = has_return and any(is_atom(option, "SAVE") for option in args[1])
        try:
            charset_at = 2 if has_return else 0
            if "UTF8=ACCEPT" in self.enabled and len(args) > charset_at and is_atom(args[charset_at], "CHARSET"):
                # RFC 6855 §3: after ENABLE UTF8=ACCEPT every string is UTF-8; a CHARSET conflicts.
                raise BadCommand("SEARCH takes no CHARSET after ENABLE UTF8=ACCEPT")
            return await run_search(self, tag, args, uid=uid)
        except (ParseError, CommandFailed, core_errors.MailError):
            if saves:
                self.saved_result = []
            raise

    async def do_SORT(self, tag: str, args: list) -> str | None:
        from mailserve.imap.searching import run_sort

        self._utf8_charset_only(args)
        return await run_sort(self, tag, args, uid=False)

    async def do_UID_SORT(self, tag: str, args: list) -> str | None:
        from mailserve.imap.searching import run_sort

        self._utf8_charset_only(args)
        return await run_sort(self, tag, args, uid=True)

    async def do_THREAD(self, tag: str, args: list) -> str | None:
        from mailserve.imap.searching import run_thread

        self._utf8_charset_only(args)
        return await run_thread(self, tag, args, uid=False)

    async def do_UID_THREAD(self, tag: str, args: list) -> str | None:
        from mailserve.imap.searching import run_thread

        self._utf8_charset_only(args)
        return await run_thread(self, tag, args, uid=True)

    def _utf8_charset_only(self, args: list) -> None:
        """RFC 6855 §3 (erratum 4029): after ENABLE UTF8=ACCEPT, SORT and THREAD's charset is UTF-8."""
        if "UTF8=ACCEPT" in self.enabled and len(args) > 1 and isinstance(args[1], Atom | bytes):
            charset = args[1].upper() if isinstance(args[1], str) else bytes(args[1]).upper().decode("ascii", "replace")
            if charset != "UTF-8":
                raise BadCommand("the charset must be UTF-8 after ENABLE UTF8=ACCEPT")


def _valid_tag(tag: str) -> bool:
    """RFC 9051 §9: a tag is 1*<any ASTRING-CHAR except "+">."""
    return bool(tag) and bool(_TAG_RE.match(tag)) and not any(c in tag for c in '+(){%*"\\')


class _AlreadyAnswered(Exception):
    """Raised by a handler that sent its own tagged response (STARTTLS)."""


def _no_args(args: list) -> None:
    if args:
        raise BadCommand("unexpected arguments")


def _core_error_code(error: Exception) -> str | None:
    """RFC 5530 response codes for the core's refusals."""
    return {
        core_errors.QuotaExceeded: "OVERQUOTA",
        core_errors.NoSuchMailbox: "NONEXISTENT",
        core_errors.MailboxExists: "ALREADYEXISTS",
        core_errors.InvalidMailboxName: "CANNOT",
        core_errors.MailboxHasChildren: "HASCHILDREN",  # RFC 9051 §6.3.4, §7.1
        core_errors.MailboxNotDeletable: "CANNOT",
    }.get(type(error))


def _is_junk_transfer(source: Mailbox, target: Mailbox) -> bool:
    """Into Junk from elsewhere, or out of Junk to anywhere but Trash, teaches the filter."""
    if target.role == "junk":
        return source.role != "junk"
    return source.role == "junk" and target.role != "trash"


def _join_reference(reference: str, pattern: str) -> str:
    """RFC 9051 §6.3.9: the reference is a prefix, unless the pattern is absolute."""
    if not reference or pattern.startswith(SEPARATOR):
        return pattern
    if reference.endswith(SEPARATOR):
        return reference + pattern
    return reference + SEPARATOR + pattern


def _ancestors(name: str) -> list[str]:
    """``a/b/c`` -> ``["a/b", "a"]``: the names above a mailbox in the hierarchy."""
    out = []
    parent = name.rpartition(SEPARATOR)[0]
    while parent:
        out.append(parent)
        parent = parent.rpartition(SEPARATOR)[0]
    return out


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """``*`` matches anything, ``%`` anything but the separator (RFC 9051 §6.3.9)."""
    out = []
    for ch in pattern:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append("[^" + re.escape(SEPARATOR) + "]*")
        else:
            out.append(re.escape(ch))
    regex = "".join(out)
    if pattern[:5].upper() == "INBOX" and (len(pattern) == 5 or pattern[5] in (SEPARATOR, "*", "%")):
        regex = "(?i:INBOX)" + "".join(out[5:])
    return re.compile("^" + regex + "$", re.DOTALL)

