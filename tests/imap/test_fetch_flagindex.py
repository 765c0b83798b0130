"""FETCH of UID, FLAGS and MODSEQ from the core's flag index, over real sockets.

The flag-resync FETCH (RFC 9051 §6.4.5; RFC 7162 §3.1.4 MODSEQ and CHANGEDSINCE) is answered
from ``MailCore.flag_index`` instead of the message records.  These tests hold it to exactly
what the records say: after other sessions' STORE and EXPUNGE, after a writer the session
gets no notification from, across chunk boundaries, and byte for byte against the record
path.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer

from mailserve.core.mailcore import FLAGS_ADD, MailCore
from tests.imap.imapserver import IMAPTestServer, RawClient, in_thread, message


@pytest.fixture(scope="module")
def imap(tmp_path_factory):
    server = IMAPTestServer(tmp_path_factory.mktemp("imap-fetch-flagindex"))
    yield server
    server.stop()


@defer.inlineCallbacks
def make_mailbox(imap, name: str, count: int, keywords_of=lambda n: ()):
    """Create ``name`` holding ``count`` messages (appended concurrently); fires with its id."""
    account = imap.account_id()
    box = yield imap.core.create_mailbox(account, name)
    appends = [imap.core.append(account, box.id, message(n), list(keywords_of(n))) for n in range(1, count + 1)]
    yield defer.gatherResults(appends)
    return box.id


def session(imap, mailbox: str, *setup: str, open_with: str = "SELECT") -> RawClient:
    client = RawClient(imap.port())
    client.login()
    for command in setup:
        client.command(command)
    _, status = client.command(f"{open_with} {mailbox}")
    assert status.startswith(b"OK"), status
    return client


def record_lines(imap, mailbox_id: int, recent: bool = False) -> list[bytes]:
    """``* n FETCH (UID u FLAGS (...) MODSEQ (m))`` from the message records themselves."""
    core, account = imap.core, imap.account_id()
    uids = core.mailbox_uids(account, mailbox_id)
    lines = []
    for seq, ((uid, _), record) in enumerate(zip(uids, core.get_messages(account, [m for _, m in uids]),
                                                 strict=True), 1):
        flags = sorted(record.keywords) + (["\\Recent"] if recent else [])
        lines.append(b"* %d FETCH (UID %d FLAGS (%s) MODSEQ (%d))"
                     % (seq, uid, " ".join(flags).encode(), record.modseq))
    return lines


@pytest_twisted.inlineCallbacks
def test_flag_resync_is_exactly_the_records(imap):
    box = yield make_mailbox(imap, "Resync", 5, lambda n: {1: ["\\Seen"], 3: ["$Work", "\\Flagged"]}.get(n, ()))

    def scenario():
        client = session(imap, "Resync", "ENABLE CONDSTORE")
        lines, status = client.command("FETCH 1:* (UID FLAGS MODSEQ)")
        client.close()
        return lines, status

    lines, status = yield in_thread(scenario)
    assert status == b"OK FETCH completed"
    assert [_sorted_flags(line) for line in lines] == record_lines(imap, box, recent=True)
    assert lines[0].startswith(b"* 1 FETCH (UID 1 FLAGS (")
    # appended concurrently, so which UID got which flags is the core's choice
    assert sum(b"$Work" in line and b"\\Flagged" in line for line in lines) == 1
    assert sum(b"\\Seen" in line for line in lines) == 1


def _sorted_flags(line: bytes) -> bytes:
    head, rest = line.split(b"FLAGS (", 1)
    flags, tail = rest.split(b")", 1)
    return head + b"FLAGS (" + b" ".join(sorted(flags.split(), key=_flag_order)) + b")" + tail


def _flag_order(flag: bytes):
    return (flag == b"\\Recent", flag)


@pytest_twisted.inlineCallbacks
def test_other_sessions_changes_and_no_expunge_during_fetch(imap):
    yield make_mailbox(imap, "Shared", 4)

    def scenario():
        a = session(imap, "Shared")
        b = session(imap, "Shared")
        b.command("STORE 1 +FLAGS.SILENT (\\Answered)")
        b.command("STORE 2 +FLAGS.SILENT (\\Deleted)")
        _, status = b.command("EXPUNGE")
        assert status.startswith(b"OK")
        # RFC 9051 §7.5.1: no EXPUNGE during FETCH by sequence number; the expunged
        # message is simply absent, the others show their committed flags.
        during, _ = a.command("FETCH 1:* (FLAGS UID)")
        after, _ = a.command("NOOP")
        a.close()
        b.close()
        return during, after

    during, after = yield in_thread(scenario)
    assert during == [
        b"* 1 FETCH (FLAGS (\\Answered \\Recent) UID 1)",
        b"* 3 FETCH (FLAGS (\\Recent) UID 3)",  # 2 is gone: absent, not announced
        b"* 4 FETCH (FLAGS (\\Recent) UID 4)",
        b"* 1 FETCH (FLAGS (\\Answered \\Recent))",  # b's STORE, reported at command end (§7.5.2)
    ]
    assert after == [b"* 2 EXPUNGE"]


@pytest_twisted.inlineCallbacks
def test_changedsince_and_unchangedsince_modseqs_are_exact(imap):
    box = yield make_mailbox(imap, "Modseq", 3)

    def scenario():
        client = session(imap, "Modseq", "ENABLE CONDSTORE")
        stored, _ = client.command("UID STORE 2 +FLAGS (\\Seen)")
        stamp = int(stored[0].rsplit(b"MODSEQ (", 1)[1].split(b")")[0])
        changed, _ = client.command(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {stamp - 1})")
        _, status = client.command(f"UID STORE 1:3 (UNCHANGEDSINCE {stamp - 1}) +FLAGS.SILENT (\\Flagged)")
        everything, _ = client.command("UID FETCH 1:* (MODSEQ)")
        client.close()
        return stamp, changed, status, everything

    stamp, changed, status, everything = yield in_thread(scenario)
    assert changed == [b"* 2 FETCH (UID 2 FLAGS (\\Recent \\Seen) MODSEQ (%d))" % stamp]
    assert status.startswith(b"OK [MODIFIED 2]")
    records = record_lines(imap, box)
    modseqs = [line.rsplit(b"MODSEQ", 1)[1] for line in records]
    assert [line.rsplit(b"MODSEQ", 1)[1] for line in everything if b"FETCH" in line] == modseqs
    assert modseqs[1] == b" (%d))" % stamp  # the failed conditional STORE left it alone
    assert all(int(m[2:-2]) > stamp for i, m in enumerate(modseqs) if i != 1)


@pytest_twisted.inlineCallbacks
def test_a_writer_without_notification_is_seen(imap):
    """A change committed by another writer (the CLI in another process does the same) is
    announced to no session, yet the next FETCH must show it."""
    box = yield make_mailbox(imap, "Quiet", 2)
    client = yield in_thread(session, imap, "Quiet")
    other = MailCore(imap.core.metadata, imap.core.blobs)
    yield other.store_flags(imap.account_id(), box, [2], FLAGS_ADD, ["$Elsewhere"])
    lines, _ = yield in_thread(client.command, "FETCH 2 (FLAGS)")
    yield in_thread(client.close)
    assert lines == [b"* 2 FETCH (FLAGS ($Elsewhere \\Recent))"] or lines == [
        b"* 2 FETCH (FLAGS (\\Recent $Elsewhere))"]


@pytest_twisted.inlineCallbacks
def test_chunks_and_the_record_path_agree_byte_for_byte(imap, monkeypatch):
    """More messages than one chunk (1024), one expunged in the second chunk: the index
    path and the record path (caching off) send the same bytes."""
    box = yield make_mailbox(imap, "Big", 1100, lambda n: ["\\Seen"] if n % 3 == 0 else [f"$K{n % 4}"])
    account = imap.account_id()
    yield imap.core.store_flags(account, box, [1050], FLAGS_ADD, ["\\Deleted"])
    yield imap.core.expunge(account, box)

    def fetch():
        client = session(imap, "Big", "ENABLE CONDSTORE", open_with="EXAMINE")  # no \\Recent claims
        lines, status = client.command("FETCH 1:* (FLAGS UID MODSEQ)")
        client.close()
        assert status == b"OK FETCH completed"
        return lines

    indexed = yield in_thread(fetch)
    # The index lost after the first chunk (a write burst outran a rebuild): the rest is
    # read from the records.
    real_flag_index, calls = imap.core.flag_index, []

    def lost_after_first_chunk(account, mailbox):
        calls.append(mailbox)
        return real_flag_index(account, mailbox) if len(calls) == 1 else defer.succeed(None)

    monkeypatch.setattr(imap.core, "flag_index", lost_after_first_chunk)
    switched = yield in_thread(fetch)
    assert len(calls) == 2
    monkeypatch.setattr(imap.core, "_snapshot_budget", 0)
    from_records = yield in_thread(fetch)
    assert len(indexed) == 1099
    assert indexed == from_records == switched
    assert b"UID 1051 " in indexed[1049]
