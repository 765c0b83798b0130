"""The mail core over real stores: every mutation, its change log and its notifications."""

from __future__ import annotations

import pytest
import pytest_twisted

from mailserve.core import keys
from mailserve.core.errors import (
    InvalidMailboxName,
    MailboxExists,
    MailboxHasChildren,
    MailboxNotDeletable,
    NoSuchMailbox,
    QuotaExceeded,
)
from mailserve.core.mailcore import FLAGS_ADD, FLAGS_REMOVE, FLAGS_SET, MailCore
from mailserve.core.model import ChangeKind

ACCOUNT = 1


def message(n: int, size_pad: int = 0, **headers) -> bytes:
    extra = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    return (
        f"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: message {n}\r\n"
        f"Message-ID: <m{n}@example.test>\r\n{extra}\r\nBody of message {n}.\r\n" + "x" * size_pad
    ).encode()


@pytest.fixture
def core(metadata, blobs):
    core = MailCore(metadata, blobs)
    metadata.write_sync(lambda txn: core.provision_account(txn, ACCOUNT))
    return core


def inbox(core):
    return core.find_mailbox(ACCOUNT, "inbox")


def test_new_account_has_special_use_mailboxes(core):
    boxes = {m.name: m.role for m in core.list_mailboxes(ACCOUNT)}
    assert boxes == {"INBOX": "inbox", "Sent": "sent", "Drafts": "drafts", "Trash": "trash",
                     "Junk": "junk", "Archive": "archive"}
    assert set(core.subscriptions(ACCOUNT)) == set(boxes)
    assert inbox(core).name == "INBOX"


@pytest_twisted.inlineCallbacks
def test_append_stores_bytes_metadata_and_parse(core):
    box = inbox(core)
    raw = message(1)
    result = yield core.append(ACCOUNT, box.id, raw, ["\\seen", "$Label"], internal_date=1700000000)
    assert result.uid == 1 and result.uidvalidity == box.uidvalidity
    msg = core.get_message(ACCOUNT, result.message)
    assert msg.keywords == {"\\Seen", "$Label"}
    assert msg.internal_date == 1700000000 and msg.size == len(raw)
    assert (yield core.read_blob(msg.blob_id)) == raw
    assert (yield core.read_blob(msg.blob_id, 0, 4)) == b"From"
    parsed = core.get_parsed(msg.blob_id)
    assert parsed.envelope.subject == "message 1"
    assert core.mailbox_uids(ACCOUNT, box.id) == [(1, result.message)]
    after = core.get_mailbox(ACCOUNT, box.id)
    assert (after.messages, after.unseen, after.uidnext, after.size) == (1, 0, 2, len(raw))
    assert core.get_quota(ACCOUNT).bytes_used == len(raw)


@pytest_twisted.inlineCallbacks
def test_uids_strictly_ascend_and_are_never_reused(core):
    box = inbox(core)
    uids = []
    for n in range(3):
        uids.append((yield core.append(ACCOUNT, box.id, message(n))).uid)
    yield core.store_flags(ACCOUNT, box.id, [uids[-1]], FLAGS_ADD, ["\\Deleted"])
    assert (yield core.expunge(ACCOUNT, box.id)) == [uids[-1]]
    again = yield core.append(ACCOUNT, box.id, message(9))
    assert uids == [1, 2, 3] and again.uid == 4


@pytest_twisted.inlineCallbacks
def test_copy_shares_blob_and_keeps_flags_independent(core, blobs):
    box = inbox(core)
    archive = core.find_mailbox(ACCOUNT, "Archive")
    first = yield core.append(ACCOUNT, box.id, message(1), ["\\Flagged"])
    uidvalidity, pairs = yield core.copy(ACCOUNT, box.id, [first.uid, 999], archive.id)
    assert uidvalidity == archive.uidvalidity and pairs == [(1, 1)]
    assert len(list(blobs.ids())) == 1
    (_, copy_id), = core.mailbox_uids(ACCOUNT, archive.id)
    yield core.store_flags(ACCOUNT, archive.id, [1], FLAGS_ADD, ["\\Seen"])
    assert core.get_message(ACCOUNT, first.message).keywords == {"\\Flagged"}
    assert core.get_message(ACCOUNT, copy_id).keywords == {"\\Flagged", "\\Seen"}
    assert core.get_quota(ACCOUNT).messages_used == 2
    # Expunging one copy keeps the shared bytes; expunging the other releases them.
    yield core.store_flags(ACCOUNT, box.id, [1], FLAGS_ADD, ["\\Deleted"])
    yield core.expunge(ACCOUNT, box.id)
    assert len(list(blobs.ids())) == 1
    yield core.remove_messages(ACCOUNT, archive.id, [1])
    yield core.read_blob
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    yield deferLater(reactor, 0.2, lambda: None)
    assert list(blobs.ids()) == []
    assert core.get_quota(ACCOUNT).bytes_used == 0
    assert core.metadata.read(lambda txn: list(txn.scan(keys.BLOB_REFS_PREFIX))) == []


