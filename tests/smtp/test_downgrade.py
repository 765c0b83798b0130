"""Converting 8-bit messages to 7 bits (RFC 6152 §3): structure kept, content unchanged."""

from __future__ import annotations

import base64
import email
import email.policy
import quopri

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailserve.smtp.downgrade import (
    MAX_LINE,
    MAX_NESTING,
    ConversionImpossible,
    break_long_lines,
    convert_for_peer,
    downgrade_to_7bit,
    has_8bit,
    has_long_lines,
    needs_conversion,
)


def decoded_leaves(message: bytes) -> list[tuple[str, bytes]]:
    """Every leaf's type and decoded content, as a MIME reader sees them."""
    parsed = email.message_from_bytes(message, policy=email.policy.compat32)
    out = []
    for part in parsed.walk():
        if part.is_multipart() or part.get_content_type() == "message/rfc822":
            continue
        payload = part.get_payload(decode=True)
        out.append((part.get_content_type(), payload.replace(b"\r\n", b"\n")))
    return out


def test_seven_bit_message_is_returned_as_is():
    message = b"Subject: plain\r\n\r\nNothing to do.\r\n"
    assert downgrade_to_7bit(message) is message
    assert not has_8bit(message) and has_8bit(b"\xe9")


def test_non_mime_message_becomes_text_plain_quoted_printable():
    message = "Subject: Café\r\nFrom: a@b.test\r\n\r\nDéjà vu = again\r\n".encode()
    out = downgrade_to_7bit(message)
    assert out.isascii()
    assert b"MIME-Version: 1.0\r\n" in out
    assert b"Content-Type: text/plain; charset=utf-8\r\n" in out
    assert b"Content-Transfer-Encoding: quoted-printable\r\n" in out
    assert out.endswith(b"\r\n\r\nD=C3=A9j=C3=A0 vu =3D again\r\n")
    assert email.message_from_bytes(out, policy=email.policy.default)["subject"] == "Café"


def test_non_utf8_text_is_labelled_unknown_8bit():
    out = downgrade_to_7bit(b"Subject: x\r\n\r\nLatin-1: \xe9\r\n")
    assert b"charset=unknown-8bit" in out  # RFC 1428
    assert quopri.decodestring(out.split(b"\r\n\r\n", 1)[1]) == b"Latin-1: \xe9\r\n"


