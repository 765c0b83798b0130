"""LIST over the wire: LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819), SPECIAL-USE and
CREATE-SPECIAL-USE (RFC 6154), CHILDREN, SUBSCRIBE/LSUB, NAMESPACE (RFC 2342) and
UTF-8 / modified UTF-7 mailbox names (RFC 6855, RFC 3501 §5.1.3)."""

from __future__ import annotations

import itertools

import pytest
import pytest_twisted
from twisted.internet import defer

from tests.e2e.harness import add_user
from tests.imap.imapserver import PASSWORD, IMAPTestServer, RawClient, in_thread, message

_users = itertools.count()
DEFAULT = [
    b'* LIST (\\HasNoChildren) "/" "INBOX"',
    b'* LIST (\\HasNoChildren \\Archive) "/" "Archive"',
    b'* LIST (\\HasNoChildren \\Drafts) "/" "Drafts"',
    b'* LIST (\\HasNoChildren \\Junk) "/" "Junk"',
    b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"',
    b'* LIST (\\HasNoChildren \\Trash) "/" "Trash"',
]


@pytest.fixture(scope="module")
def imap(tmp_path_factory):
    server = IMAPTestServer(tmp_path_factory.mktemp("imap-list"))
    yield server
    server.stop()


@defer.inlineCallbacks
def fresh_user(imap):
    """A new account per test, so tests sharing the server do not see each other's mailboxes."""
    address = f"list{next(_users)}@example.test"
    account = yield add_user(imap.server, address, PASSWORD)
    return address, account


def client(imap, address: str) -> RawClient:
    c = RawClient(imap.port())
    c.login(address)
    return c


def ok(c: RawClient, command: str) -> list[bytes]:
    untagged, status = c.command(command)
    assert status.startswith(b"OK"), (command, status)
    return untagged


@pytest_twisted.inlineCallbacks
def test_plain_list_children_and_delimiter(imap):
    address, _ = yield fresh_user(imap)

    def scenario():
        c = client(imap, address)
        assert ok(c, 'LIST "" ""') == [b'* LIST (\\Noselect) "/" ""']
        assert ok(c, 'LIST "" *') == DEFAULT
        ok(c, "CREATE Work/Projects/Alpha")
        assert ok(c, 'LIST "" Work*') == [
            b'* LIST (\\HasChildren) "/" "Work"',
            b'* LIST (\\HasChildren) "/" "Work/Projects"',
            b'* LIST (\\HasNoChildren) "/" "Work/Projects/Alpha"',
        ]
        # % stops at the delimiter; the reference is a prefix (RFC 9051 §6.3.9)
        assert ok(c, 'LIST "" %') == DEFAULT + [b'* LIST (\\HasChildren) "/" "Work"']
        assert ok(c, 'LIST "Work/" %') == [b'* LIST (\\HasChildren) "/" "Work/Projects"']
        assert ok(c, 'LIST "" inbox') == [b'* LIST (\\HasNoChildren) "/" "INBOX"']
        assert ok(c, 'LIST "" Nothing*') == []
        c.close()

    yield in_thread(scenario)


