"""Session-level behaviour over the wire: the advertised capabilities, ID (RFC 2971),
ENABLE (RFC 5161), IMAP4rev2 differences (RFC 9051 Appendix E), UNSELECT (RFC 3691) and
CLOSE, and SASL-IR (RFC 4959) with AUTHENTICATE PLAIN."""

from __future__ import annotations

import base64
import re

import pytest
import pytest_twisted

from tests.imap.imapserver import OTHER, PASSWORD, USER, IMAPTestServer, RawClient, in_thread, message

POST_AUTH = {
    "IMAP4rev1", "IMAP4rev2", "LITERAL+", "ENABLE", "ID", "SASL-IR", "IDLE", "NAMESPACE", "UIDPLUS", "MOVE",
    "UNSELECT", "CHILDREN", "SPECIAL-USE", "CREATE-SPECIAL-USE", "LIST-EXTENDED", "LIST-STATUS", "STATUS=SIZE",
    "QUOTA", "QUOTA=RES-STORAGE", "QUOTA=RES-MESSAGE", "CONDSTORE", "QRESYNC", "ESEARCH", "SEARCHRES", "SORT",
    "SORT=DISPLAY", "THREAD=REFERENCES", "THREAD=ORDEREDSUBJECT", "UTF8=ACCEPT", "BINARY",
    "APPENDLIMIT=52428800",
}


@pytest.fixture(scope="module")
def imap(tmp_path_factory):
    server = IMAPTestServer(tmp_path_factory.mktemp("imap-session"))
    for n in range(1, 4):
        pytest_twisted.blockon(server.deliver(message(n), user=OTHER, keywords=["\\Deleted"] if n == 2 else []))
    yield server
    server.stop()


@pytest_twisted.inlineCallbacks
def test_capabilities_before_and_after_login(imap):
    def scenario():
        c = RawClient(imap.port())
        greeting = c.greeting
        before = c.command("CAPABILITY")
        login = c.command(f'LOGIN {USER} "{PASSWORD}"')[1]
        after = c.command("CAPABILITY")
        c.close()
        return greeting, before, login, after

    greeting, before, login, after = yield in_thread(scenario)
    pre = set(before[0][0].split()[2:])
    assert greeting == b"* OK [CAPABILITY " + before[0][0][len(b"* CAPABILITY "):] + b"] mailserve IMAP ready"
    # the test listener allows plaintext authentication and has no STARTTLS
    assert {c.decode() for c in pre} == {"IMAP4rev1", "IMAP4rev2", "LITERAL+", "ENABLE", "ID", "SASL-IR",
                                         "AUTH=PLAIN", "STARTTLS"}
    post = {c.decode() for c in after[0][0].split()[2:]}
    assert post == POST_AUTH
    # the tagged OK of LOGIN carries the new list, so clients need not ask (RFC 9051 §6.2.3)
    assert {c.decode() for c in re.search(rb"\[CAPABILITY ([^\]]*)\]", login).group(1).split()} == POST_AUTH


@pytest_twisted.inlineCallbacks
def test_id(imap):
    def scenario():
        c = RawClient(imap.port())
        out = {name: c.command(cmd) for name, cmd in {
            "nil": "ID NIL",
            "pairs": 'ID ("name" "sodr" "version" "19.34" "vendor" NIL)',
            "odd": 'ID ("name")',
            "long_field": 'ID ("' + "f" * 31 + '" "x")',
            "long_value": 'ID ("name" "' + "v" * 1025 + '")',
            "too_many": "ID (" + " ".join(f'"f{i}" "v"' for i in range(31)) + ")",
            "atom": "ID name",
            "empty": "ID ()",
        }.items()}
        c.close()
        return out

    out = yield in_thread(scenario)
    # RFC 2971 §3.1: valid in any state; the server answers with its own identification
    assert out["nil"][0] == [out["pairs"][0][0]]
    assert re.fullmatch(rb'\* ID \("name" "mailserve" "version" "[^"]+"\)', out["nil"][0][0])
    assert out["nil"][1] == b"OK ID completed" and out["pairs"][1] == b"OK ID completed"
    assert out["empty"][1] == b"OK ID completed"
    for name in ("odd", "long_field", "long_value", "too_many", "atom"):
        assert out[name][1].startswith(b"BAD "), (name, out[name])