@pytest_twisted.inlineCallbacks
def test_move_keeps_message_and_flags(core):
    box = inbox(core)
    trash = core.find_mailbox(ACCOUNT, "Trash")
    a = yield core.append(ACCOUNT, box.id, message(1), ["\\Seen"])
    b = yield core.append(ACCOUNT, box.id, message(2))
    _, pairs = yield core.move(ACCOUNT, box.id, [a.uid, b.uid], trash.id)
    assert pairs == [(1, 1), (2, 2)]
    assert core.mailbox_uids(ACCOUNT, box.id) == []
    assert [m for _, m in core.mailbox_uids(ACCOUNT, trash.id)] == [a.message, b.message]
    assert core.get_message(ACCOUNT, a.message).keywords == {"\\Seen"}
    src, dst = core.get_mailbox(ACCOUNT, box.id), core.get_mailbox(ACCOUNT, trash.id)
    assert (src.messages, src.unseen, dst.messages, dst.unseen) == (0, 0, 2, 1)
    assert core.get_quota(ACCOUNT).messages_used == 2


@pytest_twisted.inlineCallbacks
def test_flags_operations_and_unchanged_since(core):
    box = inbox(core)
    r = yield core.append(ACCOUNT, box.id, message(1))
    results, failed = yield core.store_flags(ACCOUNT, box.id, [r.uid], FLAGS_ADD, ["\\Seen", "work"])
    (keywords, modseq), = results.values()
    assert keywords == {"\\Seen", "work"} and modseq > r.modseq and failed == []
    results, _ = yield core.store_flags(ACCOUNT, box.id, [r.uid], FLAGS_REMOVE, ["work"])
    assert results[r.uid][0] == {"\\Seen"}
    results, _ = yield core.store_flags(ACCOUNT, box.id, [r.uid], FLAGS_SET, ["\\Answered"])
    assert results[r.uid][0] == {"\\Answered"}
    assert core.get_mailbox(ACCOUNT, box.id).unseen == 1
    # A no-op store does not bump the modseq.
    before = core.highest_modseq(ACCOUNT)
    yield core.store_flags(ACCOUNT, box.id, [r.uid], FLAGS_ADD, ["\\Answered"])
    assert core.highest_modseq(ACCOUNT) == before
    # UNCHANGEDSINCE older than the message's modseq: refused and untouched.
    results, failed = yield core.store_flags(ACCOUNT, box.id, [r.uid], FLAGS_SET, [], unchanged_since=r.modseq)
    assert failed == [r.uid] and results == {}
    assert core.get_message(ACCOUNT, r.message).keywords == {"\\Answered"}


@pytest_twisted.inlineCallbacks
def test_expunge_only_deleted_and_only_given_uids(core):
    box = inbox(core)
    for n in range(4):
        yield core.append(ACCOUNT, box.id, message(n))
    yield core.store_flags(ACCOUNT, box.id, [1, 2, 3], FLAGS_ADD, ["\\Deleted"])
    assert (yield core.expunge(ACCOUNT, box.id, [2, 4])) == [2]
    assert (yield core.expunge(ACCOUNT, box.id)) == [1, 3]
    assert [u for u, _ in core.mailbox_uids(ACCOUNT, box.id)] == [4]
    mbox = core.get_mailbox(ACCOUNT, box.id)
    assert (mbox.messages, mbox.deleted) == (1, 0)


@pytest_twisted.inlineCallbacks
def test_quota_refusal_writes_nothing(core, blobs):
    yield core.set_quota(ACCOUNT, 1000)
    box = inbox(core)
    yield core.append(ACCOUNT, box.id, message(1, 500))
    modseq = core.highest_modseq(ACCOUNT)
    mailbox_before = core.get_mailbox(ACCOUNT, box.id)
    with pytest.raises(QuotaExceeded):
        yield core.append(ACCOUNT, box.id, message(2, 600))
    assert core.highest_modseq(ACCOUNT) == modseq
    assert core.get_mailbox(ACCOUNT, box.id) == mailbox_before
    assert len(core.all_messages(ACCOUNT)) == 1
    assert core.get_quota(ACCOUNT).messages_used == 1
    # Copying past the quota is refused as a whole.
    with pytest.raises(QuotaExceeded):
        yield core.copy(ACCOUNT, box.id, [1], core.find_mailbox(ACCOUNT, "Archive").id)
    assert core.highest_modseq(ACCOUNT) == modseq
    yield core.set_quota(ACCOUNT, 0, 1)
    with pytest.raises(QuotaExceeded):
        yield core.append(ACCOUNT, box.id, message(3))


