"""Every live setting, changed through ``PATCH /api/config`` and then observed on the protocol's socket.

One server in a child process with SMTP, IMAP, POP3, ManageSieve and HTTP listeners.  Each test
changes settings over HTTP, as an operator would, and checks with a real client (smtplib,
imaplib, poplib, a raw ManageSieve conversation, an HTTP login) that the new value is what the
server does now, without a restart; then puts the old value back.  Delays are asserted only
from below (a delay cannot end early), so nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import poplib
import re
import smtplib
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mailserve.admin.settings import LIVE_SETTINGS
from tests.web.conftest import RunningServer, start_server_process, stop_server_process

DOMAIN = "live.example.test"
ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
PASSWORD = "alice-password-1"
SIEVE_API = f"/api/accounts/{ALICE}/sieve"
#: A failure delay long enough to measure from below, short enough to keep the module fast.
DELAY = 0.4

#: Every live setting this module changes and observes; a new entry in LIVE_SETTINGS needs a test here.
OBSERVED = {
    "smtp.max_message_size", "smtp.max_recipients", "smtp.max_errors", "smtp.rate_per_ip",
    "smtp.rate_per_sender", "imap.idle_timeout", "imap.auth_failure_delay", "pop3.idle_timeout",
    "pop3.auth_failure_delay", "managesieve.max_scripts", "managesieve.max_script_size",
    "auth.failure_delay", "http.session_lifetime",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[RunningServer]:
    running = start_server_process(
        str(tmp_path_factory.mktemp("live")), ("smtp", "submission", "imap", "pop3", "managesieve", "http"),
        sections={"imap": {"auth_failure_delay": 0}, "pop3": {"auth_failure_delay": 0}},
    )
    try:
        assert running.admin("POST", "/api/domains", {"name": DOMAIN}).status == 201
        for address in (ALICE, BOB):
            reply = running.admin("POST", "/api/accounts",
                                  {"name": address, "password": PASSWORD, "addresses": [address]})
            assert reply.status == 201, reply.body
        yield running
    finally:
        stop_server_process(running)


def live_values(server: RunningServer) -> dict[str, Any]:
    reply = server.admin("GET", "/api/config")
    assert reply.status == 200, reply.body
    return reply.json["live"]


@contextlib.contextmanager
def changed(server: RunningServer, **settings: Any) -> Iterator[None]:
    """PATCH ``settings`` (keys with ``__`` for ``.``) for the block, then put the old values back."""
    changes = {key.replace("__", "."): value for key, value in settings.items()}
    before = live_values(server)
    reply = server.admin("PATCH", "/api/config", changes)
    assert reply.status == 200, reply.body
    for key, value in changes.items():
        assert reply.json["live"][key] == value
    try:
        yield
    finally:
        reply = server.admin("PATCH", "/api/config", {key: before[key] for key in changes})
        assert reply.status == 200, reply.body


def smtp_client(server: RunningServer) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10)
    client.ehlo("client.example.test")
    return client


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (socket timeout: 10 s)."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_every_live_setting_is_observed_here():
    assert set(LIVE_SETTINGS) == OBSERVED


# -- SMTP ------------------------------------------------------------------------------------------------
def test_smtp_max_message_size_applies_to_new_sessions(server):
    earlier = smtp_client(server)  # started under the old limit, which its EHLO advertised
    try:
        with changed(server, smtp__max_message_size=65536):
            client = smtp_client(server)
            try:
                assert client.esmtp_features["size"] == "65536"
                big = b"Subject: big\r\n\r\n" + (b"x" * 76 + b"\r\n") * 1000  # about 78 KB
                # Declared with SIZE (RFC 1870 §6): refused at MAIL.
                code, text = client.mail("sender@remote.example", [f"SIZE={len(big)}"])
                assert (code, text[:5]) == (552, b"5.3.4")
                # Undeclared: refused at the end of DATA.
                assert client.mail("sender@remote.example")[0] == 250
                assert client.rcpt(ALICE)[0] == 250
                code, text = client.data(big)
                assert (code, text[:5]) == (552, b"5.3.4")
                # Under the limit it still goes through.
                assert client.sendmail("sender@remote.example", [ALICE], b"Subject: small\r\n\r\nhello\r\n") == {}
            finally:
                client.quit()
            earlier.ehlo("client.example.test")
            assert earlier.esmtp_features["size"] != "65536"
    finally:
        earlier.close()
    client = smtp_client(server)
    assert client.esmtp_features["size"] != "65536"
    client.quit()


def test_smtp_max_recipients_applies_to_new_sessions(server):
    with changed(server, smtp__max_recipients=2):
        client = smtp_client(server)
        try:
            assert client.mail("sender@remote.example")[0] == 250
            assert client.rcpt(ALICE)[0] == 250
            assert client.rcpt(BOB)[0] == 250
            code, text = client.rcpt(ALICE)
            assert (code, text[:5]) == (452, b"4.5.3")
        finally:
            client.quit()
    client = smtp_client(server)
    try:
        assert client.mail("sender@remote.example")[0] == 250
        for _ in range(3):
            assert client.rcpt(ALICE)[0] == 250
    finally:
        client.quit()


def test_smtp_max_errors_applies_to_new_sessions(server):
    with (changed(server, smtp__max_errors=2),
          socket.create_connection(("127.0.0.1", server.ports["smtp"]), timeout=10) as sock):
        sock.sendall(b"EHLO client.example.test\r\n" + b"BOGUS\r\n" * 5)
        replies = read_until_closed(sock).decode().splitlines()
    # RFC 5321 §4.2: each unknown command gets 500; the third error (over 2) ends the session.
    assert [line[:3] for line in replies if line.startswith("500")] == ["500"] * 3
    assert replies[-1].startswith("421 4.7.0")


def test_smtp_rate_per_sender_is_read_at_every_message(server):
    client = smtp_client(server)  # opened before the change: the limit is read per message
    try:
        with changed(server, smtp__rate_per_sender=1):
            assert client.mail("once@remote.example")[0] == 250
            client.rset()
            code, text = client.mail("once@remote.example")
            assert (code, text[:5]) == (450, b"4.7.1")
            assert b"sender" in text
            assert client.mail("other@remote.example")[0] == 250
            client.rset()
        assert client.mail("once@remote.example")[0] == 250
        client.rset()
    finally:
        client.quit()


def test_smtp_rate_per_ip_is_read_at_every_message(server):
    client = smtp_client(server)
    try:
        with changed(server, smtp__rate_per_ip=2):
            for sender in ("a@remote.example", "b@remote.example"):
                assert client.mail(sender)[0] == 250
                client.rset()
            code, text = client.mail("c@remote.example")
            assert (code, text[:5]) == (450, b"4.7.1")
            assert b"your address" in text
        assert client.mail("c@remote.example")[0] == 250
        client.rset()
    finally:
        client.quit()


# -- IMAP ------------------------------------------------------------------------------------------------
def test_imap_auth_failure_delay_applies_to_the_next_failed_login(server):
    client = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=10)
    try:
        with changed(server, imap__auth_failure_delay=DELAY):
            started = time.monotonic()
            with pytest.raises(imaplib.IMAP4.error):
                client.login(ALICE, "wrong-password")
            assert time.monotonic() - started >= DELAY
    finally:
        client.shutdown()


def test_imap_idle_timeout_applies_to_new_sessions_and_new_idle(server):
    idling = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=10)
    idling.login(ALICE, PASSWORD)
    idling.select("INBOX")
    try:
        with changed(server, imap__idle_timeout=1):
            # A session that started under the old timeout gets the new one with its next IDLE.
            idling.send(b"a1 IDLE\r\n")
            assert idling.readline().startswith(b"+ ")
            # A session started now gets it from the start.
            with socket.create_connection(("127.0.0.1", server.ports["imap"]), timeout=10) as fresh:
                fresh_output = read_until_closed(fresh)
            idle_output = b""
            while b"* BYE" not in idle_output:
                line = idling.readline()
                assert line, "the server closed the IDLE session without BYE"
                idle_output += line
    finally:
        idling.shutdown()
    assert fresh_output.startswith(b"* OK")
    assert b"* BYE Autologout" in fresh_output
    assert b"* BYE Autologout" in idle_output


# -- POP3 ------------------------------------------------------------------------------------------------
def test_pop3_auth_failure_delay_applies_to_the_next_failed_login(server):
    client = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=10)
    try:
        with changed(server, pop3__auth_failure_delay=DELAY):
            client.user(ALICE)
            started = time.monotonic()
            with pytest.raises(poplib.error_proto):
                client.pass_("wrong-password")
            assert time.monotonic() - started >= DELAY
    finally:
        client.close()


def test_pop3_idle_timeout_applies_to_new_sessions(server):
    with (changed(server, pop3__idle_timeout=1),
          socket.create_connection(("127.0.0.1", server.ports["pop3"]), timeout=10) as sock):
        output = read_until_closed(sock).decode()
    assert output.startswith("+OK")
    assert "-ERR Disconnected for inactivity" in output  # RFC 1939 §3 autologout


# -- ManageSieve -----------------------------------------------------------------------------------------
class SieveClient:
    """The few ManageSieve commands (RFC 5804) these tests need, over a plain socket."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")
        self.response()  # the greeting: capabilities, then OK

    def response(self) -> bytes:
        """The final OK/NO/BYE line of the next response."""
        while True:
            line = self.file.readline()
            assert line, "ManageSieve server closed the connection"
            if re.match(rb"(OK|NO|BYE)\b", line):
                return line.rstrip(b"\r\n")

    def command(self, line: str, literal: bytes | None = None) -> bytes:
        data = line.encode()
        if literal is not None:
            data += b" {%d+}\r\n" % len(literal) + literal
        self.sock.sendall(data + b"\r\n")
        return self.response()

    def login(self, user: str, password: str) -> bytes:
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        return self.command(f'AUTHENTICATE "PLAIN" "{token}"')

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def sieve_script(size: int) -> bytes:
    """A valid Sieve script of exactly ``size`` octets (a comment pads it)."""
    head = b'require "fileinto";\r\nkeep;\r\n#'
    return head + b"x" * (size - len(head))


