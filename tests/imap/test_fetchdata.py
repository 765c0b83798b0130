"""FETCH data items: ENVELOPE, BODYSTRUCTURE and sections, from the ingest-time parse."""

from __future__ import annotations

import base64

import pytest
from twisted.internet.defer import ensureDeferred, succeed
from twisted.python.failure import Failure

from mailserve.core.mime import parse_message
from mailserve.imap import fetchdata
from mailserve.imap.fetchdata import (
    SectionError,
    UnknownCTE,
    binary_size,
    body_section,
    bodystructure,
    envelope,
    filter_header,
    imap_string,
    parse_section,
    read_section,
)

# The message behind the ENVELOPE and BODY examples of RFC 3501 §7.4.2, with bodies
# shaped to give the example's sizes and line counts.
RFC_MESSAGE = (
    b"Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\n"
    b"From: Terry Gray <gray@cac.washington.edu>\r\n"
    b"Subject: IMAP4rev1 WG mtg summary and minutes\r\n"
    b"To: imap@cac.washington.edu\r\n"
    b"cc: minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>\r\n"
    b"Message-Id: <B27397-0100000@cac.washington.edu>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: MULTIPART/MIXED; BOUNDARY="b1"\r\n'
    b"\r\n"
    b"--b1\r\nContent-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\r\n"
    + (b"x" * 48 + b"\r\n") * 22 + b"y" * 52
    + b"\r\n--b1\r\nContent-Type: TEXT/PLAIN; CHARSET=US-ASCII; NAME=cc.diff\r\n"
    b"Content-ID: <960723163407.20117h@cac.washington.edu>\r\n"
    b"Content-Description: Compiler diff\r\n"
    b"Content-Transfer-Encoding: BASE64\r\n\r\n"
    + (b"Q" * 61 + b"\r\n") * 72 + b"Q" * 18
    + b"\r\n--b1--\r\n"
)

RFC_ENVELOPE = (
    b'("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev1 WG mtg summary and minutes" '
    b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
    b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
    b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
    b'((NIL NIL "imap" "cac.washington.edu")) '
    b'((NIL NIL "minutes" "CNRI.Reston.VA.US")("John Klensin" NIL "KLENSIN" "MIT.EDU")) '
    b'NIL NIL "<B27397-0100000@cac.washington.edu>")'
)

RFC_BODY = (
    b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23)'
    b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff") '
    b'"<960723163407.20117h@cac.washington.edu>" "Compiler diff" "BASE64" 4554 73) "MIXED")'
)

NESTED = (
    b"From: outer@example.com\r\n"
    b"Subject: outer\r\n"
    b"Content-Type: multipart/mixed; boundary=OUT\r\n"
    b"\r\n"
    b"preamble\r\n"
    b"--OUT\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"caf=C3=A9 =\r\nsoft\r\n"
    b"--OUT\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"Content-Disposition: attachment; filename=inner.eml\r\n"
    b"\r\n"
    b"From: Inner Person <inner@example.org>\r\n"
    b"Subject: inner subject\r\n"
    b"X-Extra: one\r\n"
    b"  folded\r\n"
    b"\r\n"
    b"inner body line\r\n"
    b"--OUT\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"Content-Language: en, de\r\n"
    b"\r\n"
    + base64.encodebytes(b"\x00\x01binary\xff") +
    b"--OUT--\r\n"
)


def test_rfc3501_envelope_example():
    assert envelope(parse_message(RFC_MESSAGE)) == RFC_ENVELOPE


def test_rfc3501_body_example():
    assert bodystructure(parse_message(RFC_MESSAGE), extensible=False) == RFC_BODY


def test_bodystructure_extension_data():
    out = bodystructure(parse_message(RFC_MESSAGE), extensible=True)
    assert out.startswith(b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23 NIL NIL NIL NIL)')
    assert out.endswith(b' "MIXED" ("BOUNDARY" "b1") NIL NIL NIL)')


