"""Mailbox management over the wire: CREATE, DELETE, RENAME (RFC 9051 §6.3.4-6.3.6,
RFC 3501 §6.3.5 for INBOX) and STATUS with every item (RFC 9051 §6.3.11, RFC 8438
STATUS=SIZE, RFC 7162 HIGHESTMODSEQ, RFC 7889 APPENDLIMIT)."""

from __future__ import annotations

import itertools
import re

import pytest
import pytest_twisted
from twisted.internet import defer

from tests.e2e.harness import add_user
from tests.imap.imapserver import PASSWORD, IMAPTestServer, RawClient, in_thread, message

_users = itertools.count()


@pytest.fixture(scope="module")
def imap(tmp_path_factory):
    server = IMAPTestServer(tmp_path_factory.mktemp("imap-mailboxes"), imap={"max_literal_size": "1MiB"})
    yield server
    server.stop()


@defer.inlineCallbacks
def fresh_user(imap):
    address = f"mbox{next(_users)}@example.test"
    account = yield add_user(imap.server, address, PASSWORD)
    return address, account


@defer.inlineCallbacks
def fill(imap, account, mailbox: str, count: int, keywords=()):
    box = imap.core.find_mailbox(account.id, mailbox)
    sizes = []
    for n in range(count):
        raw = message(n)
        sizes.append(len(raw))
        yield imap.core.append(account.id, box.id, raw, list(keywords))
    return sizes


def client(imap, address: str) -> RawClient:
    c = RawClient(imap.port())
    c.login(address)
    return c


def ok(c: RawClient, command: str | bytes) -> list[bytes]:
    untagged, status = c.command(command)
    assert status.startswith(b"OK"), (command, status)
    return untagged


def names(c: RawClient, pattern: str = "*") -> list[str]:
    return [line.rsplit(b'"/" ', 1)[1].strip(b'"').decode() for line in ok(c, f'LIST "" "{pattern}"')]


@pytest_twisted.inlineCallbacks
def test_create(imap):
    address, _ = yield fresh_user(imap)

    def scenario():
        c = client(imap, address)
        ok(c, "CREATE Deep/Er/Est")  # missing parents are created (RFC 9051 §6.3.4)
        ok(c, "CREATE Trailing/")  # a trailing delimiter declares intent to have children
        results = {cmd: c.command(cmd)[1] for cmd in (
            "CREATE Deep", "CREATE inbox", "CREATE INBOX", 'CREATE "a//b"', 'CREATE "/lead"', 'CREATE "st*ar"',
            'CREATE "per%cent"', "CREATE", "CREATE a b c")}
        listed = names(c)
        c.close()
        return results, listed

    results, listed = yield in_thread(scenario)
    assert {"Deep", "Deep/Er", "Deep/Er/Est", "Trailing"} <= set(listed)
    assert results["CREATE Deep"].startswith(b"NO [ALREADYEXISTS] ")
    assert results["CREATE inbox"].startswith(b"NO [ALREADYEXISTS] ")
    assert results["CREATE INBOX"].startswith(b"NO [ALREADYEXISTS] ")
    for cmd in ('CREATE "a//b"', 'CREATE "/lead"', 'CREATE "st*ar"', 'CREATE "per%cent"'):
        assert results[cmd].startswith(b"NO [CANNOT] "), (cmd, results[cmd])
    assert results["CREATE"].startswith(b"BAD ") and results["CREATE a b c"].startswith(b"BAD ")


@pytest_twisted.inlineCallbacks
def test_delete_rules(imap):
    address, account = yield fresh_user(imap)
    yield imap.core.create_mailbox(account.id, "Parent/Child")
    yield fill(imap, account, "Parent/Child", 2)

    def scenario():
        c = client(imap, address)
        out = {}
        # a mailbox with children is refused, like Dovecot; no \Noselect shells are left behind
        out["parent"] = c.command("DELETE Parent")[1]
        out["inbox"] = c.command("DELETE INBOX")[1]
        out["missing"] = c.command("DELETE Nowhere")[1]
        ok(c, "SUBSCRIBE Parent/Child")
        ok(c, "DELETE Parent/Child")
        ok(c, "DELETE Parent")
        out["after"] = names(c, "Parent*")
        # RFC 9051 §6.3.5: the subscription stays after the mailbox is gone
        out["subscribed"] = ok(c, 'LIST (SUBSCRIBED) "" "Parent*"')
        out["status"] = c.command("STATUS Parent/Child (MESSAGES)")[1]
        out["again"] = c.command("DELETE Parent")[1]
        c.close()
        return out

    out = yield in_thread(scenario)
    # RFC 9051 §6.3.4: a server that keeps no \Noselect shells refuses with HASCHILDREN
    assert out["parent"].startswith(b"NO [HASCHILDREN] ") and b"children" in out["parent"]
    assert out["inbox"].startswith(b"NO [CANNOT] ")
    assert out["missing"].startswith(b"NO [NONEXISTENT] ")
    assert out["after"] == []
    assert out["subscribed"] == [b'* LIST (\\NonExistent \\HasNoChildren \\Subscribed) "/" "Parent/Child"']
    assert out["status"].startswith(b"NO [NONEXISTENT] ")
    assert out["again"].startswith(b"NO [NONEXISTENT] ")
    # the messages went with the mailbox
    assert imap.core.get_quota(account.id).messages_used == 0


