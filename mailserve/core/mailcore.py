"""The mail core: the only writer of mail state.

Every protocol (SMTP delivery, IMAP, POP3, JMAP, the admin API) changes mail only through
``MailCore``.  Each mutation is one metadata transaction that also bumps the account's
modseq and appends a ``ChangeSet`` to the account's change log; once the transaction is
durable the change set is handed to in-process subscribers (IMAP sessions, IDLE, JMAP push,
the search indexer).  Message bytes go to the blob store *before* the transaction that
references them, so a committed message always has its bytes; a crash in between leaves
only an unreferenced blob, which ``collect_garbage`` removes.

Reads (``read_*``/``get_*``) are synchronous short read transactions, cheap enough for the
reactor thread; mutations return Deferreds.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from operator import itemgetter
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from mailserve.core import keys
from mailserve.core.cache import BlobDerivedCache, RecordCache
from mailserve.core.errors import (
    InvalidMailboxName,
    MailboxExists,
    MailboxHasChildren,
    MailboxNotDeletable,
    NoSuchAccount,
    NoSuchMailbox,
    QuotaExceeded,
)
from mailserve.core.flagindex import MailboxFlagIndex, Replay, replay_updates
from mailserve.core.mime import ParsedMessage, parse_message
from mailserve.core.model import (
    DEFAULT_MAILBOXES,
    SEPARATOR,
    AppendResult,
    ChangeEntry,
    ChangeKind,
    ChangeSet,
    Mailbox,
    Message,
    Quota,
    normalise_flags,
    pack,
    unpack,
)
from mailserve.interfaces import IBlobStore, IMetadataStore, IWriteTransaction

Listener = Callable[[ChangeSet], None]

#: STORE operations (RFC 9051 §6.4.6).
FLAGS_SET, FLAGS_ADD, FLAGS_REMOVE = "set", "add", "remove"

MAX_MAILBOX_NAME = 1024
#: Change-log entries a flag index is brought up to date from on the reactor thread (reading
#: the records they name costs a few µs each: well under a millisecond); more are read in a
#: worker thread, and beyond ``MAX_FLAG_REPLAY_ENTRIES`` (or a quarter of the mailbox, where
#: a replay would cost about what a rebuild does) the index is rebuilt.
MAX_FLAG_REPLAY_ON_REACTOR = 64
MAX_FLAG_REPLAY_ENTRIES = 2048
MAX_MAILBOX_DEPTH = 32


@dataclass(frozen=True)
class Ingested:
    """A message whose bytes are durable in the blob store and whose structure is parsed.

    ``parsed_bytes`` is the stored form of ``parsed``, packed in the ingest thread so the
    metadata transaction (and the reactor) only copy it.
    """

    blob_id: str
    size: int
    parsed: ParsedMessage
    parsed_bytes: bytes = b""


@dataclass(frozen=True)
class MailboxSnapshot:
    """What opening a mailbox needs (RFC 9051 §6.3.2 SELECT), read in one transaction.

    ``uids`` are ``(uid, message id)`` in UID order; ``keywords`` the keywords (not system
    flags) set on any message, for the FLAGS response; ``first_unseen`` the 1-based position
    of the first message without ``\\Seen`` (0: none).  ``modseq`` is the account's modseq
    the snapshot is consistent with: a session replays the change log from there, so
    nothing committed while the snapshot was built is missed.
    """

    mailbox: Mailbox
    uids: list[tuple[int, int]]
    keywords: frozenset[str]
    first_unseen: int
    modseq: int


class _Mutation:
    """What one write transaction did, collected while it runs."""

    def __init__(self, txn: IWriteTransaction, account: int) -> None:
        self.txn = txn
        self.account = account
        self.entries: list[ChangeEntry] = []
        self.released_blobs: list[str] = []
        self._modseq: int | None = None

    @property
    def modseq(self) -> int:
        """The transaction's modseq, allocated on first use so no-op writes bump nothing."""
        if self._modseq is None:
            self._modseq = self.txn.incr(keys.counter(self.account, keys.MODSEQ))
        return self._modseq

    def record(self, kind: ChangeKind, message: int = 0, mailbox: int = 0, uid: int = 0) -> None:
        self.entries.append(ChangeEntry(kind, message, mailbox, uid))

    def finish(self) -> ChangeSet | None:
        if not self.entries:
            return None
        changes = ChangeSet(self.account, self.modseq, tuple(self.entries))
        self.txn.put(keys.change(self.account, changes.modseq), changes.to_bytes())
        return changes


#: How far past the previous first unseen message a snapshot replay looks for the next one
#: (a dict look-up each, well under a millisecond); further, the snapshot is rebuilt.
MAX_FIRST_UNSEEN_SCAN = 4096
_SEEN = "\\Seen"


def _advance_snapshot(snapshot: MailboxSnapshot, state: MailboxFlagIndex, box: Mailbox, now: int,
                      replay: Replay | None, records: Sequence[tuple[int, Message | None]]) -> MailboxSnapshot | None:
    """``snapshot`` brought to account modseq ``now`` by what ``MailCore._flag_replay_reader`` read.

    ``state`` is the snapshot's own flag index at the snapshot's modseq; it is updated in
    place (on the reactor).  The result equals a fresh build: UIDs that left the mailbox go,
    messages that entered it (always above every UID it had: UIDs only grow, RFC 9051
    §2.3.1.1) are appended, the FLAGS keywords are the union of the keyword sets the index
    still counts, and the first unseen message (RFC 3501 §7.1 UNSEEN) is the least of the
    re-read unseen messages and the first unseen one at or after the previous one -- every
    message before that was seen and untouched.  None when that scan would go further than
    ``MAX_FIRST_UNSEEN_SCAN``: the caller rebuilds.
    """
    if replay is None:
        state.modseq = now
        return replace(snapshot, mailbox=box, modseq=now)
    old = snapshot.uids
    previous_first = old[snapshot.first_unseen - 1][0] if snapshot.first_unseen else 0
    uids = list(old)
    uid_of = itemgetter(0)
    gone = list(dict.fromkeys(replay.removed))  # a UID whose record was missing is in uids only
    for uid_ in gone:
        state.discard(uid_)
    if len(gone) > 64:
        dropped = set(gone)
        uids = [pair for pair in uids if pair[0] not in dropped]
    else:
        for uid_ in gone:
            at = bisect_left(uids, uid_, key=uid_of)
            if at < len(uids) and uids[at][0] == uid_:
                del uids[at]
    mailbox = state.mailbox
    added: list[tuple[int, int]] = []
    unseen: list[int] = []
    for msgid, message in records:
        if message is None:
            continue
        uid_ = message.mailboxes.get(mailbox)
        if uid_ is None:
            continue
        if state.get(uid_) is None:
            added.append((uid_, msgid))
        state.set(uid_, message.keywords, message.modseq)
        if _SEEN not in message.keywords:
            unseen.append(uid_)
    if added:
        added.sort()
        if uids and added[0][0] < uids[-1][0]:
            uids = sorted(uids + added)
        else:
            uids.extend(added)
    best = min(unseen) if unseen else 0
    if previous_first:
        at = bisect_left(uids, previous_first, key=uid_of)
        end = min(len(uids), at + MAX_FIRST_UNSEEN_SCAN)
        get = state.get
        for position in range(at, end):
            uid_ = uids[position][0]
            if best and uid_ >= best:
                break
            found = get(uid_)
            if found is not None and _SEEN not in found[0]:
                best = uid_
                break
        else:
            if end < len(uids):
                return None
    first_unseen = bisect_left(uids, best, key=uid_of) + 1 if best else 0
    keywords = frozenset(k for k in state.keywords_in_use() if not k.startswith("\\"))
    state.modseq = now
    return MailboxSnapshot(box, uids, keywords, first_unseen, now)


