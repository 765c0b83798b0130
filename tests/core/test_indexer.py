"""The search indexer: fed from the change log, checkpointed, replayed after a restart."""

from __future__ import annotations

import contextlib

import pytest
import pytest_twisted

from mailserve.core.indexer import SearchIndexer
from mailserve.core.mailcore import FLAGS_ADD, MailCore
from mailserve.storage.tantivy_index import TantivySearchIndex
from mailserve.storage.whoosh_index import WhooshSearchIndex

ACCOUNT = 7
INDEXES = {"tantivy": TantivySearchIndex, "whoosh": WhooshSearchIndex}


def mail(subject: str, body: str, sender: str = "carol@example.test") -> bytes:
    return (f"From: Carol <{sender}>\r\nTo: dave@example.test\r\nSubject: {subject}\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").encode()


@pytest.fixture(params=sorted(INDEXES))
def index_factory(request, tmp_path):
    opened = []

    def make():
        index = INDEXES[request.param](str(tmp_path / "index"))
        opened.append(index)
        return index

    yield make
    for index in opened:
        with contextlib.suppress(Exception):  # already closed by the test
            index.close()


@pytest.fixture
def core(metadata, blobs):
    core = MailCore(metadata, blobs)
    metadata.write_sync(lambda txn: core.provision_account(txn, ACCOUNT))
    # The indexer finds accounts through the directory's records.
    from mailserve.core import keys

    metadata.write_sync(lambda txn: txn.put(keys.account(ACCOUNT), b"\x80"))
    return core


@pytest_twisted.inlineCallbacks
def test_new_messages_are_indexed_and_removed(core, index_factory):
    index = index_factory()
    indexer = SearchIndexer(core, index, batch_size=10, delay=0.01)
    indexer.startService()
    inbox = core.find_mailbox(ACCOUNT, "INBOX")
    a = yield core.append(ACCOUNT, inbox.id, mail("Quarterly budget", "The spreadsheet is attached."))
    b = yield core.append(ACCOUNT, inbox.id, mail("Lunch", "Pizza on Friday?", sender="erin@example.test"))
    assert indexer.pending(ACCOUNT) == {a.message, b.message}
    yield indexer.flush()
    assert indexer.pending(ACCOUNT) == set()
    assert index.search(ACCOUNT, "subject", "budget") == {a.message}
    assert index.search(ACCOUNT, "body", "pizza friday") == {b.message}
    assert index.search(ACCOUNT, "from", "erin") == {b.message}
    assert index.search(ACCOUNT + 1, "body", "pizza") == set()
    yield core.store_flags(ACCOUNT, inbox.id, [a.uid], FLAGS_ADD, ["\\Deleted"])
    yield core.expunge(ACCOUNT, inbox.id)
    yield indexer.flush()
    assert index.search(ACCOUNT, "subject", "budget") == set()
    yield indexer.stopService()


@pytest_twisted.inlineCallbacks
def test_restart_replays_the_change_log_from_the_checkpoint(core, index_factory):
    index = index_factory()
    indexer = SearchIndexer(core, index, batch_size=10, delay=0.01)
    indexer.startService()
    inbox = core.find_mailbox(ACCOUNT, "INBOX")
    first = yield core.append(ACCOUNT, inbox.id, mail("indexed before stop", "alpha"))
    yield indexer.flush()
    yield indexer.stopService()
    # Delivered while no indexer ran (a crash, or the CLI): must be picked up on start.
    late = yield core.append(ACCOUNT, inbox.id, mail("delivered while down", "omega"))
    index.close()
    index = index_factory()
    indexer = SearchIndexer(core, index, batch_size=10, delay=0.01)
    indexer.startService()
    assert indexer.pending(ACCOUNT) == {late.message}
    yield indexer.flush()
    assert index.search(ACCOUNT, "body", "omega") == {late.message}
    assert index.search(ACCOUNT, "body", "alpha") == {first.message}
    yield indexer.stopService()


@pytest_twisted.inlineCallbacks
def test_an_index_of_another_format_is_rebuilt_from_the_change_log(core, index_factory, monkeypatch):
    from mailserve.core import indexer as indexer_module

    index = index_factory()
    indexer = SearchIndexer(core, index, batch_size=10, delay=0.01)
    indexer.startService()
    inbox = core.find_mailbox(ACCOUNT, "INBOX")
    kept = yield core.append(ACCOUNT, inbox.id, mail("kept", "alpha"))
    yield indexer.flush()
    yield indexer.stopService()
    index.close()
    # The same index reopened by a server whose index format is newer: everything is re-indexed.
    monkeypatch.setattr(indexer_module, "INDEX_FORMAT", indexer_module.INDEX_FORMAT + 1)
    index = index_factory()
    indexer = SearchIndexer(core, index, batch_size=10, delay=0.01)
    indexer.startService()
    assert indexer.pending(ACCOUNT) == {kept.message}
    yield indexer.flush()
    assert index.search(ACCOUNT, "body", "alpha") == {kept.message}
    yield indexer.stopService()
    # A restart on the same format replays nothing.
    index.close()
    index = index_factory()
    indexer = SearchIndexer(core, index, batch_size=10, delay=0.01)
    indexer.startService()
    assert indexer.pending(ACCOUNT) == set()
    yield indexer.stopService()


@pytest_twisted.inlineCallbacks
def test_batches_larger_than_batch_size(core, index_factory):
    index = index_factory()
    indexer = SearchIndexer(core, index, batch_size=7, delay=0.01)
    indexer.startService()
    inbox = core.find_mailbox(ACCOUNT, "INBOX")
    ids = []
    for n in range(30):
        ids.append((yield core.append(ACCOUNT, inbox.id, mail(f"note {n}", f"common word{n}"))).message)
    while indexer.pending(ACCOUNT):
        yield indexer.flush()
    assert index.search(ACCOUNT, "body", "common") == set(ids)
    yield indexer.stopService()
