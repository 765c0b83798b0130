"""Shared fixtures for the spam filter tests: DNS fixture server and sample messages."""

from __future__ import annotations

from tests import dnsfixture

dns_server = dnsfixture.dns_server

HAM = (
    b"From: Alice Example <alice@example.org>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Subject: Quarterly report\r\n"
    b"Date: Mon, 30 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <report-1@example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hello Bob,\r\n\r\nthe numbers for the third quarter are attached.\r\n\r\nAlice\r\n"
)

#: 2026-11-30 12:00:00 UTC, the "now" of the tests (two hours after HAM's Date).
NOW = 1796040000.0