def test_managesieve_script_limits_are_read_at_every_putscript(server):
    client = SieveClient(server.ports["managesieve"])
    try:
        assert client.login(ALICE, PASSWORD).startswith(b"OK")
        with changed(server, managesieve__max_scripts=1):
            assert client.command('PUTSCRIPT "first"', sieve_script(100)).startswith(b"OK")
            reply = client.command('PUTSCRIPT "second"', sieve_script(100))
            assert reply.startswith(b"NO (QUOTA/MAXSCRIPTS)")
            assert client.command('HAVESPACE "second" 100').startswith(b"NO (QUOTA/MAXSCRIPTS)")
            # The admin API stores into the same place under the same limits.
            reply = server.request("PUT", f"{SIEVE_API}/second", {"script": sieve_script(100).decode()},
                                   auth=(ALICE, PASSWORD))
            assert reply.status == 409, reply.body
            assert "scripts" in reply.json["error"]["message"]
        assert client.command('HAVESPACE "second" 100').startswith(b"OK")
        assert client.command('PUTSCRIPT "first"', sieve_script(2000)).startswith(b"OK")
        with changed(server, managesieve__max_script_size=1024):
            assert client.command('HAVESPACE "first" 2000').startswith(b"NO (QUOTA/MAXSIZE)")
            reply = client.command('PUTSCRIPT "first"', sieve_script(2000))
            assert reply.startswith(b"NO (QUOTA/MAXSIZE)")
            assert client.command('PUTSCRIPT "first"', sieve_script(1000)).startswith(b"OK")
            reply = server.request("PUT", f"{SIEVE_API}/first", {"script": sieve_script(2000).decode()},
                                   auth=(ALICE, PASSWORD))
            assert reply.status == 413, reply.body
            assert "1024" in reply.json["error"]["message"]
        assert client.command('PUTSCRIPT "first"', sieve_script(2000)).startswith(b"OK")
        assert client.command('DELETESCRIPT "first"').startswith(b"OK")
    finally:
        client.close()


