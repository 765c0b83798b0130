"""Client-level flows with imapclient over a real socket: folders with special use and
non-ASCII names, subscriptions, STATUS, NAMESPACE, ID, QUOTA, APPEND/COPY/MOVE with
UIDPLUS, SEARCH, BINARY.SIZE, UNSELECT and IDLE, as a mail client drives them."""

from __future__ import annotations

import imapclient
import pytest
import pytest_twisted
from imapclient.imapclient import SENT, TRASH

from tests.e2e.harness import add_user
from tests.imap.imapserver import PASSWORD, IMAPTestServer, in_thread, message

ADDRESS = "flow@example.test"


@pytest.fixture(scope="module")
def imap(tmp_path_factory):
    server = IMAPTestServer(tmp_path_factory.mktemp("imap-imapclient"))
    server.accounts[ADDRESS] = pytest_twisted.blockon(
        add_user(server.server, ADDRESS, PASSWORD, quota_bytes=10 * 1024 * 1024))
    yield server
    server.stop()


def connect(imap) -> imapclient.IMAPClient:
    client = imapclient.IMAPClient("127.0.0.1", port=imap.port(), ssl=False, timeout=30)
    client.login(ADDRESS, PASSWORD)
    return client


@pytest_twisted.inlineCallbacks
def test_folder_flow(imap):
    def scenario():
        c = connect(imap)
        out = {"id": c.id_({"name": "imapclient-test"}), "namespace": c.namespace()}
        out["sent"] = c.find_special_folder(SENT)
        out["trash"] = c.find_special_folder(TRASH)
        c.create_folder("Reisen/Zürich")  # imapclient encodes modified UTF-7 itself
        c.subscribe_folder("Reisen/Zürich")
        out["folders"] = c.list_folders()
        out["sub"] = c.list_sub_folders(directory="Reisen")
        c.rename_folder("Reisen/Zürich", "Reisen/Genève")
        out["renamed"] = [f[2] for f in c.list_folders("Reisen", "*")]
        out["status"] = c.folder_status("Reisen/Genève", ["MESSAGES", "UIDNEXT", "SIZE"])
        out["quota"] = c.get_quota_root("INBOX")
        c.delete_folder("Reisen/Genève")
        out["exists"] = c.folder_exists("Reisen/Genève")
        c.logout()
        return out

    out = yield in_thread(scenario)
    assert out["id"][0][:2] == (b"name", b"mailserve")
    assert out["namespace"].personal == (("", "/"),)
    assert out["sent"] == "Sent" and out["trash"] == "Trash"
    assert ((b"\\HasNoChildren",), b"/", "Reisen/Zürich") in out["folders"]
    assert ((b"\\HasChildren",), b"/", "Reisen") in out["folders"]
    assert [f[2] for f in out["sub"]] == ["Reisen/Zürich"]
    assert out["renamed"] == ["Reisen/Genève"]
    assert out["status"] == {b"MESSAGES": 0, b"UIDNEXT": 1, b"SIZE": 0}
    roots, quotas = out["quota"]
    assert roots.quota_roots == [""] and roots.mailbox == "INBOX"
    assert [(q.resource, q.limit) for q in quotas] == [("STORAGE", 10 * 1024)]
    assert out["exists"] is False


@pytest_twisted.inlineCallbacks
def test_message_flow(imap):
    def scenario():
        c = connect(imap)
        out = {}
        c.create_folder("Flow")
        out["append"] = [c.append("Flow", message(n), flags=[b"\\Seen"] if n == 2 else []) for n in (1, 2, 3)]
        c.select_folder("Flow")
        out["unseen"] = c.search(["UNSEEN"])
        out["fetch"] = c.fetch([1, 2], ["FLAGS", "RFC822.SIZE", "BINARY.SIZE[1]"])
        c.add_flags([3], [b"\\Flagged"])
        c.copy([1], "Archive")
        c.move([2], "Trash")
        out["left"] = c.search()
        out["archive"] = c.folder_status("Archive", ["MESSAGES"])
        c.unselect_folder()
        c.select_folder("Flow")
        c.idle()
        return c, out

    c, out = yield in_thread(scenario)
    yield imap.deliver(message(9), mailbox="Flow", user=ADDRESS)

    def finish():
        pushed = c.idle_check(timeout=10)
        c.idle_done()
        c.logout()
        return pushed

    pushed = yield in_thread(finish)
    assert all(a.startswith(b"[APPENDUID ") for a in out["append"])
    assert out["unseen"] == [1, 3]
    assert out["fetch"][1][b"FLAGS"] == (b"\\Recent",) and out["fetch"][2][b"FLAGS"] == (b"\\Recent", b"\\Seen")
    assert out["fetch"][1][b"BINARY.SIZE[1]"] == len(b"Body of message 1.\r\n")
    assert out["archive"] == {b"MESSAGES": 1}
    assert out["left"] == [1, 3]
    assert pushed == [(3, b"EXISTS"), (1, b"RECENT")]