def test_quoted_printable_rules():
    long_line = ("é" * 100).encode()
    body = long_line + b"\r\ntrailing space \r\ntab\t\r\nbare\rCR and = sign\r\n"
    out = downgrade_to_7bit(b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n" + body)
    encoded = out.split(b"\r\n\r\n", 1)[1]
    assert all(len(line) <= 76 for line in encoded.split(b"\r\n"))  # RFC 2045 §6.7 (5)
    assert b"trailing space=20\r\n" in encoded and b"tab=09\r\n" in encoded  # rule (3)
    assert b"\r\nbare=0DCR and =3D sign\r\n" in encoded  # a bare CR never reaches SMTP (RFC 5321 §2.3.8)
    assert quopri.decodestring(encoded).replace(b"\n", b"\r\n").replace(b"\r\r", b"\r") == body


def test_structure_multipart_message_and_digest():
    message = (
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        b"preamble \xe9\r\n--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>\xc3\xa9</p>\r\n"
        b"--b1 \t\r\nContent-Type: multipart/digest; boundary=\"b2\"\r\n\r\n--b2\r\n\r\n"
        b"Subject: digest entry\r\n\r\n\xc3\xa0 bient\xc3\xb4t\r\n--b2--\r\n"
        b"--b1\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n"
        b"--b1--\r\nepilogue \xff\r\n"
    )
    out = downgrade_to_7bit(message)
    assert out.isascii()
    assert b"preamble" not in out and b"epilogue" not in out  # 8-bit preamble/epilogue dropped
    assert b"Content-Transfer-Encoding: 8bit" not in out
    assert b"--b1 \t\r\n" in out  # delimiter lines (with transport padding) are kept as they were
    assert decoded_leaves(out) == [
        ("text/html", "<p>é</p>".encode()),
        ("text/plain", "à bientôt".encode()),  # a digest part defaults to message/rfc822 (RFC 2046 §5.1.5)
        ("image/png", b"\x89PNG"),
    ]
    parsed = email.message_from_bytes(out)
    digest = parsed.get_payload()[1]
    assert digest.get_payload()[0].get_content_type() == "message/rfc822"


def test_boundary_prefix_lines_are_not_delimiters():
    message = (b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=abc\r\n\r\n"
               b"--abc\r\nContent-Type: text/plain\r\n\r\n--abcdef is text \xc3\xa9\r\n--abc--\r\n")
    out = downgrade_to_7bit(message)
    assert decoded_leaves(out) == [("text/plain", "--abcdef is text é".encode())]


@pytest.mark.parametrize("message, reason", [
    (b"MIME-Version: 1.0\r\nContent-Transfer-Encoding: binary\r\n\r\n\xff\r\n", "binary"),
    (b"MIME-Version: 1.0\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n\xff\r\n", "x-uuencode"),
    (b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed\r\n\r\n\xff\r\n", "boundary"),
    (b"MIME-Version: 1.0\r\nContent-Type: message/partial; id=1; number=1\r\n\r\n\xff\r\n", "message/partial"),
])
def test_what_cannot_be_converted(message, reason):
    with pytest.raises(ConversionImpossible, match=reason) as info:
        downgrade_to_7bit(message)
    assert info.value.status == "5.6.3"  # RFC 3463: conversion required but not supported


def test_raw_8bit_inside_encoded_parts_is_repaired():
    qp = downgrade_to_7bit(b"MIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
                           b"caf\xc3\xa9 =3D ok\r\n")
    assert qp.endswith(b"\r\n\r\ncaf=C3=A9 =3D ok\r\n")
    b64 = downgrade_to_7bit(b"MIME-Version: 1.0\r\nContent-Type: image/gif\r\n"
                            b"Content-Transfer-Encoding: base64\r\n\r\nR0lG\xffODlh\r\n")
    assert b64.endswith(b"\r\n\r\nR0lGODlh\r\n")
    with pytest.raises(ConversionImpossible, match="over 998 octets"):
        downgrade_to_7bit(b"MIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
                          + b"\xe9" * 400 + b"\r\n")


def test_nesting_is_bounded():
    message = b"\xc3\xa9\r\n"
    for depth in range(MAX_NESTING + 2):
        message = (b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=n%d\r\n\r\n--n%d\r\n" % (depth, depth)
                   + message + b"--n%d--\r\n" % depth)
    with pytest.raises(ConversionImpossible, match="nesting"):
        downgrade_to_7bit(message)


def test_8bit_in_structured_fields_is_left_alone():
    # Postfix leaves such fields as they are; only unstructured text becomes encoded-words.
    out = downgrade_to_7bit("From: Jörg <j@b.test>\r\nComments: schön\r\n\r\nx\r\n".encode())
    assert "From: Jörg <j@b.test>\r\n".encode() in out and b"Comments: =?utf-8?" in out


# -- lines over 998 octets (RFC 5321 §4.5.3.1.6), for peers with 8BITMIME too -------------------------------
def longest_line(message: bytes) -> int:
    return max(len(line) for line in message.split(b"\r\n"))


def test_long_lines_are_detected_exactly():
    assert not has_long_lines(b"x" * MAX_LINE + b"\r\n")
    assert has_long_lines(b"x" * (MAX_LINE + 1) + b"\r\n")
    short_8bit = "Subject: é\r\n\r\nà\r\n".encode()
    assert needs_conversion(short_8bit, allow_8bit=False) and not needs_conversion(short_8bit, allow_8bit=True)
    assert convert_for_peer(short_8bit, allow_8bit=True) is short_8bit


def test_long_text_line_is_quoted_printable_and_8bit_elsewhere_stays():
    long_text = ("word " * 400).encode()
    message = (b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=m\r\n"
               b"Content-Transfer-Encoding: 8bit\r\n\r\n"
               b"--m\r\nContent-Type: text/plain\r\n\r\n" + long_text + b"\r\n"
               b"--m\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
               + "short and 8-bit: é\r\n".encode() + b"--m--\r\n")
    out = convert_for_peer(message, allow_8bit=True)
    assert longest_line(out) <= MAX_LINE
    assert "short and 8-bit: é\r\n".encode() in out  # an 8BITMIME peer gets that part as it was
    assert b"Content-Transfer-Encoding: 8bit\r\n\r\n--m" in out  # still 8bit overall
    assert decoded_leaves(out) == decoded_leaves(message)


def test_long_lines_in_plain_messages_headers_and_base64():
    plain = b"Subject: " + b"s" * 1200 + b"\r\nX-Token: " + b"t" * 1500 + b"\r\n\r\n" + b"b" * 3000 + b"\r\n"
    out = convert_for_peer(plain, allow_8bit=True)
    assert longest_line(out) <= MAX_LINE
    assert b"Content-Type: text/plain; charset=us-ascii" in out
    parsed = email.message_from_bytes(out, policy=email.policy.compat32)
    assert parsed.get_payload(decode=True) == b"b" * 3000 + b"\r\n"
    folded = convert_for_peer(b"Subject: " + b"word " * 300 + b"\r\n\r\nbody\r\n", allow_8bit=True)
    assert longest_line(folded) <= MAX_LINE
    assert email.message_from_bytes(folded)["subject"].replace("\r\n", "").strip() == ("word " * 300).strip()
    unwrapped = (b"MIME-Version: 1.0\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                 + base64.b64encode(bytes(range(256)) * 8) + b"\r\n")
    rewrapped = convert_for_peer(unwrapped, allow_8bit=True)
    assert longest_line(rewrapped) == 76
    assert decoded_leaves(rewrapped) == decoded_leaves(unwrapped)


def test_break_long_lines_is_the_last_resort():
    message = b"Subject: x\r\n\r\n" + b"a" * 2500 + b"\r\nshort\r\n"
    broken = break_long_lines(message)
    assert longest_line(broken) == MAX_LINE
    assert broken.replace(b"\r\n ", b"") == message
    assert break_long_lines(b"fine\r\n") == b"fine\r\n"


# -- property: any tree of parts keeps its content ------------------------------------------------------
_texts = st.one_of(st.binary(max_size=300), st.binary(min_size=990, max_size=2500)).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"\r\n"))


@st.composite
def mime_trees(draw, depth=0):
    kind = draw(st.sampled_from(["text", "octet", "multipart", "rfc822"] if depth < 3 else ["text", "octet"]))
    if kind == "text":
        body = draw(_texts).replace(b"--", b"-")
        return b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + body
    if kind == "octet":
        return b"Content-Type: application/octet-stream\r\n\r\n" + draw(_texts).replace(b"--", b"-")
    if kind == "rfc822":
        inner = draw(mime_trees(depth + 1))
        return b"Content-Type: message/rfc822\r\n\r\nMIME-Version: 1.0\r\n" + inner
    boundary = b"bound%d" % depth
    parts = draw(st.lists(mime_trees(depth + 1), min_size=1, max_size=3))
    body = b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts) + b"--" + boundary + b"--\r\n"
    return b"Content-Type: multipart/mixed; boundary=" + boundary + b"\r\n\r\n" + body


@settings(max_examples=150, deadline=None)
@given(mime_trees(), st.booleans())
def test_property_conversion_fits_the_peer_and_keeps_every_leaf(tree, allow_8bit):
    message = b"MIME-Version: 1.0\r\n" + tree
    out = convert_for_peer(message, allow_8bit)
    assert allow_8bit or out.isascii()
    assert not has_long_lines(out)
    before = decoded_leaves(message)
    after = decoded_leaves(out)
    assert [t for t, _ in after] == [t for t, _ in before]
    for (_, old), (_, new) in zip(before, after):
        # The CRLF before a delimiter belongs to the delimiter, so compare without the last line end.
        assert new.rstrip(b"\n") == old.rstrip(b"\n") or new == old