# -- auth.failure_delay: SMTP AUTH, ManageSieve and the web login ----------------------------------------
def test_auth_failure_delay_applies_to_the_next_failed_login(server):
    client = SieveClient(server.ports["managesieve"])
    submission = smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=10)
    try:
        submission.ehlo("client.example.test")
        with changed(server, auth__failure_delay=DELAY):
            started = time.monotonic()
            assert client.login(ALICE, "wrong-password").startswith(b"NO")
            assert time.monotonic() - started >= DELAY
            started = time.monotonic()
            token = base64.b64encode(f"\0{ALICE}\0wrong-password".encode()).decode()
            code, text = submission.docmd("AUTH", f"PLAIN {token}")
            assert (code, text[:5]) == (535, b"5.7.8")  # RFC 4954 §6
            assert time.monotonic() - started >= DELAY
            started = time.monotonic()
            reply = server.request("POST", "/admin/login", {"login": ALICE, "password": "wrong-password"})
            assert reply.status == 401
            assert time.monotonic() - started >= DELAY
    finally:
        client.close()
        submission.close()


# -- HTTP ------------------------------------------------------------------------------------------------
def session_cookie_max_age(server: RunningServer) -> int:
    reply = server.request("POST", "/admin/login", {"login": ALICE, "password": PASSWORD})
    assert reply.status == 200, reply.body
    match = re.search(r"(?i)max-age=(\d+)", reply.headers["set-cookie"])
    assert match, reply.headers["set-cookie"]
    return int(match.group(1))


