"""Header, body, greeting and authentication rules, one behaviour per test."""

from __future__ import annotations

import base64

from mailserve.mailauth.psl import PublicSuffixList
from mailserve.spam.message import analyze_message
from mailserve.spam.rules import auth_findings, static_findings
from mailserve.spam.settings import load_settings
from mailserve.spam.verdict import SpamContext
from tests.spam.conftest import HAM, NOW
from tests.spam.test_filter import passing_auth

SETTINGS = load_settings()
OURS = frozenset({"mx.example.net"})


def rules(message: bytes, **context) -> set[str]:
    values = {"client_ip": "192.0.2.10", "helo": "mail.example.org", "mail_from": "alice@example.org"}
    values.update(context)
    findings = static_findings(analyze_message(message), SpamContext(**values), NOW, OURS,
                               PublicSuffixList.bundled(), SETTINGS)
    return {rule for rule, _detail in findings}


def with_header(name: bytes, value: bytes | None, message: bytes = HAM) -> bytes:
    lines = [line for line in message.split(b"\r\n\r\n", 1)[0].split(b"\r\n") if not line.lower().startswith(name.lower() + b":")]
    if value is not None:
        lines.append(name + b": " + value)
    return b"\r\n".join(lines) + b"\r\n\r\n" + message.split(b"\r\n\r\n", 1)[1]


def test_a_proper_message_fires_nothing():
    assert rules(HAM) == set()


def test_date_rules():
    assert "MISSING_DATE" in rules(with_header(b"Date", None))
    assert "INVALID_DATE" in rules(with_header(b"Date", b"yesterday at noon"))
    assert "DATE_IN_FUTURE" in rules(with_header(b"Date", b"Thu, 03 Dec 2026 10:00:00 +0000"))
    assert "DATE_IN_PAST" in rules(with_header(b"Date", b"Mon, 02 Nov 2026 10:00:00 +0000"))
    assert not rules(with_header(b"Date", b"Mon, 30 Nov 2026 13:00:00 +0100")) & {"DATE_IN_FUTURE", "DATE_IN_PAST"}


def test_message_id_and_from_rules():
    assert "MISSING_MESSAGE_ID" in rules(with_header(b"Message-ID", None))
    assert "INVALID_MESSAGE_ID" in rules(with_header(b"Message-ID", b"no-angle-brackets@example.org"))
    assert "MISSING_FROM" in rules(with_header(b"From", None))
    assert "INVALID_FROM" in rules(with_header(b"From", b"Alice without address"))
    two_froms = HAM.replace(b"To: Bob", b"From: Mallory <m@example.com>\r\nTo: Bob")
    assert "MULTIPLE_FROM" in rules(two_froms)
    assert "MISSING_TO" in rules(with_header(b"To", None))
    assert "MISSING_SUBJECT" in rules(with_header(b"Subject", None))


def test_display_name_and_reply_to_tricks():
    assert "FROM_NAME_HAS_ADDRESS" in rules(with_header(b"From", b'"ceo@bank.example" <x@other.example>'))
    assert "FROM_NAME_HAS_ADDRESS" not in rules(with_header(b"From", b'"alice@example.org" <alice@example.org>'))
    assert "REPLYTO_FREEMAIL_DIFFERS" in rules(with_header(b"Reply-To", b"claims.dept@gmail.com"))
    assert "REPLYTO_FREEMAIL_DIFFERS" not in rules(with_header(b"Reply-To", b"alice@example.org"))


def test_homoglyph_from_domain():
    idn = "xn--" + "pаypal".encode("punycode").decode() + ".com"  # Cyrillic "а"
    assert "FROM_HOMOGLYPH_DOMAIN" in rules(with_header(b"From", f"PayPal <service@{idn}>".encode()))
    russian = "xn--" + "пример".encode("punycode").decode() + ".example"
    assert "FROM_HOMOGLYPH_DOMAIN" not in rules(with_header(b"From", f"Ivan <ivan@{russian}>".encode()))


def test_subject_shouting():
    found = rules(with_header(b"Subject", b"FREE MONEY WAITING FOR YOU!!!"))
    assert {"SUBJECT_ALL_CAPS", "SUBJECT_EXCLAMATIONS"} <= found
    assert not rules(with_header(b"Subject", b"Re: NASA budget")) & {"SUBJECT_ALL_CAPS"}


def test_received_forgery_and_malformed_trace():
    ours_on_top = b"Received: from a.example by mx.example.net; Mon, 30 Nov 2026 11:00:00 +0000\r\n" + HAM
    assert "FORGED_RECEIVED" not in rules(ours_on_top)
    forged = (b"Received: from b.example by relay.example.com; Mon, 30 Nov 2026 11:00:00 +0000\r\n"
              b"Received: from c.example by mx.example.net; Mon, 30 Nov 2026 10:59:00 +0000\r\n" + HAM)
    assert "FORGED_RECEIVED" in rules(forged)
    bad_ip = b"Received: from x ([300.1.2.3]) by relay.example.com; Mon, 30 Nov 2026 11:00:00 +0000\r\n" + HAM
    assert "FORGED_RECEIVED" in rules(bad_ip)
    assert "RECEIVED_MALFORMED" in rules(b"Received: from x by y without a date\r\n" + HAM)