def test_bodystructure_encapsulated_message_and_language():
    out = bodystructure(parse_message(NESTED), extensible=True)
    # message/rfc822: body-fields, then the inner envelope, the inner body and lines
    assert b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" ' in out
    assert b'"inner subject" (("Inner Person" NIL "inner" "example.org"))' in out
    assert b'("ATTACHMENT" ("FILENAME" "inner.eml"))' in out
    assert b'("en" "de")' in out
    assert out.endswith(b'"MIXED" ("BOUNDARY" "OUT") NIL NIL NIL)')
    # BODY has no extension data anywhere
    body = bodystructure(parse_message(NESTED), extensible=False)
    assert b"ATTACHMENT" not in body and b"BOUNDARY" not in body


def test_envelope_groups_and_missing_fields():
    raw = b"To: Friends: a@x.org, b@y.org;\r\nSubject: hi\r\n\r\nbody\r\n"
    out = envelope(parse_message(raw))
    assert out == (
        b'(NIL "hi" NIL NIL NIL '
        b'((NIL NIL "Friends" NIL)(NIL NIL "a" "x.org")(NIL NIL "b" "y.org")(NIL NIL NIL NIL)) '
        b"NIL NIL NIL NIL)"
    )


def test_eight_bit_headers_with_and_without_utf8_accept():
    raw = "From: Jürgen <j@example.de>\r\nSubject: Grüße\r\n\r\nx\r\n".encode()
    parsed = parse_message(raw)
    utf8 = envelope(parsed, utf8=True)
    assert '"Grüße"'.encode() in utf8 and '"Jürgen"'.encode() in utf8
    plain = envelope(parsed, utf8=False)
    assert plain.isascii()
    assert b'"=?utf-8?b?' + base64.b64encode("Grüße".encode()) + b'?="' in plain


def test_strings_quoted_or_literal():
    assert imap_string('say "hi" \\ bye') == b'"say \\"hi\\" \\\\ bye"'
    assert imap_string("two\r\nlines") == b"{10}\r\ntwo\r\nlines"
    assert imap_string("x" * 2000).startswith(b"{2000}\r\n")
    assert imap_string("naïve".encode()) == b"{6}\r\nna\xc3\xafve"
    assert fetchdata.nstring(None) == b"NIL"


def test_parse_section_forms():
    spec = parse_section("1.2.HEADER.FIELDS (From \"To\")", "<10.20>")
    assert spec.part == (1, 2) and spec.text == "HEADER.FIELDS"
    assert spec.fields == ("From", "To") and spec.partial == (10, 20)
    assert spec.label() == b"BODY[1.2.HEADER.FIELDS (From To)]<10>"
    assert parse_section("").label() == b"BODY[]"
    assert parse_section("3.mime").text == "MIME"
    assert parse_section("2", binary=True).label() == b"BINARY[2]"


@pytest.mark.parametrize("text, partial", [
    ("MIME", None),                 # MIME needs a part number
    ("HEADER.FIELDS", None),        # missing list
    ("HEADER.FIELDS ()", None),
    ("TEXT (From)", None),
    ("0", None),
    ("1.BOGUS", None),
    ("1", "<5>"),
    ("1", "<5.0>"),
    ("1", "<x.1>"),
    ("99999999999", None),
    ("HEADER.FIELDS (Fr:om)", None),
])
def test_parse_section_rejects(text, partial):
    with pytest.raises(SectionError):
        parse_section(text, partial)


def test_parse_section_binary_takes_only_numbers():
    with pytest.raises(SectionError):
        parse_section("1.HEADER", binary=True)


def test_filter_header_keeps_order_folding_and_blank_line():
    block = b"A: 1\r\nB: 2\r\n  more\r\nC: 3\r\nb: 4\r\n\r\n"
    assert filter_header(block, ["b"]) == b"B: 2\r\n  more\r\nb: 4\r\n\r\n"
    assert filter_header(block, ["B"], exclude=True) == b"A: 1\r\nC: 3\r\n\r\n"
    assert filter_header(block, ["zzz"]) == b"\r\n"


def _result(coroutine_deferred):
    """The result of a Deferred that has already fired (blob reads here are synchronous)."""
    results: list = []
    coroutine_deferred.addBoth(results.append)
    assert results, "the Deferred did not fire"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


