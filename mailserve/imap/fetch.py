"""FETCH: which data items a client asked for, and the untagged FETCH responses.

The item grammar is RFC 9051 §6.4.5 (plus BINARY of RFC 3516 and MODSEQ / CHANGEDSINCE /
VANISHED of RFC 7162).  The data comes from the message record (flags, size, dates,
modseq), the structure parsed at ingest (ENVELOPE, BODYSTRUCTURE, section offsets) and
byte ranges of the blob (bodies, read off the reactor thread) -- never from re-parsing.
A FETCH of UID, FLAGS and MODSEQ only -- the flag resync every client does -- reads no
record at all: it is answered from the core's per-mailbox flag index
(``mailserve.core.flagindex``), brought up to the committed state before each chunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet import task

from mailserve.core.errors import NoSuchMailbox
from mailserve.core.mailcore import FLAGS_ADD
from mailserve.imap import fetchdata
from mailserve.imap.parser import MAX_NUMBER64, Atom, is_atom, number
from mailserve.imap.responses import BadCommand, CommandFailed, format_internal_date

if TYPE_CHECKING:
    from mailserve.imap.protocol import IMAPServerProtocol

#: Messages per reactor turn.
CHUNK = 1024

#: FETCH macros (RFC 9051 §6.4.5; FULL is RFC 3501's).
MACROS = {
    "ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
    "FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
    "FULL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"],
}
SIMPLE_ITEMS = frozenset({"FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE", "BODY",
                          "MODSEQ", "RFC822", "RFC822.HEADER", "RFC822.TEXT"})
MAX_ITEMS = 1000


@dataclass
class Item:
    """One requested data item: a simple name, or a section with its parsed spec."""

    name: str
    spec: fetchdata.SectionSpec | None = None
    peek: bool = False


@dataclass
class FetchRequest:
    items: list[Item] = field(default_factory=list)
    changed_since: int | None = None
    vanished: bool = False

    @property
    def sets_seen(self) -> bool:
        """BODY[...] and BINARY[...] without .PEEK, RFC822 and RFC822.TEXT set \\Seen (§6.4.5)."""
        return any(
            (i.spec is not None and not i.peek and i.name in ("BODY", "BINARY")) or i.name in ("RFC822", "RFC822.TEXT")
            for i in self.items)

    @property
    def wants_modseq(self) -> bool:
        return any(i.name == "MODSEQ" for i in self.items)

    @property
    def needs_parsed(self) -> bool:
        return any(i.spec is not None or i.name in ("ENVELOPE", "BODYSTRUCTURE", "BODY", "RFC822.HEADER")
                   for i in self.items)

    @classmethod
    def parse(cls, items_token: Any, modifiers: list, uid: bool) -> FetchRequest:
        request = cls()
        if isinstance(items_token, list):
            tokens = items_token
            if not tokens:
                raise BadCommand("FETCH expects at least one data item")
        elif isinstance(items_token, Atom) and items_token.upper() in MACROS:
            tokens = [Atom(n) for n in MACROS[items_token.upper()]]
        else:
            tokens = [items_token]
        if len(tokens) > MAX_ITEMS:
            raise BadCommand("too many FETCH items")
        names = set()
        for token in tokens:
            if not isinstance(token, Atom):
                raise BadCommand("FETCH data items must be atoms")
            item = _parse_item(str(token))
            key = (item.name, item.spec.label() if item.spec else b"", item.peek)
            if key in names:
                continue
            names.add(key)
            request.items.append(item)
        if uid and not any(i.name == "UID" for i in request.items):
            request.items.insert(0, Item("UID"))  # RFC 9051 §6.4.9: UID FETCH always returns UID
        if modifiers:
            if len(modifiers) != 1 or not isinstance(modifiers[0], list):
                raise BadCommand("FETCH modifiers must be one parenthesised list")
            mods = modifiers[0]
            i = 0
            while i < len(mods):
                if is_atom(mods[i], "CHANGEDSINCE") and i + 1 < len(mods):
                    request.changed_since = number(mods[i + 1], "CHANGEDSINCE", MAX_NUMBER64)
                    i += 2
                elif is_atom(mods[i], "VANISHED"):
                    request.vanished = True
                    i += 1
                else:
                    raise BadCommand("unknown FETCH modifier")
            if request.vanished and request.changed_since is None:
                raise BadCommand("VANISHED needs CHANGEDSINCE (RFC 7162 §3.2.6)")
            if request.changed_since is not None and not request.wants_modseq:
                request.items.append(Item("MODSEQ"))  # RFC 7162 §3.1.4.1
        return request


def _parse_item(text: str) -> Item:
    bracket = text.find("[")
    if bracket < 0:
        upper = text.upper()
        if upper not in SIMPLE_ITEMS:
            raise BadCommand(f"unknown FETCH item {text[:60]}")
        return Item(upper)
    name = text[:bracket].upper()
    close = text.rfind("]")
    if close < bracket:
        raise BadCommand("unterminated section")
    inside = text[bracket + 1:close]
    partial = text[close + 1:] or None
    peek = name.endswith(".PEEK")
    base = name.removesuffix(".PEEK")
    if base not in ("BODY", "BINARY", "BINARY.SIZE"):
        raise BadCommand(f"unknown FETCH item {text[:60]}")
    if base == "BINARY.SIZE" and (peek or partial):
        raise BadCommand("BINARY.SIZE takes neither .PEEK nor a partial")
    try:
        spec = fetchdata.parse_section(inside, partial, binary=base != "BODY")
    except fetchdata.SectionError as e:
        raise BadCommand(str(e)) from None
    return Item(base, spec, peek)


async def run_fetch(session: IMAPServerProtocol, pairs: list[tuple[int, int]], request: FetchRequest) -> None:
    """Send one ``* n FETCH (...)`` per message (RFC 9051 §7.5.2)."""
    view = session.selected
    assert view is not None
    core = session.core
    account = view.account
    newly_seen: set[int] = set()
    if request.sets_seen and not view.readonly and pairs:
        before = core.get_messages(account, [view.message_ids[u] for _, u in pairs])
        unseen = [u for (_, u), m in zip(pairs, before, strict=True) if m is not None and not m.seen]
        if unseen:
            await core.store_flags(account, view.mailbox_id, unseen, FLAGS_ADD, ["\\Seen"])
            view.forget_flag_changes(unseen)
            newly_seen = set(unseen)
    if (_FLAG_INDEX_ITEMS.issuperset(i.name for i in request.items) and not request.sets_seen
            and await _fetch_from_flag_index(session, pairs, request)):
        return
    wants_flags = any(i.name == "FLAGS" for i in request.items)
    simple = all(i.spec is None and i.name in _CACHED_ITEMS for i in request.items)
    needs_parsed = request.needs_parsed
    flags_of = _FlagsMemo(session, view.recent)
    for start in range(0, len(pairs), CHUNK):
        batch = pairs[start:start + CHUNK]
        messages = core.get_messages(account, [view.message_ids[u] for _, u in batch])
        if needs_parsed:
            # One read transaction for the batch's parses (most come from the core's cache).
            present = [m.blob_id for m in messages if m is not None]
            found = iter(core.get_parsed_many(present))
            parses = [next(found) if m is not None else None for m in messages]
        for index, ((seq, uid), message) in enumerate(zip(batch, messages, strict=True)):
            if message is None or view.mailbox_id not in message.mailboxes:
                continue  # expunged by another session; reported when allowed (§7.5.1)
            if request.changed_since is not None and message.modseq <= request.changed_since:
                continue
            parsed = parses[index] if needs_parsed else None
            if needs_parsed and parsed is None:
                continue  # the message went with its last reference meanwhile
            if simple:
                parts = _cached_items(session, request, uid, message, parsed, flags_of)
            else:
                parts = await _message_items(session, request, seq, uid, message, parsed)
            if uid in newly_seen and not wants_flags:
                parts.append(b"FLAGS " + flags_of(message, uid))
            session.send(b"* %d FETCH (" % seq + b" ".join(parts) + b")")
        if start + CHUNK < len(pairs):
            session.flush()
            await task.deferLater(session.server.reactor, 0, lambda: None)


#: Items answered from the core's per-mailbox flag index (the flag resync every client does).
_FLAG_INDEX_ITEMS = frozenset({"UID", "FLAGS", "MODSEQ"})


async def _fetch_from_flag_index(session: IMAPServerProtocol, pairs: list[tuple[int, int]],
                                 request: FetchRequest) -> bool:
    """FETCH of UID, FLAGS and MODSEQ only, answered from ``MailCore.flag_index``.

    The index is brought up to the committed state before every chunk (one change-log read
    when nothing changed), so what is sent is exactly what a read of the records would give:
    a message another session or process expunged meanwhile is skipped (reported when
    allowed, RFC 9051 §7.5.1), and CHANGEDSINCE compares the committed modseq (RFC 7162
    §3.1.4.1).  Returns False, having sent nothing, when the core keeps no index (caching
    off); the caller then reads records.
    """
    view = session.selected
    assert view is not None
    core = session.core
    changed_since = request.changed_since
    flags_of = _FlagsMemo(session, view.recent)
    names = [i.name for i in request.items]
    for start in range(0, len(pairs), CHUNK):
        try:
            index = await core.flag_index(view.account, view.mailbox_id)
        except NoSuchMailbox:
            return True  # deleted meanwhile: its messages went with it, the view learns so
        if index is None:
            if start == 0:
                return False
            await _fetch_records_chunk(session, pairs[start:], request, flags_of)
            return True
        get = index.get
        send = session.send
        for seq, uid in pairs[start:start + CHUNK]:
            state = get(uid)
            if state is None:
                continue  # expunged by another session; reported when allowed (§7.5.1)
            keywords, modseq = state
            if changed_since is not None and modseq <= changed_since:
                continue
            parts = []
            for name in names:
                if name == "UID":
                    parts.append(b"UID %d" % uid)
                elif name == "FLAGS":
                    parts.append(b"FLAGS " + flags_of.keywords(keywords, uid))
                else:
                    parts.append(b"MODSEQ (%d)" % modseq)
            send(b"* %d FETCH (" % seq + b" ".join(parts) + b")")
        if start + CHUNK < len(pairs):
            session.flush()
            await task.deferLater(session.server.reactor, 0, lambda: None)
    return True


async def _fetch_records_chunk(session: IMAPServerProtocol, pairs: list[tuple[int, int]],
                               request: FetchRequest, flags_of: _FlagsMemo) -> None:
    """The rest of a flag-index FETCH when the index could not be kept up (a write burst)."""
    view = session.selected
    assert view is not None
    for start in range(0, len(pairs), CHUNK):
        batch = pairs[start:start + CHUNK]
        messages = session.core.get_messages(view.account, [view.message_ids[u] for _, u in batch])
        for (seq, uid), message in zip(batch, messages, strict=True):
            if message is None or view.mailbox_id not in message.mailboxes:
                continue
            if request.changed_since is not None and message.modseq <= request.changed_since:
                continue
            parts = _cached_items(session, request, uid, message, None, flags_of)
            session.send(b"* %d FETCH (" % seq + b" ".join(parts) + b")")
        if start + CHUNK < len(pairs):
            session.flush()
            await task.deferLater(session.server.reactor, 0, lambda: None)


#: Items answered from the message record alone (the common flag-sync FETCH).
_RECORD_ITEMS = frozenset({"UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "MODSEQ"})
#: Items answered without reading the blob: the record, and renderings of the parse.
_CACHED_ITEMS = _RECORD_ITEMS | {"ENVELOPE", "BODYSTRUCTURE", "BODY"}


class _FlagsMemo:
    """``FLAGS (...)`` of a message, formatted once per distinct flag set in a command.

    What ``session._flags`` returns depends only on the keywords and on whether the
    message is \\Recent for this session (RFC 9051 drops \\Recent; IMAP4rev1 sessions see
    it), and a mailbox has few distinct flag sets, so a FETCH of many messages formats
    a handful of them.
    """

    def __init__(self, session: IMAPServerProtocol, recent: set[int]) -> None:
        self._session = session
        self._recent = recent
        self._formatted: dict[tuple[frozenset[str], bool], bytes] = {}

    def __call__(self, message: Any, uid: int) -> bytes:
        return self.keywords(message.keywords, uid)

    def keywords(self, keywords: frozenset[str], uid: int) -> bytes:
        """``FLAGS (...)`` for a message with ``keywords`` (its flags, system ones included)."""
        key = (keywords, uid in self._recent)
        value = self._formatted.get(key)
        if value is None:
            value = self._formatted[key] = self._session._flags(_Keywords(keywords), uid)
        return value


@dataclass(frozen=True)
class _Keywords:
    """The one attribute of a message ``session._flags`` reads."""

    keywords: frozenset[str]


def _cached_items(session: IMAPServerProtocol, request: FetchRequest, uid: int, message: Any,
                  parsed: Any, flags_of: _FlagsMemo) -> list[bytes]:
    """The synchronous path for items that need no blob read: no coroutine per message."""
    out = []
    for item in request.items:
        name = item.name
        if name == "UID":
            out.append(b"UID %d" % uid)
        elif name == "FLAGS":
            out.append(b"FLAGS " + flags_of(message, uid))
        elif name == "INTERNALDATE":
            out.append(b"INTERNALDATE " + format_internal_date(message.internal_date))
        elif name == "RFC822.SIZE":
            out.append(b"RFC822.SIZE %d" % message.size)
        elif name == "MODSEQ":
            out.append(b"MODSEQ (%d)" % message.modseq)
        else:
            label = _RENDERED_LABELS[name]
            out.append(label + _rendered(session.core, message.blob_id, parsed, name.lower(), session.utf8))
    return out


_RENDERED_LABELS = {"ENVELOPE": b"ENVELOPE ", "BODYSTRUCTURE": b"BODYSTRUCTURE ", "BODY": b"BODY "}


_RENDERERS = {
    "envelope": lambda parsed, utf8: fetchdata.envelope(parsed, utf8),
    "bodystructure": lambda parsed, utf8: fetchdata.bodystructure(parsed, True, utf8),
    "body": lambda parsed, utf8: fetchdata.bodystructure(parsed, False, utf8),
}


def _rendered(core: Any, blob_id: str, parsed: Any, kind: str, utf8: bool) -> bytes:
    """ENVELOPE / BODYSTRUCTURE / BODY of a message, rendered once per blob and UTF8 mode.

    The rendering depends only on the message bytes (parsed at ingest) and on whether the
    session enabled UTF8=ACCEPT (RFC 6855 §3), so the core's blob cache keeps it: a client
    re-fetching envelopes of a mailbox costs a cache lookup per message, as with Dovecot's
    index cache.
    """
    render = _RENDERERS[kind]
    return core.blob_cache.derive(("imap", kind, utf8), blob_id, lambda: render(parsed, utf8))


async def _message_items(session: IMAPServerProtocol, request: FetchRequest, seq: int, uid: int,
                         message: Any, parsed: Any) -> list[bytes]:
    core = session.core
    utf8 = session.utf8

    def read_blob(offset: int, length: int):
        return core.read_blob(message.blob_id, offset, length)

    out: list[bytes] = []
    for item in request.items:
        name = item.name
        if item.spec is None:
            if name == "UID":
                out.append(b"UID %d" % uid)
            elif name == "FLAGS":
                out.append(b"FLAGS " + session._flags(message, uid))
            elif name == "INTERNALDATE":
                out.append(b"INTERNALDATE " + format_internal_date(message.internal_date))
            elif name == "RFC822.SIZE":
                out.append(b"RFC822.SIZE %d" % message.size)
            elif name == "MODSEQ":
                out.append(b"MODSEQ (%d)" % message.modseq)
            elif name == "ENVELOPE":
                out.append(b"ENVELOPE " + _rendered(core, message.blob_id, parsed, "envelope", utf8))
            elif name == "BODYSTRUCTURE":
                out.append(b"BODYSTRUCTURE " + _rendered(core, message.blob_id, parsed, "bodystructure", utf8))
            elif name == "BODY":
                out.append(b"BODY " + _rendered(core, message.blob_id, parsed, "body", utf8))
            elif name == "RFC822":
                data = await core.read_blob(message.blob_id, 0, message.size)
                out.append(b"RFC822 " + fetchdata.literal(data))
            elif name == "RFC822.HEADER":
                section = fetchdata.body_section(parsed, fetchdata.parse_section("HEADER"))
                data = await fetchdata.read_section(section, read_blob)
                out.append(b"RFC822.HEADER " + fetchdata.literal(data))
            elif name == "RFC822.TEXT":
                section = fetchdata.body_section(parsed, fetchdata.parse_section("TEXT"))
                data = await fetchdata.read_section(section, read_blob)
                out.append(b"RFC822.TEXT " + fetchdata.literal(data))
            continue
        try:
            if name == "BINARY.SIZE":
                size = await fetchdata.binary_size(parsed, item.spec, read_blob)
                out.append(b"BINARY.SIZE[" + item.spec.section_text.encode() + b"] %d" % size)
                continue
            section = fetchdata.body_section(parsed, item.spec)
            data = await fetchdata.read_section(section, read_blob)
        except fetchdata.UnknownCTE:
            raise CommandFailed("unknown Content-Transfer-Encoding", "UNKNOWN-CTE") from None
        out.append(section.label + b" " + fetchdata.literal(data, binary=name == "BINARY"))
    return out
