"""SMTP AUTH (RFC 4954) over real sockets: the shared SASL rules (RFC 4616) with SMTP's reply codes."""

from __future__ import annotations

import base64
import smtplib
import time

import pytest
import pytest_twisted

from tests.smtp.conftest import client, in_thread, populate, start


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def plain(authzid: str | bytes, authcid: str | bytes, password: str | bytes) -> str:
    def octets(value: str | bytes) -> bytes:
        return value.encode("utf-8") if isinstance(value, str) else value

    return b64(octets(authzid) + b"\0" + octets(authcid) + b"\0" + octets(password))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start(tmp_path_factory.mktemp("smtp-auth"), auth={"failure_delay": "0s"})
    pytest_twisted.blockon(populate(server))
    # a second address of alice's own account, for the authorization-identity rule
    pytest_twisted.blockon(server.directory.add_address("alice@example.test", "a.smith@example.test"))
    yield server
    pytest_twisted.blockon(server.stopService())


def session(server, script, listener="submission"):
    """Run ``script(smtp)`` after EHLO on ``listener`` in a thread; returns what it returns."""

    def go():
        smtp = client(server, listener)
        try:
            smtp.ehlo("laptop.test")
            return script(smtp)
        finally:
            try:
                smtp.quit()
            except Exception:  # noqa: BLE001 - the server may have closed already
                smtp.close()

    return in_thread(go)


@pytest_twisted.ensureDeferred
async def test_plain_with_bad_utf8_is_refused_and_the_session_goes_on(server):
    def script(smtp):
        bad = smtp.docmd("AUTH", "PLAIN " + plain(b"", "alice@example.test", b"alice-\xff\xfepassword"))
        bad_user = smtp.docmd("AUTH", "PLAIN " + plain(b"", b"alice\xc3@example.test", "alice-password"))
        good = smtp.docmd("AUTH", "PLAIN " + plain("", "alice@example.test", "alice-password"))
        return bad, bad_user, good

    bad, bad_user, good = await session(server, script)
    assert (bad[0], bad[1][:5]) == (501, b"5.5.2") and b"UTF-8" in bad[1]
    assert (bad_user[0], bad_user[1][:5]) == (501, b"5.5.2")
    assert (good[0], good[1][:5]) == (235, b"2.7.0")


@pytest_twisted.ensureDeferred
async def test_plain_field_rules(server):
    def script(smtp):
        long_password = smtp.docmd("AUTH", "PLAIN " + plain("", "alice@example.test", "p" * 256))
        two_fields = smtp.docmd("AUTH", "PLAIN " + b64(b"alice@example.test\0alice-password"))
        empty_password = smtp.docmd("AUTH", "PLAIN " + plain("", "alice@example.test", ""))
        empty = smtp.docmd("AUTH", "PLAIN =")
        return long_password, two_fields, empty_password, empty

    replies = await session(server, script)
    for reply in replies:
        assert (reply[0], reply[1][:5]) == (501, b"5.5.2"), reply
    assert b"255" in replies[0][1]


@pytest_twisted.ensureDeferred
async def test_authzid_of_another_account_is_refused(server):
    def script(smtp):
        refused = smtp.docmd("AUTH", "PLAIN " + plain("carol@example.test", "alice@example.test", "alice-password"))
        mail = smtp.docmd("MAIL", "FROM:<carol@example.test>")
        return refused, mail

    refused, mail = await session(server, script)
    assert (refused[0], refused[1][:5]) == (535, b"5.7.8")
    assert (mail[0], mail[1][:5]) == (530, b"5.7.0")  # still not authenticated


@pytest_twisted.ensureDeferred
async def test_authzid_naming_the_own_account_is_accepted(server):
    def with_authzid(authzid):
        def script(smtp):
            auth = smtp.docmd("AUTH", "PLAIN " + plain(authzid, "alice@example.test", "alice-password"))
            mail = smtp.docmd("MAIL", "FROM:<a.smith@example.test>")
            return auth, mail

        return script

    for authzid in ("a.smith@example.test", "ALICE@example.test", "alice@example.test"):
        auth, mail = await session(server, with_authzid(authzid))
        assert (auth[0], auth[1][:5]) == (235, b"2.7.0"), authzid
        assert mail[0] == 250, authzid


