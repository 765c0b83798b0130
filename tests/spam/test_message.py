"""Message analysis and tokenization: decoding, HTML, URLs, homoglyphs and limits."""

from __future__ import annotations

import base64
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from mailserve.spam.message import (
    GTUBE,
    analyze_message,
    domain_scripts,
    homoglyph_skeleton,
    split_raw_header,
)
from mailserve.spam.tokenizer import token_hash, tokenize
from tests.spam.conftest import HAM

HTML_MESSAGE = (
    b"From: =?utf-8?q?Caf=C3=A9_News?= <news@cafe.example>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: =?utf-8?b?" + base64.b64encode("Grüße aus Köln".encode()) + b"?=\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/alternative; boundary=XX\r\n"
    b"\r\n"
    b"--XX\r\n"
    b"Content-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Sch=F6ne Gr=FC=DFe, see www.cafe.example/menu.\r\n"
    b"--XX\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    + base64.encodebytes(
        b'<html><head><style>p {color: red}</style><script>var x = "secret";</script></head><body>'
        b'<p>Visible &amp; fine</p><a href="https://xn--pypal-4ve.com/login">https://www.paypal.com/</a>'
        b'<span style="display: none">hidden words here for the filter</span>'
        b'<img src="cid:1"><form action="https://evil.example/"><input name=pw></form>'
        b'<a href="http://user@198.51.100.7/x">click</a></body></html>'
    )
    + b"--XX--\r\n"
)


def test_headers_are_unfolded_and_decoded():
    analyzed = analyze_message(HTML_MESSAGE)
    assert analyzed.header("subject") == "Grüße aus Köln"
    assert analyzed.header("FROM") == "Café News <news@cafe.example>"
    fields, offset = split_raw_header(b"Subject: a\r\n  folded\r\nX: y\r\n\r\nbody")
    assert fields == [("subject", b"a folded"), ("x", b"y")]
    assert offset == len(b"Subject: a\r\n  folded\r\nX: y\r\n\r\n")


def test_transfer_encodings_and_charsets_are_undone():
    analyzed = analyze_message(HTML_MESSAGE)
    assert "Schöne Grüße" in analyzed.text
    assert "Visible & fine" in analyzed.html_text
    assert analyzed.text_parts == 1 and analyzed.html_parts == 1


def test_html_script_style_and_hidden_text_are_not_visible():
    analyzed = analyze_message(HTML_MESSAGE)
    assert "secret" not in analyzed.html_text
    assert "color" not in analyzed.html_text
    assert "hidden words" not in analyzed.html_text
    assert analyzed.hidden_text >= len("hidden words here for the filter")
    assert analyzed.images == 1 and analyzed.forms == 1


def test_urls_from_anchors_and_text():
    analyzed = analyze_message(HTML_MESSAGE)
    by_host = {url.host: url for url in analyzed.urls}
    idn = by_host["pаypal.com"]  # the href is punycode for a Cyrillic "а"
    assert idn.anchor_text == "https://www.paypal.com/"
    assert by_host["198.51.100.7"].is_ip_literal and by_host["198.51.100.7"].has_userinfo
    assert by_host["www.cafe.example"].scheme == "http"
    assert by_host["www.cafe.example"].url == "http://www.cafe.example/menu"
    assert "www.paypal.com" in by_host  # the anchor's text, a URL itself, is seen too


def test_homoglyph_helpers():
    assert homoglyph_skeleton("pаypal") == "paypal"
    assert domain_scripts("pаypal") == {"LATIN", "CYRILLIC"}
    assert domain_scripts("пример") == {"CYRILLIC"}
    assert not homoglyph_skeleton("пример").isascii()


def test_gtube_and_digest_stable_under_prepended_headers():
    message = HAM.replace(b"the numbers", GTUBE + b" the numbers")
    analyzed = analyze_message(message)
    assert analyzed.has_gtube
    again = analyze_message(b"X-Spam-Status: No, score=0\r\nReceived: from x by y; Mon, 30 Nov 2026 10:00:00 +0000\r\n" + message)
    assert again.digest == analyzed.digest
    assert analyze_message(HAM).digest != analyzed.digest


def test_tokens_cover_headers_body_urls_and_ignore_our_headers():
    analyzed = analyze_message(b"X-Spam-Status: Yes, score=9\r\n" + HTML_MESSAGE)
    tokens = tokenize(analyzed)
    assert "subject:grüße" in tokens
    assert "from:addr:cafe.example" in tokens
    assert "url:cafe.example" in tokens
    assert "html:form" in tokens
    assert "schöne" in tokens
    assert not any("score" in t or "x-spam" in t for t in tokens)
    assert len(tokens) == len(set(tokens))
    assert len(token_hash("x")) == 8 and token_hash("x") != token_hash("y")


def test_long_words_collapse_to_skip_tokens():
    analyzed = analyze_message(HAM.replace(b"Alice\r\n", b"Alice " + b"q" * 57 + b"\r\n"))
    assert "skip:q 50" in tokenize(analyzed)


def test_hostile_message_is_bounded():
    parts = b"".join(b"--B\r\nContent-Type: text/html\r\n\r\n" + b"<a href='http://x%d.example/'>x</a>" % i * 50 + b"\r\n"
                     for i in range(500))
    message = b"Subject: many\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n" + parts + b"--B--\r\n"
    message += b"A" * (20 << 20)
    started = time.monotonic()
    analyzed = analyze_message(message, max_scan_bytes=256 << 10, max_parts=64, max_urls=100)
    assert time.monotonic() - started < 5
    assert analyzed.truncated
    assert len(analyzed.urls) <= 100
    assert len(analyzed.content_types) <= 64
    assert len(tokenize(analyzed, max_tokens=500)) <= 500


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(data):
    analyzed = analyze_message(data, max_scan_bytes=4096)
    tokenize(analyzed)


def test_unbalanced_html_stays_linear():
    html = "<div>" * 2000 + "</span>" * 40_000 + "text"
    message = b"Content-Type: text/html\r\n\r\n" + html.encode()
    started = time.monotonic()
    analyzed = analyze_message(message, max_scan_bytes=1 << 20)
    assert time.monotonic() - started < 2
    assert "text" in analyzed.html_text
