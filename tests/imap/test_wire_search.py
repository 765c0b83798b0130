"""ESEARCH (RFC 4731) and SEARCHRES (RFC 5182) over the wire, and the IMAP4rev2 SEARCH
answer (RFC 9051 §6.4.4: always ESEARCH)."""

from __future__ import annotations

import pytest
import pytest_twisted

from tests.imap.imapserver import OTHER, IMAPTestServer, RawClient, in_thread, message


@pytest.fixture(scope="module")
def imap(tmp_path_factory):
    server = IMAPTestServer(tmp_path_factory.mktemp("imap-search"))
    for n in range(1, 11):
        # messages 2, 4, 6, 8, 10 are \Seen; 3 and 7 are \Flagged
        flags = (["\\Seen"] if n % 2 == 0 else []) + (["\\Flagged"] if n in (3, 7) else [])
        pytest_twisted.blockon(server.deliver(message(n, subject=f"topic {n}"), user=OTHER, keywords=flags))
    yield server
    server.stop()


def session(imap) -> RawClient:
    c = RawClient(imap.port())
    c.login(OTHER)
    _, status = c.command("EXAMINE INBOX")
    assert status.startswith(b"OK"), status
    return c


@pytest_twisted.inlineCallbacks
def test_esearch_return_options(imap):
    def scenario():
        c = session(imap)
        out = {name: c.command(cmd) for name, cmd in {
            "all": "SEARCH RETURN (MIN MAX COUNT ALL) SEEN",
            "default": "SEARCH RETURN () UNSEEN",
            "count_only": "SEARCH RETURN (COUNT) FLAGGED",
            "none": "SEARCH RETURN (MIN MAX COUNT ALL) KEYWORD $Nothing",
            "uid": "UID SEARCH RETURN (MIN MAX) 2:4",
            "plain": "SEARCH FLAGGED",
            "bad_option": "SEARCH RETURN (FROB) ALL",
            "bad_list": "SEARCH RETURN MIN ALL",
        }.items()}
        c.close()
        return out

    out = yield in_thread(scenario)

    def reply(name):
        untagged, status = out[name]
        return [line.split(b") ", 1)[-1] if line.startswith(b"* ESEARCH (TAG") else line for line in untagged], status

    assert reply("all") == ([b"MIN 2 MAX 10 ALL 2,4,6,8,10 COUNT 5"], b"OK SEARCH completed")
    assert reply("default")[0] == [b"ALL 1,3,5,7,9"]  # RETURN () means RETURN (ALL)
    assert reply("count_only")[0] == [b"COUNT 2"]
    # nothing matched: only COUNT 0 remains (RFC 4731 §3.1)
    assert reply("none")[0] == [b"COUNT 0"]
    assert reply("uid")[0] == [b"UID MIN 2 MAX 4"]
    assert out["uid"][0][0].startswith(b'* ESEARCH (TAG "t')
    assert out["plain"] == ([b"* SEARCH 3 7"], b"OK SEARCH completed")  # no RETURN: IMAP4rev1 SEARCH
    assert out["bad_option"][1].startswith(b"BAD ") and out["bad_list"][1].startswith(b"BAD ")


@pytest_twisted.inlineCallbacks
def test_searchres_saved_result(imap):
    def scenario():
        c = session(imap)
        out = {"empty_before": c.command("FETCH $ (UID)")}
        out["save_only"] = c.command("SEARCH RETURN (SAVE) FLAGGED")
        out["fetch"] = c.command("FETCH $ (UID)")
        out["uid_fetch"] = c.command("UID FETCH $ (UID)")
        out["search_in"] = c.command("SEARCH $ SUBJECT topic")
        out["combined"] = c.command("UID SEARCH RETURN (SAVE ALL) UID 4:6")
        out["after_combined"] = c.command("FETCH $ (UID)")
        # with MIN/MAX only those are saved (RFC 5182 §2.4)
        out["min_max"] = c.command("SEARCH RETURN (SAVE MIN MAX) SEEN")
        out["after_min_max"] = c.command("UID SEARCH UID $")
        # with COUNT the whole result is saved
        c.command("SEARCH RETURN (SAVE COUNT) UNSEEN")
        out["after_count"] = c.command("SEARCH $")
        # a failed SEARCH with SAVE empties the saved result (RFC 5182 §2.1)
        out["failed"] = c.command("SEARCH RETURN (SAVE) FROB")
        out["after_failed"] = c.command("SEARCH $")
        # re-selecting resets it too
        c.command("SEARCH RETURN (SAVE) ALL")
        c.command("EXAMINE INBOX")
        out["after_select"] = c.command("SEARCH $")
        c.close()
        return out

    out = yield in_thread(scenario)
    assert out["empty_before"] == ([], b"OK FETCH completed")
    assert out["save_only"] == ([], b"OK SEARCH completed")  # SAVE alone sends no ESEARCH
    assert out["fetch"][0] == [b"* 3 FETCH (UID 3)", b"* 7 FETCH (UID 7)"]
    assert out["uid_fetch"][0] == [b"* 3 FETCH (UID 3)", b"* 7 FETCH (UID 7)"]
    assert out["search_in"][0] == [b"* SEARCH 3 7"]
    assert out["combined"][0][0].endswith(b") UID ALL 4:6")
    assert out["after_combined"][0] == [b"* 4 FETCH (UID 4)", b"* 5 FETCH (UID 5)", b"* 6 FETCH (UID 6)"]
    assert out["min_max"][0][0].endswith(b") MIN 2 MAX 10")
    assert out["after_min_max"][0] == [b"* SEARCH 2 10"]
    assert out["after_count"][0] == [b"* SEARCH 1 3 5 7 9"]
    assert out["failed"][1].startswith(b"BAD ")
    assert out["after_failed"][0] == [b"* SEARCH"]
    assert out["after_select"][0] == [b"* SEARCH"]


