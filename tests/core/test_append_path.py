"""The append path: parse once off the reactor, blob durable first, appends share commits,
and the read caches never show a stale record."""

from __future__ import annotations

import threading

import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.defer import gatherResults

from mailserve.core import keys, mailcore
from mailserve.core.mailcore import FLAGS_ADD, FLAGS_REMOVE, MailCore

ACCOUNT = 1


def message(n: int) -> bytes:
    return (f"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: message {n}\r\n"
            f"Message-ID: <a{n}@example.test>\r\n\r\nBody of message {n}.\r\n").encode()


def make_core(metadata, blobs) -> MailCore:
    core = MailCore(metadata, blobs)
    metadata.write_sync(lambda txn: core.provision_account(txn, ACCOUNT))
    return core


@pytest_twisted.inlineCallbacks
def test_message_is_parsed_once_in_a_worker_thread(metadata, blobs, monkeypatch):
    core = make_core(metadata, blobs)
    reactor_thread = threading.get_ident()
    parsed_in = []
    real_parse = mailcore.parse_message

    def recording_parse(raw):
        parsed_in.append(threading.get_ident())
        return real_parse(raw)

    monkeypatch.setattr(mailcore, "parse_message", recording_parse)
    inbox = core.find_mailbox(ACCOUNT, "INBOX").id
    result = yield core.append(ACCOUNT, inbox, message(1))
    assert len(parsed_in) == 1
    assert parsed_in[0] != reactor_thread
    # The stored parse is what FETCH reads: no second parse to answer it.
    record = core.get_message(ACCOUNT, result.message)
    assert core.get_parsed(record.blob_id).envelope.subject == "message 1"
    assert len(parsed_in) == 1


@pytest_twisted.inlineCallbacks
def test_concurrent_appends_share_one_commit(metadata, blobs):
    """Appends queued while the writer is busy go to disk in one transaction, one fsync."""
    core = make_core(metadata, blobs)
    inbox = core.find_mailbox(ACCOUNT, "INBOX").id
    ingested = yield gatherResults([core.ingest(message(n)) for n in range(20)])
    started, release = threading.Event(), threading.Event()
    blocker = metadata.write(lambda txn: (started.set(), release.wait(10)))  # holds the writer
    # Once the writer runs the blocker, every append below queues behind it.
    assert (yield threads.deferToThread(started.wait, 10))
    commits_before = metadata.commits
    appends = [core.append_ingested(ACCOUNT, inbox, ing) for ing in ingested]
    reactor.callLater(0, release.set)
    results = yield gatherResults(appends)
    yield blocker
    assert sorted(r.uid for r in results) == list(range(1, 21))
    assert metadata.commits - commits_before == 2  # the blocker's commit, then all 20 appends
    assert core.get_mailbox(ACCOUNT, inbox).messages == 20


@pytest_twisted.inlineCallbacks
def test_blob_is_durable_before_the_metadata_commit(metadata, blobs):
    core = make_core(metadata, blobs)
    inbox = core.find_mailbox(ACCOUNT, "INBOX").id
    ingested = yield core.ingest(message(7))
    # Ingest alone made the bytes durable; nothing references them yet.
    assert blobs.get(ingested.blob_id) == message(7)
    assert metadata.read(lambda txn: txn.get(keys.blob_refs(ingested.blob_id))) is None
    result = yield core.append_ingested(ACCOUNT, inbox, ingested)
    assert result.uid == 1
    assert metadata.read(lambda txn: txn.counter(keys.blob_refs(ingested.blob_id))) == 1


@pytest_twisted.inlineCallbacks
def test_cached_records_follow_every_committed_change(metadata, blobs):
    core = make_core(metadata, blobs)
    inbox = core.find_mailbox(ACCOUNT, "INBOX").id
    results = yield gatherResults([core.append(ACCOUNT, inbox, message(n)) for n in range(3)])
    ids = [r.message for r in results]
    first = core.get_messages(ACCOUNT, ids)
    assert core.get_messages(ACCOUNT, ids) == first  # a cache hit returns equal records
    yield core.store_flags(ACCOUNT, inbox, [results[1].uid], FLAGS_ADD, ["\\Seen", "$Work"])
    after = core.get_messages(ACCOUNT, ids)
    assert after[1].keywords == {"\\Seen", "$Work"}
    assert after[0] == first[0] and after[2] == first[2]
    yield core.store_flags(ACCOUNT, inbox, [results[1].uid], FLAGS_REMOVE, ["$Work"])
    assert core.get_message(ACCOUNT, ids[1]).keywords == {"\\Seen"}
    # A write by another process (the admin CLI) is seen too: the cache keys on stored bytes.
    yield core.expunge(ACCOUNT, inbox)
    metadata.write_sync(lambda txn: txn.delete(keys.message(ACCOUNT, ids[2])))
    assert core.get_messages(ACCOUNT, ids)[2] is None


