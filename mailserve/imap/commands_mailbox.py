"""IMAP commands on mailboxes: SELECT/EXAMINE, CREATE, DELETE, RENAME, SUBSCRIBE,
UNSUBSCRIBE, NAMESPACE, LIST, LSUB, STATUS (RFC 9051 §6.3) and the quota commands
(RFC 9208).

With them the extensions that shape their answers: CONDSTORE/QRESYNC in SELECT
(RFC 7162), LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819), SPECIAL-USE and
CREATE-SPECIAL-USE (RFC 6154), STATUS=SIZE (RFC 8438).  ``MailboxCommands`` is a mixin of
``IMAPServerProtocol``: its handlers use the session's state and helpers (``send``,
``ok``, ``mailbox_arg``, ``mailbox_out``, ``find_mailbox``, ``_deselect``, ``_flags``),
and are found by the protocol's ``do_<COMMAND>`` dispatch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from twisted.internet import task

from mailserve.core import errors as core_errors
from mailserve.core.model import SEPARATOR, SYSTEM_FLAGS, Mailbox
from mailserve.imap.parser import (
    MAX_NUMBER64,
    Atom,
    SequenceSet,
    astring,
    decode_mailbox_name,
    format_flags,
    format_sequence_set,
    is_atom,
    number,
)
from mailserve.imap.responses import BadCommand, CommandFailed, no_args
from mailserve.imap.selected import SelectedMailbox
from mailserve.imap.states import SELECTED

#: Special-use attributes by the core's mailbox role (RFC 6154 §2).
ROLE_ATTRIBUTES = {
    "sent": "\\Sent", "drafts": "\\Drafts", "trash": "\\Trash", "junk": "\\Junk",
    "archive": "\\Archive", "all": "\\All", "flagged": "\\Flagged", "important": "\\Important",
}
ATTRIBUTE_ROLES = {v.lower(): k for k, v in ROLE_ATTRIBUTES.items()}

PERMANENT_FLAGS = b"(\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)"

STATUS_ITEMS = ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE", "RECENT",
                "HIGHESTMODSEQ", "APPENDLIMIT", "DELETED-STORAGE")
#: Messages handled per reactor turn in long operations, so other sessions keep being served.
CHUNK = 256


class MailboxCommands:
    """The handlers of the mailbox and quota commands."""

    # ============================================================================================
    # Authenticated (RFC 9051 §6.3): mailboxes
    # ============================================================================================
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
        """The untagged FETCH of every message changed after ``modseq`` (RFC 7162 §3.2.5.2).

        Answered from the core's flag index (``MailCore.flag_index``: UID -> keywords and
        modseq, brought to the committed state before each chunk), so a SELECT of a large
        mailbox reads no message record; a message expunged meanwhile is skipped, exactly as
        a read of its record would.  With caching off the core keeps no index and the
        records are read.
        """
        formatted: dict[tuple[frozenset[str], bool], bytes] = {}
        recent = view.recent
        for start in range(0, len(pairs), CHUNK * 4):
            batch = pairs[start:start + CHUNK * 4]
            try:
                index = await self.core.flag_index(view.account, view.mailbox_id)
            except core_errors.NoSuchMailbox:
                return  # deleted meanwhile: its messages went with it, the view learns so
            if index is None:
                messages = self.core.get_messages(view.account, [view.message_ids[u] for _, u in batch])
                for (seq, uid), message in zip(batch, messages, strict=True):
                    if message is not None and message.modseq > modseq:
                        self.send(b"* %d FETCH (UID %d FLAGS %s MODSEQ (%d))"
                                  % (seq, uid, self._flags(message, uid), message.modseq))
            else:
                get = index.get
                for seq, uid in batch:
                    state = get(uid)
                    if state is None or state[1] <= modseq:
                        continue
                    key = (state[0], uid in recent)
                    flags = formatted.get(key)
                    if flags is None:
                        flags = formatted[key] = self._flags(_Keywords(state[0]), uid)
                    self.send(b"* %d FETCH (UID %d FLAGS %s MODSEQ (%d))" % (seq, uid, flags, state[1]))
            await task.deferLater(self.server.reactor, 0, lambda: None)

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
        no_args(args)
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

    # ============================================================================================
    # Quotas (RFC 9208)
    # ============================================================================================
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


@dataclass(frozen=True)
class _Keywords:
    """The one attribute of a message ``session._flags`` reads."""

    keywords: frozenset[str]
