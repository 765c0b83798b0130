"""The web admin in a real browser: Debian's headless Chromium driven by Playwright.

The Stalwart first-run flow: log in with the administrator password printed at first start, add a
domain and see its DNS records, add an account and an alias, look at the queue (with a message the
new account submitted: retry it, delete it) and the recent log, change the admin password -- then
the new account logs in over IMAP, proving the page changed the real directory.  Screenshots of each step go to
``test-artifacts/web/`` (kept by CI as artefacts, ignored by git).
"""

from __future__ import annotations

import imaplib
import os
import smtplib
import socket

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.web.conftest import ROOT, start_server_process, stop_server_process

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
ARTIFACTS = os.path.join(ROOT, "test-artifacts", "web")


def closed_port() -> int:
    """A loopback port nothing listens on: the smarthost that refuses, so mail stays queued."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mail_server(tmp_path):
    # Outbound mail goes to a smarthost on loopback that refuses connections: it stays in the
    # queue (deferred), and no test traffic leaves the machine.
    smtp = {"relay_host": "127.0.0.1", "relay_port": closed_port(), "relay_tls": "none"}
    server = start_server_process(str(tmp_path), ("http", "imap", "submission"), sections={"smtp": smtp})
    yield server
    stop_server_process(server)


def submit(server, login: str, password: str, recipient: str) -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=30) as client:
        client.login(login, password)
        client.sendmail(login, [recipient], f"From: {login}\r\nTo: {recipient}\r\nSubject: queued\r\n\r\n"
                                            "This waits in the queue.\r\n".encode())


def test_first_run_flow_in_chromium_then_imap_login(mail_server):
    assert os.path.exists(CHROMIUM), "Debian package chromium is needed for the browser test"
    os.makedirs(ARTIFACTS, exist_ok=True)
    base = mail_server.base_url
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            page.goto(base + "/")  # redirects to the web admin
            expect(page.locator("#login-view")).to_be_visible()
            page.screenshot(path=os.path.join(ARTIFACTS, "01-login.png"))

            page.fill("#login-name", "admin")
            page.fill("#login-password", "not-the-password")
            page.click("#login-submit")
            expect(page.locator("#message")).to_contain_text("wrong login or password")

            page.fill("#login-name", "admin")
            page.fill("#login-password", mail_server.admin_password)
            page.click("#login-submit")
            expect(page.locator("#status-view")).to_be_visible()
            expect(page.locator("#status-list")).to_contain_text("mail.example.test")
            page.screenshot(path=os.path.join(ARTIFACTS, "02-status.png"))

            page.click("a[href=\"#domains\"]")
            page.fill("#domain-name", "browser.example.test")
            page.click("#domain-add")
            expect(page.locator("#domain-rows")).to_contain_text("browser.example.test")
            expect(page.locator("#dns-rows")).to_contain_text("_dmarc.browser.example.test.")
            page.click("#dkim-generate")
            expect(page.locator("#dns-rows")).to_contain_text("._domainkey.browser.example.test.")
            page.screenshot(path=os.path.join(ARTIFACTS, "03-domain-dns.png"), full_page=True)

            page.click("a[href=\"#accounts\"]")
            page.fill("#account-name", "erin@browser.example.test")
            page.fill("#account-password", "erin-password-1")
            page.fill("#account-quota", "100")
            page.click("#account-add")
            expect(page.locator("#account-rows")).to_contain_text("erin@browser.example.test")
            expect(page.locator("#account-rows")).to_contain_text("100.0 MiB")
            page.screenshot(path=os.path.join(ARTIFACTS, "04-accounts.png"))

            page.click("a[href=\"#aliases\"]")
            page.fill("#alias-address", "hello@browser.example.test")
            page.fill("#alias-targets", "erin@browser.example.test")
            page.click("#alias-add")
            expect(page.locator("#alias-rows")).to_contain_text("hello@browser.example.test")

            page.click("a[href=\"#queue\"]")
            expect(page.locator("#queue-note")).to_contain_text("The queue is empty.")
            # Erin sends to another domain; the smarthost refuses, so the message waits in the queue.
            submit(mail_server, "erin@browser.example.test", "erin-password-1", "friend@remote.example")
            page.click("a[href=\"#status\"]")
            page.click("a[href=\"#queue\"]")
            row = page.locator("#queue-rows tr")
            expect(row).to_have_count(1)
            expect(row).to_contain_text("erin@browser.example.test")
            expect(row).to_contain_text("friend@remote.example (pending)")
            page.screenshot(path=os.path.join(ARTIFACTS, "05-queue.png"), full_page=True)
            row.get_by_role("button", name="Retry").click()
            expect(page.locator("#message")).to_contain_text("will be retried now")
            page.once("dialog", lambda dialog: dialog.accept())
            page.locator("#queue-rows tr").get_by_role("button", name="Delete").click()
            expect(page.locator("#message")).to_contain_text("deleted message")
            expect(page.locator("#queue-note")).to_contain_text("The queue is empty.")

            page.click("a[href=\"#logs\"]")
            expect(page.locator("#log-rows")).to_contain_text("authentication failed")
            page.screenshot(path=os.path.join(ARTIFACTS, "06-log.png"))

            page.click("a[href=\"#password\"]")
            page.fill("#password-current", mail_server.admin_password)
            page.fill("#password-new", "new-admin-password")
            page.click("#password-submit")
            expect(page.locator("#message")).to_contain_text("password changed")
            page.screenshot(path=os.path.join(ARTIFACTS, "07-password.png"))

            cookies = {c["name"]: c for c in page.context.cookies()}
            session = cookies["mailserve_session"]
            assert session["httpOnly"] is True and session["sameSite"] == "Strict"
        finally:
            browser.close()

    assert mail_server.request("GET", "/api/me", auth=("admin", "new-admin-password")).status == 200
    assert mail_server.request("GET", "/api/me", auth=("admin", mail_server.admin_password)).status == 401

    imap = imaplib.IMAP4("127.0.0.1", mail_server.ports["imap"], timeout=30)
    try:
        typ, _ = imap.login("erin@browser.example.test", "erin-password-1")
        assert typ == "OK"
        typ, data = imap.select("INBOX")
        assert typ == "OK" and data == [b"0"]
        imap.logout()
    finally:
        try:
            imap.shutdown()
        except OSError:
            pass
