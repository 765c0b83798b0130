"""SEARCH, ESEARCH, SEARCHRES, SORT and THREAD as a client sees them over the wire."""

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
def test_search_forms(imap):
    yield imap.deliver(message(1, subject="zebra crossing"), keywords=["\\Seen"])
    yield imap.deliver(message(2, subject="apple pie", body="tangerine " * 3))
    yield imap.deliver(message(3, subject="mango", In_Reply_To="<m1@example.test>",
                               References="<m1@example.test>"), keywords=["\\Flagged"])

    def scenario():
        c = RawClient(imap.port())
        c.login()
        c.command("SELECT INBOX")
        out = {}
        out["unseen"] = c.command("SEARCH UNSEEN")
        out["uid_flagged"] = c.command("UID SEARCH FLAGGED")
        out["header"] = c.command('SEARCH SUBJECT "PIE"')
        out["esearch"] = c.command("SEARCH RETURN (MIN MAX COUNT) UNSEEN")
        out["save"] = c.command("SEARCH RETURN (SAVE) SUBJECT mango")
        out["saved_fetch"] = c.command("FETCH $ (UID)")
        out["sort"] = c.command("SORT (SUBJECT) UTF-8 ALL")
        out["thread"] = c.command("THREAD REFERENCES UTF-8 ALL")
        out["charset"] = c.command("SEARCH CHARSET KOI8-R ALL")
        out["bad"] = c.command("SEARCH FROBNICATE")
        c.close()
        return out

    out = yield in_thread(scenario)
    assert out["unseen"] == ([b"* SEARCH 2 3"], b"OK SEARCH completed")
    assert out["uid_flagged"][0] == [b"* SEARCH 3"]
    assert out["header"][0] == [b"* SEARCH 2"]
    assert out["esearch"][0][0].endswith(b"MIN 2 MAX 3 COUNT 2")
    assert out["save"][0] == []
    assert out["saved_fetch"][0] == [b"* 3 FETCH (UID 3)"]
    assert out["sort"][0] == [b"* SORT 2 3 1"]
    assert out["thread"][0] == [b"* THREAD (1 3)(2)"]
    assert out["charset"][1].startswith(b"NO [BADCHARSET")
    assert out["bad"][1].startswith(b"BAD")
