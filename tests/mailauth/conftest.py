"""Shared fixtures for the mail authentication tests: DNS, keys and sample messages."""

from __future__ import annotations

import pytest

from mailserve.mailauth.dkim import generate_dkim_key
from tests import dnsfixture

dns_server = dnsfixture.dns_server


@pytest.fixture(scope="session")
def rsa_key():
    """An RSA-2048 DKIM key pair, generated once (key generation is slow)."""
    return generate_dkim_key("rsa-sha256")


@pytest.fixture(scope="session")
def ed25519_key():
    return generate_dkim_key("ed25519-sha256")


SAMPLE_MESSAGE = (
    b"From: Alice Example <alice@example.org>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Subject: Quarterly report\r\n"
    b"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\n"
    b"Message-ID: <report-1@example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Received: from client.example.org by mail.example.org\r\n"
    b"\r\n"
    b"Hello Bob,\r\n"
    b"\r\n"
    b"the numbers are attached.  Regards,\r\n"
    b"Alice\r\n"
)


@pytest.fixture
def message():
    return SAMPLE_MESSAGE
