"""SEARCH keeps a session's message list between commands: it must stay exact while other
sessions change flags, expunge and deliver (the list is refreshed from the change log)."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread

from tests.imap.imapserver import IMAPTestServer, RawClient, in_thread, message


@pytest.fixture
def imap(tmp_path):
    server = IMAPTestServer(tmp_path)
    yield server
    server.stop()


def search(client: RawClient, criteria: str) -> list[int]:
    untagged, status = client.command("SEARCH " + criteria)
    assert status.startswith(b"OK"), status
    lines = [line for line in untagged if line.startswith(b"* SEARCH")]
    assert len(lines) == 1, untagged
    return [int(n) for n in lines[0].split()[2:]]


@pytest_twisted.inlineCallbacks
def test_repeated_search_follows_every_change_by_any_session(imap):
    for n in range(1, 9):
        yield imap.deliver(message(n, subject="Budget" if n % 2 else "Lunch"))

    def scenario():
        a, b = RawClient(imap.port()), RawClient(imap.port())
        a.login()
        b.login()
        a.command("SELECT INBOX")
        b.command("SELECT INBOX")
        assert search(a, "UNSEEN") == list(range(1, 9))
        assert search(a, "UNSEEN") == list(range(1, 9))  # the kept list
        # Another session changes flags: the next search sees it at once.
        b.command("STORE 2,5 +FLAGS.SILENT (\\Seen)")
        assert search(a, "UNSEEN") == [1, 3, 4, 6, 7, 8]
        assert search(a, "SEEN") == [2, 5]
        # This session's own change, and a keyword.
        a.command("STORE 1 +FLAGS.SILENT (\\Seen $Work)")
        assert search(a, "UNSEEN") == [3, 4, 6, 7, 8]
        assert search(a, "KEYWORD $Work") == [1]
        assert search(a, "SUBJECT Budget UNSEEN") == [3, 7]
        # Another session expunges: until a is told, its numbers stay, the message is gone.
        b.command("STORE 3 +FLAGS.SILENT (\\Deleted)")
        b.command("EXPUNGE")
        assert search(a, "DELETED") == []
        assert 3 not in search(a, "UNSEEN")
        # NOOP applies the expunge to a's numbering: the list is rebuilt to match.
        a.command("NOOP")
        assert search(a, "UNSEEN") == [3, 5, 6, 7]
        b.command("STORE 1:* -FLAGS.SILENT (\\Seen)")
        assert search(a, "UNSEEN") == list(range(1, 8))
        # New mail: searched once the session was told (EXISTS), flags included.
        blockingCallFromThread(reactor, imap.deliver, message(9), keywords=["\\Flagged"])
        a.command("NOOP")
        assert search(a, "FLAGGED") == [8]
        assert search(a, "UNSEEN") == list(range(1, 9))
        a.close()
        b.close()

    yield in_thread(scenario)
