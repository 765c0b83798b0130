"""``/metrics`` after real traffic: a message sent over SMTP moves the store gauges, failed logins
move the auth-failure counter, and the per-server registry holds only this server's metrics."""

from __future__ import annotations

import re
import smtplib
import time

import pytest

from mailserve.web.metrics import ServerMetrics
from tests.web.conftest import start_server_process, stop_server_process


@pytest.fixture
def smtp_server(tmp_path):
    server = start_server_process(str(tmp_path), ("http", "smtp"))
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
    failures_before = sample(before, 'mailserve_auth_failures_total{protocol="http"}')

    with smtplib.SMTP("127.0.0.1", s.ports["smtp"], timeout=30) as client:
        client.sendmail("sender@remote.example", ["mia@metrics.example.test"],
                        b"From: sender@remote.example\r\nTo: mia@metrics.example.test\r\n"
                        b"Subject: counted\r\n\r\nhello metrics\r\n")
    assert s.request("GET", "/api/me", auth=("admin", "wrong-password")).status == 401

    deadline = time.monotonic() + 10
    while True:
        after = s.request("GET", "/metrics").body.decode()
        if sample(after, 'mailserve_store_size_bytes{store="mail"}') > mail_before or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert sample(after, 'mailserve_store_size_bytes{store="mail"}') > mail_before
    assert sample(after, 'mailserve_auth_failures_total{protocol="http"}') == failures_before + 1
    assert sample(after, "mailserve_accounts") == 2  # admin and mia
    assert sample(after, "mailserve_domains") == 1
    assert s.admin("GET", "/api/accounts/mia@metrics.example.test/quota").json["messages_used"] == 1


def test_each_server_has_its_own_registry():
    first, second = ServerMetrics(), ServerMetrics()
    first.messages_received.labels(protocol="smtp").inc()
    assert b'mailserve_messages_received_total{protocol="smtp"} 1.0' in first.exposition()
    assert b'mailserve_messages_received_total{protocol="smtp"} 0.0' in second.exposition()