def canonical_mailbox_name(name: str) -> str:
    """Validate a mailbox name; INBOX is case-insensitive (RFC 9051 §5.1)."""
    if not name or len(name) > MAX_MAILBOX_NAME:
        raise InvalidMailboxName("mailbox name is empty or too long")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name) or "*" in name or "%" in name:
        raise InvalidMailboxName("mailbox name contains a forbidden character")
    levels = name.split(SEPARATOR)
    if any(level == "" for level in levels):
        raise InvalidMailboxName("mailbox name has an empty hierarchy level")
    if len(levels) > MAX_MAILBOX_DEPTH:
        raise InvalidMailboxName("mailbox hierarchy is too deep")
    if levels[0].upper() == "INBOX":
        levels[0] = "INBOX"
    return SEPARATOR.join(levels)


class MailCore:
    log = Logger()

    def __init__(
        self,
        metadata: IMetadataStore,
        blobs: IBlobStore,
        reactor: Any = None,
        threadpool: Any = None,
        clock: Callable[[], float] = time.time,
        cache_entries: int = 8192,
    ) -> None:
        """``cache_entries`` bounds the cache of parses and renderings (``mailserve.core.cache``);
        the decoded-record cache holds four times as many (records are small, and FETCH,
        SEARCH and SELECT walk whole mailboxes: 32k entries keep a 16k-message mailbox
        decoded, ~35 MB at most).  0 turns both off."""
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.metadata = metadata
        self.blobs = blobs
        self._reactor = reactor
        self._threadpool = threadpool
        self._clock = clock
        self._listeners: dict[int | None, list[Listener]] = {}
        #: Values derived from immutable blobs: parses, protocol renderings of them.
        self.blob_cache = BlobDerivedCache(cache_entries)
        self._record_cache = RecordCache(cache_entries * 4)
        # Mailbox snapshots by (account, mailbox): (validity, snapshot, its own flag index at
        # the snapshot's modseq); see mailbox_snapshot.
        self._snapshots: dict[tuple[int, int], tuple[tuple[int, int, int], MailboxSnapshot, MailboxFlagIndex]] = {}
        self._snapshot_budget = cache_entries * 32  # messages held in snapshots at most
        # Flag indexes by (account, mailbox), least recently used first; see flag_index.
        self._flag_indexes: dict[tuple[int, int], MailboxFlagIndex] = {}

    # -- threads -------------------------------------------------------------------
    def _in_thread(self, fn: Callable, *args: Any) -> Deferred:
        pool = self._threadpool or self._reactor.getThreadPool()
        return deferToThreadPool(self._reactor, pool, fn, *args)

    # -- change subscription ---------------------------------------------------------
    def subscribe(self, account: int | None, listener: Listener) -> Callable[[], None]:
        """Call ``listener(changes)`` after every commit for ``account`` (None: all accounts).

        Returns the function that unsubscribes.
        """
        self._listeners.setdefault(account, []).append(listener)

        def unsubscribe() -> None:
            listeners = self._listeners.get(account, [])
            if listener in listeners:
                listeners.remove(listener)

        return unsubscribe

    def _publish(self, changes: ChangeSet | None) -> None:
        if changes is None:
            return
        for key in (changes.account, None):
            for listener in list(self._listeners.get(key, ())):
                try:
                    listener(changes)
                except Exception:  # noqa: BLE001 - one broken session must not stop the others
                    self.log.failure("change listener failed", account=changes.account)

    @inlineCallbacks
    def _mutate(self, account: int, fn: Callable[[_Mutation], Any]):
        def transaction(txn: IWriteTransaction):
            mutation = _Mutation(txn, account)
            result = fn(mutation)
            return result, mutation.finish(), mutation.released_blobs

        result, changes, released = yield self.metadata.write(transaction)
        self._publish(changes)
        if released:
            self._in_thread(self._delete_blobs, released).addErrback(
                lambda f: self.log.failure("releasing blobs failed", f)
            )
        return result

    def _delete_blobs(self, blob_ids: list[str]) -> None:
        for blob_id in blob_ids:
            # A delivery may have re-referenced the content since the commit that freed it.
            if self.metadata.read(lambda txn, b=blob_id: txn.get(keys.blob_refs(b))) is None:
                self.blobs.delete(blob_id)

    # -- accounts --------------------------------------------------------------------
    def provision_account(
        self, txn: IWriteTransaction, account: int, quota_bytes: int = 0, quota_messages: int = 0
    ) -> None:
        """Create an account's mail state (special-use mailboxes) inside the caller's transaction.

        The directory calls this in the same transaction that creates the account, so an
        account never exists without its INBOX.
        """
        mutation = _Mutation(txn, account)
        for name, role in DEFAULT_MAILBOXES:
            if txn.get(keys.mailbox_name(account, name)) is None:
                self._create_mailbox_txn(mutation, name, role)
                txn.put(keys.subscription(account, name), b"")
        self._set_quota_txn(txn, account, quota_bytes, quota_messages)
        # Logged for replay; not published: nothing can be subscribed to a new account yet.
        mutation.finish()

    def remove_account(self, txn: IWriteTransaction, account: int) -> list[str]:
        """Delete every key of an account's mail; returns blobs whose last reference went."""
        released = []
        prefix = keys.account_prefix(account)
        doomed = [k for k, _ in txn.scan(prefix)]
        for key, value in txn.scan(keys.messages_prefix(account)):
            msg = Message.from_bytes(keys.U32.unpack_from(key, len(key) - 4)[0], value)
            if self._release_blob(txn, msg.blob_id):
                released.append(msg.blob_id)
        for key in doomed:
            txn.delete(key)
        return released

    def _set_quota_txn(self, txn: IWriteTransaction, account: int, nbytes: int, nmessages: int) -> None:
        for name, value in ((keys.QUOTA_BYTES_LIMIT, nbytes), (keys.QUOTA_MESSAGES_LIMIT, nmessages)):
            key = keys.counter(account, name)
            txn.incr(key, value - txn.counter(key))

    def set_quota(self, account: int, nbytes: int, nmessages: int = 0) -> Deferred:
        def fn(m: _Mutation) -> None:
            self._require_account(m.txn, account)
            self._set_quota_txn(m.txn, account, nbytes, nmessages)

        return self._mutate(account, fn)

    def get_quota(self, account: int) -> Quota:
        def fn(txn) -> Quota:
            c = lambda name: txn.counter(keys.counter(account, name))
            return Quota(
                c(keys.QUOTA_BYTES_USED),
                c(keys.QUOTA_BYTES_LIMIT),
                c(keys.QUOTA_MESSAGES_USED),
                c(keys.QUOTA_MESSAGES_LIMIT),
            )

        return self.metadata.read(fn)

    @staticmethod
    def _require_account(txn, account: int) -> None:
        if txn.get(keys.mailbox_name(account, "INBOX")) is None:
            raise NoSuchAccount(f"no such account: {account}")

    # -- mailboxes -------------------------------------------------------------------
    def list_mailboxes(self, account: int) -> list[Mailbox]:
        """Every mailbox of the account, ordered by name (parents before children)."""

        def fn(txn) -> list[Mailbox]:
            result = []
            for _, value in txn.scan(keys.mailbox_names_prefix(account)):
                mbox_id = keys.U32.unpack(value)[0]
                data = txn.get(keys.mailbox(account, mbox_id))
                if data is not None:
                    result.append(Mailbox.from_bytes(mbox_id, data))
            return result

        return self.metadata.read(fn)

    def get_mailbox(self, account: int, mailbox: int) -> Mailbox:
        data = self.metadata.read(lambda txn: txn.get(keys.mailbox(account, mailbox)))
        if data is None:
            raise NoSuchMailbox(f"no such mailbox: {mailbox}")
        return Mailbox.from_bytes(mailbox, data)

    def find_mailbox(self, account: int, name: str) -> Mailbox:
        """The mailbox called ``name``; ``NoSuchMailbox`` if there is none."""
        return self.metadata.read(lambda txn: self._find_mailbox_txn(txn, account, name))

    def mailbox_by_role(self, account: int, role: str) -> Mailbox | None:
        for mailbox in self.list_mailboxes(account):
            if mailbox.role == role:
                return mailbox
        return None

    @staticmethod
    def _find_mailbox_txn(txn, account: int, name: str) -> Mailbox:
        try:
            name = canonical_mailbox_name(name)
        except InvalidMailboxName:
            raise NoSuchMailbox(f"no such mailbox: {name}") from None
        value = txn.get(keys.mailbox_name(account, name))
        if value is None:
            raise NoSuchMailbox(f"no such mailbox: {name}")
        mbox_id = keys.U32.unpack(value)[0]
        return Mailbox.from_bytes(mbox_id, txn.get(keys.mailbox(account, mbox_id)))

    @staticmethod
    def _load_mailbox(txn, account: int, mailbox: int) -> Mailbox:
        data = txn.get(keys.mailbox(account, mailbox))
        if data is None:
            raise NoSuchMailbox(f"no such mailbox: {mailbox}")
        return Mailbox.from_bytes(mailbox, data)

    @staticmethod
    def _save_mailbox(m: _Mutation, mailbox: Mailbox) -> None:
        m.txn.put(keys.mailbox(m.account, mailbox.id), mailbox.to_bytes())

    def _create_mailbox_txn(self, m: _Mutation, name: str, role: str | None) -> Mailbox:
        txn = m.txn
        mbox_id = txn.incr(keys.counter(m.account, keys.NEXT_MAILBOX))
        # UIDVALIDITY must change if a name is reused (RFC 9051 §2.3.1.1): time-based, and
        # strictly increasing within the account even within one second.
        uv_key = keys.counter(m.account, b"uidvalidity")
        uidvalidity = max(int(self._clock()) & 0x7FFFFFFF, txn.counter(uv_key) + 1)
        txn.incr(uv_key, uidvalidity - txn.counter(uv_key))
        mailbox = Mailbox(mbox_id, name, role, uidvalidity, 1, m.modseq, created_modseq=m.modseq)
        self._save_mailbox(m, mailbox)
        txn.put(keys.mailbox_name(m.account, name), keys.U32.pack(mbox_id))
        m.record(ChangeKind.MAILBOX_CREATED, mailbox=mbox_id)
        return mailbox

    def create_mailbox(self, account: int, name: str, role: str | None = None) -> Deferred:
        """Create ``name`` and any missing parents (RFC 9051 §6.3.4); fires with the Mailbox."""

        def fn(m: _Mutation) -> Mailbox:
            name_ = canonical_mailbox_name(name)
            self._require_account(m.txn, account)
            if m.txn.get(keys.mailbox_name(account, name_)) is not None:
                raise MailboxExists(f"mailbox already exists: {name_}")
            if role is not None:
                for existing in self._all_mailboxes_txn(m.txn, account):
                    if existing.role == role:
                        raise MailboxExists(f"a mailbox with role {role} exists: {existing.name}")
            levels = name_.split(SEPARATOR)
            for depth in range(1, len(levels)):
                parent = SEPARATOR.join(levels[:depth])
                if m.txn.get(keys.mailbox_name(account, parent)) is None:
                    self._create_mailbox_txn(m, parent, None)
            return self._create_mailbox_txn(m, name_, role)

        return self._mutate(account, fn)

    def _all_mailboxes_txn(self, txn, account: int) -> list[Mailbox]:
        return [Mailbox.from_bytes(keys.U32.unpack_from(k, len(k) - 4)[0], v)
                for k, v in txn.scan(keys.mailboxes_prefix(account))]

    def rename_mailbox(self, account: int, old: str, new: str) -> Deferred:
        """Rename a mailbox and its children (RFC 9051 §6.3.6).

        Renaming INBOX moves its messages into a new mailbox and leaves INBOX empty.
        """
        def fn(m: _Mutation) -> Mailbox:
            new_ = canonical_mailbox_name(new)
            txn = m.txn
            source = self._find_mailbox_txn(txn, account, old)
            if txn.get(keys.mailbox_name(account, new_)) is not None:
                raise MailboxExists(f"mailbox already exists: {new_}")
            # INBOX's children stay where they are (RFC 3501 §6.3.5), so INBOX may be
            # renamed to one of them; any other mailbox cannot move below itself.
            if source.name != "INBOX" and new_.startswith(source.name + SEPARATOR):
                raise InvalidMailboxName("cannot rename a mailbox into itself")
            levels = new_.split(SEPARATOR)
            for depth in range(1, len(levels)):
                parent = SEPARATOR.join(levels[:depth])
                if txn.get(keys.mailbox_name(account, parent)) is None:
                    self._create_mailbox_txn(m, parent, None)
            if source.name == "INBOX":
                target = self._create_mailbox_txn(m, new_, None)
                uids = [keys.uid_from_key(k) for k, _ in txn.scan(keys.uids_prefix(account, source.id))]
                self._move_txn(m, source.id, uids, target.id)
                return self._load_mailbox(txn, account, target.id)
            renamed = None
            prefix = source.name + SEPARATOR
            for mailbox in self._all_mailboxes_txn(txn, account):
                if mailbox.name == source.name or mailbox.name.startswith(prefix):
                    new_name = new_ + mailbox.name[len(source.name):]
                    txn.delete(keys.mailbox_name(account, mailbox.name))
                    txn.put(keys.mailbox_name(account, new_name), keys.U32.pack(mailbox.id))
                    if txn.get(keys.subscription(account, mailbox.name)) is not None:
                        txn.delete(keys.subscription(account, mailbox.name))
                        txn.put(keys.subscription(account, new_name), b"")
                    updated = replace(mailbox, name=new_name, highest_modseq=m.modseq)
                    self._save_mailbox(m, updated)
                    m.record(ChangeKind.MAILBOX_UPDATED, mailbox=mailbox.id)
                    if mailbox.id == source.id:
                        renamed = updated
            return renamed

        return self._mutate(account, fn)

    def delete_mailbox(self, account: int, name: str) -> Deferred:
        """Delete a mailbox and expunge its messages (RFC 9051 §6.3.5).

        Like Dovecot, a mailbox with children must have them deleted first, and INBOX
        cannot be deleted.
        """

        def fn(m: _Mutation) -> None:
            txn = m.txn
            mailbox = self._find_mailbox_txn(txn, account, name)
            if mailbox.name == "INBOX":
                raise MailboxNotDeletable("INBOX cannot be deleted")
            for _ in txn.scan(keys.mailbox_name(account, mailbox.name + SEPARATOR)):
                raise MailboxHasChildren(f"mailbox has children: {mailbox.name}")
            for key, value in list(txn.scan(keys.uids_prefix(account, mailbox.id))):
                self._remove_membership(m, keys.U32.unpack(value)[0], mailbox.id, keys.uid_from_key(key),
                                        update_counts=False)
            txn.delete(keys.mailbox(account, mailbox.id))
            txn.delete(keys.mailbox_name(account, mailbox.name))
            m.record(ChangeKind.MAILBOX_DESTROYED, mailbox=mailbox.id)

        return self._mutate(account, fn)

    def set_subscribed(self, account: int, name: str, subscribed: bool) -> Deferred:
        def fn(m: _Mutation) -> None:
            key = keys.subscription(account, canonical_mailbox_name(name))
            if subscribed:
                m.txn.put(key, b"")
            else:
                m.txn.delete(key)

        return self._mutate(account, fn)

    def subscriptions(self, account: int) -> list[str]:
        prefix = keys.subscriptions_prefix(account)
        return self.metadata.read(
            lambda txn: [k[len(prefix):].decode("utf-8") for k, _ in txn.scan(prefix)]
        )

    # -- reading messages ---------------------------------------------------------------
    def mailbox_uids(self, account: int, mailbox: int) -> list[tuple[int, int]]:
        """``(uid, message id)`` of every message in the mailbox, in UID order."""
        prefix = keys.uids_prefix(account, mailbox)

        def fn(txn) -> list[tuple[int, int]]:
            unpack = keys.U32.unpack
            return [(keys.uid_from_key(k), unpack(v)[0]) for k, v in txn.scan(prefix)]

        return self.metadata.read(fn)

    def mailbox_snapshot(self, account: int, mailbox: int) -> Deferred:
        """A ``MailboxSnapshot`` of the mailbox (fires ``NoSuchMailbox`` if there is none).

        Building one reads every message record, so it runs in a worker thread and is kept:
        while the mailbox's ``highest_modseq`` (bumped by every change to its messages or
        their flags, the CONDSTORE rule of RFC 7162 §3.1.1) and ``uidnext`` are unchanged,
        the kept snapshot is still exact and re-opening the mailbox costs one record read,
        as Dovecot's index makes it.  When the mailbox did change, the kept snapshot is
        brought up to date from the change log, as the flag index is (``flag_index``): the
        log after the snapshot's modseq and the records it names are read in one
        transaction -- on the reactor for a short stretch, in a worker thread for a longer
        one -- and only when the log is longer than a rebuild costs is the snapshot built
        again.  Snapshots are kept up to a total number of messages.
        """
        from twisted.internet.defer import fail, succeed

        key = (account, mailbox)

        def current(txn) -> tuple[Mailbox, int]:
            data = txn.get(keys.mailbox(account, mailbox))
            if data is None:
                raise NoSuchMailbox(f"no such mailbox: {mailbox}")
            return Mailbox.from_bytes(mailbox, data), txn.counter(keys.counter(account, keys.MODSEQ))

        try:
            record, modseq = self.metadata.read(current)
        except NoSuchMailbox:
            self._snapshots.pop(key, None)
            return fail()
        kept = self._snapshots.get(key)
        if kept is not None and kept[0] == (record.highest_modseq, record.uidnext, record.messages):
            # Unchanged as of ``modseq`` (a flag change through any mailbox bumps the
            # highest_modseq of every mailbox holding the message): a later replay may
            # start there, skipping what other mailboxes logged meanwhile.
            kept[2].modseq = max(kept[2].modseq, modseq)
            return succeed(replace(kept[1], mailbox=record, modseq=modseq))
        if kept is not None:
            return self._replay_snapshot(account, mailbox, kept)
        return self._build_snapshot(account, mailbox)

    def _records_in_uid_order(self, txn, account: int, mailbox: int) -> Iterator[tuple[int, int, Message | None]]:
        """``(uid, message id, record)`` of every message of a mailbox in UID order, records
        decoded through the record cache (None where a record is missing)."""
        unpack_u32 = keys.U32.unpack
        prefix = keys.message(account, 0)[:-4]
        decode, from_bytes, get = self._record_cache.decode, Message.from_bytes, txn.get
        for k, v in txn.scan(keys.uids_prefix(account, mailbox)):
            msgid = unpack_u32(v)[0]
            data = get(prefix + v)
            yield keys.uid_from_key(k), msgid, (decode(msgid, data, from_bytes) if data is not None else None)

    def _build_snapshot(self, account: int, mailbox: int) -> Deferred:
        """Build the snapshot (and the flag index) from every record, in a worker thread."""
        key = (account, mailbox)

        def build() -> tuple[MailboxSnapshot, MailboxFlagIndex, MailboxFlagIndex]:
            def fn(txn) -> tuple[MailboxSnapshot, MailboxFlagIndex, MailboxFlagIndex]:
                data = txn.get(keys.mailbox(account, mailbox))
                if data is None:
                    raise NoSuchMailbox(f"no such mailbox: {mailbox}")
                box = Mailbox.from_bytes(mailbox, data)
                at = txn.counter(keys.counter(account, keys.MODSEQ))
                uids: list[tuple[int, int]] = []
                found: set[str] = set()
                first_unseen = 0
                index = MailboxFlagIndex(account, mailbox, at)
                for uid_, msgid, message in self._records_in_uid_order(txn, account, mailbox):
                    uids.append((uid_, msgid))
                    if message is None:
                        continue
                    found.update(message.keywords)
                    index.set(uid_, message.keywords, message.modseq)
                    if not first_unseen and not message.seen:
                        first_unseen = len(uids)
                keywords = frozenset(k for k in found if not k.startswith("\\"))
                return MailboxSnapshot(box, uids, keywords, first_unseen, at), index, index.copy()

            return self.metadata.read(fn)

        def keep(built: tuple[MailboxSnapshot, MailboxFlagIndex, MailboxFlagIndex]) -> MailboxSnapshot:
            snapshot, index, own = built
            self._keep_flag_index(index)
            self._keep_snapshot(key, snapshot, own)
            return snapshot

        def gone(failure):
            failure.trap(NoSuchMailbox)
            self._snapshots.pop(key, None)
            return failure

        return self._in_thread(build).addCallbacks(keep, gone)

    def _keep_snapshot(self, key: tuple[int, int], snapshot: MailboxSnapshot, state: MailboxFlagIndex) -> None:
        """Keep ``snapshot`` with its own flag index at its modseq (what a replay updates),
        within the message budget, least recently used out first."""
        box = snapshot.mailbox
        self._keep_within_budget(self._snapshots, key, ((box.highest_modseq, box.uidnext, box.messages), snapshot, state),
                                 lambda kept: len(kept[1].uids))

    def _keep_within_budget(self, kept: dict, key: tuple[int, int], value: Any, size: Callable[[Any], int]) -> None:
        """Keep ``value`` under ``key`` (most recently used last) while the ``size`` of all that
        ``kept`` holds stays within the message budget; least recently used out first."""
        kept.pop(key, None)
        if size(value) > self._snapshot_budget:
            return
        kept[key] = value
        total = sum(size(v) for v in kept.values())
        while total > self._snapshot_budget:
            total -= size(kept.pop(next(iter(kept))))

    def _replay_snapshot(self, account: int, mailbox: int, kept: tuple) -> Deferred:
        """Bring a kept snapshot to the committed state from the change log (see
        ``mailbox_snapshot``); rebuild it when that would cost more than a build."""
        from twisted.internet.defer import fail, succeed

        key = (account, mailbox)
        _, snapshot, state = kept
        start = state.modseq

        def reader(limit: int) -> Callable:
            replay = self._flag_replay_reader(state, limit)

            def fn(txn):
                data = txn.get(keys.mailbox(account, mailbox))
                if data is None:
                    raise NoSuchMailbox(f"no such mailbox: {mailbox}")
                read = replay(txn)
                return None if read is None else (Mailbox.from_bytes(mailbox, data), read)

            return fn

        def apply(read) -> Deferred:
            box, (now, replay, records) = read
            advanced = _advance_snapshot(snapshot, state, box, now, replay, records)
            if advanced is None:  # the first unseen message moved far: cheaper to rebuild
                self._snapshots.pop(key, None)
                return self._build_snapshot(account, mailbox)
            self._keep_snapshot(key, advanced, state)
            return succeed(advanced)

        try:
            read = self.metadata.read(reader(MAX_FLAG_REPLAY_ON_REACTOR))
        except NoSuchMailbox:
            self._snapshots.pop(key, None)
            return fail()
        if read is not None:
            return apply(read)
        limit = max(MAX_FLAG_REPLAY_ENTRIES, len(state) // 4)

        def replayed(read):
            current = self._snapshots.get(key)
            if current is None or current[2] is not state or state.modseq != start:
                return self.mailbox_snapshot(account, mailbox)  # replaced or advanced meanwhile
            if read is None:  # further behind than a rebuild costs
                self._snapshots.pop(key, None)
                return self._build_snapshot(account, mailbox)
            return apply(read)

        def gone(failure):
            failure.trap(NoSuchMailbox)
            self._snapshots.pop(key, None)
            return failure

        return self._in_thread(self.metadata.read, reader(limit)).addCallbacks(replayed, gone)

    def flag_index(self, account: int, mailbox: int) -> Deferred:
        """The mailbox's ``MailboxFlagIndex``, exact as of now (fires ``NoSuchMailbox`` if none).

        What a flag resync FETCH reads instead of every message record (RFC 9051 §6.4.5 FLAGS
        and UID, RFC 7162 §3.1.4 MODSEQ and CHANGEDSINCE).  A kept index is brought up to
        date from the change log before it is handed out -- nothing to do when the account's
        modseq has not moved -- so a change committed by another session or another process
        is seen by the next FETCH.  A short stretch of log is replayed on the calling
        (reactor) thread, a longer one read in a worker thread; an index missing, or behind
        by more than a rebuild costs, is built in a worker thread from the records.  With
        caching off (``cache_entries=0``) this fires None and the caller reads records.
        """
        from twisted.internet.defer import fail, succeed

        if self._snapshot_budget <= 0:
            return succeed(None)
        key = (account, mailbox)
        index = self._flag_indexes.get(key)
        if index is None:
            return self._build_flag_index(account, mailbox)
        start = index.modseq
        try:
            read = self.metadata.read(self._flag_replay_reader(index, MAX_FLAG_REPLAY_ON_REACTOR))
        except NoSuchMailbox:
            self._flag_indexes.pop(key, None)
            return fail()
        if read is not None:
            self._apply_flag_replay(index, *read)
            self._flag_indexes[key] = self._flag_indexes.pop(key)  # most recently used
            return succeed(index)
        limit = max(MAX_FLAG_REPLAY_ENTRIES, len(index) // 4)

        def replayed(read):
            if read is None:  # further behind than a rebuild costs
                self._flag_indexes.pop(key, None)
                return self._build_flag_index(account, mailbox)
            if index.modseq != start or self._flag_indexes.get(key) is not index:
                return self.flag_index(account, mailbox)  # refreshed or replaced meanwhile
            self._apply_flag_replay(index, *read)
            return index

        def gone(failure):
            failure.trap(NoSuchMailbox)
            self._flag_indexes.pop(key, None)
            return failure

        return self._in_thread(self.metadata.read, self._flag_replay_reader(index, limit)).addCallbacks(
            replayed, gone)

    def _build_flag_index(self, account: int, mailbox: int) -> Deferred:
        """Build the index from the records in a worker thread, then replay what was
        committed meanwhile (on the reactor) and keep it."""

        def build() -> MailboxFlagIndex:
            def fn(txn) -> MailboxFlagIndex:
                if txn.get(keys.mailbox(account, mailbox)) is None:
                    raise NoSuchMailbox(f"no such mailbox: {mailbox}")
                built = MailboxFlagIndex(account, mailbox, txn.counter(keys.counter(account, keys.MODSEQ)))
                for uid_, _msgid, message in self._records_in_uid_order(txn, account, mailbox):
                    if message is not None:
                        built.set(uid_, message.keywords, message.modseq)
                return built

            return self.metadata.read(fn)

        def keep(built: MailboxFlagIndex) -> MailboxFlagIndex | None:
            read = self.metadata.read(self._flag_replay_reader(built, MAX_FLAG_REPLAY_ON_REACTOR))
            if read is None:
                return None  # a burst of writes outran the build: this caller reads records
            self._apply_flag_replay(built, *read)
            self._keep_flag_index(built)
            return built

        return self._in_thread(build).addCallback(keep)

    def _flag_replay_reader(self, index: MailboxFlagIndex, limit: int) -> Callable:
        """A read-transaction function: what brings ``index`` to the committed state.

        The account modseq, the change sets after the index's modseq and the records they
        name are read in one transaction, so the result is one committed state.  The change
        log is written in the transaction of every mutation (``_Mutation.finish``), which is
        what makes the replay exact.  The function returns ``(now, replay, records)``
        (``replay`` None when nothing changed), or None when the log holds more than
        ``limit`` entries since the index's modseq, or the account's modseq went back (the
        account was removed): then the index must be rebuilt.  It raises ``NoSuchMailbox``
        when the mailbox is gone.  It only reads, so it may run in a worker thread.
        """
        account, mailbox, since = index.account, index.mailbox, index.modseq
        prefix = keys.message(account, 0)[:-4]
        decode, from_bytes = self._record_cache.decode, Message.from_bytes

        def fn(txn):
            now = txn.counter(keys.counter(account, keys.MODSEQ))
            if now == since:
                return now, None, ()
            if now < since:
                return None
            replay = Replay()
            start = keys.change(account, since + 1)
            end = keys.change(account, now) + b"\xff"
            for k, v in txn.scan(start, end):
                replay.note(mailbox, ChangeSet.from_bytes(account, keys.modseq_from_change_key(k), v))
                if replay.entries > limit:
                    return None
            if replay.mailbox_gone or txn.get(keys.mailbox(account, mailbox)) is None:
                raise NoSuchMailbox(f"no such mailbox: {mailbox}")
            get, pack_id = txn.get, keys.U32.pack
            records = []
            for msgid in replay.touched:
                data = get(prefix + pack_id(msgid))
                records.append((msgid, decode(msgid, data, from_bytes) if data is not None else None))
            return now, replay, records

        return fn

    @staticmethod
    def _apply_flag_replay(index: MailboxFlagIndex, now: int, replay: Replay | None, records) -> None:
        """Apply what ``_flag_replay_reader`` read (on the reactor: the index is only ever
        changed there)."""
        if replay is not None:
            for uid_ in replay.removed:
                index.discard(uid_)
            for uid_, keywords, modseq in replay_updates(index.mailbox, replay, records):
                index.set(uid_, keywords, modseq)
        index.modseq = now

    def _keep_flag_index(self, index: MailboxFlagIndex) -> None:
        """Keep ``index``, within the same message budget as the snapshots, oldest out first."""
        self._keep_within_budget(self._flag_indexes, (index.account, index.mailbox), index, len)

    def get_messages(self, account: int, message_ids: Iterable[int]) -> list[Message | None]:
        """The records of ``message_ids`` (None where there is none), in one read transaction.

        Records whose stored bytes were decoded before come from the record cache, so a
        SEARCH or FETCH over a mailbox that did not change costs one key lookup per message.
        """
        prefix = keys.message(account, 0)[:-4]
        pack_id = keys.U32.pack
        decode = self._record_cache.decode
        from_bytes = Message.from_bytes

        def fn(txn) -> list[Message | None]:
            get = txn.get
            out: list[Message | None] = []
            append = out.append
            for msgid in message_ids:
                data = get(prefix + pack_id(msgid))
                append(decode(msgid, data, from_bytes) if data is not None else None)
            return out

        return self.metadata.read(fn)

    def get_message(self, account: int, message_id: int) -> Message | None:
        return self.get_messages(account, [message_id])[0]

    def all_messages(self, account: int) -> list[Message]:
        def fn(txn) -> list[Message]:
            return [Message.from_bytes(keys.U32.unpack_from(k, len(k) - 4)[0], v)
                    for k, v in txn.scan(keys.messages_prefix(account))]

        return self.metadata.read(fn)

    def get_parsed(self, blob_id: str) -> ParsedMessage:
        """The structure parsed at ingest (envelope, body structure, header block, preview).

        Raises ``KeyError`` when the blob has no parse record (no message holds it).
        """
        parsed = self.blob_cache.get("parsed", blob_id)
        if parsed is None:
            parsed = self.get_parsed_many([blob_id])[0]
            if parsed is None:
                raise KeyError(blob_id)
        return parsed

    def get_parsed_many(self, blob_ids: Sequence[str]) -> list[ParsedMessage | None]:
        """The parses of ``blob_ids`` (None where there is none); what is not cached yet
        is read in one read transaction rather than one per message."""
        cache = self.blob_cache
        out: list[ParsedMessage | None] = [cache.get("parsed", b) for b in blob_ids]
        missing = [i for i, p in enumerate(out) if p is None]
        if missing:
            def fn(txn) -> list[bytes | None]:
                return [txn.get(keys.parsed(blob_ids[i])) for i in missing]

            for i, data in zip(missing, self.metadata.read(fn), strict=True):
                if data is not None:
                    parsed = ParsedMessage.from_wire(unpack(data))
                    cache.put("parsed", blob_ids[i], parsed)
                    out[i] = parsed
        return out

    def derived(self, kind: Any, blob_id: str, compute: Callable[[ParsedMessage], Any]) -> Any:
        """``compute(parse)`` for a blob, computed once and kept in the blob cache.

        For renderings that depend only on the message bytes (an IMAP ENVELOPE, the header
        fields SEARCH compares): blobs are content-addressed, so the result never goes
        stale.  ``kind`` names the rendering and must say everything else it depends on.
        Raises ``KeyError`` like ``get_parsed``.
        """
        return self.blob_cache.derive(kind, blob_id, lambda: compute(self.get_parsed(blob_id)))

    def read_blob(self, blob_id: str, offset: int = 0, length: int | None = None) -> Deferred:
        """Bytes of a message, read off the reactor thread."""
        if length is None:
            return self._in_thread(self.blobs.get, blob_id)
        return self._in_thread(self.blobs.read, blob_id, offset, length)

    # -- change log ----------------------------------------------------------------------
    def highest_modseq(self, account: int) -> int:
        return self.metadata.read(lambda txn: txn.counter(keys.counter(account, keys.MODSEQ)))

    def changes_since(self, account: int, modseq: int, limit: int | None = None) -> list[ChangeSet]:
        """Every change set committed after ``modseq``, oldest first."""
        start = keys.change(account, modseq + 1)
        end = keys.change(account, (1 << 64) - 1) + b"\xff"

        def fn(txn) -> list[ChangeSet]:
            out = []
            for key, value in txn.scan(start, end):
                out.append(ChangeSet.from_bytes(account, keys.modseq_from_change_key(key), value))
                if limit is not None and len(out) >= limit:
                    break
            return out

        return self.metadata.read(fn)

    # -- adding messages -------------------------------------------------------------------
    def ingest(self, raw: bytes) -> Deferred:
        """Parse ``raw`` and make its bytes durable; fires with an ``Ingested``.

        Done once per message however many recipients or mailboxes it goes to.
        """

        def work() -> Ingested:
            parsed = parse_message(raw)
            blob_id = self.blobs.put(raw)
            return Ingested(blob_id, len(raw), parsed, pack(parsed.to_wire()))

        return self._in_thread(work)

    def append(
        self,
        account: int,
        mailbox: int,
        raw: bytes,
        keywords: Iterable[str] = (),
        internal_date: int | None = None,
    ) -> Deferred:
        """Store a message in a mailbox; fires with ``AppendResult`` once it is durable."""
        d = self.ingest(raw)
        d.addCallback(lambda ing: self.append_ingested(account, mailbox, ing, keywords, internal_date))
        return d

    def append_ingested(
        self,
        account: int,
        mailbox: int,
        ingested: Ingested,
        keywords: Iterable[str] = (),
        internal_date: int | None = None,
    ) -> Deferred:
        keywords = normalise_flags(keywords)
        if internal_date is None:
            internal_date = int(self._clock())
        parsed_bytes = ingested.parsed_bytes or pack(ingested.parsed.to_wire())

        def fn(m: _Mutation) -> AppendResult:
            target = self._load_mailbox(m.txn, account, mailbox)
            self._charge_quota(m.txn, account, ingested.size)
            txn = m.txn
            if self._acquire_blob(txn, ingested.blob_id):
                txn.put(keys.parsed(ingested.blob_id), parsed_bytes)
            msgid = txn.incr(keys.counter(account, keys.NEXT_MESSAGE))
            thread_id = self._thread_for(txn, account, ingested.parsed)
            message = Message(
                msgid,
                ingested.blob_id,
                ingested.size,
                internal_date,
                keywords,
                thread_id,
                {},
                m.modseq,
                m.modseq,
            )
            uid = self._add_membership(m, message, target)
            return AppendResult(msgid, mailbox, uid, target.uidvalidity, m.modseq)

        return self._mutate(account, fn)

    def _charge_quota(self, txn: IWriteTransaction, account: int, size: int, count: int = 1) -> None:
        """Quota is checked in the transaction that adds, so concurrent deliveries cannot overrun it."""
        self._require_account(txn, account)
        limit = txn.counter(keys.counter(account, keys.QUOTA_BYTES_LIMIT))
        used = txn.counter(keys.counter(account, keys.QUOTA_BYTES_USED))
        if limit and used + size > limit:
            raise QuotaExceeded(f"quota exceeded: {used + size} of {limit} bytes")
        mlimit = txn.counter(keys.counter(account, keys.QUOTA_MESSAGES_LIMIT))
        mused = txn.counter(keys.counter(account, keys.QUOTA_MESSAGES_USED))
        if mlimit and mused + count > mlimit:
            raise QuotaExceeded(f"quota exceeded: {mused + count} of {mlimit} messages")
        txn.incr(keys.counter(account, keys.QUOTA_BYTES_USED), size)
        txn.incr(keys.counter(account, keys.QUOTA_MESSAGES_USED), count)

    @staticmethod
    def _acquire_blob(txn: IWriteTransaction, blob_id: str) -> bool:
        """Count one more reference; True when it is the first (the parse must be stored)."""
        return txn.incr(keys.blob_refs(blob_id)) == 1

    @staticmethod
    def _release_blob(txn: IWriteTransaction, blob_id: str) -> bool:
        """Drop a reference; True when it was the last (the bytes may be deleted after commit)."""
        if txn.incr(keys.blob_refs(blob_id), -1) <= 0:
            txn.delete(keys.blob_refs(blob_id))
            txn.delete(keys.parsed(blob_id))
            return True
        return False

    @staticmethod
    def _thread_for(txn: IWriteTransaction, account: int, parsed: ParsedMessage) -> int:
        """Join the conversation of any message this one refers to (or that referred to it)."""
        ids = [i for i in (*parsed.references, *parsed.in_reply_to, parsed.message_id) if i]
        found = None
        for message_id in ids:
            value = txn.get(keys.thread(account, message_id))
            if value is not None:
                found = keys.U32.unpack(value)[0]
                break
        if found is None:
            found = txn.incr(keys.counter(account, keys.NEXT_THREAD))
        packed = keys.U32.pack(found)
        for message_id in ids:
            key = keys.thread(account, message_id)
            if txn.get(key) is None:
                txn.put(key, packed)
        return found

    def _add_membership(self, m: _Mutation, message: Message, mailbox: Mailbox) -> int:
        """Put ``message`` into ``mailbox`` with the next UID; writes message and mailbox."""
        uid = mailbox.uidnext
        boxes = dict(message.mailboxes)
        boxes[mailbox.id] = uid
        message = replace(message, mailboxes=boxes, modseq=m.modseq)
        m.txn.put(keys.message(m.account, message.id), message.to_bytes())
        m.txn.put(keys.uid(m.account, mailbox.id, uid), keys.U32.pack(message.id))
        updated = replace(mailbox, uidnext=uid + 1).counted(
            1, 0 if message.seen else 1, 1 if message.deleted else 0, message.size, m.modseq
        )
        self._save_mailbox(m, updated)
        m.record(ChangeKind.MESSAGE_ADDED, message.id, mailbox.id, uid)
        return uid

    def _remove_membership(
        self, m: _Mutation, msgid: int, mailbox_id: int, uid: int, update_counts: bool = True
    ) -> Message | None:
        """Take a message out of a mailbox; destroys it when it was in no other."""
        txn = m.txn
        data = txn.get(keys.message(m.account, msgid))
        txn.delete(keys.uid(m.account, mailbox_id, uid))
        if data is None:
            return None
        message = Message.from_bytes(msgid, data)
        boxes = dict(message.mailboxes)
        boxes.pop(mailbox_id, None)
        if update_counts:
            mailbox = self._load_mailbox(txn, m.account, mailbox_id)
            self._save_mailbox(
                m,
                mailbox.counted(
                    -1, 0 if message.seen else -1, -1 if message.deleted else 0, -message.size, m.modseq
                ),
            )
        m.record(ChangeKind.MESSAGE_REMOVED, msgid, mailbox_id, uid)
        if boxes:
            message = replace(message, mailboxes=boxes, modseq=m.modseq)
            txn.put(keys.message(m.account, msgid), message.to_bytes())
            return message
        txn.delete(keys.message(m.account, msgid))
        txn.incr(keys.counter(m.account, keys.QUOTA_BYTES_USED), -message.size)
        txn.incr(keys.counter(m.account, keys.QUOTA_MESSAGES_USED), -1)
        if self._release_blob(txn, message.blob_id):
            m.released_blobs.append(message.blob_id)
        m.record(ChangeKind.MESSAGE_DESTROYED, msgid)
        return None

    # -- copy, move, flags, expunge -------------------------------------------------------------
    def _messages_by_uid(self, txn, account: int, mailbox: int, uids: Sequence[int]):
        for uid_ in sorted(set(uids)):
            value = txn.get(keys.uid(account, mailbox, uid_))
            if value is None:
                continue
            msgid = keys.U32.unpack(value)[0]
            data = txn.get(keys.message(account, msgid))
            if data is not None:
                yield uid_, Message.from_bytes(msgid, data)

    def copy(self, account: int, source: int, uids: Sequence[int], target: int) -> Deferred:
        """Copy messages; the copies share the bytes (RFC 9051 §6.4.7, RFC 4315 COPYUID).

        Fires with ``(uidvalidity, [(source uid, target uid), ...])``.  All or nothing,
        quota included.
        """

        def fn(m: _Mutation):
            txn = m.txn
            self._load_mailbox(txn, account, source)
            dest = self._load_mailbox(txn, account, target)
            pairs = []
            for uid_, message in list(self._messages_by_uid(txn, account, source, uids)):
                self._charge_quota(txn, account, message.size)
                self._acquire_blob(txn, message.blob_id)
                msgid = txn.incr(keys.counter(account, keys.NEXT_MESSAGE))
                copy = replace(message, id=msgid, mailboxes={}, created_modseq=m.modseq)
                new_uid = self._add_membership(m, copy, dest)
                dest = self._load_mailbox(txn, account, target)
                pairs.append((uid_, new_uid))
            return dest.uidvalidity, pairs

        return self._mutate(account, fn)

    def move(self, account: int, source: int, uids: Sequence[int], target: int) -> Deferred:
        """Move messages atomically (RFC 6851); fires like ``copy``."""

        def fn(m: _Mutation):
            self._load_mailbox(m.txn, account, source)
            dest = self._load_mailbox(m.txn, account, target)
            return dest.uidvalidity, self._move_txn(m, source, uids, target)

        return self._mutate(account, fn)

    def _move_txn(self, m: _Mutation, source: int, uids: Sequence[int], target: int):
        pairs = []
        if source == target:
            return pairs
        for uid_, message in list(self._messages_by_uid(m.txn, m.account, source, uids)):
            src = self._load_mailbox(m.txn, m.account, source)
            self._save_mailbox(
                m,
                src.counted(-1, 0 if message.seen else -1, -1 if message.deleted else 0, -message.size, m.modseq),
            )
            m.txn.delete(keys.uid(m.account, source, uid_))
            m.record(ChangeKind.MESSAGE_REMOVED, message.id, source, uid_)
            boxes = dict(message.mailboxes)
            boxes.pop(source, None)
            dest = self._load_mailbox(m.txn, m.account, target)
            new_uid = self._add_membership(m, replace(message, mailboxes=boxes), dest)
            pairs.append((uid_, new_uid))
        return pairs

    def store_flags(
        self,
        account: int,
        mailbox: int,
        uids: Sequence[int],
        operation: str,
        flags: Iterable[str],
        unchanged_since: int | None = None,
    ) -> Deferred:
        """Change flags (RFC 9051 §6.4.6), optionally only where unchanged (RFC 7162 §3.1.3).

        Fires with ``(results, failed)``: ``results`` maps each matched UID to its
        ``(keywords, modseq)`` after the store; ``failed`` lists UIDs whose modseq was above
        ``unchanged_since`` and so were left alone.
        """
        flags = normalise_flags(flags)
        if operation not in (FLAGS_SET, FLAGS_ADD, FLAGS_REMOVE):
            raise ValueError(operation)

        def fn(m: _Mutation):
            txn = m.txn
            self._load_mailbox(txn, account, mailbox)
            results: dict[int, tuple[frozenset[str], int]] = {}
            failed: list[int] = []
            deltas: dict[int, list[int]] = {}
            for uid_, message in list(self._messages_by_uid(txn, account, mailbox, uids)):
                if unchanged_since is not None and message.modseq > unchanged_since:
                    failed.append(uid_)
                    continue
                if operation == FLAGS_SET:
                    new = flags
                elif operation == FLAGS_ADD:
                    new = message.keywords | flags
                else:
                    new = message.keywords - flags
                if new == message.keywords:
                    results[uid_] = (new, message.modseq)
                    continue
                updated = replace(message, keywords=new, modseq=m.modseq)
                txn.put(keys.message(account, message.id), updated.to_bytes())
                unseen_delta = (0 if updated.seen else 1) - (0 if message.seen else 1)
                deleted_delta = (1 if updated.deleted else 0) - (1 if message.deleted else 0)
                for box, box_uid in updated.mailboxes.items():
                    d = deltas.setdefault(box, [0, 0])
                    d[0] += unseen_delta
                    d[1] += deleted_delta
                    m.record(ChangeKind.FLAGS_CHANGED, message.id, box, box_uid)
                results[uid_] = (new, m.modseq)
            for box, (unseen_delta, deleted_delta) in deltas.items():
                current = self._load_mailbox(txn, account, box)
                self._save_mailbox(m, current.counted(0, unseen_delta, deleted_delta, 0, m.modseq))
            return results, failed

        return self._mutate(account, fn)

    def expunge(self, account: int, mailbox: int, uids: Sequence[int] | None = None) -> Deferred:
        """Remove the messages flagged ``\\Deleted`` (only those in ``uids`` if given).

        Fires with the expunged UIDs in ascending order (RFC 9051 §6.4.3, RFC 4315 UID EXPUNGE).
        """

        def fn(m: _Mutation) -> list[int]:
            txn = m.txn
            self._load_mailbox(txn, account, mailbox)
            if uids is None:
                candidates = [(keys.uid_from_key(k), keys.U32.unpack(v)[0])
                              for k, v in txn.scan(keys.uids_prefix(account, mailbox))]
                chosen = [(u, Message.from_bytes(i, txn.get(keys.message(account, i))))
                          for u, i in candidates]
            else:
                chosen = list(self._messages_by_uid(txn, account, mailbox, uids))
            expunged = []
            for uid_, message in chosen:
                if message.deleted:
                    self._remove_membership(m, message.id, mailbox, uid_)
                    expunged.append(uid_)
            return expunged

        return self._mutate(account, fn)

    def remove_messages(self, account: int, mailbox: int, uids: Sequence[int]) -> Deferred:
        """Remove messages regardless of flags (POP3 DELE at QUIT, JMAP destroy)."""

        def fn(m: _Mutation) -> list[int]:
            self._load_mailbox(m.txn, account, mailbox)
            removed = []
            for uid_, message in list(self._messages_by_uid(m.txn, account, mailbox, uids)):
                self._remove_membership(m, message.id, mailbox, uid_)
                removed.append(uid_)
            return removed

        return self._mutate(account, fn)

    # -- maintenance ------------------------------------------------------------------------
    def collect_garbage(self, min_age: float = 3600.0) -> Deferred:
        """Delete blobs no message references (left by a crash between blob write and commit).

        Only blobs older than ``min_age`` seconds go, so a delivery in flight keeps its bytes.
        """

        def work() -> int:
            import os

            removed = 0
            now = time.time()
            for blob_id in list(self.blobs.ids()):
                refs = self.metadata.read(lambda txn, b=blob_id: txn.get(keys.blob_refs(b)))
                if refs is not None:
                    continue
                path = getattr(self.blobs, "path", None)
                if path is not None and now - os.stat(path(blob_id)).st_mtime < min_age:
                    continue
                if self.blobs.delete(blob_id):
                    removed += 1
            return removed

        return self._in_thread(work)
