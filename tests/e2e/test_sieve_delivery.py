"""End to end: a script uploaded and activated with the real ``sieve-connect`` over ManageSieve
filters mail sent with smtplib, and imaplib shows where it went, with which flags, and that a
vacation reply reached the sender exactly once.
"""

from __future__ import annotations

import email
import imaplib
import os
import shutil
import smtplib
import subprocess

import pytest
import pytest_twisted
from twisted.internet import reactor, task, threads

from mailserve.config import Config
from mailserve.sieve.scripts import SieveScripts
from tests.e2e.harness import add_user, make_config, start_server

ALICE, BOB, CAROL = "alice@example.test", "bob@example.test", "carol@example.test"
PASSWORD = "delivery-password-1"
#: sieve-connect is the Debian package of that name (scripts/install-test-peers installs it).
SIEVE_CONNECT = shutil.which("sieve-connect") or "sieve-connect"

SCRIPT = """require ["fileinto", "imap4flags", "vacation"];
if header :contains "subject" "[list]" {
    fileinto :flags ["\\\\Seen", "$Sieved"] "Archive";
} else {
    addflag "\\\\Flagged";
}
vacation :days 1 :subject "Away this week" "I am away; your mail will be read next week.";
"""

#: Nothing here may touch DNS: mail authentication and the spam filter would look up the
#: sender's domain, so they are off where this version of the configuration has them.
OFFLINE = {name: {"enabled": False} for name in ("mailauth", "spam") if name in Config.__dataclass_fields__}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("sieve-delivery")
    config = make_config(tmp_path, ["smtp", "imap", "managesieve"], tls={"self_signed": True}, **OFFLINE)
    srv = start_server(tmp_path, config=config)
    for address in (ALICE, BOB, CAROL):
        pytest_twisted.blockon(add_user(srv, address, PASSWORD))
    yield srv
    pytest_twisted.blockon(srv.stopService())


def sieve_connect(server, *args: str) -> subprocess.CompletedProcess:
    """sieve-connect as alice: STARTTLS (self-signed, so unverified), then AUTHENTICATE PLAIN."""
    read_end, write_end = os.pipe()
    os.write(write_end, PASSWORD.encode() + b"\n")
    os.close(write_end)
    try:
        return subprocess.run(
            [SIEVE_CONNECT, "--server", "127.0.0.1", "--port", str(server.port("managesieve")),
             "--user", ALICE, "--passwordfd", str(read_end), "--notlsverify", *args],
            pass_fds=(read_end,), capture_output=True, text=True, timeout=60, check=False,
        )
    finally:
        os.close(read_end)


def send(server, sender: str, recipient: str, subject: str) -> None:
    body = (f"From: <{sender}>\r\nTo: <{recipient}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace('[', '').replace(']', '').replace(' ', '.')}@example.test>\r\n\r\nHello.\r\n")
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as client:
        client.sendmail(sender, [recipient], body)


def mailbox_contents(server, user: str, mailbox: str) -> list[tuple[bytes, bytes]]:
    """(FLAGS response, message bytes) of every message in ``mailbox``, over IMAP."""
    host, port = server.address("imap")
    with imaplib.IMAP4(host, port, timeout=30) as client:
        client.login(user, PASSWORD)
        status, _ = client.select(f'"{mailbox}"', readonly=True)
        assert status == "OK"
        _, data = client.search(None, "ALL")
        found = []
        for number in data[0].split():
            _, fetched = client.fetch(number, "(FLAGS BODY.PEEK[])")
            found.append((fetched[0][0], fetched[0][1]))
        client.logout()
    return found


async def queue_drained(server, limit: float = 30.0) -> None:
    """Wait (bounded) until the outbound queue has delivered everything it holds."""
    waited = 0.0
    while server.outbound_queue.entries():
        assert waited < limit, "outbound queue did not drain"
        await task.deferLater(reactor, 0.05, lambda: None)
        waited += 0.05


@pytest_twisted.ensureDeferred
async def test_uploaded_script_files_flags_and_answers_once(tmp_path, server):
    local = tmp_path / "main.sieve"
    local.write_text(SCRIPT)
    upload = await threads.deferToThread(sieve_connect, server, "--upload", "--localsieve", str(local),
                                         "--remotesieve", "main")
    assert upload.returncode == 0, upload.stderr
    activate = await threads.deferToThread(sieve_connect, server, "--activate", "--remotesieve", "main")
    assert activate.returncode == 0, activate.stderr

    await threads.deferToThread(send, server, BOB, ALICE, "[list] weekly news")
    await threads.deferToThread(send, server, BOB, ALICE, "second message")
    await queue_drained(server)

    archived = await threads.deferToThread(mailbox_contents, server, ALICE, "Archive")
    assert len(archived) == 1
    flags, raw = archived[0]
    assert b"\\Seen" in flags and b"$Sieved" in flags and b"\\Flagged" not in flags
    assert b"Subject: [list] weekly news" in raw
    inbox = await threads.deferToThread(mailbox_contents, server, ALICE, "INBOX")
    # The first message was filed (no implicit keep); the second kept, and the implicit keep
    # carries the internal flags variable (RFC 5232 §3).
    assert len(inbox) == 1
    assert b"Subject: second message" in inbox[0][1] and b"\\Flagged" in inbox[0][0]

    replies = await threads.deferToThread(mailbox_contents, server, BOB, "INBOX")
    assert len(replies) == 1  # two messages from bob, one vacation reply
    reply = email.message_from_bytes(replies[0][1])
    assert reply["Subject"] == "Away this week"
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["Return-Path"] == "<>"
    assert reply["In-Reply-To"] == "<list.weekly.news@example.test>"
    assert reply.get_payload().strip() == "I am away; your mail will be read next week."


@pytest_twisted.ensureDeferred
async def test_reject_for_the_only_recipient_is_the_smtp_reply(server):
    account = server.directory.get_account(CAROL)
    scripts = SieveScripts(server.metadata)
    await scripts.put_script(account.id, "no", 'require "reject";\nreject "Carol accepts no mail.";\n', 10, 4096)
    await scripts.set_active(account.id, "no")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        await threads.deferToThread(send, server, BOB, CAROL, "hello carol")
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error == b"5.7.1 Carol accepts no mail."
    assert await threads.deferToThread(mailbox_contents, server, CAROL, "INBOX") == []