def test_http_session_lifetime_applies_to_new_logins(server):
    with changed(server, http__session_lifetime=120):
        assert session_cookie_max_age(server) == 120
    with changed(server, http__session_lifetime=7200):
        assert session_cookie_max_age(server) == 7200


# -- bad values ------------------------------------------------------------------------------------------
def test_out_of_range_values_get_400_and_change_nothing(server):
    schema = server.request("GET", "/api/openapi.json").json["paths"]["/api/config"]["patch"]
    body = schema["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert set(body) == set(LIVE_SETTINGS)
    before = live_values(server)
    for key, rule in body.items():
        outside = rule["minimum"] - 1 if rule["minimum"] > 0 else rule["maximum"] + 1
        reply = server.admin("PATCH", "/api/config", {key: outside})
        assert reply.status == 400, (key, reply.body)
        assert key in reply.json["error"]["message"]
        # With a good value for another setting in the same request: nothing is half-applied.
        other = "smtp.max_recipients" if key != "smtp.max_recipients" else "smtp.max_errors"
        reply = server.admin("PATCH", "/api/config", {other: before[other] + 1, key: outside})
        assert reply.status == 400, (key, reply.body)
    for wrong_type in ({"smtp.max_recipients": "many"}, {"smtp.max_recipients": True},
                       {"imap.idle_timeout": [1]}, {"smtp.hostname": 1}, {}):
        assert server.admin("PATCH", "/api/config", wrong_type).status == 400, wrong_type
    assert live_values(server) == before
    # And the protocols still run under the old values.
    client = smtp_client(server)
    assert client.esmtp_features["size"] == str(before["smtp.max_message_size"])
    client.quit()
