"""Connection limits and counts, for every protocol, in ListenerService (mailserve.listeners)."""

from __future__ import annotations

import base64
import smtplib
import socket
import ssl
import time

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from tests.e2e.harness import add_user, start_server


# -- connection limits and counts, for every protocol, in ListenerService ------------------------------
def _greeting(address: tuple[str, int], source: str) -> tuple[socket.socket, bytes]:
    """Connect from ``source`` (another loopback address is another client) and read the first line."""
    sock = socket.create_connection(address, timeout=10, source_address=(source, 0))
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return sock, data


def _tls_greeting(address: tuple[str, int], source: str) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(address, timeout=10, source_address=(source, 0))
    with context.wrap_socket(raw) as sock:
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data


def _http_refusal(address: tuple[str, int], source: str) -> bytes:
    sock = socket.create_connection(address, timeout=10, source_address=(source, 0))
    with sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        return data


async def _eventually(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await deferLater(reactor, 0.02, lambda: None)


@pytest_twisted.ensureDeferred
async def test_server_wide_connection_limits_answer_in_each_protocols_words(tmp_path):
    server = start_server(tmp_path, ["smtp", "imap", "imaps", "pop3", "managesieve", "http"],
                          server={"max_connections": 2, "max_connections_per_ip": 1})
    metrics = server.metrics.registry

    def value(name: str, protocol: str) -> float:
        return metrics.get_sample_value(name, {"protocol": protocol}) or 0.0

    held: list[socket.socket] = []
    try:
        # 127.0.0.1 takes its one slot on SMTP; every other listener then refuses that address.
        sock, greeting = await deferToThread(_greeting, server.address("smtp"), "127.0.0.1")
        held.append(sock)
        assert greeting.startswith(b"220 ")
        expected = {
            "smtp": b"421 4.7.0 mail.example.test Too many connections from your address, try again later\r\n",
            "imap": b"* BYE [UNAVAILABLE] Too many connections from your address; try again later\r\n",
            "pop3": b"-ERR [SYS/TEMP] Too many connections from your address; try again later\r\n",
            "managesieve": b'BYE (TRYLATER) "Too many connections from your address; try again later"\r\n',
        }
        for listener, line in expected.items():
            refused_sock, answer = await deferToThread(_greeting, server.address(listener), "127.0.0.1")
            refused_sock.close()
            assert answer == line, listener
        # On an implicit-TLS listener the refusal comes after the handshake, inside TLS.
        tls_answer = await deferToThread(_tls_greeting, server.address("imaps"), "127.0.0.1")
        assert tls_answer == expected["imap"]
        http = await deferToThread(_http_refusal, server.address("http"), "127.0.0.1")
        assert http.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 5" in http
        assert b"Too many connections from your address" in http

        # Another address gets the second (last) slot of the server; a third address finds it full.
        sock, greeting = await deferToThread(_greeting, server.address("pop3"), "127.0.0.2")
        held.append(sock)
        assert greeting.startswith(b"+OK")
        refused_sock, answer = await deferToThread(_greeting, server.address("imap"), "127.0.0.3")
        refused_sock.close()
        assert answer == b"* BYE [UNAVAILABLE] Too many connections; try again later\r\n"

        assert value("mailserve_connections_total", "smtp") == 1
        assert value("mailserve_connections_total", "pop3") == 1
        assert value("mailserve_connections_total", "imap") == 0
        assert value("mailserve_connections_active", "smtp") == 1
        assert value("mailserve_connections_refused_total", "imap") == 3
        assert value("mailserve_connections_refused_total", "http") == 1

        # Closing frees the slots: the counts go back and the address is served again.
        for sock in held:
            sock.close()
        held.clear()
        await _eventually(lambda: value("mailserve_connections_active", "smtp") == 0
                          and value("mailserve_connections_active", "pop3") == 0)
        sock, greeting = await deferToThread(_greeting, server.address("imap"), "127.0.0.1")
        held.append(sock)
        assert greeting.startswith(b"* OK")
        assert value("mailserve_connections_active", "imap") == 1
    finally:
        for sock in held:
            sock.close()
        await server.stopService()


def _failed_logins(addresses: dict[str, tuple[str, int]]) -> dict[str, bytes]:
    """One wrong password over each protocol, as its clients send it; the server's answers."""
    plain = base64.b64encode(b"\0zoe@count.example.test\0wrong-password")
    answers = {}
    with smtplib.SMTP(*addresses["submission"], timeout=10) as smtp:
        smtp.ehlo("client.example.test")
        code, text = smtp.docmd("AUTH", "PLAIN " + plain.decode())
        answers["submission"] = f"{code} ".encode() + text
    sock, _ = _greeting(addresses["pop3"], "127.0.0.1")
    with sock:
        sock.sendall(b"USER zoe@count.example.test\r\nPASS wrong-password\r\n")
        answers["pop3"] = b"".join(iter(lambda: sock.recv(4096), b""))  # closes after max_auth_failures=1
    sock, data = _greeting(addresses["managesieve"], "127.0.0.1")
    with sock:
        # The capability greeting ends with an OK line (RFC 5804 §1.7).
        while not (b"\n" + data).rsplit(b"\n", 2)[-2].startswith(b"OK"):
            data += sock.recv(4096)
        sock.sendall(b'AUTHENTICATE "PLAIN" "' + plain + b'"\r\n')
        answers["managesieve"] = sock.recv(4096)
    return answers


@pytest_twisted.ensureDeferred
async def test_failed_authentications_are_counted_under_their_protocol(tmp_path):
    server = start_server(tmp_path, ["submission", "pop3", "managesieve"], auth={"failure_delay": 0},
                          pop3={"auth_failure_delay": 0, "max_auth_failures": 1})
    try:
        await add_user(server, "zoe@count.example.test", "zoe-password")
        registry = server.metrics.registry

        def failures(protocol: str) -> float:
            return registry.get_sample_value("mailserve_auth_failures_total", {"protocol": protocol})

        answers = await deferToThread(_failed_logins, {name: server.address(name) for name in
                                                      ("submission", "pop3", "managesieve")})
        assert answers["submission"].startswith(b"535 "), answers
        assert b"-ERR" in answers["pop3"], answers
        assert answers["managesieve"].startswith(b"NO"), answers
        assert {p: failures(p) for p in ("submission", "pop3", "managesieve", "smtp", "imap", "http")} == {
            "submission": 1, "pop3": 1, "managesieve": 1, "smtp": 0, "imap": 0, "http": 0}
    finally:
        await server.stopService()