@pytest_twisted.inlineCallbacks
def test_enable(imap):
    def scenario():
        c = RawClient(imap.port())
        out = {"before_login": c.command("ENABLE CONDSTORE")}
        c.login(OTHER)
        out["mixed"] = c.command("ENABLE CONDSTORE X-UNKNOWN condstore")
        out["again"] = c.command("ENABLE CONDSTORE")
        out["qresync"] = c.command("ENABLE QRESYNC")
        out["none"] = c.command("ENABLE")
        out["not_atom"] = c.command('ENABLE "CONDSTORE"')
        # CONDSTORE is on: STORE answers carry UID and MODSEQ (RFC 7162 §3.1)
        c.command("CREATE Scratch")
        c.send(b"a1 APPEND Scratch {14+}\r\nSubject: x\r\n\r\n\r\n")
        c.until(b"a1")
        c.command("SELECT Scratch")
        out["store"] = c.command("STORE 1 +FLAGS (\\Flagged)")
        c.command("UNSELECT")
        c.command("DELETE Scratch")
        c.close()
        return out

    out = yield in_thread(scenario)
    assert out["before_login"][1].startswith(b"BAD ")
    # RFC 5161 §3.1: ENABLED lists what this command newly enabled; unknown names are ignored
    assert out["mixed"] == ([b"* ENABLED CONDSTORE"], b"OK ENABLE completed")
    assert out["again"] == ([b"* ENABLED"], b"OK ENABLE completed")
    assert out["qresync"] == ([b"* ENABLED QRESYNC"], b"OK ENABLE completed")
    assert out["none"][1].startswith(b"BAD ") and out["not_atom"][1].startswith(b"BAD ")
    assert re.fullmatch(rb"\* 1 FETCH \(UID 1 FLAGS \(\\Flagged \\Recent\) MODSEQ \(\d+\)\)", out["store"][0][0]), out