@pytest_twisted.inlineCallbacks
def test_list_extended_selection_and_return_options(imap):
    address, _ = yield fresh_user(imap)

    def scenario():
        c = client(imap, address)
        ok(c, "CREATE Lists/Fruit")
        ok(c, "CREATE Lists/Veg")
        ok(c, "CREATE Top")
        ok(c, "SUBSCRIBE Lists/Fruit")
        ok(c, "SUBSCRIBE Top")
        ok(c, "SUBSCRIBE Gone")  # subscribed, never created
        ok(c, "SUBSCRIBE Far/Away")
        # SUBSCRIBED: subscribed names only, \Subscribed implied, missing ones \NonExistent (RFC 5258 §3.1);
        # special-use attributes appear in an extended LIST only with RETURN (SPECIAL-USE) (RFC 6154 §2)
        assert ok(c, 'LIST (SUBSCRIBED) "" *') == [
            b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"',
            b'* LIST (\\HasNoChildren \\Subscribed) "/" "Archive"',
            b'* LIST (\\HasNoChildren \\Subscribed) "/" "Drafts"',
            b'* LIST (\\NonExistent \\HasNoChildren \\Subscribed) "/" "Far/Away"',
            b'* LIST (\\NonExistent \\HasNoChildren \\Subscribed) "/" "Gone"',
            b'* LIST (\\HasNoChildren \\Subscribed) "/" "Junk"',
            b'* LIST (\\HasNoChildren \\Subscribed) "/" "Lists/Fruit"',
            b'* LIST (\\HasNoChildren \\Subscribed) "/" "Sent"',
            b'* LIST (\\HasNoChildren \\Subscribed) "/" "Top"',
            b'* LIST (\\HasNoChildren \\Subscribed) "/" "Trash"',
        ]
        # RECURSIVEMATCH: parents whose descendants match get CHILDINFO (RFC 5258 §3.5)
        recursive = ok(c, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" %')
        assert b'* LIST (\\HasChildren) "/" "Lists" ("CHILDINFO" ("SUBSCRIBED"))' in recursive
        assert b'* LIST (\\NonExistent \\HasNoChildren) "/" "Far" ("CHILDINFO" ("SUBSCRIBED"))' in recursive
        assert b'* LIST (\\HasNoChildren \\Subscribed) "/" "Top"' in recursive
        assert not any(b"Lists/Fruit" in line or b"Far/Away" in line for line in recursive)
        # with "*" the descendants are returned themselves: no redundant CHILDINFO
        assert not any(b"CHILDINFO" in line for line in ok(c, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" *'))
        # RECURSIVEMATCH alone, or with REMOTE only, is BAD (RFC 5258 §3.1)
        for bad in ('LIST (RECURSIVEMATCH) "" %', 'LIST (REMOTE RECURSIVEMATCH) "" %',
                    'LIST (FROB) "" %', 'LIST "" % RETURN (FROB)', 'LIST "" ()', 'LIST "" % RETURN',
                    'LIST "" % RETURN (STATUS)', 'LIST "" % RETURN (STATUS (BOGUS))'):
            _, status = c.command(bad)
            assert status.startswith(b"BAD "), (bad, status)
        # REMOTE alone changes nothing on a server without remote mailboxes
        assert ok(c, 'LIST (REMOTE) "" %') == ok(c, 'LIST () "" %')
        # RETURN (SUBSCRIBED CHILDREN) on a plain selection, several patterns at once
        assert ok(c, 'LIST "" (Top Lists "Lists/*") RETURN (SUBSCRIBED CHILDREN)') == [
            b'* LIST (\\HasChildren) "/" "Lists"',
            b'* LIST (\\HasNoChildren \\Subscribed) "/" "Lists/Fruit"',
            b'* LIST (\\HasNoChildren) "/" "Lists/Veg"',
            b'* LIST (\\HasNoChildren \\Subscribed) "/" "Top"',
        ]
        c.close()

    yield in_thread(scenario)


@pytest_twisted.inlineCallbacks
def test_special_use_selection_return_and_create(imap):
    address, _ = yield fresh_user(imap)

    def scenario():
        c = client(imap, address)
        specials = [line for line in DEFAULT if line != DEFAULT[0]]
        # SPECIAL-USE selection lists only mailboxes with a special use (RFC 6154 §3)
        assert ok(c, 'LIST (SPECIAL-USE) "" *') == specials
        # an extended LIST shows the attributes only when asked with RETURN (SPECIAL-USE)
        assert b'* LIST (\\HasNoChildren) "/" "Sent"' in ok(c, 'LIST () "" *')
        assert b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"' in ok(c, 'LIST "" * RETURN (SPECIAL-USE)')
        # CREATE-SPECIAL-USE (RFC 6154 §3): a new use is accepted, a taken or unknown one is NO [USEATTR]
        ok(c, "CREATE Starred (USE (\\Flagged))")
        assert ok(c, 'LIST (SPECIAL-USE) "" Starred') == [b'* LIST (\\HasNoChildren \\Flagged) "/" "Starred"']
        assert c.command("CREATE Bin (USE (\\Trash))")[1].startswith(b"NO [USEATTR] ")
        assert c.command("CREATE Odd (USE (\\Bogus))")[1].startswith(b"NO [USEATTR] ")
        assert c.command("CREATE Two (USE (\\All \\Important))")[1].startswith(b"NO [USEATTR] ")
        assert c.command("CREATE Odd (USE \\All)")[1].startswith(b"BAD ")
        assert ok(c, 'LIST "" (Bin Odd Two)') == []
        # RECURSIVEMATCH with SPECIAL-USE names a parent holding a special-use child
        ok(c, "CREATE Projects")
        ok(c, "CREATE Projects/Everything (USE (\\All))")
        assert ok(c, 'LIST (SPECIAL-USE RECURSIVEMATCH) "" Projects') == [
            b'* LIST (\\HasChildren) "/" "Projects" ("CHILDINFO" ("SPECIAL-USE"))']
        c.close()

    yield in_thread(scenario)


@pytest_twisted.inlineCallbacks
def test_list_status_return_option(imap):
    address, account = yield fresh_user(imap)
    box = imap.core.find_mailbox(account.id, "INBOX")
    sizes = []
    for n in range(3):
        raw = message(n)
        sizes.append(len(raw))
        yield imap.core.append(account.id, box.id, raw, ["\\Seen"] if n == 0 else [])

    def scenario():
        c = client(imap, address)
        ok(c, "SUBSCRIBE Ghost")
        out = ok(c, 'LIST (SUBSCRIBED) "" (INBOX Ghost) RETURN (STATUS (MESSAGES UNSEEN SIZE DELETED UIDNEXT))')
        c.close()
        return out

    out = yield in_thread(scenario)
    # RFC 5819 §2: STATUS follows the LIST of each selectable mailbox, none for \NonExistent
    assert out == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"',
        b'* STATUS "INBOX" (MESSAGES 3 UNSEEN 2 SIZE %d DELETED 0 UIDNEXT 4)' % sum(sizes),
        b'* LIST (\\NonExistent \\HasNoChildren \\Subscribed) "/" "Ghost"',
    ]


@pytest_twisted.inlineCallbacks
def test_subscribe_unsubscribe_and_lsub(imap):
    address, _ = yield fresh_user(imap)

    def scenario():
        c = client(imap, address)
        ok(c, "CREATE News/Local")
        ok(c, "SUBSCRIBE News/Local")
        ok(c, "SUBSCRIBE Missing")
        ok(c, "UNSUBSCRIBE Sent")
        lsub_all = ok(c, 'LSUB "" *')
        # RFC 3501 §6.3.9: with %, an unsubscribed parent of a subscribed name is \Noselect
        lsub_top = ok(c, 'LSUB "" %')
        # unsubscribing a name that is not subscribed is harmless; SUBSCRIBE keeps missing names
        ok(c, "UNSUBSCRIBE NeverSubscribed")
        bad = c.command("SUBSCRIBE")[1]
        c.close()
        return lsub_all, lsub_top, bad

    lsub_all, lsub_top, bad = yield in_thread(scenario)
    assert lsub_all == [
        b'* LSUB () "/" "INBOX"', b'* LSUB () "/" "Archive"', b'* LSUB () "/" "Drafts"',
        b'* LSUB () "/" "Junk"', b'* LSUB (\\Noselect) "/" "Missing"', b'* LSUB () "/" "News/Local"',
        b'* LSUB () "/" "Trash"',
    ]
    assert b'* LSUB (\\Noselect) "/" "News"' in lsub_top
    assert not any(b"News/Local" in line for line in lsub_top)
    assert bad.startswith(b"BAD ")


@pytest_twisted.inlineCallbacks
def test_namespace(imap):
    address, _ = yield fresh_user(imap)

    def scenario():
        c = client(imap, address)
        out = c.command("NAMESPACE")
        bad = c.command("NAMESPACE extra")[1]
        c.close()
        return out, bad

    (untagged, status), bad = yield in_thread(scenario)
    # RFC 2342 §5: one personal namespace with an empty prefix, no other users', no shared
    assert untagged == [b'* NAMESPACE (("" "/")) NIL NIL']
    assert status == b"OK NAMESPACE completed"
    assert bad.startswith(b"BAD ")


@pytest_twisted.inlineCallbacks
def test_utf8_and_modified_utf7_mailbox_names(imap):
    address, _ = yield fresh_user(imap)

    def scenario():
        c = client(imap, address)
        # without UTF-8 the name travels in modified UTF-7 (RFC 3501 §5.1.3)
        ok(c, "CREATE Entw&APw-rfe")
        legacy = ok(c, 'LIST "" Entw*')
        eight_bit = c.command('CREATE "Caf\xc3\xa9"'.encode("latin-1"))[1]
        bad_utf7 = c.command("CREATE &Jjo")[1]
        # RFC 6855 §3: after ENABLE UTF8=ACCEPT names are UTF-8, in quoted strings
        enabled = ok(c, "ENABLE UTF8=ACCEPT")
        ok(c, 'CREATE "Caf\xc3\xa9"'.encode("latin-1"))
        utf8 = ok(c, 'LIST "" *')
        status = ok(c, 'STATUS "Entw\xc3\xbcrfe" (MESSAGES)'.encode("latin-1"))
        c.close()
        d = RawClient(imap.port())
        d.login(address)
        again = ok(d, 'LIST "" Caf*')
        d.close()
        return legacy, eight_bit, bad_utf7, enabled, utf8, status, again

    legacy, eight_bit, bad_utf7, enabled, utf8, status, again = yield in_thread(scenario)
    assert legacy == [b'* LIST (\\HasNoChildren) "/" "Entw&APw-rfe"']
    assert eight_bit.startswith(b"BAD ") and b"UTF8=ACCEPT" in eight_bit
    assert bad_utf7.startswith(b"BAD ")
    assert enabled == [b"* ENABLED UTF8=ACCEPT"]
    assert '* LIST (\\HasNoChildren) "/" "Café"'.encode() in utf8
    assert '* LIST (\\HasNoChildren) "/" "Entwürfe"'.encode() in utf8
    assert status == ['* STATUS "Entwürfe" (MESSAGES 0)'.encode()]
    assert again == [b'* LIST (\\HasNoChildren) "/" "Caf&AOk-"']
