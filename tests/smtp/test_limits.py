"""Session limits over real sockets, each with its exact reply: connections overall and per IP,
message rates per client and per sender, the data timeout."""

from __future__ import annotations

import socket

import pytest_twisted

from tests.smtp.conftest import MESSAGE, in_thread, populate, start
from tests.smtp.test_server import raw_session, run


def greetings(server, count, listeners=("smtp",)):
    """Open ``count`` connections at once (to the listeners in turn); return each greeting, then
    close them all."""

    def go():
        socks = [socket.create_connection(server.address(listeners[n % len(listeners)]), timeout=5)
                 for n in range(count)]
        try:
            return [s.recv(200).decode() for s in socks]
        finally:
            for s in socks:
                s.close()

    return in_thread(go)


@pytest_twisted.ensureDeferred
async def test_connections_overall_limit_and_release(tmp_path):
    server = start(tmp_path, server={"max_connections": 2, "max_connections_per_ip": 2})
    try:
        # The count is over all listeners: one submission session takes one of the two slots.
        # Connections to two listening sockets are accepted in no fixed order, so which of the
        # three is refused is not known; that exactly one is, with the exact reply, is.
        first = await greetings(server, 3, listeners=("submission", "smtp"))
        assert sorted(g[:4] for g in first) == ["220 ", "220 ", "421 "]
        assert "421 4.7.0 mail.example.test Too many connections, try again later\r\n" in first
        # Closed connections are counted out again (as soon as the server sees them close).
        for _ in range(100):
            again = await greetings(server, 2)
            if all(g.startswith("220 ") for g in again):
                break
            await _sleep(0.02)
        assert all(g.startswith("220 ") for g in again)
    finally:
        await server.stopService()


async def _sleep(seconds):
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    await deferLater(reactor, seconds, lambda: None)


@pytest_twisted.ensureDeferred
async def test_connections_per_ip_exact_reply(tmp_path):
    server = start(tmp_path, server={"max_connections": 10, "max_connections_per_ip": 1})
    try:
        replies = await greetings(server, 2)
        assert replies[1] == "421 4.7.0 mail.example.test Too many connections from your address, try again later\r\n"
    finally:
        await server.stopService()


@pytest_twisted.ensureDeferred
async def test_data_timeout_421(tmp_path):
    server = start(tmp_path, smtp={"data_timeout": "1s", "command_timeout": "30s"})
    try:
        await populate(server)
        lines = await raw_session(server, [
            b"EHLO x.test\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n",
            b"Subject: stalled\r\n\r\nhalf a mess",
        ], read_until=b"421")
        assert "354 End data with <CR><LF>.<CR><LF>" in lines
        assert "421 4.4.2 mail.example.test Error: timeout exceeded" in lines
    finally:
        await server.stopService()


@pytest_twisted.ensureDeferred
async def test_rate_per_envelope_sender_without_auth(tmp_path):
    server = start(tmp_path, smtp={"rate_per_sender": 2})
    try:
        await populate(server)

        def script(smtp):
            smtp.ehlo("x.test")
            replies = []
            for sender in ("s@remote.test", "S@remote.test", "s@remote.test", "other@remote.test", "", ""):
                replies.append(smtp.mail(sender))
                smtp.rset()
            smtp.mail("")
            smtp.rcpt("alice@example.test")
            return replies

        replies = await run(server, script)
        # Two per minute for s@remote.test (case-insensitive), its own count for the other sender;
        # the null sender counts per client address.
        assert [code for code, _ in replies] == [250, 250, 450, 250, 250, 250]
        assert replies[2][1] == b"4.7.1 Error: too many messages from this sender, slow down"
    finally:
        await server.stopService()


@pytest_twisted.ensureDeferred
async def test_rate_limited_client_can_still_quit_cleanly(tmp_path):
    server = start(tmp_path, smtp={"rate_per_ip": 1})
    try:
        await populate(server)

        def script(smtp):
            smtp.ehlo("x.test")
            smtp.sendmail("s@remote.test", ["alice@example.test"], MESSAGE)
            return smtp.mail("s@remote.test"), smtp.noop()

        refused, noop = await run(server, script)
        assert refused == (450, b"4.7.1 Error: too many messages from your address, slow down")
        assert noop[0] == 250  # the session goes on; only new mail is refused
    finally:
        await server.stopService()