@pytest_twisted.inlineCallbacks
def test_parses_and_renderings_are_read_in_bulk_and_memoised(metadata, blobs):
    core = make_core(metadata, blobs)
    inbox = core.find_mailbox(ACCOUNT, "INBOX").id
    results = yield gatherResults([core.append(ACCOUNT, inbox, message(n)) for n in range(4)])
    records = core.get_messages(ACCOUNT, [r.message for r in results])
    blob_ids = [m.blob_id for m in records]
    core.blob_cache.clear()
    parses = core.get_parsed_many(blob_ids + ["0" * 64])
    assert [p.envelope.subject for p in parses[:4]] == [f"message {n}" for n in range(4)]
    assert parses[4] is None  # no such blob: None, not an error
    assert core.get_parsed(blob_ids[0]) is parses[0]  # now served from the cache
    rendered = []
    for _ in range(3):
        core.derived("subject-upper", blob_ids[2], lambda p: rendered.append(1) or p.envelope.subject.upper())
    assert core.derived("subject-upper", blob_ids[2], lambda p: None) == "MESSAGE 2"
    assert rendered == [1]


@pytest_twisted.inlineCallbacks
def test_cache_can_be_turned_off(metadata, blobs):
    core = MailCore(metadata, blobs, cache_entries=0)
    metadata.write_sync(lambda txn: core.provision_account(txn, ACCOUNT))
    inbox = core.find_mailbox(ACCOUNT, "INBOX").id
    result = yield core.append(ACCOUNT, inbox, message(1))
    blob_id = core.get_message(ACCOUNT, result.message).blob_id
    assert core.get_parsed(blob_id).envelope.subject == "message 1"
    assert len(core.blob_cache) == 0


@pytest_twisted.inlineCallbacks
def test_mailbox_snapshot_is_exact_and_kept_only_while_the_mailbox_is_unchanged(metadata, blobs):
    core = make_core(metadata, blobs)
    inbox = core.find_mailbox(ACCOUNT, "INBOX").id
    results = yield gatherResults([core.append(ACCOUNT, inbox, message(n), ["\\Seen"]) for n in range(4)])
    yield core.store_flags(ACCOUNT, inbox, [results[2].uid], FLAGS_REMOVE, ["\\Seen"])
    yield core.store_flags(ACCOUNT, inbox, [results[0].uid], FLAGS_ADD, ["$Important"])
    snapshot = yield core.mailbox_snapshot(ACCOUNT, inbox)
    assert snapshot.uids == [(r.uid, r.message) for r in sorted(results, key=lambda r: r.uid)]
    assert snapshot.keywords == {"$Important"}
    assert snapshot.first_unseen == sorted(r.uid for r in results).index(results[2].uid) + 1
    assert snapshot.modseq == core.highest_modseq(ACCOUNT)
    again = yield core.mailbox_snapshot(ACCOUNT, inbox)
    assert again.uids is snapshot.uids  # kept: the mailbox did not change

    # Every kind of change makes the next snapshot a fresh one.
    yield core.store_flags(ACCOUNT, inbox, [results[2].uid], FLAGS_ADD, ["\\Seen"])
    after_flags = yield core.mailbox_snapshot(ACCOUNT, inbox)
    assert after_flags.first_unseen == 0
    late = yield core.append(ACCOUNT, inbox, message(9))
    after_append = yield core.mailbox_snapshot(ACCOUNT, inbox)
    assert after_append.uids[-1] == (late.uid, late.message)
    assert after_append.first_unseen == 5
    yield core.store_flags(ACCOUNT, inbox, [results[1].uid], FLAGS_ADD, ["\\Deleted"])
    yield core.expunge(ACCOUNT, inbox)
    after_expunge = yield core.mailbox_snapshot(ACCOUNT, inbox)
    assert results[1].uid not in [uid for uid, _ in after_expunge.uids]
    # A change in another mailbox keeps this one's snapshot.
    yield core.append(ACCOUNT, core.find_mailbox(ACCOUNT, "Sent").id, message(10))
    assert (yield core.mailbox_snapshot(ACCOUNT, inbox)).uids is after_expunge.uids


@pytest_twisted.inlineCallbacks
def test_mailbox_snapshot_of_a_missing_mailbox_fails(metadata, blobs):
    from mailserve.core.errors import NoSuchMailbox

    core = make_core(metadata, blobs)
    with pytest.raises(NoSuchMailbox):
        yield core.mailbox_snapshot(ACCOUNT, 999)


@pytest_twisted.inlineCallbacks
def test_mailbox_snapshots_are_bounded(metadata, blobs):
    core = MailCore(metadata, blobs, cache_entries=1)  # room for 32 messages of snapshots
    metadata.write_sync(lambda txn: core.provision_account(txn, ACCOUNT))
    boxes = [core.find_mailbox(ACCOUNT, name).id for name in ("INBOX", "Sent", "Drafts")]
    for box in boxes:
        yield gatherResults([core.append(ACCOUNT, box, message(n)) for n in range(12)])
    for box in boxes:
        yield core.mailbox_snapshot(ACCOUNT, box)
    assert sum(len(s.uids) for _, s, _ in core._snapshots.values()) <= 32
    assert (ACCOUNT, boxes[0]) not in core._snapshots  # the oldest went first
