"""IMAP commands on messages: APPEND and IDLE (RFC 9051 §6.3.12, RFC 2177), and the
selected state's CHECK, CLOSE, UNSELECT, EXPUNGE, FETCH, STORE, COPY and MOVE
(RFC 9051 §6.4, RFC 3691, RFC 6851), with their UID forms (RFC 4315 UIDPLUS).

SEARCH, SORT and THREAD are ``searching.py``'s; the FETCH data items are ``fetch.py``'s.
``MessageCommands`` is a mixin of ``IMAPServerProtocol``: its handlers use the session's
state and helpers (``send``, ``ok``, ``sequence``, ``find_mailbox``, ``_deselect``,
``_updates``, ``wait_for_line``), and are found by the protocol's ``do_<COMMAND>`` and
``do_UID_<COMMAND>`` dispatch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from twisted.internet import defer

from mailserve.core import errors as core_errors
from mailserve.core.mailcore import FLAGS_ADD, FLAGS_REMOVE, FLAGS_SET
from mailserve.core.model import SYSTEM_FLAGS, Mailbox, normalise_flag
from mailserve.imap.parser import (
    MAX_NUMBER64,
    Atom,
    Literal,
    SequenceSet,
    String,
    astring,
    format_flags,
    format_sequence_set,
    is_atom,
    number,
)
from mailserve.imap.responses import BadCommand, CommandFailed, no_args, parse_date_time
from mailserve.imap.selected import SelectedMailbox

_KEYWORD_RE = re.compile(r"^[\x21-\x7e]+$")
_KEYWORD_FORBIDDEN = set('(){ %*"\\]')
MAX_KEYWORD = 256


class MessageCommands:
    """The handlers of APPEND, IDLE and the selected state's message commands."""

    # ============================================================================================
    # Authenticated (RFC 9051 §6.3): APPEND and IDLE
    # ============================================================================================
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
        no_args(args)
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

    # ============================================================================================
    # Selected (RFC 9051 §6.4)
    # ============================================================================================
    async def do_CHECK(self, tag: str, args: list) -> str | None:
        no_args(args)  # every change is already durable when acknowledged
        return None

    async def do_CLOSE(self, tag: str, args: list) -> str | None:
        """Expunge silently if read-write, then leave the selected state (RFC 9051 §6.4.1)."""
        no_args(args)
        view = self.selected
        assert view is not None
        self._deselect()
        if not view.readonly:
            await self.core.expunge(view.account, view.mailbox_id)
        return None

    async def do_UNSELECT(self, tag: str, args: list) -> str | None:
        no_args(args)
        self._deselect()
        return None

    async def do_EXPUNGE(self, tag: str, args: list) -> str | None:
        no_args(args)
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


def _is_junk_transfer(source: Mailbox, target: Mailbox) -> bool:
    """Into Junk from elsewhere, or out of Junk to anywhere but Trash, teaches the filter."""
    if target.role == "junk":
        return source.role != "junk"
    return source.role == "junk" and target.role != "trash"