@pytest_twisted.inlineCallbacks
def test_imap4rev2_differences(imap):
    def scenario():
        rev1, rev2 = RawClient(imap.port()), RawClient(imap.port())
        rev1.login(OTHER)
        rev2.login(OTHER)
        rev1.command("CREATE Caf&AOk-")
        out = {"enable": rev2.command("ENABLE IMAP4rev2")}
        out["select1"] = rev1.command("SELECT INBOX")
        out["select2"] = rev2.command("SELECT INBOX")
        out["fetch1"] = rev1.command("FETCH 1 (FLAGS)")
        out["fetch2"] = rev2.command("FETCH 1 (FLAGS)")
        out["lsub"] = rev2.command('LSUB "" *')
        out["list_subscribed"] = rev2.command('LIST (SUBSCRIBED) "" INBOX')
        out["status_recent"] = rev2.command("STATUS INBOX (RECENT)")
        out["search"] = rev2.command("SEARCH DELETED")
        out["names"] = rev2.command('LIST "" Caf*')  # IMAP4rev2 names are UTF-8 (RFC 9051 §5.1)
        rev1.command("DELETE Caf&AOk-")
        rev1.close()
        rev2.close()
        return out

    out = yield in_thread(scenario)
    assert out["enable"][0] == [b"* ENABLED IMAP4rev2"]
    select1, select2 = b"\n".join(out["select1"][0]), b"\n".join(out["select2"][0])
    assert b"* 3 RECENT" in select1 and b"[UNSEEN 1]" in select1
    # Appendix E: no RECENT response nor UNSEEN code; the mailbox's LIST response instead
    assert b"RECENT" not in select2 and b"UNSEEN" not in select2
    assert b'* LIST () "/" "INBOX"' in out["select2"][0]
    assert out["fetch1"][0] == [b"* 1 FETCH (FLAGS (\\Recent))"]
    assert out["fetch2"][0] == [b"* 1 FETCH (FLAGS ())"]  # no \Recent in IMAP4rev2
    assert out["lsub"][1].startswith(b"BAD ") and b"LIST (SUBSCRIBED)" in out["lsub"][1]
    assert out["list_subscribed"][0] == [b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"']
    assert out["status_recent"][1].startswith(b"BAD ")
    assert out["search"][0] == [b'* ESEARCH (TAG "t8") ALL 2']
    assert out["names"][0] == ['* LIST (\\HasNoChildren) "/" "Café"'.encode()]


@pytest_twisted.inlineCallbacks
def test_unselect_keeps_and_close_expunges(imap):
    def scenario():
        c = RawClient(imap.port())
        c.login(OTHER)
        c.command("CREATE Bin")
        c.command("SELECT INBOX")
        c.command("COPY 1:* Bin")
        c.command("SELECT Bin")
        c.command("STORE 1 +FLAGS.SILENT (\\Deleted)")
        out = {"unselect": c.command("UNSELECT"), "after_unselect": c.command("STATUS Bin (MESSAGES DELETED)")}
        out["unselect_again"] = c.command("UNSELECT")
        out["unselect_args"] = (c.command("SELECT Bin"), c.command("UNSELECT now"))[1]
        c.command("EXAMINE Bin")
        out["close_readonly"] = c.command("CLOSE")
        out["after_examine_close"] = c.command("STATUS Bin (MESSAGES)")
        c.command("SELECT Bin")
        out["close"] = c.command("CLOSE")  # silent expunge: no untagged EXPUNGE (RFC 9051 §6.4.1)
        out["after_close"] = c.command("STATUS Bin (MESSAGES DELETED)")
        c.command("DELETE Bin")
        c.close()
        return out

    out = yield in_thread(scenario)
    assert out["unselect"] == ([], b"OK UNSELECT completed")
    assert out["after_unselect"][0] == [b'* STATUS "Bin" (MESSAGES 3 DELETED 2)']
    assert out["unselect_again"][1].startswith(b"BAD ")
    assert out["unselect_args"][1].startswith(b"BAD ")
    assert out["close_readonly"] == ([], b"OK CLOSE completed")
    assert out["after_examine_close"][0] == [b'* STATUS "Bin" (MESSAGES 3)']
    assert out["close"] == ([], b"OK CLOSE completed")
    assert out["after_close"][0] == [b'* STATUS "Bin" (MESSAGES 1 DELETED 0)']


@pytest_twisted.inlineCallbacks
def test_sasl_ir_and_authenticate_errors(imap):
    def plain(authz: str, user: str, password: str) -> bytes:
        return base64.b64encode(f"{authz}\0{user}\0{password}".encode())

    def one(command: bytes, continuation: bytes | None = None) -> list[bytes]:
        c = RawClient(imap.port())
        c.send(b"a " + command + b"\r\n")
        lines = [c.line()]
        if continuation is not None:
            c.send(continuation + b"\r\n")
            lines.append(c.line())
        c.close()
        return lines

    def scenario():
        return {
            "ir": one(b"AUTHENTICATE PLAIN " + plain("", USER, PASSWORD)),
            "ir_authz_self": one(b"AUTHENTICATE PLAIN " + plain(USER, USER, PASSWORD)),
            "ir_authz_other": one(b"AUTHENTICATE PLAIN " + plain(OTHER, USER, PASSWORD)),
            "ir_wrong": one(b"AUTHENTICATE PLAIN " + plain("", USER, "wrong")),
            "ir_empty": one(b"AUTHENTICATE PLAIN ="),
            "ir_garbage": one(b"AUTHENTICATE PLAIN !!!notbase64"),
            "mechanism": one(b"AUTHENTICATE CRAM-MD5"),
            "continued_bad": one(b"AUTHENTICATE PLAIN", b"%%%"),
        }

    out = yield in_thread(scenario)
    assert out["ir"][0].startswith(b"a OK [CAPABILITY ")
    assert out["ir_authz_self"][0].startswith(b"a OK [CAPABILITY ")
    assert out["ir_authz_other"][0].startswith(b"a NO [AUTHORIZATIONFAILED] ")
    assert out["ir_wrong"][0].startswith(b"a NO [AUTHENTICATIONFAILED] ")
    assert out["ir_empty"][0].startswith(b"a BAD ")  # "=" is an empty response: not a PLAIN message
    assert out["ir_garbage"][0].startswith(b"a BAD ")
    assert out["mechanism"][0].startswith(b"a NO ")
    assert out["continued_bad"] == [b"+ ", out["continued_bad"][1]]
    assert out["continued_bad"][1].startswith(b"a BAD ")


@pytest_twisted.inlineCallbacks
def test_examine_is_read_only_and_failed_select_deselects(imap):
    def scenario():
        c = RawClient(imap.port())
        c.login(OTHER)
        out = {"examine": c.command("EXAMINE INBOX")}
        for name, cmd in {"store": "STORE 1 +FLAGS (\\Seen)", "expunge": "EXPUNGE", "uid_expunge": "UID EXPUNGE 1",
                          "move": "MOVE 1 Trash", "fetch_body": "FETCH 1 (BODY[TEXT])",
                          "flags_after": "FETCH 1 (FLAGS)"}.items():
            out[name] = c.command(cmd)
        # a failed SELECT leaves no mailbox selected (RFC 9051 §6.3.2), after [CLOSED]
        out["failed_select"] = c.command("SELECT Nowhere")
        out["after_failed"] = c.command("FETCH 1 (FLAGS)")
        c.close()
        return out

    out = yield in_thread(scenario)
    assert out["examine"][1] == b"OK [READ-ONLY] EXAMINE completed"
    assert b"* OK [PERMANENTFLAGS ()] Flags permitted" in out["examine"][0]
    for name in ("store", "expunge", "uid_expunge", "move"):
        assert out[name][1].startswith(b"NO [READ-ONLY] "), (name, out[name])
    # BODY[] does not set \Seen in a read-only mailbox
    assert out["fetch_body"][1] == b"OK FETCH completed"
    assert out["flags_after"][0] == [b"* 1 FETCH (FLAGS ())"]
    assert out["failed_select"] == ([b"* OK [CLOSED] Previous mailbox closed"],
                                    b"NO [NONEXISTENT] no such mailbox: Nowhere")
    assert out["after_failed"][1].startswith(b"BAD ") and b"authenticated state" in out["after_failed"][1]