@pytest_twisted.ensureDeferred
async def test_star_cancels_with_501_5_7_0(server):
    def script(smtp):
        first = smtp.docmd("AUTH", "PLAIN")
        cancelled_plain = smtp.docmd("*")
        smtp.docmd("AUTH", "LOGIN")
        smtp.docmd(b64(b"alice@example.test"))
        cancelled_login = smtp.docmd("*")
        initial_star = smtp.docmd("AUTH", "PLAIN *")
        after = smtp.docmd("NOOP")
        return first, cancelled_plain, cancelled_login, initial_star, after

    first, cancelled_plain, cancelled_login, initial_star, after = await session(server, script)
    assert first == (334, b"")
    assert (cancelled_plain[0], cancelled_plain[1][:5]) == (501, b"5.7.0")
    assert (cancelled_login[0], cancelled_login[1][:5]) == (501, b"5.7.0")
    assert (initial_star[0], initial_star[1][:5]) == (501, b"5.7.0")
    assert after[0] == 250


@pytest_twisted.ensureDeferred
async def test_strict_base64_in_continuation(server):
    def script(smtp):
        smtp.docmd("AUTH", "PLAIN")
        spaced = smtp.docmd(plain("", "alice@example.test", "alice-password")[:8] + " " +
                            plain("", "alice@example.test", "alice-password")[8:])
        smtp.docmd("AUTH", "PLAIN")
        unpadded = smtp.docmd(plain("", "alice@example.test", "alice-password").rstrip("="))
        return spaced, unpadded

    spaced, unpadded = await session(server, script)
    assert (spaced[0], spaced[1][:5]) == (501, b"5.5.2")
    # "\0alice@example.test\0alice-password" is 34 octets: its base64 ends in "=="
    assert (unpadded[0], unpadded[1][:5]) == (501, b"5.5.2")


@pytest_twisted.ensureDeferred
async def test_login_with_initial_response_and_wrong_password(server):
    def script(smtp):
        prompt = smtp.docmd("AUTH", "LOGIN " + b64(b"alice@example.test"))
        wrong = smtp.docmd(b64(b"not-the-password"))
        again = smtp.docmd("AUTH", "LOGIN " + b64(b"alice@example.test"))
        right = smtp.docmd(b64(b"alice-password"))
        return prompt, wrong, again, right

    prompt, wrong, again, right = await session(server, script)
    assert prompt == (334, b"UGFzc3dvcmQ6")  # "Password:"
    assert (wrong[0], wrong[1][:5]) == (535, b"5.7.8")
    assert again == (334, b"UGFzc3dvcmQ6")
    assert (right[0], right[1][:5]) == (235, b"2.7.0")


@pytest_twisted.ensureDeferred
async def test_failed_auth_is_delayed_then_the_session_ends_and_the_address_is_throttled(tmp_path):
    server = start(tmp_path, auth={"failure_delay": "300ms", "max_failures_per_ip": 3}, smtp={"max_errors": 2})
    try:
        await populate(server)

        def first_session():
            smtp = client(server, "submission")
            smtp.ehlo("laptop.test")
            started = time.monotonic()
            first = smtp.docmd("AUTH", "PLAIN " + plain("", "alice@example.test", "wrong-1"))
            elapsed = time.monotonic() - started
            second = smtp.docmd("AUTH", "PLAIN " + plain("", "alice@example.test", "wrong-2"))
            closing = smtp.getreply()
            try:
                smtp.docmd("NOOP")
                after = "open"
            except (smtplib.SMTPServerDisconnected, OSError):
                after = "closed"
            smtp.close()
            return first, elapsed, second, closing, after

        first, elapsed, second, closing, after = await in_thread(first_session)
        assert (first[0], first[1][:5]) == (535, b"5.7.8")
        assert elapsed >= 0.3  # auth.failure_delay, served without blocking the reactor
        assert (second[0], second[1][:5]) == (535, b"5.7.8")
        assert (closing[0], closing[1][:5]) == (421, b"4.7.0")  # smtp.max_errors failures end it
        assert after == "closed"

        def second_session():
            smtp = client(server, "submission")
            smtp.ehlo("laptop.test")
            third = smtp.docmd("AUTH", "PLAIN " + plain("", "alice@example.test", "wrong-3"))
            throttled = smtp.docmd("AUTH", "PLAIN " + plain("", "alice@example.test", "alice-password"))
            smtp.close()
            return third, throttled

        third, throttled = await in_thread(second_session)
        assert (third[0], third[1][:5]) == (535, b"5.7.8")
        # RFC 4954 §6: the address is over auth.max_failures_per_ip, even with the right password
        assert (throttled[0], throttled[1][:5]) == (454, b"4.7.0")
    finally:
        await server.stopService()
