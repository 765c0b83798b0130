"""Two sessions on one mailbox over the wire: one EXPUNGEs and sets flags, the other sees
exactly the untagged responses RFC 9051 §7.5.1 allows, when it allows them (no EXPUNGE
during FETCH, STORE or SEARCH by sequence number; EXISTS and FETCH at any time)."""

from __future__ import annotations

import pytest
import pytest_twisted

from tests.imap.imapserver import IMAPTestServer, RawClient, in_thread, message


@pytest.fixture
def imap(tmp_path):
    server = IMAPTestServer(tmp_path)
    for n in range(1, 7):
        pytest_twisted.blockon(server.deliver(message(n)))
    yield server
    server.stop()


def pair(imap, *enable: str) -> tuple[RawClient, RawClient]:
    a, b = RawClient(imap.port()), RawClient(imap.port())
    a.login()
    b.login()
    if enable:
        b.command("ENABLE " + " ".join(enable))
    a.command("SELECT INBOX")  # a claims \Recent, so b's flags are plain
    b.command("SELECT INBOX")
    return a, b


def change_from_a(a: RawClient) -> list[bytes]:
    """a flags 2, deletes 3 and 5, expunges; returns what a itself was told."""
    assert a.command("STORE 2 +FLAGS.SILENT (\\Flagged)") == ([], b"OK STORE completed")
    assert a.command("STORE 3,5 +FLAGS.SILENT (\\Deleted)") == ([], b"OK STORE completed")
    untagged, status = a.command("EXPUNGE")
    assert status == b"OK EXPUNGE completed"
    return untagged


@pytest_twisted.inlineCallbacks
def test_no_expunge_during_sequence_commands(imap):
    def scenario():
        a, b = pair(imap)
        out = {"a_expunge": change_from_a(a)}
        out["b_store"] = b.command("STORE 1 +FLAGS (\\Seen)")
        out["b_search"] = b.command("SEARCH ALL")
        out["b_fetch"] = b.command("FETCH 6 (UID)")
        out["b_noop"] = b.command("NOOP")
        out["b_after"] = b.command("FETCH 1:* (UID)")
        out["a_noop"] = a.command("NOOP")  # b's own \Seen reaches a
        a.close()
        b.close()
        return out

    out = yield in_thread(scenario)
    # a hears its own expunges, in decreasing order so each number is still valid, and no
    # echo of its own flag changes
    assert out["a_expunge"] == [b"* 5 EXPUNGE", b"* 3 EXPUNGE"]
    # STORE by sequence number: b's own result, a's flag change on 2, but no EXPUNGE yet
    assert out["b_store"] == ([b"* 1 FETCH (FLAGS (\\Seen))", b"* 2 FETCH (FLAGS (\\Flagged))"],
                              b"OK STORE completed")
    # SEARCH and FETCH by sequence number still number as b knows the mailbox: 6 messages;
    # the expunged ones no longer match
    assert out["b_search"] == ([b"* SEARCH 1 2 4 6"], b"OK SEARCH completed")
    assert out["b_fetch"] == ([b"* 6 FETCH (UID 6)"], b"OK FETCH completed")
    # NOOP may deliver the expunges, highest first
    assert out["b_noop"] == ([b"* 5 EXPUNGE", b"* 3 EXPUNGE"], b"OK NOOP completed")
    assert out["b_after"][0] == [b"* 1 FETCH (UID 1)", b"* 2 FETCH (UID 2)", b"* 3 FETCH (UID 4)",
                                 b"* 4 FETCH (UID 6)"]
    assert out["a_noop"] == ([b"* 1 FETCH (FLAGS (\\Recent \\Seen))"], b"OK NOOP completed")


