"""The kept SELECT snapshot, brought up to date from the change log, equals a fresh build.

After every kind of change -- append, flag changes that move the first unseen message or
retire a keyword, expunge, move in and out, copy in and out, removal, a rename, changes by
another core on the same store and by another process -- the kept snapshot's uids,
keywords, first unseen position and modseq are compared with a snapshot built from the
records by a core that keeps nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from mailserve.core import mailcore as mailcore_module
from mailserve.core.errors import NoSuchMailbox
from mailserve.core.mailcore import FLAGS_ADD, FLAGS_REMOVE, FLAGS_SET, MailCore
from tests.core.test_flagindex import CHILD

ACCOUNT = 1


def message(n: int) -> bytes:
    return (f"From: a@example.test\r\nTo: b@example.test\r\nSubject: s{n}\r\n"
            f"Message-ID: <sr{n}@example.test>\r\n\r\nBody {n}.\r\n").encode()


@pytest.fixture
def core(metadata, blobs):
    core = MailCore(metadata, blobs)
    metadata.write_sync(lambda txn: core.provision_account(txn, ACCOUNT))
    return core


def box_id(core, name="INBOX") -> int:
    return core.find_mailbox(ACCOUNT, name).id


async def fresh(metadata, blobs, mailbox: int):
    """A snapshot built from the records by a core that keeps nothing."""
    return await MailCore(metadata, blobs, cache_entries=0).mailbox_snapshot(ACCOUNT, mailbox)


async def assert_same_as_fresh(core, metadata, blobs, mailbox: int, *, replayed: bool = True):
    pending = core.mailbox_snapshot(ACCOUNT, mailbox)
    if replayed:
        assert pending.called  # a short replay on the reactor: no worker-thread build
    kept = await pending
    built = await fresh(metadata, blobs, mailbox)
    assert kept.uids == built.uids
    assert kept.keywords == built.keywords
    assert kept.first_unseen == built.first_unseen
    assert kept.modseq == built.modseq
    assert kept.mailbox == built.mailbox
    return kept


@pytest_twisted.ensureDeferred
async def test_every_kind_of_change_is_replayed_exactly(core, metadata, blobs):
    inbox, trash, archive = box_id(core), box_id(core, "Trash"), box_id(core, "Archive")
    for n in range(8):
        await core.append(ACCOUNT, inbox, message(n), ["\\Seen"] if n < 3 else [])
    await core.append(ACCOUNT, archive, message(50), ["$Archived"])
    first = await core.mailbox_snapshot(ACCOUNT, inbox)
    assert first.first_unseen == 4
    steps = [
        lambda: core.append(ACCOUNT, inbox, message(10), ["$Label"]),
        lambda: core.store_flags(ACCOUNT, inbox, [4], FLAGS_ADD, ["\\Seen"]),  # first unseen moves on
        lambda: core.store_flags(ACCOUNT, inbox, [2], FLAGS_REMOVE, ["\\Seen"]),  # ...and back
        lambda: core.store_flags(ACCOUNT, inbox, [9], FLAGS_SET, ["\\Seen"]),  # $Label retired
        lambda: core.store_flags(ACCOUNT, inbox, [3, 5], FLAGS_ADD, ["\\Deleted", "$Junk"]),
        lambda: core.expunge(ACCOUNT, inbox),
        lambda: core.move(ACCOUNT, inbox, [2, 6], trash),
        lambda: core.move(ACCOUNT, trash, [1], inbox),
        lambda: core.copy(ACCOUNT, archive, [1], inbox),
        lambda: core.copy(ACCOUNT, inbox, [7], archive),
        lambda: core.store_flags(ACCOUNT, inbox, [1, 4, 7, 8, 10, 11], FLAGS_ADD, ["\\Seen"]),
        lambda: core.remove_messages(ACCOUNT, inbox, [8]),
        lambda: core.append(ACCOUNT, inbox, message(12)),
        lambda: core.rename_mailbox(ACCOUNT, "Archive", "Old"),
    ]
    for step in steps:
        await step()
        await assert_same_as_fresh(core, metadata, blobs, inbox)
    final = await core.mailbox_snapshot(ACCOUNT, inbox)
    assert final.keywords == {"$Archived"}
    assert [u for u, _ in final.uids] == [1, 4, 7, 9, 10, 11, 12]
    assert final.first_unseen == 7


@pytest_twisted.ensureDeferred
async def test_an_emptied_mailbox_and_refilled_one(core, metadata, blobs):
    inbox = box_id(core)
    await core.append(ACCOUNT, inbox, message(1), ["$Only"])
    await core.mailbox_snapshot(ACCOUNT, inbox)
    await core.remove_messages(ACCOUNT, inbox, [1])
    emptied = await assert_same_as_fresh(core, metadata, blobs, inbox)
    assert emptied.uids == [] and emptied.keywords == frozenset() and emptied.first_unseen == 0
    await core.append(ACCOUNT, inbox, message(2), ["\\Seen"])
    await core.append(ACCOUNT, inbox, message(3))
    refilled = await assert_same_as_fresh(core, metadata, blobs, inbox)
    assert refilled.first_unseen == 2


@pytest_twisted.ensureDeferred
async def test_changes_by_another_core_are_replayed(core, metadata, blobs):
    """Another writer publishes nothing to this core: the change log alone must suffice."""
    inbox, trash = box_id(core), box_id(core, "Trash")
    for n in range(5):
        await core.append(ACCOUNT, inbox, message(n))
    await core.mailbox_snapshot(ACCOUNT, inbox)
    other = MailCore(metadata, blobs)
    await other.store_flags(ACCOUNT, inbox, [1, 2], FLAGS_ADD, ["\\Seen", "$Other"])
    await assert_same_as_fresh(core, metadata, blobs, inbox)
    await other.move(ACCOUNT, inbox, [3], trash)
    await other.append(ACCOUNT, inbox, message(9), ["$New"])
    await other.copy(ACCOUNT, trash, [1], inbox)
    kept = await assert_same_as_fresh(core, metadata, blobs, inbox)
    assert kept.keywords == {"$Other", "$New"} and kept.first_unseen == 3


@pytest_twisted.ensureDeferred
async def test_changes_by_another_process_are_replayed(core, metadata, blobs, tmp_path):
    inbox = box_id(core)
    await core.append(ACCOUNT, inbox, message(1))
    await core.append(ACCOUNT, inbox, message(2))
    assert (await core.mailbox_snapshot(ACCOUNT, inbox)).first_unseen == 1
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    done = await deferToThread(subprocess.run, [sys.executable, "-c", CHILD, metadata.path,
                                                str(tmp_path / "blobs"), str(inbox)],
                               check=False, env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    kept = await assert_same_as_fresh(core, metadata, blobs, inbox)
    assert kept.keywords == {"$FromCli"} and kept.first_unseen == 2


@pytest_twisted.ensureDeferred
async def test_changes_elsewhere_are_not_replayed_again(core, metadata, blobs, monkeypatch):
    """An unchanged SELECT moves the replay start past other mailboxes' changes."""
    inbox, archive = box_id(core), box_id(core, "Archive")
    await core.append(ACCOUNT, inbox, message(1))
    await core.mailbox_snapshot(ACCOUNT, inbox)
    monkeypatch.setattr(mailcore_module, "MAX_FLAG_REPLAY_ON_REACTOR", 2)
    for n in range(5):
        await core.append(ACCOUNT, archive, message(20 + n))
    await core.mailbox_snapshot(ACCOUNT, inbox)
    await core.append(ACCOUNT, inbox, message(2), ["$Late"])
    kept = await assert_same_as_fresh(core, metadata, blobs, inbox)  # one entry, on the reactor
    assert kept.keywords == {"$Late"}


