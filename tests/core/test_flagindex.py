"""The per-mailbox flag index: always exactly the committed flags and modseqs.

Every test compares the index against the message records read directly, after mutations
by this core, by another core on the same store (no in-process notification), and by
another process on the same LMDB environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from mailserve.core import mailcore as mailcore_module
from mailserve.core.errors import NoSuchMailbox
from mailserve.core.mailcore import FLAGS_ADD, FLAGS_REMOVE, FLAGS_SET, MailCore

ACCOUNT = 1


def message(n: int) -> bytes:
    return (f"From: a@example.test\r\nTo: b@example.test\r\nSubject: m{n}\r\n"
            f"Message-ID: <fi{n}@example.test>\r\n\r\nBody {n}.\r\n").encode()


@pytest.fixture
def core(metadata, blobs):
    core = MailCore(metadata, blobs)
    metadata.write_sync(lambda txn: core.provision_account(txn, ACCOUNT))
    return core


def box_id(core, name="INBOX") -> int:
    return core.find_mailbox(ACCOUNT, name).id


def committed(core, mailbox: int) -> dict[int, tuple[frozenset[str], int]]:
    """UID -> (keywords, modseq) straight from the records: what the index must equal."""
    uids = core.mailbox_uids(ACCOUNT, mailbox)
    records = core.get_messages(ACCOUNT, [m for _, m in uids])
    return {u: (r.keywords, r.modseq) for (u, _), r in zip(uids, records, strict=True)}


def as_dict(index, uids) -> dict[int, tuple[frozenset[str], int]]:
    return {u: index.get(u) for u in uids if index.get(u) is not None}


def assert_exact(core, index, mailbox: int, extra_uids=range(1, 40)) -> None:
    expected = committed(core, mailbox)
    assert index.uids() == sorted(expected)
    assert as_dict(index, set(expected) | set(extra_uids)) == expected


@pytest_twisted.inlineCallbacks
def fill(core, count: int, mailbox: int | None = None, keywords=()):
    mailbox = box_id(core) if mailbox is None else mailbox
    for n in range(count):
        yield core.append(ACCOUNT, mailbox, message(n), list(keywords))


@pytest_twisted.ensureDeferred
async def test_built_index_equals_the_records(core):
    inbox = box_id(core)
    await core.append(ACCOUNT, inbox, message(1), ["\\Seen"])
    await core.append(ACCOUNT, inbox, message(2), ["$Label", "\\Flagged"])
    await core.append(ACCOUNT, inbox, message(3))
    index = await core.flag_index(ACCOUNT, inbox)
    assert index.get(1) == (frozenset({"\\Seen"}), index.get(1)[1])
    assert index.get(2)[0] == {"$Label", "\\Flagged"}
    assert index.get(3)[0] == frozenset()
    assert index.get(4) is None
    assert_exact(core, index, inbox)


@pytest_twisted.ensureDeferred
async def test_index_follows_every_mutation_without_rebuilding(core):
    inbox, trash = box_id(core), box_id(core, "Trash")
    for n in range(6):
        await core.append(ACCOUNT, inbox, message(n))
    index = await core.flag_index(ACCOUNT, inbox)
    steps = [
        lambda: core.store_flags(ACCOUNT, inbox, [1, 2], FLAGS_ADD, ["\\Seen", "$A"]),
        lambda: core.store_flags(ACCOUNT, inbox, [2], FLAGS_REMOVE, ["$A"]),
        lambda: core.store_flags(ACCOUNT, inbox, [3], FLAGS_SET, ["\\Deleted"]),
        lambda: core.expunge(ACCOUNT, inbox),
        lambda: core.move(ACCOUNT, inbox, [4], trash),
        lambda: core.copy(ACCOUNT, trash, [1], inbox),
        lambda: core.append(ACCOUNT, inbox, message(9), ["\\Answered"]),
        lambda: core.remove_messages(ACCOUNT, inbox, [5]),
    ]
    for step in steps:
        await step()
        again = await core.flag_index(ACCOUNT, inbox)
        assert again is index  # brought up to date from the change log, not rebuilt
        assert_exact(core, index, inbox)
    assert index.get(3) is None and index.get(4) is None and index.get(5) is None
    assert index.get(8)[0] == {"\\Answered"}  # UID 7 is the copy back from Trash
    assert index.modseq == core.highest_modseq(ACCOUNT)


@pytest_twisted.ensureDeferred
async def test_modseqs_stay_exact_with_unchangedsince(core):
    """RFC 7162 §3.1.3: a conditional STORE changes only what is unchanged; the index
    must carry the very modseqs STORE reported."""
    inbox = box_id(core)
    for n in range(3):
        await core.append(ACCOUNT, inbox, message(n))
    index = await core.flag_index(ACCOUNT, inbox)
    results, failed = await core.store_flags(ACCOUNT, inbox, [1], FLAGS_ADD, ["$X"])
    stamp = results[1][1]
    results, failed = await core.store_flags(ACCOUNT, inbox, [1, 2], FLAGS_ADD, ["$Y"],
                                             unchanged_since=stamp - 1)
    assert failed == [1] and set(results) == {2}
    index = await core.flag_index(ACCOUNT, inbox)
    assert index.get(1) == (frozenset({"$X"}), stamp)
    assert index.get(2) == (frozenset({"$Y"}), results[2][1])
    assert_exact(core, index, inbox)


@pytest_twisted.ensureDeferred
async def test_changes_by_another_core_on_the_same_store_are_seen(core, metadata, blobs):
    """Another writer publishes nothing to this core: the change log alone must suffice."""
    inbox = box_id(core)
    for n in range(4):
        await core.append(ACCOUNT, inbox, message(n))
    index = await core.flag_index(ACCOUNT, inbox)
    other = MailCore(metadata, blobs)
    await other.store_flags(ACCOUNT, inbox, [2], FLAGS_ADD, ["\\Flagged"])
    await other.store_flags(ACCOUNT, inbox, [3], FLAGS_ADD, ["\\Deleted"])
    await other.expunge(ACCOUNT, inbox)
    await other.append(ACCOUNT, inbox, message(7), ["$New"])
    index = await core.flag_index(ACCOUNT, inbox)
    assert index.get(2)[0] == {"\\Flagged"} and index.get(3) is None and index.get(5)[0] == {"$New"}
    assert_exact(core, index, inbox)


CHILD = textwrap.dedent("""
    import sys
    from twisted.internet import defer, task
    from mailserve.core.mailcore import MailCore
    from mailserve.storage.filesystem_blobs import FilesystemBlobStore
    from mailserve.storage.lmdb_store import LMDBMetadataStore

    async def main(reactor):
        store = LMDBMetadataStore(sys.argv[1], map_size=64 << 20)
        store.start()
        core = MailCore(store, FilesystemBlobStore(sys.argv[2]), reactor=reactor)
        await core.store_flags(1, int(sys.argv[3]), [1], "set", ["$FromCli", "\\\\Seen"])
        store.close()

    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