@pytest_twisted.inlineCallbacks
def test_saved_result_follows_expunge_and_store(imap):
    def scenario():
        c = RawClient(imap.port())
        c.login(OTHER)
        c.command("CREATE Scratch")
        c.command("SELECT INBOX")
        c.command("COPY 1:5 Scratch")
        c.command("SELECT Scratch")
        c.command("SEARCH RETURN (SAVE) 2:4")
        out = {"store": c.command("STORE $ +FLAGS.SILENT (\\Deleted)")}
        c.command("STORE 3 -FLAGS.SILENT (\\Deleted)")
        out["expunge"] = c.command("EXPUNGE")
        # the expunged messages left the saved result; message 3 (now 2) remains
        out["fetch"] = c.command("FETCH $ (UID)")
        c.command("UNSELECT")
        c.command("DELETE Scratch")
        c.close()
        return out

    out = yield in_thread(scenario)
    assert out["store"] == ([], b"OK STORE completed")
    assert out["expunge"][0] == [b"* 4 EXPUNGE", b"* 2 EXPUNGE"]
    assert out["fetch"][0] == [b"* 2 FETCH (UID 3)"]


@pytest_twisted.inlineCallbacks
def test_imap4rev2_search_answers_with_esearch(imap):
    def scenario():
        c = RawClient(imap.port())
        c.login(OTHER)
        c.command("ENABLE IMAP4rev2")
        c.command("EXAMINE INBOX")
        out = {"search": c.command("SEARCH FLAGGED"), "uid": c.command("UID SEARCH FLAGGED"),
               "none": c.command("SEARCH KEYWORD $Nothing")}
        c.close()
        return out

    out = yield in_thread(scenario)
    assert out["search"][0] == [b'* ESEARCH (TAG "t4") ALL 3,7']
    assert out["uid"][0] == [b'* ESEARCH (TAG "t5") UID ALL 3,7']
    assert out["none"][0] == [b'* ESEARCH (TAG "t6")']


@pytest_twisted.inlineCallbacks
def test_charset_after_utf8_accept(imap):
    def scenario():
        c = RawClient(imap.port())
        c.login(OTHER)
        out = {"legacy": (c.command("EXAMINE INBOX"), c.command("SEARCH CHARSET UTF-8 SUBJECT topic"))[1]}
        c.command("UNSELECT")
        c.command("ENABLE UTF8=ACCEPT")
        c.command("EXAMINE INBOX")
        out["search_charset"] = c.command("SEARCH CHARSET UTF-8 SUBJECT topic")
        out["search_return_charset"] = c.command("SEARCH RETURN (COUNT) CHARSET US-ASCII ALL")
        out["search"] = c.command('SEARCH SUBJECT "topic 1"')
        out["sort_ascii"] = c.command("SORT (SUBJECT) US-ASCII ALL")
        out["sort_utf8"] = c.command("SORT (SUBJECT) UTF-8 FLAGGED")
        out["thread_ascii"] = c.command("THREAD REFERENCES US-ASCII ALL")
        c.close()
        return out

    out = yield in_thread(scenario)
    assert out["legacy"] == ([b"* SEARCH 1 2 3 4 5 6 7 8 9 10"], b"OK SEARCH completed")
    # RFC 6855 §3 and erratum 4029: after ENABLE UTF8=ACCEPT a CHARSET conflicts
    assert out["search_charset"][1].startswith(b"BAD ")
    assert out["search_return_charset"][1].startswith(b"BAD ")
    assert out["search"] == ([b"* SEARCH 1 10"], b"OK SEARCH completed")
    assert out["sort_ascii"][1].startswith(b"BAD ") and out["thread_ascii"][1].startswith(b"BAD ")
    assert out["sort_utf8"] == ([b"* SORT 3 7"], b"OK SORT completed")
