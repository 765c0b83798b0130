"""Outbound delivery against peers that lack extensions or break TLS, MX preference, backoff.

The far side is a real mailserve; a middlebox (``tests.smtp.middlebox``) in front of it hides
EHLO keywords or breaks STARTTLS, and records what our client sent (STARTTLS is hidden where
a test reads the commands: they would be encrypted otherwise).
"""

from __future__ import annotations

import email
import email.policy

import pytest
import pytest_twisted
from twisted.internet import protocol
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from tests.e2e.harness import add_user
from tests.smtp.conftest import inbox, populate, start
from tests.smtp.middlebox import Middlebox
from tests.smtp.test_queue import dsns, eventually, far_side, free_port, submit

EIGHT_BIT = (
    "From: Alice <alice@example.test>\r\nTo: dest@elsewhere.test\r\nSubject: Grüße aus Köln\r\n"
    "Message-ID: <8bit-1@example.test>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
    "--outer\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    "Schöne Grüße = viele Grüße \r\n.a line with a leading dot\r\n"
    "--outer\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
).encode() + b"\xff\xfe raw bytes \x80\r\n" + (
    "--outer\r\nContent-Type: message/rfc822\r\n\r\n"
    "Subject: inside\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nÄrger im Inneren\r\n"
    "--outer--\r\n"
).encode()

