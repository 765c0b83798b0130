"""``/metrics`` after real traffic: a message sent over SMTP moves the message counters and the
store gauges, every connection is counted under its protocol, failed logins (HTTP and IMAP) move
the auth-failure counter of their protocol, and the per-server registry holds only this server's
metrics."""

from __future__ import annotations

import imaplib
import re
import smtplib
import time

import pytest

from mailserve.web.metrics import ServerMetrics
from tests.web.conftest import start_server_process, stop_server_process


@pytest.fixture
def smtp_server(tmp_path):
    server = start_server_process(str(tmp_path), ("http", "smtp", "imap"))
    yield server
    stop_server_process(server)


def sample(text: str, name: str) -> float:
    match = re.search("^" + re.escape(name) + r" ([0-9.e+-]+)$", text, re.MULTILINE)
    assert match, f"{name} missing from /metrics"
    return float(match.group(1))


def test_counters_move_after_smtp_delivery_and_failed_logins(smtp_server):
    s = smtp_server
    assert s.admin("POST", "/api/domains", {"name": "metrics.example.test"}).status == 201
    assert s.admin("POST", "/api/accounts", {"name": "mia@metrics.example.test", "password": "mia-password",
                                             "addresses": ["mia@metrics.example.test"]}).status == 201
    before = s.request("GET", "/metrics").body.decode()
    mail_before = sample(before, 'mailserve_store_size_bytes{store="mail"}')
    counters = ('mailserve_auth_failures_total{protocol="http"}', 'mailserve_auth_failures_total{protocol="imap"}',
                'mailserve_auth_failures_total{protocol="smtp"}',
                'mailserve_connections_total{protocol="smtp"}', 'mailserve_connections_total{protocol="imap"}',
                'mailserve_messages_received_total{protocol="smtp"}', "mailserve_messages_delivered_total")
    start = {name: sample(before, name) for name in counters}

    with smtplib.SMTP("127.0.0.1", s.ports["smtp"], timeout=30) as client:
        client.sendmail("sender@remote.example", ["mia@metrics.example.test"],
                        b"From: sender@remote.example\r\nTo: mia@metrics.example.test\r\n"
                        b"Subject: counted\r\n\r\nhello metrics\r\n")
    assert s.request("GET", "/api/me", auth=("admin", "wrong-password")).status == 401
    with imaplib.IMAP4("127.0.0.1", s.ports["imap"], timeout=30) as imap:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            imap.login("mia@metrics.example.test", "not-her-password")
        imap.login("mia@metrics.example.test", "mia-password")  # a success is not counted

    deadline = time.monotonic() + 10
    while True:
        after = s.request("GET", "/metrics").body.decode()
        settled = (sample(after, 'mailserve_store_size_bytes{store="mail"}') > mail_before
                   and sample(after, 'mailserve_connections_active{protocol="smtp"}') == 0
                   and sample(after, 'mailserve_connections_active{protocol="imap"}') == 0)
        if settled or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    moved = {name: sample(after, name) - start[name] for name in counters}
    assert moved == {
        'mailserve_auth_failures_total{protocol="http"}': 1,
        'mailserve_auth_failures_total{protocol="imap"}': 1,
        'mailserve_auth_failures_total{protocol="smtp"}': 0,
        'mailserve_connections_total{protocol="smtp"}': 1,
        'mailserve_connections_total{protocol="imap"}': 1,
        'mailserve_messages_received_total{protocol="smtp"}': 1,
        "mailserve_messages_delivered_total": 1,
    }
    # Both connections are closed again; the HTTP scrape itself is the one open connection.
    assert sample(after, 'mailserve_connections_active{protocol="smtp"}') == 0
    assert sample(after, 'mailserve_connections_active{protocol="imap"}') == 0
    assert sample(after, 'mailserve_connections_active{protocol="http"}') == 1
    assert sample(after, 'mailserve_store_size_bytes{store="mail"}') > mail_before
    assert sample(after, "mailserve_accounts") == 2  # admin and mia
    assert sample(after, "mailserve_domains") == 1
    assert s.admin("GET", "/api/accounts/mia@metrics.example.test/quota").json["messages_used"] == 1


def test_each_server_has_its_own_registry():
    first, second = ServerMetrics(), ServerMetrics()
    first.messages_received.labels(protocol="smtp").inc()
    assert b'mailserve_messages_received_total{protocol="smtp"} 1.0' in first.exposition()
    assert b'mailserve_messages_received_total{protocol="smtp"} 0.0' in second.exposition()