""")


@pytest_twisted.ensureDeferred
async def test_changes_by_another_process_are_seen(core, metadata, blobs, tmp_path):
    inbox = box_id(core)
    await core.append(ACCOUNT, inbox, message(1))
    index = await core.flag_index(ACCOUNT, inbox)
    assert index.get(1)[0] == frozenset()
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    done = await deferToThread(subprocess.run, [sys.executable, "-c", CHILD, metadata.path,
                                                str(tmp_path / "blobs"), str(inbox)],
                               check=False, env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    index = await core.flag_index(ACCOUNT, inbox)
    assert index.get(1)[0] == {"$FromCli", "\\Seen"}
    assert_exact(core, index, inbox)


@pytest_twisted.ensureDeferred
async def test_index_too_far_behind_is_rebuilt_exactly(core, monkeypatch):
    inbox = box_id(core)
    for n in range(5):
        await core.append(ACCOUNT, inbox, message(n))
    first = await core.flag_index(ACCOUNT, inbox)
    monkeypatch.setattr(mailcore_module, "MAX_FLAG_REPLAY_ON_REACTOR", 1)
    monkeypatch.setattr(mailcore_module, "MAX_FLAG_REPLAY_ENTRIES", 2)
    await core.store_flags(ACCOUNT, inbox, [1, 2, 3, 4], FLAGS_ADD, ["$Bulk"])
    index = await core.flag_index(ACCOUNT, inbox)
    assert index is not first
    assert all(index.get(u)[0] == {"$Bulk"} for u in (1, 2, 3, 4))
    assert_exact(core, index, inbox)


@pytest_twisted.ensureDeferred
async def test_longer_replay_is_read_in_a_worker_thread(core, monkeypatch):
    inbox = box_id(core)
    for n in range(5):
        await core.append(ACCOUNT, inbox, message(n))
    first = await core.flag_index(ACCOUNT, inbox)
    monkeypatch.setattr(mailcore_module, "MAX_FLAG_REPLAY_ON_REACTOR", 1)
    await core.store_flags(ACCOUNT, inbox, [2, 3, 4], FLAGS_ADD, ["$Thread"])
    pending = core.flag_index(ACCOUNT, inbox)
    assert not pending.called  # three entries: more than the reactor replays itself
    index = await pending
    assert index is first
    assert [index.get(u)[0] for u in (1, 2, 5)] == [frozenset(), {"$Thread"}, frozenset()]
    assert_exact(core, index, inbox)
    quiet = core.flag_index(ACCOUNT, inbox)
    assert quiet.called  # nothing changed since: answered at once


@pytest_twisted.ensureDeferred
async def test_select_snapshot_provides_the_index(core):
    inbox = box_id(core)
    for n in range(3):
        await core.append(ACCOUNT, inbox, message(n), )
    await core.mailbox_snapshot(ACCOUNT, inbox)
    pending = core.flag_index(ACCOUNT, inbox)
    assert pending.called  # kept from the snapshot: no worker-thread build
    assert_exact(core, await pending, inbox)


@pytest_twisted.ensureDeferred
async def test_deleted_mailbox_fails_and_is_forgotten(core):
    box = await core.create_mailbox(ACCOUNT, "Projects")
    await core.append(ACCOUNT, box.id, message(1))
    await core.flag_index(ACCOUNT, box.id)
    await core.delete_mailbox(ACCOUNT, "Projects")
    with pytest.raises(NoSuchMailbox):
        await core.flag_index(ACCOUNT, box.id)
    with pytest.raises(NoSuchMailbox):
        await core.flag_index(ACCOUNT, 9999)


@pytest_twisted.ensureDeferred
async def test_indexes_are_bounded_and_off_without_caching(metadata, blobs):
    small = MailCore(metadata, blobs, cache_entries=1)  # budget: 32 messages
    metadata.write_sync(lambda txn: small.provision_account(txn, ACCOUNT))
    inbox, archive = box_id(small), box_id(small, "Archive")
    for n in range(20):
        await small.append(ACCOUNT, inbox, message(n))
        await small.append(ACCOUNT, archive, message(100 + n))
    first = await small.flag_index(ACCOUNT, inbox)
    await small.flag_index(ACCOUNT, archive)  # 40 > 32: the INBOX index goes
    again = await small.flag_index(ACCOUNT, inbox)
    assert again is not first
    assert_exact(small, again, inbox)
    off = MailCore(metadata, blobs, cache_entries=0)
    assert await off.flag_index(ACCOUNT, inbox) is None
