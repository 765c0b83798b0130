"""A real mailserve with an IMAP listener, and helpers to drive it with client libraries.

Shared by the IMAP protocol, session and client tests.  The server runs on the test's
reactor; clients run in threads (``deferToThread``) so the reactor keeps serving them.
"""

from __future__ import annotations

import imaplib
from collections.abc import Callable
from typing import Any

import pytest_twisted
from twisted.internet import defer
from twisted.internet.threads import deferToThread

from tests.e2e.harness import add_user, start_server

PASSWORD = "correct horse battery staple"
USER = "alice@example.test"
OTHER = "bob@example.test"


def message(n: int, subject: str | None = None, body: str | None = None, **headers: str) -> bytes:
    extra = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    return (
        f"From: Alice <alice@example.test>\r\nTo: Bob <bob@example.test>\r\n"
        f"Subject: {subject or f'message {n}'}\r\nDate: Mon, 7 Feb 2022 21:52:{n % 60:02d} +0100\r\n"
        f"Message-ID: <m{n}@example.test>\r\n{extra}\r\n{body or f'Body of message {n}.'}\r\n"
    ).encode()


class IMAPTestServer:
    """A started server with two users; ``connect()`` gives a logged-out imaplib client."""

    def __init__(self, tmp_path, listeners=("imap",), **sections: Any) -> None:
        sections.setdefault("imap", {})
        sections["imap"] = {"auth_failure_delay": "0s", **sections["imap"]}
        self.server = start_server(tmp_path, list(listeners), **sections)
        self.accounts = {}
        for address in (USER, OTHER):
            self.accounts[address] = pytest_twisted.blockon(add_user(self.server, address, PASSWORD))

    @property
    def core(self):
        return self.server.core

    def port(self, listener: str = "imap") -> int:
        return self.server.port(listener)

    def connect(self, listener: str = "imap") -> imaplib.IMAP4:
        return imaplib.IMAP4("127.0.0.1", self.port(listener), timeout=30)

    def login(self, user: str = USER, listener: str = "imap") -> imaplib.IMAP4:
        client = self.connect(listener)
        client.login(user, PASSWORD)
        return client

    def account_id(self, user: str = USER) -> int:
        return self.accounts[user].id

    @defer.inlineCallbacks
    def deliver(self, raw: bytes, mailbox: str = "INBOX", user: str = USER, keywords=()):
        account = self.account_id(user)
        box = self.core.find_mailbox(account, mailbox)
        result = yield self.core.append(account, box.id, raw, keywords)
        return result

    def stop(self) -> None:
        pytest_twisted.blockon(self.server.stopService())


def in_thread(fn: Callable[..., Any], *args: Any) -> defer.Deferred:
    """Run a blocking client function off the reactor thread."""
    return deferToThread(fn, *args)


def raw_session(port: int, script: list, timeout: float = 10.0) -> bytes:
    """Send raw command bytes one chunk at a time; return everything the server said.

    After each chunk, read until a line starts with the chunk's tag, a continuation
    request (``+``) or ``* BYE`` arrives, so the exact bytes of responses can be asserted.
    A chunk may be ``(bytes, tag)`` when it continues a command (a SASL response, DONE).
    """
    import socket

    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    received = bytearray()
    try:
        received += _read_until(sock, None)
        for chunk in script:
            data, tag = chunk if isinstance(chunk, tuple) else (chunk, chunk.split(b" ", 1)[0])
            sock.sendall(data)
            received += _read_until(sock, tag)
    finally:
        sock.close()
    return bytes(received)


def _read_until(sock, tag: bytes | None) -> bytes:
    data = bytearray()
    while True:
        if data.endswith(b"\r\n"):
            last = bytes(data[:-2]).rsplit(b"\r\n", 1)[-1]
            if tag is None or last.startswith((tag + b" ", b"+", b"* BYE")):
                return bytes(data)
        chunk = sock.recv(65536)
        if not chunk:
            return bytes(data)
        data += chunk


class RawClient:
    """A line-level IMAP client over a plain socket, for asserting exact responses."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        import socket

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = bytearray()
        self.greeting = self.line()
        self.counter = 0

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buffer += chunk
        end = self.buffer.index(b"\r\n")
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return line

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def command(self, text: str | bytes) -> tuple[list[bytes], bytes]:
        """Send one command with a fresh tag; (untagged lines, tagged line without the tag)."""
        self.counter += 1
        tag = b"t%d" % self.counter
        data = text.encode() if isinstance(text, str) else text
        self.send(tag + b" " + data + b"\r\n")
        return self.until(tag)

    def until(self, tag: bytes) -> tuple[list[bytes], bytes]:
        untagged = []
        while True:
            line = self.line()
            if line.startswith(tag + b" "):
                return untagged, line[len(tag) + 1:]
            untagged.append(line)

    def login(self, user: str = USER) -> None:
        _, status = self.command(f'LOGIN {user} "{PASSWORD}"')
        assert status.startswith(b"OK"), status

    def close(self) -> None:
        self.sock.close()