@pytest_twisted.inlineCallbacks
def test_uid_commands_may_carry_expunge_and_exists_arrives_any_time(imap):
    box = imap.core.find_mailbox(imap.account_id(), "INBOX")

    def first():
        a, b = pair(imap)
        change_from_a(a)
        return a, b, b.command("UID FETCH 4 (FLAGS)")

    a, b, uid_fetch = yield in_thread(first)
    # a UID command may carry the EXPUNGEs, after its own data (numbered before them); the
    # flag change that follows is numbered after them
    assert uid_fetch == ([b"* 4 FETCH (UID 4 FLAGS ())", b"* 5 EXPUNGE", b"* 3 EXPUNGE",
                          b"* 2 FETCH (UID 2 FLAGS (\\Flagged))"], b"OK UID FETCH completed")
    yield imap.deliver(message(7))
    yield imap.core.store_flags(imap.account_id(), box.id, [4], "add", ["$Label"])
    # a new message and a flag change arrive even during a FETCH by sequence number
    fetched = yield in_thread(b.command, "FETCH 1 (UID)")
    # (b is the first session to learn of message 7, so b gets it as \\Recent)
    assert fetched == ([b"* 1 FETCH (UID 1)", b"* 5 EXISTS", b"* 1 RECENT", b"* 3 FETCH (FLAGS ($Label))"],
                       b"OK FETCH completed")
    yield in_thread(lambda: (a.close(), b.close()))


@pytest_twisted.inlineCallbacks
def test_condstore_and_qresync_sessions_see_modseq_and_vanished(imap):
    def scenario():
        a, b = pair(imap, "QRESYNC")
        change_from_a(a)
        out = {"b_fetch": b.command("FETCH 1 (UID)"), "b_noop": b.command("NOOP")}
        a.close()
        b.close()
        return out

    out = yield in_thread(scenario)
    fetch_untagged = out["b_fetch"][0]
    assert fetch_untagged[0] == b"* 1 FETCH (UID 1)"
    # RFC 7162 §3.1: with CONDSTORE every unsolicited FETCH carries UID and MODSEQ
    assert fetch_untagged[1].startswith(b"* 2 FETCH (UID 2 FLAGS (\\Flagged) MODSEQ (")
    assert len(fetch_untagged) == 2
    # RFC 7162 §3.2.10: with QRESYNC expunges are VANISHED, by UID
    assert out["b_noop"] == ([b"* VANISHED 3,5"], b"OK NOOP completed")


def apply_expunges(uids: list[int], lines: list[bytes]) -> list[int]:
    """What a client's view becomes after the EXPUNGE lines, in the order sent."""
    view = list(uids)
    for line in lines:
        if line.endswith(b" EXPUNGE"):
            del view[int(line.split()[1]) - 1]
    return view


@pytest_twisted.inlineCallbacks
def test_own_move_with_pending_expunges_keeps_numbering_consistent(imap):
    def scenario():
        a, b = pair(imap)
        change_from_a(a)  # b has not heard of 3 and 5 going
        moved = b.command("MOVE 4 Trash")
        fetched = b.command("FETCH 1:* (UID)")
        a.close()
        b.close()
        return moved, fetched

    moved, fetched = yield in_thread(scenario)
    untagged, status = moved
    assert status == b"OK MOVE completed"
    assert untagged[0].startswith(b"* OK [COPYUID ") and untagged[0].endswith(b" 4 1] Moved")
    # every EXPUNGE number was valid when sent: replaying them gives the server's view
    # b's own expunge and a's pending ones, highest first, then a's flag change on 2
    assert untagged[1:] == [b"* 5 EXPUNGE", b"* 4 EXPUNGE", b"* 3 EXPUNGE", b"* 2 FETCH (FLAGS (\\Flagged))"]
    assert apply_expunges([1, 2, 3, 4, 5, 6], untagged[1:]) == [1, 2, 6]
    assert fetched == ([b"* 1 FETCH (UID 1)", b"* 2 FETCH (UID 2)", b"* 3 FETCH (UID 6)"], b"OK FETCH completed")
