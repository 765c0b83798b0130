"""Per-mailbox flags and modseqs, kept compactly: what a flag resync FETCH needs.

A client re-synchronising a mailbox sends ``FETCH 1:* (FLAGS UID)`` (or ``UID FETCH 1:*
(FLAGS) (CHANGEDSINCE n)`` with CONDSTORE, RFC 7162 §3.1.4).  The answer needs, per
message, only its keywords and its modseq; decoding every full message record for that
costs ~10 µs a message.  Dovecot answers it from its index file (flags, UID and modseq per
message); ``MailboxFlagIndex`` is that index for one mailbox, held in memory by the core:

* it is built from the committed records in one read transaction, and says the account
  modseq it is consistent with;
* before every use the core brings it up to date from the account's change log, in one read
  transaction that also reads the records the log names (``MailCore.flag_index``).  Every
  mutation -- by this process, or by another one such as the CLI -- writes its change set in
  the transaction that changes the records, so replaying the log from the index's modseq
  gives exactly the committed state: the index never answers from anything but committed
  data, and nothing is written to make it, so every durability guarantee is unchanged.

Keyword sets are interned: a mailbox has few distinct flag sets, so the index costs a UID,
a modseq and a pointer per message.
"""

from __future__ import annotations

from collections.abc import Iterable

from mailserve.core.model import ChangeKind, ChangeSet, Message

#: One message as a flag resync sees it: ``(keywords, modseq)``.
MessageState = tuple[frozenset[str], int]


class MailboxFlagIndex:
    """UID -> ``(keywords, modseq)`` of every message in one mailbox, at account modseq ``modseq``."""

    __slots__ = ("_counts", "_interned", "_states", "account", "mailbox", "modseq")

    def __init__(self, account: int, mailbox: int, modseq: int) -> None:
        self.account = account
        self.mailbox = mailbox
        self.modseq = modseq
        self._states: dict[int, MessageState] = {}
        self._interned: dict[frozenset[str], frozenset[str]] = {}
        # How many messages carry each distinct keyword set: the mailbox's keywords (the
        # SELECT FLAGS response, RFC 9051 §7.3.5) are the union of the sets still counted.
        self._counts: dict[frozenset[str], int] = {}

    def __len__(self) -> int:
        return len(self._states)

    def get(self, uid: int) -> MessageState | None:
        """The state of the message with ``uid``; None when no such message is in the mailbox."""
        return self._states.get(uid)

    def set(self, uid: int, keywords: frozenset[str], modseq: int) -> None:
        interned = self._interned.setdefault(keywords, keywords)
        counts = self._counts
        old = self._states.get(uid)
        if old is not None:
            self._uncount(old[0])
        counts[interned] = counts.get(interned, 0) + 1
        self._states[uid] = (interned, modseq)

    def discard(self, uid: int) -> None:
        old = self._states.pop(uid, None)
        if old is not None:
            self._uncount(old[0])

    def _uncount(self, keywords: frozenset[str]) -> None:
        left = self._counts[keywords] - 1
        if left:
            self._counts[keywords] = left
        else:
            del self._counts[keywords]
            del self._interned[keywords]

    def keywords_in_use(self) -> frozenset[str]:
        """Every flag set on at least one message (system flags included)."""
        found: set[str] = set()
        for keywords in self._counts:
            found.update(keywords)
        return frozenset(found)

    def copy(self) -> MailboxFlagIndex:
        """An independent copy (the SELECT snapshot keeps its own, at its own modseq)."""
        other = MailboxFlagIndex(self.account, self.mailbox, self.modseq)
        other._states = dict(self._states)
        other._interned = dict(self._interned)
        other._counts = dict(self._counts)
        return other

    def uids(self) -> list[int]:
        """Every UID held, ascending (for checks against the mailbox's UID index)."""
        return sorted(self._states)


class Replay:
    """What a stretch of the change log does to one mailbox's index, read in one transaction.

    ``removed`` are UIDs that left the mailbox; ``touched`` message ids whose records must
    be read again (added, re-flagged, or given a new modseq by a change elsewhere: a message
    in several mailboxes has one record); ``mailbox_gone`` when the mailbox was deleted.
    """

    __slots__ = ("entries", "mailbox_gone", "removed", "touched")

    def __init__(self) -> None:
        self.removed: list[int] = []
        self.touched: dict[int, None] = {}
        self.mailbox_gone = False
        self.entries = 0

    def note(self, mailbox: int, changes: ChangeSet) -> None:
        for entry in changes.entries:
            self.entries += 1
            kind = entry.kind
            if kind is ChangeKind.MAILBOX_DESTROYED and entry.mailbox == mailbox:
                self.mailbox_gone = True
            elif kind is ChangeKind.MESSAGE_REMOVED and entry.mailbox == mailbox:
                self.removed.append(entry.uid)
            if entry.message:
                self.touched[entry.message] = None


def replay_updates(mailbox: int, replay: Replay,
                   records: Iterable[tuple[int, Message | None]]) -> list[tuple[int, frozenset[str], int]]:
    """``(uid, keywords, modseq)`` to set after a replay, from the re-read records.

    A record that no longer exists, or is no longer in the mailbox, sets nothing: its
    removal from the mailbox is itself in the log (``MESSAGE_REMOVED``) and so in
    ``replay.removed``.
    """
    out = []
    for _, message in records:
        if message is None:
            continue
        uid = message.mailboxes.get(mailbox)
        if uid is not None:
            out.append((uid, message.keywords, message.modseq))
    return out