@pytest_twisted.inlineCallbacks
def test_change_log_replays_from_any_modseq(core):
    box = inbox(core)
    start = core.highest_modseq(ACCOUNT)
    a = yield core.append(ACCOUNT, box.id, message(1))
    yield core.store_flags(ACCOUNT, box.id, [a.uid], FLAGS_ADD, ["\\Deleted"])
    yield core.expunge(ACCOUNT, box.id)
    created = yield core.create_mailbox(ACCOUNT, "Projects/2026")
    log = core.changes_since(ACCOUNT, start)
    kinds = [[e.kind for e in cs.entries] for cs in log]
    assert kinds == [
        [ChangeKind.MESSAGE_ADDED],
        [ChangeKind.FLAGS_CHANGED],
        [ChangeKind.MESSAGE_REMOVED, ChangeKind.MESSAGE_DESTROYED],
        [ChangeKind.MAILBOX_CREATED, ChangeKind.MAILBOX_CREATED],
    ]
    modseqs = [cs.modseq for cs in log]
    assert modseqs == sorted(modseqs) and len(set(modseqs)) == 4
    assert modseqs[-1] == core.highest_modseq(ACCOUNT)
    assert log[3].entries[1].mailbox == created.id
    # Replaying from the middle gives exactly the tail.
    assert core.changes_since(ACCOUNT, modseqs[1]) == log[2:]
    assert core.changes_since(ACCOUNT, modseqs[-1]) == []
    assert core.changes_since(ACCOUNT, start, limit=1) == log[:1]


@pytest_twisted.inlineCallbacks
def test_two_subscribers_are_notified_after_commit(core):
    seen_a, seen_b, others = [], [], []

    def on_a(changes):
        # Notified after commit: the change is already readable.
        seen_a.append((changes.modseq, core.highest_modseq(ACCOUNT)))

    unsubscribe_a = core.subscribe(ACCOUNT, on_a)
    core.subscribe(ACCOUNT, seen_b.append)
    core.subscribe(ACCOUNT + 1, others.append)
    box = inbox(core)
    yield core.append(ACCOUNT, box.id, message(1))
    assert len(seen_a) == 1 and seen_a[0][0] == seen_a[0][1]
    assert len(seen_b) == 1 and seen_b[0].entries[0].kind == ChangeKind.MESSAGE_ADDED
    assert others == []
    unsubscribe_a()
    yield core.append(ACCOUNT, box.id, message(2))
    assert len(seen_a) == 1 and len(seen_b) == 2


@pytest_twisted.inlineCallbacks
def test_mailbox_hierarchy_rename_and_delete(core):
    created = yield core.create_mailbox(ACCOUNT, "Work/Clients/Acme")
    names = [m.name for m in core.list_mailboxes(ACCOUNT)]
    assert {"Work", "Work/Clients", "Work/Clients/Acme"} <= set(names)
    with pytest.raises(MailboxExists):
        yield core.create_mailbox(ACCOUNT, "Work")
    with pytest.raises(InvalidMailboxName):
        yield core.create_mailbox(ACCOUNT, "bad//name")
    yield core.append(ACCOUNT, created.id, message(1))
    yield core.rename_mailbox(ACCOUNT, "Work", "Jobs")
    names = {m.name for m in core.list_mailboxes(ACCOUNT)}
    assert "Jobs/Clients/Acme" in names and "Work" not in names
    assert core.find_mailbox(ACCOUNT, "Jobs/Clients/Acme").id == created.id
    with pytest.raises(MailboxHasChildren):
        yield core.delete_mailbox(ACCOUNT, "Jobs")
    with pytest.raises(MailboxNotDeletable):
        yield core.delete_mailbox(ACCOUNT, "INBOX")
    yield core.delete_mailbox(ACCOUNT, "Jobs/Clients/Acme")
    with pytest.raises(NoSuchMailbox):
        core.find_mailbox(ACCOUNT, "Jobs/Clients/Acme")
    assert core.all_messages(ACCOUNT) == []


@pytest_twisted.inlineCallbacks
def test_rename_inbox_moves_messages(core):
    box = inbox(core)
    yield core.append(ACCOUNT, box.id, message(1))
    renamed = yield core.rename_mailbox(ACCOUNT, "INBOX", "Old")
    assert core.get_mailbox(ACCOUNT, box.id).messages == 0
    assert core.get_mailbox(ACCOUNT, renamed.id).messages == 1


@pytest_twisted.inlineCallbacks
def test_threads_follow_references(core):
    box = inbox(core)
    first = yield core.append(ACCOUNT, box.id, message(1))
    reply = yield core.append(ACCOUNT, box.id, message(2, In_Reply_To="<m1@example.test>"))
    other = yield core.append(ACCOUNT, box.id, message(3))
    t = {m.id: m.thread_id for m in core.all_messages(ACCOUNT)}
    assert t[first.message] == t[reply.message] != t[other.message]


@pytest_twisted.inlineCallbacks
def test_garbage_collection_removes_unreferenced_blobs_only(core, blobs):
    box = inbox(core)
    kept = yield core.append(ACCOUNT, box.id, message(1))
    orphan = blobs.put(b"never committed")
    assert (yield core.collect_garbage(min_age=0)) == 1
    assert not blobs.exists(orphan)
    assert blobs.exists(core.get_message(ACCOUNT, kept.message).blob_id)