@pytest_twisted.inlineCallbacks
def test_delete_selected_mailbox_ends_other_sessions_view(imap):
    address, account = yield fresh_user(imap)
    yield imap.core.create_mailbox(account.id, "Doomed")
    yield fill(imap, account, "Doomed", 1)

    def scenario():
        a, b = client(imap, address), client(imap, address)
        ok(b, "SELECT Doomed")
        ok(a, "SELECT Doomed")
        ok(a, "DELETE Doomed")  # deleting one's own selected mailbox leaves the selected state
        after_delete = a.command("FETCH 1 (UID)")[1]
        b.send(b"n1 NOOP\r\n")
        lines = []
        try:
            while True:
                lines.append(b.line())
        except (ConnectionError, OSError):
            pass
        a.close()
        b.close()
        return after_delete, lines

    after_delete, lines = yield in_thread(scenario)
    assert after_delete.startswith(b"BAD ") and b"authenticated state" in after_delete
    assert b"* BYE The selected mailbox was deleted" in lines


@pytest_twisted.inlineCallbacks
def test_rename_with_hierarchy_and_subscriptions(imap):
    address, account = yield fresh_user(imap)
    for name in ("Old/A/One", "Old/B", "Oldish"):
        yield imap.core.create_mailbox(account.id, name)
    yield fill(imap, account, "Old/A/One", 3)

    def scenario():
        c = client(imap, address)
        before = ok(c, "STATUS Old/A/One (UIDVALIDITY MESSAGES)")
        ok(c, "SUBSCRIBE Old/B")
        ok(c, "RENAME Old New/Home")  # children follow, missing parents are created
        out = {"before": before, "names": names(c)}
        out["after"] = ok(c, "STATUS New/Home/A/One (UIDVALIDITY MESSAGES)")
        out["subscribed"] = ok(c, 'LIST (SUBSCRIBED) "" "New*"')
        out["exists"] = c.command("RENAME Oldish New")[1]
        out["missing"] = c.command("RENAME Nothing Else")[1]
        out["into_itself"] = c.command("RENAME New New/Home/Inner")[1]
        out["to_inbox"] = c.command("RENAME Oldish INBOX")[1]
        out["special"] = (ok(c, "RENAME Sent Outbox"), ok(c, 'LIST (SPECIAL-USE) "" Outbox'))
        c.close()
        return out

    out = yield in_thread(scenario)
    assert "Old" not in out["names"] and "Old/A/One" not in out["names"]
    assert {"New", "New/Home", "New/Home/A", "New/Home/A/One", "New/Home/B", "Oldish"} <= set(out["names"])
    # the messages and the UIDVALIDITY stay with a renamed mailbox
    assert out["before"][0].split(b" (")[1] == out["after"][0].split(b" (")[1]
    assert b"MESSAGES 3" in out["after"][0]
    assert out["subscribed"] == [b'* LIST (\\HasNoChildren \\Subscribed) "/" "New/Home/B"']
    assert out["exists"].startswith(b"NO [ALREADYEXISTS] ")
    assert out["missing"].startswith(b"NO [NONEXISTENT] ")
    assert out["into_itself"].startswith(b"NO [CANNOT] ")
    assert out["to_inbox"].startswith(b"NO [ALREADYEXISTS] ")
    assert out["special"][1] == [b'* LIST (\\HasNoChildren \\Sent) "/" "Outbox"']


