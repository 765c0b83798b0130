"""The selected mailbox as one session sees it: sequence numbers, UIDs and pending news.

IMAP sequence numbers are per session: they change only when *this* session is told
about an expunge (RFC 9051 §7.5.1), so two sessions on one mailbox may number its
messages differently for a while.  ``SelectedMailbox`` keeps the UIDs this session knows
in sequence order, and collects what the core's change log says happened meanwhile
(messages added, removed, re-flagged) until the session may report it:

* ``EXISTS`` may be sent at any time a command completes;
* ``EXPUNGE`` (or ``VANISHED`` with QRESYNC, RFC 7162 §3.2.10) never while no command is
  in progress, nor during FETCH, STORE or SEARCH by sequence number -- the client could
  not tell which message a number meant (RFC 9051 §7.5.1);
* flag changes are untagged ``FETCH (FLAGS ...)`` (RFC 9051 §7.5.2), with ``UID`` and
  ``MODSEQ`` where CONDSTORE/QRESYNC are enabled (RFC 7162 §3.2.4).

Memory is two ints per message (a sorted UID list and a UID -> message id map), so a
100k-message mailbox costs a few MB per session, as in Dovecot's index view.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field

from mailserve.core.model import ChangeKind, ChangeSet, Mailbox
from mailserve.imap.parser import ParseError, SequenceSet


@dataclass
class PendingUpdates:
    """What to tell the client, computed by ``SelectedMailbox.take_updates``."""

    expunged_seqs: list[int] = field(default_factory=list)  # descending: send in this order
    expunged_uids: list[int] = field(default_factory=list)  # ascending (VANISHED)
    exists: int | None = None
    flag_changes: list[tuple[int, int, int]] = field(default_factory=list)  # (seq, uid, msgid)
    mailbox_gone: bool = False


class SelectedMailbox:
    """One session's view of its selected mailbox (RFC 9051 §2.3.1.2, §5.2)."""

    def __init__(self, account: int, mailbox: Mailbox, readonly: bool,
                 uids: list[tuple[int, int]]) -> None:
        self.account = account
        self.mailbox_id = mailbox.id
        self.name = mailbox.name
        self.uidvalidity = mailbox.uidvalidity
        self.readonly = readonly
        self.uids: list[int] = [u for u, _ in uids]
        self.message_ids: dict[int, int] = dict(uids)
        self._recent: set[int] = set()
        #: Bumped whenever the numbering or the \\Recent set is replaced, so what was
        #: derived from the view (``mailserve.imap.searching``'s kept search list) knows
        #: when it no longer matches.
        self.version = 0
        #: Whatever ``mailserve.imap.searching`` keeps for this view between commands.
        self.search_cache: object | None = None
        self._added: dict[int, int] = {}
        self._removed: set[int] = set()
        self._flagged: set[int] = set()
        self._gone = False

    # -- numbering ----------------------------------------------------------------------
    @property
    def recent(self) -> set[int]:
        """UIDs that are \\Recent for this session (RFC 3501 §2.3.2)."""
        return self._recent

    @recent.setter
    def recent(self, value: set[int]) -> None:
        self._recent = value
        self.version += 1

    @property
    def exists(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int | None:
        i = bisect_left(self.uids, uid)
        if i < len(self.uids) and self.uids[i] == uid:
            return i + 1
        return None

    def by_sequence(self, seqset: SequenceSet, saved: list[int] | None = None) -> list[tuple[int, int]]:
        """``(seq, uid)`` of the messages a sequence-number set names, ascending.

        A number beyond the mailbox is a client error (RFC 9051 §9 ``seq-number``), except
        ``*`` in an empty mailbox, which names nothing.
        """
        n = len(self.uids)
        if seqset.saved:
            return [(s, u) for s, u in ((self.seq_of(u), u) for u in (saved or ())) if s is not None]
        out = []
        for lo, hi in seqset.resolve(n):
            if n == 0 and all(a is None and b is None for a, b in seqset.ranges):
                return []
            if lo < 1 or hi > n:
                raise ParseError("message sequence number out of range")
            out.extend((s, self.uids[s - 1]) for s in range(lo, hi + 1))
        return out

    def by_uid(self, seqset: SequenceSet, saved: list[int] | None = None) -> list[tuple[int, int]]:
        """``(seq, uid)`` of existing messages whose UID is in the set (RFC 9051 §6.4.9).

        UIDs that do not exist are ignored; ``*`` is the highest UID in the mailbox, and
        a range is symmetric, so ``n:*`` includes the highest UID even when it is below n.
        """
        if seqset.saved:
            uids = saved or []
            return [(s, u) for s, u in ((self.seq_of(u), u) for u in uids) if s is not None]
        if not self.uids:
            return []
        out = []
        for lo, hi in seqset.resolve(self.uids[-1]):
            start = bisect_left(self.uids, lo)
            end = bisect_right(self.uids, hi)
            out.extend((i + 1, self.uids[i]) for i in range(start, end))
        return out

    # -- change tracking -------------------------------------------------------------------
    def changed(self, changes: ChangeSet) -> bool:
        """Note what a committed change set did to this mailbox; True if anything."""
        touched = False
        for entry in changes.entries:
            if entry.mailbox != self.mailbox_id:
                continue
            kind = entry.kind
            if kind is ChangeKind.MESSAGE_ADDED:
                self._added[entry.uid] = entry.message
                touched = True
            elif kind is ChangeKind.MESSAGE_REMOVED:
                if entry.uid in self._added:
                    del self._added[entry.uid]
                elif entry.uid in self.message_ids:
                    self._removed.add(entry.uid)
                self._flagged.discard(entry.uid)
                touched = True
            elif kind is ChangeKind.FLAGS_CHANGED:
                if entry.uid in self.message_ids or entry.uid in self._added:
                    self._flagged.add(entry.uid)
                    touched = True
            elif kind is ChangeKind.MAILBOX_DESTROYED:
                self._gone = True
                touched = True
        return touched

    def catch_up(self, change_sets) -> None:
        """Note change sets committed since the snapshot this view was built from.

        The snapshot (``MailCore.mailbox_snapshot``) may be built in a worker thread while
        other sessions commit; replaying the change log from its modseq means nothing is
        missed.  A change set delivered again later by the live subscription is harmless:
        noting an addition, removal or flag change twice reports it once.
        """
        for changes in change_sets:
            self.changed(changes)

    @property
    def has_updates(self) -> bool:
        return bool(self._added or self._removed or self._flagged or self._gone)

    def forget_flag_changes(self, uids) -> None:
        """This session already reported these flags itself (STORE's own FETCH responses)."""
        for uid in uids:
            self._flagged.discard(uid)

    def take_updates(self, allow_expunge: bool) -> PendingUpdates:
        """Apply pending changes to the numbering and say what the client must be told."""
        out = PendingUpdates(mailbox_gone=self._gone)
        if allow_expunge and self._removed:
            removed = self._removed
            self._removed = set()
            positions = sorted((bisect_left(self.uids, u) for u in removed), reverse=True)
            out.expunged_seqs = [p + 1 for p in positions]
            out.expunged_uids = sorted(removed)
            self.uids = [u for u in self.uids if u not in removed]
            self.version += 1
            for uid in removed:
                self.message_ids.pop(uid, None)
                self._recent.discard(uid)
        if self._added:
            for uid in sorted(self._added):
                if not self.uids or uid > self.uids[-1]:
                    self.uids.append(uid)
                    self.message_ids[uid] = self._added[uid]
            self._added = {}
            self.version += 1
            out.exists = len(self.uids)
        if self._flagged:
            flagged, self._flagged = self._flagged, set()
            for uid in sorted(flagged):
                if uid in self._removed:
                    continue
                seq = self.seq_of(uid)
                if seq is not None:
                    out.flag_changes.append((seq, uid, self.message_ids[uid]))
        self._gone = False
        return out

    def discard_expunges(self) -> None:
        """CLOSE/UNSELECT: the view ends, nothing more is reported."""
        self._removed.clear()
        self._added.clear()
        self._flagged.clear()