BINARY = (b"From: alice@example.test\r\nTo: dest@elsewhere.test\r\nSubject: binary\r\nMIME-Version: 1.0\r\n"
          b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n\x00\xff\x01\r\n")


def leaves(message: bytes) -> list[tuple[str, bytes]]:
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    return [(part.get_content_type(), part.get_payload(decode=True)) for part in parsed.walk()
            if not part.is_multipart() and part.get_content_type() != "message/rfc822"]


async def far_behind_middlebox(tmp_path, dns_server, **options):
    far = far_side(tmp_path)
    await add_user(far, "dest@elsewhere.test", "pw-dest-1")
    box = Middlebox(("127.0.0.1", far.port("smtp")), **options).start()
    dns_server.add("elsewhere.test", "MX", (10, "mx.elsewhere.test"))
    dns_server.add("mx.elsewhere.test", "A", "127.0.0.1")
    here = start(tmp_path, dns=dns_server, queue_port=box.address[1])
    await populate(here)
    return far, box, here


async def stop(*servers):
    for server in servers:
        await (server.stop() if isinstance(server, Middlebox) else server.stopService())


@pytest_twisted.ensureDeferred
async def test_8bit_goes_unchanged_with_body_8bitmime(tmp_path, dns_server):
    far, box, here = await far_behind_middlebox(tmp_path, dns_server, hidden=("STARTTLS",))
    try:
        assert (await submit(here, ["dest@elsewhere.test"], message=EIGHT_BIT, options=["BODY=8BITMIME"]))[0] == 250
        [received] = await eventually(lambda: inbox(far, "dest@elsewhere.test"))
        assert received.endswith(EIGHT_BIT)
        [mail] = [c for c in box.commands if c.startswith("MAIL")]
        assert "BODY=8BITMIME" in mail and "SMTPUTF8" not in mail
    finally:
        await stop(here, box, far)


@pytest_twisted.ensureDeferred
async def test_8bit_converted_to_7bit_for_a_peer_without_8bitmime(tmp_path, dns_server):
    far, box, here = await far_behind_middlebox(tmp_path, dns_server, hidden=("8BITMIME", "SMTPUTF8", "STARTTLS"))
    try:
        assert (await submit(here, ["dest@elsewhere.test"], message=EIGHT_BIT, options=["BODY=8BITMIME"]))[0] == 250
        [received] = await eventually(lambda: inbox(far, "dest@elsewhere.test"))
        [mail] = [c for c in box.commands if c.startswith("MAIL")]
        assert "BODY=" not in mail
        body = received.split(b"\r\n\r\n", 1)[1]
        assert body.isascii()  # RFC 6152 §3: nothing 8-bit crosses to this peer
        assert b"Subject: =?utf-8?" in received
        assert leaves(received) == leaves(EIGHT_BIT)  # the same content after MIME decoding
        assert b"Content-Transfer-Encoding: quoted-printable" in received
        assert b"Content-Transfer-Encoding: base64" in received
        parsed = email.message_from_bytes(received, policy=email.policy.default)
        assert parsed["subject"] == "Grüße aus Köln"
        assert parsed.get_boundary() == "outer" and len(parsed.get_payload()) == 3
        await eventually(lambda: here.outbound_queue.entries() == [])
        assert dsns(here, "alice@example.test") == []
    finally:
        await stop(here, box, far)


@pytest_twisted.ensureDeferred
async def test_helo_only_peer_gets_7bit_without_pipelining(tmp_path, dns_server):
    """RFC 5321 §3.2: a server that does not know EHLO gets HELO, and no extension is used."""
    far, box, here = await far_behind_middlebox(tmp_path, dns_server, refuse_ehlo=True)
    try:
        code, _ = await submit(here, ["dest@elsewhere.test", "ghost@elsewhere.test"], message=EIGHT_BIT,
                               options=["BODY=8BITMIME"], rcpt_options=["NOTIFY=FAILURE"])
        assert code == 250
        [received] = await eventually(lambda: inbox(far, "dest@elsewhere.test"))
        assert received.split(b"\r\n\tby ", 2)[1].startswith(b"mail.example.test (mailserve) with SMTP id")
        assert received.split(b"\r\n\r\n", 1)[1].isascii() and leaves(received) == leaves(EIGHT_BIT)
        commands = [c.split(":")[0].split(" ")[0] for c in box.commands]
        assert commands[:6] == ["EHLO", "HELO", "MAIL", "RCPT", "RCPT", "DATA"]
        assert all(" " not in c.partition(">")[2].strip() for c in box.commands if c.startswith(("MAIL", "RCPT")))
        [report] = await eventually(lambda: dsns(here, "alice@example.test"))
        assert b"Final-Recipient: rfc822; ghost@elsewhere.test" in report and b"Status: 5.1.1" in report
    finally:
        await stop(here, box, far)


@pytest_twisted.ensureDeferred
async def test_lines_over_998_octets_are_reencoded_for_any_peer(tmp_path, dns_server):
    """We accept lines up to smtp.max_line_length; RFC 5321 §4.5.3.1.6 lets peers refuse them."""
    far, box, here = await far_behind_middlebox(tmp_path, dns_server, hidden=("STARTTLS",))
    long_line = ("Grüße " * 500).encode()
    message = (b"From: alice@example.test\r\nTo: dest@elsewhere.test\r\nSubject: long\r\nMIME-Version: 1.0\r\n"
               b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
               + long_line + b"\r\n")
    try:
        assert (await submit(here, ["dest@elsewhere.test"], message=message, options=["BODY=8BITMIME"]))[0] == 250
        [received] = await eventually(lambda: inbox(far, "dest@elsewhere.test"))
        assert max(len(line) for line in received.split(b"\r\n")) <= 998
        assert leaves(received) == leaves(message)
        [mail] = [c for c in box.commands if c.startswith("MAIL")]
        assert "BODY=" not in mail  # quoted-printable made it 7-bit
    finally:
        await stop(here, box, far)


@pytest_twisted.ensureDeferred
async def test_binary_part_to_a_peer_without_8bitmime_bounces_563(tmp_path, dns_server):
    far, box, here = await far_behind_middlebox(tmp_path, dns_server, hidden=("8BITMIME", "STARTTLS"))
    try:
        assert (await submit(here, ["dest@elsewhere.test"], message=BINARY, options=["BODY=8BITMIME"]))[0] == 250
        [report] = await eventually(lambda: dsns(here, "alice@example.test"))
        assert b"Action: failed" in report and b"Status: 5.6.3" in report
        assert b"Remote-MTA: dns; mx.elsewhere.test" in report
        assert not [c for c in box.commands if c.startswith("MAIL")]
        assert inbox(far, "dest@elsewhere.test") == []
    finally:
        await stop(here, box, far)


@pytest_twisted.ensureDeferred
async def test_smtputf8_to_a_peer_without_it_bounces_567(tmp_path, dns_server):
    far, box, here = await far_behind_middlebox(tmp_path, dns_server, hidden=("SMTPUTF8", "STARTTLS"))
    utf8_header = ("From: alice@example.test\r\nTo: dest@elsewhere.test\r\nSubject: Ärger\r\n\r\nbody\r\n").encode()
    ascii_only = b"From: alice@example.test\r\nTo: dest@elsewhere.test\r\nSubject: plain\r\n\r\nbody\r\n"
    try:
        assert (await submit(here, ["dest@elsewhere.test"], message=utf8_header, options=["SMTPUTF8"]))[0] == 250
        [report] = await eventually(lambda: dsns(here, "alice@example.test"))
        assert b"Action: failed" in report and b"Status: 5.6.7" in report  # RFC 6531 §3.2
        assert b"Content-Type: message/global\r\n" in report  # its header is UTF-8 (RFC 6533 §6.3)
        # SMTPUTF8 asked for, but nothing needs it: it goes without the parameter (RFC 6531 §3.2).
        assert (await submit(here, ["dest@elsewhere.test"], message=ascii_only, options=["SMTPUTF8"]))[0] == 250
        [received] = await eventually(lambda: inbox(far, "dest@elsewhere.test"))
        assert received.endswith(ascii_only)
        assert all("SMTPUTF8" not in c for c in box.commands)
    finally:
        await stop(here, box, far)


@pytest_twisted.ensureDeferred
async def test_failed_tls_handshake_is_retried_in_the_clear(tmp_path, dns_server):
    far, box, here = await far_behind_middlebox(tmp_path, dns_server, break_tls=True)
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        code, _ = await submit(here, ["dest@elsewhere.test", "nobody@elsewhere.test"])
        assert code == 250
        [received] = await eventually(lambda: inbox(far, "dest@elsewhere.test"))
        # The far side's trace field shows the plaintext session (no "S" in ESMTP, RFC 3848).
        first_hop = received.split(b"\r\n\tby ", 2)[1]
        assert first_hop.startswith(b"mail.example.test (mailserve) with ESMTP id")
        assert box.connections == 2 and box.commands.count("STARTTLS") == 1
        [report] = await eventually(lambda: dsns(here, "alice@example.test"))
        assert b"Final-Recipient: rfc822; nobody@elsewhere.test" in report
        assert b"Status: 5.1.1" in report and b"Remote-MTA: dns; mx.elsewhere.test" in report
        assert b"dest@elsewhere.test" not in report.split(b"message/delivery-status")[1].split(b"message/rfc822")[0]
        await eventually(lambda: here.outbound_queue.entries() == [])
        [warning] = [formatEvent(e) for e in events if "retrying without TLS" in e.get("log_format", "")]
        assert warning.startswith(f"mx.elsewhere.test[127.0.0.1]:{box.address[1]}: TLS with mx.elsewhere.test failed")
        assert any(e["log_level"] == LogLevel.warn for e in events if "without TLS" in e.get("log_format", ""))
    finally:
        globalLogPublisher.removeObserver(events.append)
        await stop(here, box, far)


@pytest_twisted.ensureDeferred
async def test_required_tls_to_the_smarthost_never_falls_back(tmp_path, dns_server):
    far = far_side(tmp_path)
    await add_user(far, "relay@elsewhere.test", "relay-secret")
    box = Middlebox(("127.0.0.1", far.port("smtp")), break_tls=True).start()
    here = start(tmp_path, dns=dns_server, smtp={
        "relay_host": "127.0.0.1", "relay_port": box.address[1], "relay_tls": "starttls",
        "relay_username": "relay@elsewhere.test", "relay_password": "relay-secret"})
    try:
        await populate(here)
        await submit(here, ["someone@third.test"])
        [entry] = await eventually(lambda: [e for e in here.outbound_queue.entries() if e.attempts])
        assert entry.recipients[0].status == "pending" and "TLS with 127.0.0.1 failed" in entry.last_error
        # No second connection in the clear, and neither the password nor the mail crossed.
        assert box.connections == 1 and box.commands[-1] == "STARTTLS"
        assert far.outbound_queue.entries() == []
    finally:
        await stop(here, box, far)


@pytest_twisted.ensureDeferred
async def test_starttls_refused_goes_on_in_the_clear_on_the_same_connection(tmp_path, dns_server):
    far, box, here = await far_behind_middlebox(tmp_path, dns_server, refuse_tls=True)
    try:
        assert (await submit(here, ["dest@elsewhere.test"]))[0] == 250
        [received] = await eventually(lambda: inbox(far, "dest@elsewhere.test"))
        assert received.split(b"\r\n\tby ", 2)[1].startswith(b"mail.example.test (mailserve) with ESMTP id")
        assert box.connections == 1
        assert box.commands[box.commands.index("STARTTLS") + 1].startswith("MAIL FROM:<alice@example.test>")
        await eventually(lambda: here.outbound_queue.entries() == [])
    finally:
        await stop(here, box, far)


@pytest_twisted.ensureDeferred
async def test_mx_preference_order_and_backup_host(tmp_path, dns_server):
    far = far_side(tmp_path)
    await add_user(far, "dest@elsewhere.test", "pw-dest-1")
    target = ("127.0.0.1", far.port("smtp"))
    port = free_port()
    primary = Middlebox(target).start("127.0.0.2", port)
    backup = Middlebox(target).start("127.0.0.3", port)
    dns_server.add("elsewhere.test", "MX", (20, "backup.elsewhere.test"))
    dns_server.add("elsewhere.test", "MX", (10, "primary.elsewhere.test"))
    dns_server.add("primary.elsewhere.test", "A", "127.0.0.2")
    dns_server.add("backup.elsewhere.test", "A", "127.0.0.3")
    here = start(tmp_path, dns=dns_server, queue_port=port)
    try:
        await populate(here)
        await submit(here, ["dest@elsewhere.test"])
        await eventually(lambda: inbox(far, "dest@elsewhere.test"))
        assert (primary.connections, backup.connections) == (1, 0)  # lowest preference first
        await primary.stop()
        await submit(here, ["dest@elsewhere.test"])
        await eventually(lambda: len(inbox(far, "dest@elsewhere.test")) == 2)
        assert (primary.connections, backup.connections) == (1, 1)  # the next host when it is down
    finally:
        await stop(here, backup, far)


@pytest_twisted.ensureDeferred
async def test_ipv6_address_when_the_ipv4_one_is_down(tmp_path, dns_server):
    """A host's addresses are all tried (RFC 5321 §5.1); AAAA records too, here without any MX."""
    far = far_side(tmp_path)
    await add_user(far, "dest@elsewhere.test", "pw-dest-1")
    port = free_port()
    over_ipv6 = Middlebox(("127.0.0.1", far.port("smtp"))).start("::1", port)
    dns_server.add("elsewhere.test", "A", "127.0.0.2")  # nothing listens there
    dns_server.add("elsewhere.test", "AAAA", "::1")
    here = start(tmp_path, dns=dns_server, queue_port=port)
    try:
        await populate(here)
        await submit(here, ["dest@elsewhere.test"])
        await eventually(lambda: inbox(far, "dest@elsewhere.test"))
        assert over_ipv6.connections == 1
        await eventually(lambda: here.outbound_queue.entries() == [])
    finally:
        await stop(here, over_ipv6, far)


class HostilePeer(protocol.Protocol):
    """Greets, then answers EHLO with a reply that never ends (``flood``) or one endless line."""

    def __init__(self, flood: bytes) -> None:
        self.flood = flood

    def connectionMade(self) -> None:
        self.transport.write(b"220 hostile.test ESMTP\r\n")

    def dataReceived(self, data: bytes) -> None:
        if data.upper().startswith(b"EHLO"):
            self.transport.write(self.flood)


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("flood, error", [
    (b"250-x\r\n" * 500, "reply too long"),
    (b"250 " + b"x" * 100_000, "reply line too long"),
])
async def test_hostile_peer_replies_are_bounded(tmp_path, dns_server, flood, error):
    from twisted.internet import reactor

    factory = protocol.ServerFactory()
    factory.protocol = lambda: HostilePeer(flood)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    dns_server.add("elsewhere.test", "MX", (10, "mx.elsewhere.test"))
    dns_server.add("mx.elsewhere.test", "A", "127.0.0.1")
    here = start(tmp_path, dns=dns_server, queue_port=port.getHost().port)
    try:
        await populate(here)
        await submit(here, ["dest@elsewhere.test"])
        [entry] = await eventually(lambda: [e for e in here.outbound_queue.entries() if e.attempts])
        assert entry.recipients[0].status == "pending"
        assert entry.last_error.startswith("451 4.4.1") and error in entry.last_error
    finally:
        await here.stopService()
        await port.stopListening()


class SilentAfterData(protocol.Protocol):
    """A well-behaved peer until the final dot, which it never answers (busy filtering, say)."""

    def connectionMade(self) -> None:
        self.in_data = False
        self.transport.write(b"220 slow.test ESMTP\r\n")

    def dataReceived(self, data: bytes) -> None:
        for line in data.split(b"\r\n")[:-1]:
            if self.in_data:
                continue  # the message, and then silence
            verb = line[:4].upper()
            if verb == b"EHLO":
                self.transport.write(b"250-slow.test\r\n250 PIPELINING\r\n")
            elif verb == b"DATA":
                self.in_data = True
                self.transport.write(b"354 go ahead\r\n")
            else:
                self.transport.write(b"250 2.0.0 ok\r\n")


@pytest_twisted.ensureDeferred
async def test_the_final_dot_gets_its_own_longer_timeout(tmp_path, dns_server):
    """RFC 5321 §4.5.3.2.6: the reply to the end of data is awaited longer than other replies."""
    from twisted.internet import reactor

    factory = protocol.ServerFactory()
    factory.protocol = SilentAfterData
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    dns_server.add("elsewhere.test", "MX", (10, "mx.elsewhere.test"))
    dns_server.add("mx.elsewhere.test", "A", "127.0.0.1")
    here = start(tmp_path, dns=dns_server, queue_port=port.getHost().port)
    queue = here.outbound_queue
    assert queue.data_timeout == 600  # the RFC's 10 minutes by default
    queue.data_timeout = 1.5  # the command timeout of this test server is 10 s
    try:
        await populate(here)
        await submit(here, ["dest@elsewhere.test"])
        [entry] = await eventually(lambda: [e for e in queue.entries() if e.attempts])
        assert entry.recipients[0].status == "pending"
        assert entry.last_error == "451 4.4.2 no reply within 1.5 seconds"
    finally:
        await here.stopService()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_retries_back_off_exponentially_up_to_the_maximum(tmp_path, dns_server):
    dns_server.add("elsewhere.test", "MX", (10, "mx.elsewhere.test"))
    dns_server.add("mx.elsewhere.test", "A", "127.0.0.1")
    here = start(tmp_path, dns=dns_server, queue_port=free_port(),
                 smtp={"retry_initial": "60s", "retry_max": "240s", "delay_notice_after": "0s"})
    queue = here.outbound_queue
    offset = 0.0
    real_clock = queue.clock
    queue.clock = lambda: real_clock() + offset
    try:
        await populate(here)
        await submit(here, ["dest@elsewhere.test"])
        delays = []
        for attempt in range(1, 6):
            [entry] = await eventually(lambda n=attempt: [e for e in queue.entries() if e.attempts == n])
            delays.append(round(entry.next_attempt - entry.recipients[0].changed))
            assert entry.recipients[0].status == "pending" and "4.4.1" in entry.last_error
            offset = entry.next_attempt - real_clock() + 0.01  # now it is due
            queue.wake()
        # RFC 5321 §4.5.4.1: retry after at least 30 minutes in production; doubling, capped.
        assert delays == [60, 120, 240, 240, 240]
        assert dsns(here, "alice@example.test") == []
    finally:
        await here.stopService()


