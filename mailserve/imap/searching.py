"""SEARCH, SORT and THREAD as session commands: the glue between a session and ``mailserve.imap.search``.

``mailserve.imap.search`` parses search programs and evaluates them; this module gives it the
selected mailbox in sequence order, the session's SEARCHRES result (RFC 5182) and the
account's full-text search, then sends the answer in the form the client asked for:
``* SEARCH`` (RFC 9051 §7.3.5 in IMAP4rev1 mode), ``* ESEARCH`` (RFC 4731, and always
for IMAP4rev2, RFC 9051 §6.4.4), ``* SORT`` and ``* THREAD`` (RFC 5256).

``SearchCommands`` holds the ``do_SEARCH``/``do_SORT``/``do_THREAD`` handlers (and their
UID forms); it is a mixin of ``IMAPServerProtocol``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet import task

from mailserve.core import errors as core_errors
from mailserve.imap.parser import Atom, ParseError, is_atom
from mailserve.imap.responses import BadCommand, CommandFailed

if TYPE_CHECKING:
    from mailserve.imap.protocol import IMAPServerProtocol

CHUNK = 1024


async def _context(session: IMAPServerProtocol) -> Any:
    from mailserve.imap import search as engine

    view = session.selected
    assert view is not None
    core = session.core
    messages = await _search_messages(session)
    search = session.factory.mail_search()
    text = search.for_account(view.account) if search is not None else None
    return engine.SearchContext(messages, parsed=core.get_parsed, text=text,
                                saved=frozenset(session.saved_result), run_blocking=_in_thread,
                                parsed_many=core.get_parsed_many, derived=core.derived,
                                derived_peek=core.blob_cache.get)


class _KeptMessages:
    """The search list of a view, kept between commands (``SelectedMailbox.search_cache``).

    Valid for the view's numbering (``version``, and the \\Recent count, which grows in
    place) as of the account's ``modseq``; brought up to date from the change log.
    """

    __slots__ = ("messages", "modseq", "positions", "recent_count", "version")

    def __init__(self, messages: list, modseq: int, version: int, recent_count: int) -> None:
        self.messages = messages
        self.modseq = modseq
        self.version = version
        self.recent_count = recent_count
        self.positions = {m.message.id: i for i, m in enumerate(messages)}


def _refreshed(session: IMAPServerProtocol, kept: _KeptMessages, modseq: int) -> list | None:
    """``kept`` brought to ``modseq``: the records of messages the change log names since
    ``kept.modseq`` re-read.  None when that is not enough (a message left the mailbox or
    too much changed): then the list is rebuilt."""
    view = session.selected
    assert view is not None
    changed: set[int] = set()
    for changes in session.core.changes_since(view.account, kept.modseq):
        changed.update(entry.message for entry in changes.entries if entry.message)
        if len(changed) > max(64, len(kept.messages) // 4):
            return None
    ours = [msgid for msgid in changed if msgid in kept.positions]
    messages = list(kept.messages)
    for msgid, record in zip(ours, session.core.get_messages(view.account, ours), strict=True):
        if record is None or view.mailbox_id not in record.mailboxes:
            return None
        position = kept.positions[msgid]
        messages[position] = messages[position]._replace(message=record)
    return messages


async def _search_messages(session: IMAPServerProtocol) -> list:
    """The selected mailbox in sequence order as ``SearchMessage``s, with current records.

    A session searching again and again (clients poll UNSEEN) gets the list it had, with
    only the records the change log says changed re-read: every record change is logged
    with its message id (the same log CONDSTORE and IDLE rely on).
    """
    from mailserve.imap import search as engine

    view = session.selected
    assert view is not None
    core = session.core
    modseq = core.highest_modseq(view.account)
    kept = view.search_cache
    if (isinstance(kept, _KeptMessages) and kept.version == view.version
            and kept.recent_count == len(view.recent) and kept.modseq <= modseq):
        messages = kept.messages if kept.modseq == modseq else _refreshed(session, kept, modseq)
        if messages is not None:
            kept.messages, kept.modseq = messages, modseq
            return messages
    version, recent = view.version, view.recent
    messages = []
    pairs = list(enumerate(view.uids, start=1))
    for start in range(0, len(pairs), CHUNK):
        batch = pairs[start:start + CHUNK]
        records = core.get_messages(view.account, [view.message_ids[u] for _, u in batch])
        for (seq, uid), record in zip(batch, records, strict=True):
            if record is None or view.mailbox_id not in record.mailboxes:
                continue
            messages.append(engine.SearchMessage(seq, uid, record, uid in recent))
        if start + CHUNK < len(pairs):
            await task.deferLater(session.server.reactor, 0, lambda: None)
    if session.selected is view and view.version == version:
        # Kept as of the modseq read before the records: whatever committed while they
        # were read is replayed from the log next time.
        view.search_cache = _KeptMessages(messages, modseq, version, len(recent))
    return messages


def _in_thread(fn):
    """Big searches evaluate in a worker thread so the reactor keeps serving other sessions."""
    from twisted.internet.threads import deferToThread

    return deferToThread(fn)


def _parse_errors():
    from mailserve.imap import search as engine

    return engine.SearchSyntaxError, engine.BadCharset


async def run_search(session: IMAPServerProtocol, tag: str, args: list, uid: bool) -> str | None:
    from mailserve.imap import search as engine

    syntax_error, bad_charset = _parse_errors()
    try:
        command = engine.parse_search_command(args)
    except syntax_error as e:
        raise BadCommand(str(e)) from None
    except bad_charset:
        raise CommandFailed("supported charsets are UTF-8 and US-ASCII", "BADCHARSET (UTF-8 US-ASCII)") from None
    context = await _context(session)
    numbers = await engine.evaluate(command.key, context, uid=uid)
    returns = command.returns
    saved = engine.saved_result(_as_uids(session, numbers, uid), returns)
    if saved is not None:
        # RFC 5182 §2.1: the result is kept as UIDs, whatever the command numbered by.
        session.saved_result = saved
    modseq = None
    if engine.uses_modseq(command.key):
        session.enabled.add("CONDSTORE")  # RFC 7162 §3.1: MODSEQ in SEARCH enables CONDSTORE
        modseq = engine.result_modseq(numbers, context, uid) or None
    if returns is not None or session.rev2:
        # RFC 9051 §6.4.4: IMAP4rev2 answers every SEARCH with ESEARCH.
        line = engine.format_esearch(numbers, returns or (), tag=tag, uid=uid, modseq=modseq)
    else:
        line = engine.format_search(numbers, modseq=modseq)
    if line:
        session.send(line)
    return None


def _as_uids(session: IMAPServerProtocol, numbers: list[int], uid: bool) -> list[int]:
    view = session.selected
    assert view is not None
    if uid:
        return list(numbers)
    return [view.uids[n - 1] for n in numbers if 0 < n <= len(view.uids)]


async def run_sort(session: IMAPServerProtocol, tag: str, args: list, uid: bool) -> str | None:
    from mailserve.imap import search as engine

    syntax_error, bad_charset = _parse_errors()
    try:
        command = engine.parse_sort_command(args)
    except syntax_error as e:
        raise BadCommand(str(e)) from None
    except bad_charset:
        raise CommandFailed("supported charsets are UTF-8 and US-ASCII", "BADCHARSET (UTF-8 US-ASCII)") from None
    context = await _context(session)
    numbers = await engine.sort(command.criteria, command.key, context, uid=uid)
    modseq = None
    if engine.uses_modseq(command.key):
        modseq = engine.result_modseq(numbers, context, uid) or None
    session.send(engine.format_sort(numbers, modseq))
    return None


async def run_thread(session: IMAPServerProtocol, tag: str, args: list, uid: bool) -> str | None:
    from mailserve.imap import search as engine

    syntax_error, bad_charset = _parse_errors()
    try:
        command = engine.parse_thread_command(args)
    except syntax_error as e:
        raise BadCommand(str(e)) from None
    except bad_charset:
        raise CommandFailed("supported charsets are UTF-8 and US-ASCII", "BADCHARSET (UTF-8 US-ASCII)") from None
    context = await _context(session)
    nodes = await engine.thread(command.algorithm, command.key, context, uid=uid)
    session.send(b"* THREAD " + engine.format_threads(nodes))
    return None


class SearchCommands:
    """The handlers of SEARCH, SORT and THREAD and their UID forms."""

    # SEARCH / SORT / THREAD ----------------------------------------------------------------------
    async def do_SEARCH(self, tag: str, args: list) -> str | None:
        return await self._search(tag, args, uid=False)

    async def do_UID_SEARCH(self, tag: str, args: list) -> str | None:
        return await self._search(tag, args, uid=True)

    async def _search(self, tag: str, args: list, uid: bool) -> str | None:
        """SEARCH; a SEARCH with SAVE that fails (NO or BAD) empties ``$`` (RFC 5182 §2.1)."""
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
        self._utf8_charset_only(args)
        return await run_sort(self, tag, args, uid=False)

    async def do_UID_SORT(self, tag: str, args: list) -> str | None:
        self._utf8_charset_only(args)
        return await run_sort(self, tag, args, uid=True)

    async def do_THREAD(self, tag: str, args: list) -> str | None:
        self._utf8_charset_only(args)
        return await run_thread(self, tag, args, uid=False)

    async def do_UID_THREAD(self, tag: str, args: list) -> str | None:
        self._utf8_charset_only(args)
        return await run_thread(self, tag, args, uid=True)

    def _utf8_charset_only(self, args: list) -> None:
        """RFC 6855 §3 (erratum 4029): after ENABLE UTF8=ACCEPT, SORT and THREAD's charset is UTF-8."""
        if "UTF8=ACCEPT" in self.enabled and len(args) > 1 and isinstance(args[1], Atom | bytes):
            charset = args[1].upper() if isinstance(args[1], str) else bytes(args[1]).upper().decode("ascii", "replace")
            if charset != "UTF-8":
                raise BadCommand("the charset must be UTF-8 after ENABLE UTF8=ACCEPT")