@pytest_twisted.inlineCallbacks
def test_rename_inbox_moves_messages_and_leaves_inbox(imap):
    address, account = yield fresh_user(imap)
    yield imap.core.create_mailbox(account.id, "INBOX/Sub")
    yield fill(imap, account, "INBOX", 4)

    def scenario():
        c = client(imap, address)
        watcher = client(imap, address)
        ok(watcher, "SELECT INBOX")
        uidvalidity = re.search(rb"UIDVALIDITY (\d+)", b" ".join(ok(c, "STATUS INBOX (UIDVALIDITY)")))
        ok(c, "RENAME INBOX Saved")
        ok(c, "APPEND INBOX {14+}\r\nSubject: x\r\n\r\n")
        ok(c, "RENAME INBOX INBOX/Before")  # INBOX may move below itself: its children stay
        out = {
            "below": ok(c, "STATUS INBOX/Before (MESSAGES)"),
            "names": names(c),
            "inbox": ok(c, "STATUS INBOX (MESSAGES UIDVALIDITY)"),
            "saved": ok(c, "STATUS Saved (MESSAGES)"),
            "watcher": ok(watcher, "NOOP"),
            "uidvalidity": uidvalidity.group(1),
        }
        c.close()
        watcher.close()
        return out

    out = yield in_thread(scenario)
    # RFC 3501 §6.3.5: all messages move to the new name, INBOX stays (empty), and
    # INBOX's inferior names are not renamed
    assert "INBOX" in out["names"] and "INBOX/Sub" in out["names"] and "Saved" in out["names"]
    assert "Saved/Sub" not in out["names"]
    assert out["inbox"] == [b'* STATUS "INBOX" (MESSAGES 0 UIDVALIDITY ' + out["uidvalidity"] + b")"]
    assert out["saved"] == [b'* STATUS "Saved" (MESSAGES 4)']
    assert out["below"] == [b'* STATUS "INBOX/Before" (MESSAGES 1)']
    # a session with INBOX selected sees the messages leave
    assert out["watcher"] == [b"* 4 EXPUNGE", b"* 3 EXPUNGE", b"* 2 EXPUNGE", b"* 1 EXPUNGE"]


@pytest_twisted.inlineCallbacks
def test_status_every_item(imap):
    address, account = yield fresh_user(imap)
    sizes = yield fill(imap, account, "INBOX", 3)
    more = yield fill(imap, account, "INBOX", 2, keywords=["\\Seen"])
    deleted = yield fill(imap, account, "INBOX", 1, keywords=["\\Deleted", "\\Seen"])

    def scenario():
        c = client(imap, address)
        every = "MESSAGES UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE RECENT HIGHESTMODSEQ APPENDLIMIT"
        out = {"status": ok(c, f"STATUS INBOX ({every})")}
        out["select"] = ok(c, "EXAMINE INBOX")
        out["selected"] = ok(c, "STATUS INBOX (MESSAGES RECENT)")
        out["deleted_storage"] = ok(c, "STATUS INBOX (DELETED DELETED-STORAGE)")
        out["no_deleted"] = ok(c, "STATUS Sent (DELETED DELETED-STORAGE)")  # STATUS of the selected mailbox works
        out["errors"] = [c.command(cmd)[1] for cmd in (
            "STATUS INBOX (FROB)", "STATUS INBOX ()", "STATUS INBOX MESSAGES", "STATUS Missing (MESSAGES)")]
        out["rev2"] = (ok(c, "ENABLE IMAP4rev2"), c.command("STATUS INBOX (RECENT)")[1],
                       ok(c, "STATUS INBOX (MESSAGES DELETED SIZE)"))
        c.close()
        return out

    out = yield in_thread(scenario)
    line = out["status"][0].decode()
    values = dict(re.findall(r"([A-Z]+) (\d+)", line))
    assert line.startswith('* STATUS "INBOX" (MESSAGES ')
    assert list(values) == ["MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE", "RECENT",
                            "HIGHESTMODSEQ", "APPENDLIMIT"]
    select = b"\n".join(out["select"]).decode()
    assert values["MESSAGES"] == "6" and values["UIDNEXT"] == "7" and values["UNSEEN"] == "3"
    assert values["DELETED"] == "1"
    assert int(values["SIZE"]) == sum(sizes) + sum(more) + sum(deleted)  # RFC 8438: sum of RFC822.SIZE
    assert values["RECENT"] == "6"  # no session has seen them yet (RFC 3501 §2.3.2)
    assert f"[UIDVALIDITY {values['UIDVALIDITY']}]" in select
    assert f"[HIGHESTMODSEQ {values['HIGHESTMODSEQ']}]" in select
    assert values["APPENDLIMIT"] == str(1 << 20)
    assert out["selected"] == [b'* STATUS "INBOX" (MESSAGES 6 RECENT 6)']  # EXAMINE claims no \\Recent
    # RFC 9208 §4.4: what EXPUNGE would free, in KiB like the STORAGE resource
    assert out["deleted_storage"] == [b'* STATUS "INBOX" (DELETED 1 DELETED-STORAGE %d)'
                                      % ((sum(deleted) + 1023) // 1024)]
    assert out["no_deleted"] == [b'* STATUS "Sent" (DELETED 0 DELETED-STORAGE 0)']
    bad_item, empty, not_list, missing = out["errors"]
    assert bad_item.startswith(b"BAD ") and empty.startswith(b"BAD ") and not_list.startswith(b"BAD ")
    assert missing.startswith(b"NO [NONEXISTENT] ")
    _, rev2_recent, rev2_status = out["rev2"]
    assert rev2_recent.startswith(b"BAD ")  # RFC 9051 removed RECENT
    assert rev2_status == [b'* STATUS "INBOX" (MESSAGES 6 DELETED 1 SIZE %d)' % int(values["SIZE"])]