@pytest_twisted.ensureDeferred
async def test_longer_replay_runs_in_a_worker_thread(core, metadata, blobs, monkeypatch):
    inbox = box_id(core)
    for n in range(6):
        await core.append(ACCOUNT, inbox, message(n))
    await core.mailbox_snapshot(ACCOUNT, inbox)
    monkeypatch.setattr(mailcore_module, "MAX_FLAG_REPLAY_ON_REACTOR", 1)
    await core.store_flags(ACCOUNT, inbox, [1, 2, 3], FLAGS_ADD, ["\\Seen"])
    pending = core.mailbox_snapshot(ACCOUNT, inbox)
    assert not pending.called  # three entries: more than the reactor replays itself
    kept = await pending
    assert kept.first_unseen == 4
    await assert_same_as_fresh(core, metadata, blobs, inbox, replayed=False)


@pytest_twisted.ensureDeferred
async def test_too_far_behind_or_a_long_unseen_scan_rebuilds_exactly(core, metadata, blobs, monkeypatch):
    inbox = box_id(core)
    for n in range(8):
        await core.append(ACCOUNT, inbox, message(n), ["\\Seen"] if n else [])
    await core.mailbox_snapshot(ACCOUNT, inbox)
    monkeypatch.setattr(mailcore_module, "MAX_FIRST_UNSEEN_SCAN", 2)
    # The first unseen message is seen now; the next unseen one is past the scan limit.
    await core.store_flags(ACCOUNT, inbox, [1], FLAGS_ADD, ["\\Seen"])
    await core.store_flags(ACCOUNT, inbox, [6], FLAGS_REMOVE, ["\\Seen"])
    await core.store_flags(ACCOUNT, inbox, [6], FLAGS_ADD, ["$Tmp"])
    await core.store_flags(ACCOUNT, inbox, [6], FLAGS_REMOVE, ["$Tmp"])
    kept = await assert_same_as_fresh(core, metadata, blobs, inbox, replayed=False)
    assert kept.first_unseen == 6
    monkeypatch.setattr(mailcore_module, "MAX_FLAG_REPLAY_ON_REACTOR", 1)
    monkeypatch.setattr(mailcore_module, "MAX_FLAG_REPLAY_ENTRIES", 2)
    await core.store_flags(ACCOUNT, inbox, [2, 3, 4, 5], FLAGS_REMOVE, ["\\Seen"])
    kept = await assert_same_as_fresh(core, metadata, blobs, inbox, replayed=False)
    assert kept.first_unseen == 2


@pytest_twisted.ensureDeferred
async def test_replay_does_not_change_a_snapshot_already_handed_out(core, metadata, blobs):
    inbox = box_id(core)
    for n in range(3):
        await core.append(ACCOUNT, inbox, message(n))
    before = await core.mailbox_snapshot(ACCOUNT, inbox)
    uids_before = list(before.uids)
    await core.remove_messages(ACCOUNT, inbox, [2])
    await core.append(ACCOUNT, inbox, message(4))
    after = await assert_same_as_fresh(core, metadata, blobs, inbox)
    assert before.uids == uids_before
    assert [u for u, _ in after.uids] == [1, 3, 4]


@pytest_twisted.ensureDeferred
async def test_deleted_mailbox_fails_and_is_forgotten(core):
    box = await core.create_mailbox(ACCOUNT, "Projects")
    await core.append(ACCOUNT, box.id, message(1))
    await core.mailbox_snapshot(ACCOUNT, box.id)
    await core.delete_mailbox(ACCOUNT, "Projects")
    with pytest.raises(NoSuchMailbox):
        await core.mailbox_snapshot(ACCOUNT, box.id)
    assert (ACCOUNT, box.id) not in core._snapshots
