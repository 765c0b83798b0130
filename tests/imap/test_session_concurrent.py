"""Several sessions on one mailbox: each sees the others' changes exactly as RFC 9051 §7.5.1
and RFC 7162 allow, fed by the core's change log."""

from __future__ import annotations

import pytest
import pytest_twisted

from tests.imap.imapserver import IMAPTestServer, RawClient, in_thread, message


@pytest.fixture
def imap(tmp_path):
    server = IMAPTestServer(tmp_path)
    yield server
    server.stop()


@pytest_twisted.inlineCallbacks
def test_expunge_and_flags_seen_by_other_session(imap):
    for n in range(1, 6):
        yield imap.deliver(message(n))

    def scenario():
        a, b = RawClient(imap.port()), RawClient(imap.port())
        a.login()
        b.login()
        a.command("SELECT INBOX")
        untagged, status = b.command("SELECT INBOX")
        assert b"* 5 EXISTS" in untagged
        # a flags 2 and deletes 3 and 4, then expunges
        a.command("STORE 2 +FLAGS.SILENT (\\Flagged)")
        a.command("STORE 3:4 +FLAGS.SILENT (\\Deleted)")
        untagged_a, _status_a = a.command("EXPUNGE")
        assert untagged_a == [b"* 4 EXPUNGE", b"* 3 EXPUNGE"], untagged_a
        # b's FETCH by sequence number must not see EXPUNGE (RFC 9051 §7.5.1), only FLAGS
        during_fetch, _ = b.command("FETCH 1 (FLAGS)")
        assert not any(b"EXPUNGE" in line for line in during_fetch), during_fetch
        assert b"* 1 FETCH (FLAGS (\\Recent))" in during_fetch or b"* 1 FETCH (FLAGS ())" in during_fetch
        assert any(line.startswith(b"* 2 FETCH (FLAGS (\\Flagged") for line in during_fetch), during_fetch
        # NOOP may deliver the expunges; sequence numbers as b still knows them
        noop, status = b.command("NOOP")
        assert noop == [b"* 4 EXPUNGE", b"* 3 EXPUNGE"], noop
        assert status == b"OK NOOP completed"
        # now b numbers like a: message 3 is the former 5
        fetched, _ = b.command("FETCH 3 (UID)")
        assert fetched == [b"* 3 FETCH (UID 5)"]
        a.close()
        b.close()

    yield in_thread(scenario)


@pytest_twisted.inlineCallbacks
def test_new_mail_and_idle(imap):
    yield imap.deliver(message(1))
    client = yield in_thread(lambda: RawClient(imap.port()))

    def start_idle():
        client.login()
        client.command("SELECT INBOX")
        client.send(b"i1 IDLE\r\n")
        return client.line()

    cont = yield in_thread(start_idle)
    assert cont == b"+ idling"
    yield imap.deliver(message(2))
    lines = yield in_thread(lambda: [client.line(), client.line()])
    assert lines == [b"* 2 EXISTS", b"* 2 RECENT"]
    # a flag change by someone else arrives during IDLE too
    box = imap.core.find_mailbox(imap.account_id(), "INBOX")
    yield imap.core.store_flags(imap.account_id(), box.id, [1], "add", ["\\Answered"])
    line = yield in_thread(client.line)
    assert line == b"* 1 FETCH (FLAGS (\\Answered \\Recent))"
    yield imap.core.store_flags(imap.account_id(), box.id, [1], "add", ["\\Deleted"])
    yield in_thread(client.line)
    yield imap.core.expunge(imap.account_id(), box.id)
    line = yield in_thread(client.line)
    assert line == b"* 1 EXPUNGE"

    def done():
        client.send(b"DONE\r\n")
        result = client.until(b"i1")
        client.close()
        return result

    untagged, status = yield in_thread(done)
    assert status == b"OK IDLE completed" and untagged == []


@pytest_twisted.inlineCallbacks
def test_condstore_and_qresync(imap):
    for n in range(1, 4):
        yield imap.deliver(message(n))

    def scenario():
        a = RawClient(imap.port())
        a.login()
        untagged, _ = a.command("ENABLE QRESYNC IMAP4rev2")
        assert untagged == [b"* ENABLED QRESYNC IMAP4rev2"]
        untagged, _ = a.command("SELECT INBOX")
        uidvalidity = int(next(x for x in untagged if b"UIDVALIDITY" in x).split()[3].rstrip(b"]"))
        modseq = int(next(x for x in untagged if b"HIGHESTMODSEQ" in x).split()[3].rstrip(b"]"))
        untagged, status = a.command(f"STORE 1 (UNCHANGEDSINCE {modseq}) +FLAGS (\\Seen)")
        assert untagged[0].startswith(b"* 1 FETCH (UID 1 FLAGS (\\Seen) MODSEQ (")
        new_modseq = int(untagged[0].rsplit(b"(", 1)[1].rstrip(b")"))
        assert new_modseq > modseq
        untagged, status = a.command(f"STORE 1 (UNCHANGEDSINCE {modseq}) +FLAGS (\\Flagged)")
        assert status.startswith(b"OK [MODIFIED 1]"), status
        a.command("STORE 2 +FLAGS.SILENT (\\Deleted)")
        untagged, status = a.command("EXPUNGE")
        assert untagged == [b"* VANISHED 2"]
        assert status.startswith(b"OK [HIGHESTMODSEQ ")
        untagged, _ = a.command(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)")
        assert untagged[0] == b"* VANISHED (EARLIER) 2"
        assert untagged[1].startswith(b"* 1 FETCH (UID 1 FLAGS (\\Seen) MODSEQ (")
        a.command("UNSELECT")
        untagged, status = a.command(f"SELECT INBOX (QRESYNC ({uidvalidity} {modseq} 1:3))")
        assert b"* VANISHED (EARLIER) 2" in untagged
        assert any(x.startswith(b"* 1 FETCH (UID 1 FLAGS (\\Seen) MODSEQ") for x in untagged)
        assert not any(x.startswith(b"* 2 FETCH") for x in untagged)
        a.close()

    yield in_thread(scenario)


@pytest_twisted.inlineCallbacks
def test_move_copy_uidplus_and_junk_training(imap):
    trained = []
    imap.server.spam_training = lambda account, messages, spam: trained.append((account, len(messages), spam))
    for n in range(1, 4):
        yield imap.deliver(message(n))

    def scenario():
        a = RawClient(imap.port())
        a.login()
        a.command("SELECT INBOX")
        untagged, status = a.command("COPY 1 Archive")
        assert status.startswith(b"OK [COPYUID ") and b" 1 1]" in status
        untagged, status = a.command("UID MOVE 2:3 Junk")
        assert untagged[0].startswith(b"* OK [COPYUID ") and untagged[0].endswith(b" 2:3 1:2] Moved")
        assert untagged[1:] == [b"* 3 EXPUNGE", b"* 2 EXPUNGE"]
        _, status = a.command("COPY 1 Nowhere")
        assert status.startswith(b"NO [TRYCREATE]")
        a.close()

    yield in_thread(scenario)
    assert trained == [(imap.account_id(), 2, True)]
