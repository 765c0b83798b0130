"""The rules again, driven by swaks (Debian), asserting the exact reply codes in its transcript."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import pytest_twisted

from tests.smtp.conftest import in_thread, inbox


@pytest.fixture(autouse=True)
def swaks_installed():
    assert shutil.which("swaks"), "these tests need swaks: run scripts/install-test-peers"


def swaks(server, *args, listener="smtp"):
    """Run swaks; returns the server replies as (code, text) pairs, in order."""
    host, port = server.address(listener)

    def go():
        result = subprocess.run(["swaks", "--server", host, "--port", str(port), "--helo", "client.test",
                                 "--timeout", "10", *args], capture_output=True, text=True, timeout=60, check=False)
        replies = []
        for line in result.stdout.splitlines():
            match = re.match(r"^\s*<[~*-]+\s+(\d{3})[ -](.*)$", line)
            if match and not re.match(r"^\s*<[~*-]+\s+\d{3}-", line):
                replies.append((int(match.group(1)), match.group(2)))
        return replies

    return in_thread(go)


@pytest_twisted.ensureDeferred
async def test_delivery(server):
    replies = await swaks(server, "--from", "s@remote.test", "--to", "alice@example.test", "--body", "hello swaks")
    assert [code for code, _ in replies] == [220, 250, 250, 250, 354, 250, 221]
    assert b"hello swaks" in inbox(server, "alice@example.test")[0]


@pytest_twisted.ensureDeferred
async def test_unknown_user(server):
    replies = await swaks(server, "--from", "s@remote.test", "--to", "ghost@example.test")
    assert replies[3][0] == 550 and replies[3][1].startswith("5.1.1")


@pytest_twisted.ensureDeferred
async def test_relay_denied(server):
    replies = await swaks(server, "--from", "s@remote.test", "--to", "x@elsewhere.test")
    assert replies[3][0] == 554 and replies[3][1].startswith("5.7.1")


@pytest_twisted.ensureDeferred
async def test_submission_needs_auth(server):
    replies = await swaks(server, "--from", "alice@example.test", "--to", "carol@example.test",
                          listener="submission")
    assert replies[2][0] == 530 and replies[2][1].startswith("5.7.0")


@pytest_twisted.ensureDeferred
async def test_starttls_and_auth_on_the_mx_listener_allows_relay(server):
    replies = await swaks(server, "--from", "alice@example.test", "--to", "x@elsewhere.test", "--tls",
                          "--auth", "PLAIN", "--auth-user", "alice@example.test", "--auth-password", "alice-password")
    codes = [code for code, _ in replies]
    assert codes == [220, 250, 220, 250, 235, 250, 250, 354, 250, 221]
    assert [r.address for e in server.outbound_queue.entries() for r in e.recipients] == ["x@elsewhere.test"]


@pytest_twisted.ensureDeferred
async def test_wrong_sender_on_submission(server):
    replies = await swaks(server, "--from", "carol@example.test", "--to", "carol@example.test",
                          "--auth", "LOGIN", "--auth-user", "alice@example.test", "--auth-password", "alice-password",
                          listener="submission")
    assert [code for code, _ in replies] == [220, 250, 334, 334, 235, 553, 221]
    assert replies[5][1].startswith("5.7.1")


@pytest_twisted.ensureDeferred
async def test_message_too_big(tmp_path):
    from tests.smtp.conftest import populate, start

    server = start(tmp_path, smtp={"max_message_size": "64KiB"})
    try:
        await populate(server)
        data = tmp_path / "big.eml"
        data.write_bytes(b"Subject: big\r\n\r\n" + (b"x" * 900 + b"\r\n") * 80)
        replies = await swaks(server, "--from", "s@remote.test", "--to", "alice@example.test", "--data", str(data))
        assert [code for code, _ in replies] == [220, 250, 250, 250, 354, 552, 221]
        assert replies[5][1].startswith("5.3.4")
    finally:
        await server.stopService()


@pytest_twisted.ensureDeferred
async def test_pipelining(server):
    replies = await swaks(server, "--from", "s@remote.test", "--to", "alice@example.test,carol@example.test",
                          "--pipeline")
    assert [code for code, _ in replies] == [220, 250, 250, 250, 250, 354, 250, 221]
    assert len(inbox(server, "carol@example.test")) == 1


@pytest_twisted.ensureDeferred
async def test_quota_full(server, tmp_path):
    data = tmp_path / "for-bob.eml"
    data.write_bytes(b"From: s@remote.test\r\nSubject: over quota\r\n\r\n" + b"x" * 76 * 40)  # bob has 2000 bytes
    replies = await swaks(server, "--from", "s@remote.test", "--to", "bob@example.test", "--data", str(data))
    assert [code for code, _ in replies] == [220, 250, 250, 250, 354, 452, 221]
    assert replies[5][1].startswith("4.2.2")


@pytest_twisted.ensureDeferred
async def test_foreign_from_header_on_submission(server):
    replies = await swaks(server, "--from", "alice@example.test", "--to", "carol@example.test",
                          "--header", "From: Mallory <mallory@elsewhere.test>",
                          "--auth", "PLAIN", "--auth-user", "alice@example.test", "--auth-password", "alice-password",
                          listener="submission")
    assert [code for code, _ in replies] == [220, 250, 235, 250, 250, 354, 553, 221]
    assert replies[6][1].startswith("5.7.1")


@pytest_twisted.ensureDeferred
async def test_too_many_recipients(tmp_path):
    from tests.smtp.conftest import populate, start

    server = start(tmp_path, smtp={"max_recipients": 2})
    try:
        await populate(server)
        replies = await swaks(server, "--from", "s@remote.test",
                              "--to", "alice@example.test,carol@example.test,info@example.test")
        assert [code for code, _ in replies] == [220, 250, 250, 250, 250, 452, 354, 250, 221]
        assert replies[5][1].startswith("4.5.3")
    finally:
        await server.stopService()


@pytest_twisted.ensureDeferred
async def test_mail_loop(server):
    hops = "".join(f"Received: from hop{n}.test by hop{n + 1}.test; Mon, 1 Jan 2024 00:00:00 +0000\\n"
                   for n in range(50))
    replies = await swaks(server, "--from", "s@remote.test", "--to", "alice@example.test",
                          "--data", hops + "Subject: loop\\n\\nround and round\\n")
    assert replies[-2][0] == 554 and replies[-2][1].startswith("5.4.6")


@pytest_twisted.ensureDeferred
async def test_bad_syntax(server):
    replies = await swaks(server, "--from", "not an address", "--to", "alice@example.test")
    assert replies[2][0] == 501 and replies[2][1].startswith("5.1.7")


@pytest_twisted.ensureDeferred
async def test_implicit_tls_submission_with_auth(tmp_path):
    from tests.smtp.conftest import populate, start

    server = start(tmp_path, listeners=("smtp", "submissions"))
    try:
        await populate(server)
        replies = await swaks(server, "--tlsc", "--from", "alice@example.test", "--to", "carol@example.test",
                              "--auth", "PLAIN", "--auth-user", "alice@example.test",
                              "--auth-password", "alice-password", listener="submissions")
        assert [code for code, _ in replies] == [220, 250, 235, 250, 250, 354, 250, 221]
        assert len(inbox(server, "carol@example.test")) == 1
    finally:
        await server.stopService()