def html_message(html: str, text: str | None = None) -> bytes:
    head = HAM.split(b"\r\n\r\n", 1)[0].replace(b"Content-Type: text/plain; charset=utf-8", b"").rstrip(b"\r\n")
    if text is None:
        return head + b"\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + html.encode()
    return (head + b'\r\nContent-Type: multipart/alternative; boundary="b"\r\n\r\n--b\r\n'
            b"Content-Type: text/plain\r\n\r\n" + text.encode() + b"\r\n--b\r\nContent-Type: text/html\r\n\r\n"
            + html.encode() + b"\r\n--b--\r\n")


def test_html_rules():
    assert "HTML_ONLY" in rules(html_message("<p>Hello Bob, the numbers are attached and look fine.</p>"))
    image_only = rules(html_message('<a href="https://shop.example/"><img src="https://shop.example/a.png"></a>'))
    assert {"HTML_ONLY", "HTML_IMAGE_ONLY"} <= image_only
    hidden = rules(html_message('<p>Hi</p><div style="font-size:0px">' + "bayes poison words " * 5 + "</div>"))
    assert "HTML_HIDDEN_TEXT" in hidden
    assert "HTML_FORM" in rules(html_message('<form action="https://x.example/"><input name=a></form>'))
    mismatch = html_message("<p>Limited offer on watches and pills, click the button now</p>",
                            text="Meeting notes from the quarterly planning session with the finance team")
    assert "HTML_TEXT_MISMATCH" in rules(mismatch)
    same = html_message("<p>Meeting notes from the quarterly planning session</p>",
                        text="Meeting notes from the quarterly planning session")
    assert not rules(same) & {"HTML_TEXT_MISMATCH", "HTML_ONLY"}


def test_url_rules():
    def url_rules(href: str, text: str = "here") -> set[str]:
        return rules(html_message(f'<p>Please see the document at <a href="{href}">{text}</a> today.</p>',
                                  text=f"Please see the document at {href} today."))

    assert "URL_IP_LITERAL" in url_rules("http://198.51.100.4/doc")
    assert "URL_USERINFO" in url_rules("https://www.bank.example@evil.example/")
    assert "URL_SHORTENER" in url_rules("https://bit.ly/3xYz")
    assert "URL_SUSPICIOUS_TLD" in url_rules("https://docs.prize.top/x")
    assert "URL_TEXT_MISMATCH" in url_rules("https://evil.example/login", "https://www.bank.example/login")
    assert "URL_TEXT_MISMATCH" not in url_rules("https://login.bank.example/", "www.bank.example")
    homoglyph = "https://xn--" + "gооgle".encode("punycode").decode() + ".com/"  # two Cyrillic "о"
    assert "URL_HOMOGLYPH_DOMAIN" in url_rules(homoglyph)
    assert url_rules("https://docs.example.org/report") == set()


def test_attachments_and_empty_bodies():
    exe = (HAM.split(b"\r\n\r\n", 1)[0].replace(b"Content-Type: text/plain; charset=utf-8", b'Content-Type: multipart/mixed; boundary="b"')
           + b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\n"
           b'Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="invoice.pdf.exe"\r\n'
           b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(b"MZ...") + b"\r\n--b--\r\n")
    assert "EXECUTABLE_ATTACHMENT" in rules(exe)
    assert "EMPTY_BODY" in rules(HAM.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n\r\n")


def test_greeting_rules():
    assert "HELO_BARE_IP" in rules(HAM, helo="192.0.2.10")
    assert "HELO_NOT_FQDN" in rules(HAM, helo="DESKTOP-42")
    assert "HELO_LOCALHOST" in rules(HAM, helo="localhost")
    assert "HELO_CLAIMS_OUR_NAME" in rules(HAM, helo="mx.example.net")
    assert not rules(HAM, helo="[192.0.2.10]") & {"HELO_BARE_IP", "HELO_NOT_FQDN"}
    assert "HELO_LOCALHOST" not in rules(HAM, helo="localhost", authenticated=True)


def test_envelope_rules():
    assert "NULL_SENDER_NOT_BOUNCE" in rules(HAM, mail_from="")
    report = HAM.replace(b"text/plain; charset=utf-8", b"multipart/report; report-type=delivery-status; boundary=x")
    assert "NULL_SENDER_NOT_BOUNCE" not in rules(report, mail_from="")
    many = tuple(f"user{i}@example.net" for i in range(60))
    assert "RCPT_COUNT_HIGH" in rules(HAM, recipients=many)


def test_authentication_rules():
    assert {rule for rule, _d in auth_findings(passing_auth())} == {"SPF_PASS", "DKIM_VALID", "DMARC_PASS"}
    assert list(auth_findings(None)) == []


def test_hostile_headers_and_anchors_stay_fast():
    import time

    long_name = b"a" * 100_000
    hostile = with_header(b"From", b'"' + long_name + b'" <x@example.org>')
    hostile = with_header(b"Subject", b"a." * 40_000, hostile)
    anchors = html_message('<a href="https://x.example/">' + "a." * 50_000 + "</a>" + "<b>" * 5000)
    started = time.monotonic()
    rules(hostile)
    rules(anchors)
    assert time.monotonic() - started < 3
