"""The maildrop snapshot, its unique-ids and sizes, and the maildrop lock."""

from __future__ import annotations

import pytest_twisted

from mailserve.core.mailcore import MailCore
from mailserve.pop3.maildrop import MaildropLocks, load_maildrop, transmitted_size, unique_id


def test_unique_id_is_printable_bounded_and_distinct():
    ids = {unique_id(v, m) for v in (1, 0x7FFFFFFF) for m in (1, 2, 0xFFFFFFFF)}
    assert len(ids) == 6
    assert all(1 <= len(i) <= 70 and all(0x21 <= ord(c) <= 0x7E for c in i) for i in ids)


def test_transmitted_size_counts_crlf_only_for_bare_lf_messages():
    def unread():
        raise AssertionError("a CRLF message needs no read")

    assert transmitted_size(b"Subject: a\r\n\r\n", 100, unread) == 100
    raw = b"Subject: a\n\nbody\nmore\r\n"
    assert transmitted_size(b"Subject: a\n\n", len(raw), lambda: raw) == len(raw) + 3


def test_locks_are_exclusive_per_account():
    locks = MaildropLocks()
    assert locks.acquire(1) and locks.acquire(2)
    assert not locks.acquire(1)
    locks.release(1)
    assert locks.acquire(1) and locks.held(1)


@pytest_twisted.inlineCallbacks
def test_snapshot_numbers_inbox_messages_in_uid_order(metadata, blobs):
    from twisted.internet import reactor

    core = MailCore(metadata, blobs, reactor=reactor)
    metadata.write_sync(lambda txn: core.provision_account(txn, 7))
    inbox = core.find_mailbox(7, "INBOX")
    for n in range(3):
        yield core.append(7, inbox.id, f"Subject: {n}\r\n\r\nbody {n}\r\n".encode(), ["\\Seen"] if n == 1 else [])
    yield core.remove_messages(7, inbox.id, [1])
    drop = load_maildrop(core, 7)
    assert [(m.number, m.uid) for m in drop.messages] == [(1, 2), (2, 3)]
    assert [m.seen for m in drop.messages] == [True, False]
    assert drop.messages[0].unique_id == unique_id(inbox.uidvalidity, drop.messages[0].message_id)
    drop.messages[0].deleted = True
    assert drop.get(1) is None and drop.get(2) is drop.messages[1] and drop.get(3) is None
    assert drop.deleted_uids() == [2]
    drop.reset()
    assert drop.get(1) is not None