@pytest.fixture
def stored(blobs):
    """Put a message in the real blob store; return (parsed, read_blob)."""

    def put(raw: bytes):
        blob_id = blobs.put(raw)
        return parse_message(raw), lambda offset, length: succeed(blobs.read(blob_id, offset, length))

    return put


def _section(put, raw, text, partial=None, binary=False):
    parsed, read_blob = put(raw)
    spec = parse_section(text, partial, binary)
    return _result(ensureDeferred(read_section(body_section(parsed, spec), read_blob)))


def test_sections_of_a_nested_message(stored):
    raw = NESTED
    header_end = raw.index(b"\r\n\r\n") + 4
    assert _section(stored, raw, "") == raw
    assert _section(stored, raw, "HEADER") == raw[:header_end]
    assert _section(stored, raw, "TEXT") == raw[header_end:]
    assert _section(stored, raw, "HEADER.FIELDS (subject)") == b"Subject: outer\r\n\r\n"
    assert _section(stored, raw, "HEADER.FIELDS.NOT (subject content-type)") == \
        b"From: outer@example.com\r\n\r\n"
    assert _section(stored, raw, "1") == b"caf=C3=A9 =\r\nsoft"
    assert _section(stored, raw, "1.MIME") == \
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    inner = raw[raw.index(b"From: Inner"):raw.index(b"inner body line") + len(b"inner body line")]
    assert _section(stored, raw, "2") == inner
    assert _section(stored, raw, "2.HEADER.FIELDS (X-EXTRA)") == b"X-Extra: one\r\n  folded\r\n\r\n"
    assert _section(stored, raw, "2.TEXT") == b"inner body line"
    assert _section(stored, raw, "2.1") == b"inner body line"
    assert _section(stored, raw, "1.TEXT") == b""  # not a message/rfc822 part
    assert _section(stored, raw, "9") == b""       # no such part
    assert _section(stored, raw, "1", "<4.5>") == b"C3=A9"
    assert _section(stored, raw, "1", "<1000.5>") == b""


def test_binary_sections_decode(stored):
    assert _section(stored, NESTED, "1", binary=True) == "café soft".encode()
    assert _section(stored, NESTED, "3", binary=True) == b"\x00\x01binary\xff"
    assert _section(stored, NESTED, "3", "<2.6>", binary=True) == b"binary"
    assert fetchdata.literal(b"\x00x", binary=True) == b"~{2}\r\n\x00x"


def test_binary_size_and_unknown_encoding(stored):
    parsed, read_blob = stored(NESTED)
    size = _result(ensureDeferred(binary_size(parsed, parse_section("3", binary=True), read_blob)))
    assert size == len(b"\x00\x01binary\xff")
    raw = b"Content-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin\r\n"
    parsed, read_blob = stored(raw)
    with pytest.raises(UnknownCTE):
        _result(ensureDeferred(binary_size(parsed, parse_section("1", binary=True), read_blob)))


def test_streamable_ranges_do_not_read_more_than_the_window():
    parsed = parse_message(RFC_MESSAGE)
    section = body_section(parsed, parse_section("2", "<100.50>"))
    assert section.streamable
    part = parsed.part_at((2,))
    assert section.window() == (part.body_start + 100, 50)


def test_header_fields_come_from_the_cache_without_a_read():
    parsed = parse_message(RFC_MESSAGE)
    section = body_section(parsed, parse_section("HEADER.FIELDS (To)"))
    assert section.data == b"To: imap@cac.washington.edu\r\n\r\n"


def test_parse_section_item():
    name, peek, spec = fetchdata.parse_section_item("BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.2048>")
    assert (name, peek, spec.fields, spec.partial) == ("BODY", True, ("FROM", "TO"), (0, 2048))
    name, peek, spec = fetchdata.parse_section_item("binary.size[1.2]")
    assert (name, peek, spec.part, spec.binary) == ("BINARY.SIZE", False, (1, 2), True)
    with pytest.raises(SectionError):
        fetchdata.parse_section_item("BODY[1]<0>")
    with pytest.raises(SectionError):
        fetchdata.parse_section_item("BINARY.SIZE[1]<0.5>")
