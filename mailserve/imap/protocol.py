"""The IMAP4rev2 / IMAP4rev1 server protocol (RFC 9051, RFC 3501) and its extensions.

Reading order, as the RFC reads: the command table (which state allows which command),
then the connection machinery (framing, pipelining, untagged updates).  The handlers,
one ``do_NAME`` per command, live in modules by concern and are mixed into the session
class: ``commands_auth.py`` (any state, not authenticated, ENABLE), ``commands_mailbox.py``
(SELECT, LIST, STATUS, quotas, ...), ``commands_message.py`` (APPEND, IDLE, FETCH, STORE,
COPY, MOVE, EXPUNGE, ...) and ``searching.py`` (SEARCH, SORT, THREAD).  A handler receives
the tag and the tokens after the command name; it returns the text of the tagged ``OK``
(or ``None`` for "NAME completed"), raises ``BadCommand`` for ``BAD`` and
``CommandFailed`` for ``NO``.  ``UID x`` commands are handled by ``do_UID_x``.

Commands run one at a time in arrival order, so a pipelining client (RFC 9051 §5.5) gets
its responses in order; the bytes of later commands wait in the framer meanwhile.  Mail
semantics are the core's (``server.core``); this module translates.  Message data for
FETCH and the SEARCH/SORT/THREAD engines live in ``fetch.py``, ``fetchdata.py`` and
``mailserve.imap.search``.
"""

from __future__ import annotations

import re
import socket
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin

from mailserve.core import errors as core_errors
from mailserve.core.model import ChangeSet, Mailbox
from mailserve.imap.commands_auth import IMAP_MECHANISMS, AuthCommands
from mailserve.imap.commands_mailbox import MailboxCommands
from mailserve.imap.commands_message import MessageCommands
from mailserve.imap.parser import (
    Atom,
    Command,
    CommandFramer,
    FramingError,
    LineTooLong,
    LiteralRefused,
    LiteralRequest,
    ParseError,
    SequenceSet,
    astring,
    decode_mailbox_name,
    encode_mailbox_name,
    format_flags,
    format_sequence_set,
    quote,
    tokenize,
)
from mailserve.imap.responses import AlreadyAnswered, BadCommand, CommandFailed
from mailserve.imap.searching import SearchCommands
from mailserve.imap.selected import SelectedMailbox
from mailserve.imap.states import AUTHENTICATED, LOGOUT, NOT_AUTHENTICATED, SELECTED
from mailserve.sasl import LoginGuard

if TYPE_CHECKING:
    from mailserve.imap.factory import IMAPFactory

# -- states and the command table (RFC 9051 §3, §6) ---------------------------------------------
_ANY = frozenset({NOT_AUTHENTICATED, AUTHENTICATED, SELECTED})
_AUTH = frozenset({AUTHENTICATED, SELECTED})
_SEL = frozenset({SELECTED})
_PRE = frozenset({NOT_AUTHENTICATED})

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


class IMAPServerProtocol(AuthCommands, MailboxCommands, MessageCommands, SearchCommands,
                         Protocol, TimeoutMixin):
    """One IMAP connection: the command handlers come from the mixins by concern."""

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
        except AlreadyAnswered:
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

    # -- state transitions and UID dispatch --------------------------------------------------------
    def _deselect(self) -> None:
        if self.selected is not None:
            self.selected.discard_expunges()
        self.selected = None
        self.saved_result = []
        self.state = AUTHENTICATED

    async def do_UID(self, tag: str, args: list) -> str | None:
        if not args or not isinstance(args[0], Atom) or args[0].upper() not in UID_COMMANDS:
            raise BadCommand("UID expects FETCH, STORE, COPY, MOVE, SEARCH, SORT, THREAD or EXPUNGE")
        sub = args[0].upper()
        self._current = sub
        result = await getattr(self, "do_UID_" + sub)(tag, args[1:])
        self._current = "UID " + sub
        return result


def _valid_tag(tag: str) -> bool:
    """RFC 9051 §9: a tag is 1*<any ASTRING-CHAR except "+">."""
    return bool(tag) and bool(_TAG_RE.match(tag)) and not any(c in tag for c in '+(){%*"\\')


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
