"""SELECT from kept state, over real sockets: exactly what reading every record gives.

A QRESYNC SELECT (RFC 7162 §3.2.5.2) answers the messages changed since the client's
modseq from the core's flag index, and a SELECT after a change brings the kept snapshot up
to date from the change log.  Both are compared byte for byte with the same commands
answered by reading every record (the core keeping nothing), after changes by a writer
no session is notified of.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer

from mailserve.core.mailcore import FLAGS_ADD, FLAGS_REMOVE, MailCore
from mailserve.imap import commands_mailbox
from tests.imap.imapserver import IMAPTestServer, RawClient, in_thread, message


@pytest.fixture(scope="module")
def imap(tmp_path_factory):
    server = IMAPTestServer(tmp_path_factory.mktemp("imap-select-flagindex"))
    yield server
    server.stop()


@defer.inlineCallbacks
def make_mailbox(imap, name: str, count: int, keywords_of=lambda n: ()):
    account = imap.account_id()
    box = yield imap.core.create_mailbox(account, name)
    for n in range(1, count + 1):
        yield imap.core.append(account, box.id, message(n), list(keywords_of(n)))
    return box


def examine(imap, command: str) -> tuple[list[bytes], bytes]:
    """The untagged lines and the status of ``command`` (a read-only open: no \\Recent claims)."""
    client = RawClient(imap.port())
    client.login()
    client.command("ENABLE QRESYNC")
    lines, status = client.command(command)
    client.close()
    return lines, status


@defer.inlineCallbacks
def same_with_and_without_kept_state(imap, monkeypatch, command: str):
    """``command``'s answer from the kept state, and again with the core keeping nothing."""
    kept = yield in_thread(examine, imap, command)
    with monkeypatch.context() as patch:
        patch.setattr(imap.core, "_snapshot_budget", 0)
        from_records = yield in_thread(examine, imap, command)
    assert kept == from_records
    return kept


@pytest_twisted.inlineCallbacks
def test_qresync_select_answers_changes_from_the_flag_index(imap, monkeypatch):
    monkeypatch.setattr(commands_mailbox, "CHUNK", 2)  # several chunks of 8 messages
    box = yield make_mailbox(imap, "Resync", 30, lambda n: ["\\Seen"] if n % 4 == 0 else [])
    account = imap.account_id()
    yield in_thread(examine, imap, "EXAMINE Resync")  # snapshot and flag index kept
    since = imap.core.highest_modseq(account)
    other = MailCore(imap.core.metadata, imap.core.blobs)  # notifies no session
    yield other.store_flags(account, box.id, [3, 17, 29], FLAGS_ADD, ["$Changed"])
    yield other.store_flags(account, box.id, [8], FLAGS_REMOVE, ["\\Seen"])
    yield other.store_flags(account, box.id, [12], FLAGS_ADD, ["\\Deleted"])
    yield other.expunge(account, box.id)
    yield other.append(account, box.id, message(31), ["$New"])
    lines, status = yield same_with_and_without_kept_state(
        imap, monkeypatch, f"EXAMINE Resync (QRESYNC ({box.uidvalidity} {since}))")
    assert status.startswith(b"OK [READ-ONLY]")
    assert b"* VANISHED (EARLIER) 12" in lines
    changed = [line for line in lines if b" FETCH (" in line]
    assert [line.split(b" FLAGS")[0] for line in changed] == [
        b"* 3 FETCH (UID 3", b"* 8 FETCH (UID 8", b"* 16 FETCH (UID 17", b"* 28 FETCH (UID 29",
        b"* 30 FETCH (UID 31"]
    uids = dict(imap.core.mailbox_uids(account, box.id))
    records = dict(zip([3, 8, 17, 29, 31], imap.core.get_messages(account, [uids[u] for u in (3, 8, 17, 29, 31)]),
                       strict=True))
    for line, (uid, record) in zip(changed, records.items(), strict=True):
        assert line.endswith(b"MODSEQ (%d))" % record.modseq), (uid, line)
        assert record.modseq > since
    assert b"$New" in changed[-1] and b"$Changed" in changed[0] and b"\\Seen" not in changed[1]


@pytest_twisted.inlineCallbacks
def test_select_after_changes_equals_a_fresh_build(imap, monkeypatch):
    box = yield make_mailbox(imap, "Opened", 12, lambda n: ["\\Seen"] if n <= 5 else ["$Initial"])
    account = imap.account_id()
    first, _ = yield in_thread(examine, imap, "EXAMINE Opened")
    assert b"* OK [UNSEEN 6] First unseen message" in first
    other = MailCore(imap.core.metadata, imap.core.blobs)
    steps = [
        lambda: other.append(account, box.id, message(40), ["$Arrived"]),
        lambda: other.store_flags(account, box.id, [6, 7], FLAGS_ADD, ["\\Seen"]),
        lambda: other.store_flags(account, box.id, list(range(6, 14)), FLAGS_REMOVE, ["$Initial"]),
        lambda: other.store_flags(account, box.id, [2], FLAGS_ADD, ["\\Deleted"]),
        lambda: other.expunge(account, box.id),
        lambda: imap.core.move(account, box.id, [1], imap.core.find_mailbox(account, "Trash").id),
    ]
    for step in steps:
        yield step()
        yield same_with_and_without_kept_state(imap, monkeypatch, "EXAMINE Opened")
    lines, _ = yield in_thread(examine, imap, "EXAMINE Opened")
    assert b"* 11 EXISTS" in lines
    assert b"* OK [UNSEEN 6] First unseen message" in lines  # UID 8, after 3 to 7 (seen)
    assert any(line.startswith(b"* FLAGS (") and b"$Arrived" in line and b"$Initial" not in line
               for line in lines)
