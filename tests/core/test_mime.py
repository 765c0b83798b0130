"""Tests for message parsing at ingest (mailserve.core.mime).

Offsets are checked by slicing the raw fixture bytes; section numbers against the example
of RFC 3501 §6.4.5; base subjects against RFC 5256 §2.1; structure against messages built
with the ``email`` package; robustness with arbitrary bytes.
"""

from __future__ import annotations

import email.policy
import time
from email.mime.application import MIMEApplication
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path
from typing import ClassVar

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailserve.core.mime import (
    MAX_DEPTH,
    MAX_HEADER_CACHE,
    MAX_PARTS,
    Address,
    Envelope,
    ParsedMessage,
    Part,
    UnknownTransferEncodingError,
    base_subject,
    decode_header_text,
    decode_part_body,
    extract_text,
    html_to_text,
    parse_address_list,
    parse_date,
    parse_message,
)

DATA = Path(__file__).parent.parent / "data" / "mime"


def load(name: str) -> tuple[bytes, ParsedMessage]:
    raw = (DATA / name).read_bytes()
    return raw, parse_message(raw)


def body(raw: bytes, part: Part) -> bytes:
    return raw[part.body_start:part.end]


def header(raw: bytes, part: Part) -> bytes:
    return raw[part.start:part.body_start]


def wire_round_trip(parsed: ParsedMessage) -> ParsedMessage:
    packed = msgpack.packb(parsed.to_wire(), use_bin_type=True)
    return ParsedMessage.from_wire(msgpack.unpackb(packed, raw=False))


def assert_well_formed(part: Part, low: int, high: int) -> int:
    """Offsets lie in [low, high], are ordered, and children nest in their parent's body.

    Returns the number of parts checked.
    """
    assert low <= part.start <= part.body_start <= part.end <= high
    assert part.body_size == part.end - part.body_start
    assert part.type and part.subtype
    assert part.type == part.type.lower() and part.subtype == part.subtype.lower()
    count = 1
    if part.type == "multipart":
        assert part.parts, "IMAP needs at least one part in a multipart"
    previous_end = part.body_start
    for child in part.parts:
        assert child.start >= previous_end
        count += assert_well_formed(child, part.body_start, part.end)
        previous_end = child.end
    if part.message is not None:
        assert not part.parts
        inner = part.message.body
        assert (inner.start, inner.end) == (part.body_start, part.end)
        count += assert_well_formed(inner, part.body_start, part.end)
    return count


def max_depth(part: Part) -> int:
    below = [max_depth(child) for child in part.parts]
    if part.message is not None:
        below.append(max_depth(part.message.body))
    return 1 + max(below, default=0)


# -------------------------------------------------------------------------------------
# Fixture shapes
# -------------------------------------------------------------------------------------


class TestSinglePart:
    def test_crlf_offsets_and_fields(self):
        raw, parsed = load("simple-crlf.eml")
        top = parsed.structure
        assert (top.type, top.subtype) == ("text", "plain")
        assert top.params == (("charset", "us-ascii"),), "RFC 2045 §5.2 default"
        assert top.encoding == "7BIT"
        assert top.start == 0
        assert header(raw, top).endswith(b"MIME-Version: 1.0\r\n\r\n")
        assert body(raw, top) == b"Sure, noon works.\r\nSee you there.\r\n"
        assert top.lines == 2
        assert top.body_size == len(b"Sure, noon works.\r\nSee you there.\r\n")
        assert parsed.size == len(raw)
        assert parsed.header == raw[:top.body_start]

    def test_crlf_envelope_and_threading_keys(self):
        _, parsed = load("simple-crlf.eml")
        env = parsed.envelope
        assert env.date == "Tue, 2 Jan 2024 10:30:00 +0100"
        assert env.subject == "Re: Re: Lunch tomorrow?", "folded header is unfolded"
        alice = Address("Alice Example", None, "alice", "example.org")
        assert env.from_ == (alice,)
        assert env.sender == (alice,) and env.reply_to == (alice,), "default to From"
        assert env.to == (
            Address("Bob", None, "bob", "example.net"),
            Address("Carol, C.", None, "carol", "example.net"),
        )
        assert env.cc == (
            Address(None, None, "undisclosed-recipients", None),
            Address(None, None, None, None),
        )
        assert env.bcc == ()
        assert env.in_reply_to == "<lunch.1@example.net>"
        assert env.message_id == "<lunch.2@example.org>"
        assert parsed.message_id == "lunch.2@example.org"
        assert parsed.in_reply_to == ("lunch.1@example.net",)
        assert parsed.references == ("lunch.0@example.org", "lunch.1@example.net")
        assert parsed.base_subject == "Lunch tomorrow?"
        assert parsed.sent_date == 1704187800  # 2024-01-02T09:30:00Z
        assert parsed.preview == "Sure, noon works. See you there."
        assert parsed.has_attachment is False

    def test_lf_endings_are_not_rewritten(self):
        raw, parsed = load("simple-lf.eml")
        top = parsed.structure
        assert b"\r" not in raw
        assert header(raw, top).endswith(b"8bit\n\n")
        assert body(raw, top) == "Grüße aus Köln!\n".encode()
        assert top.params == (("charset", "utf-8"),)
        assert top.encoding == "8BIT"
        assert top.lines == 1

    def test_lf_envelope_encoded_words_and_comment_name(self):
        _, parsed = load("simple-lf.eml")
        env = parsed.envelope
        # the envelope keeps the raw value; decoding is for display and sorting
        assert env.subject == "=?utf-8?q?Gr=C3=BC=C3=9Fe?= aus =?ISO-8859-1?B?S/Zsbg==?="
        assert env.from_ == (Address("Bob Builder", None, "bob", "example.net"),)
        assert parsed.base_subject == "Grüße aus Köln"
        assert parsed.message_id == "bare-id@example.net"
        assert parsed.sent_date == 1704268800
        assert parsed.preview == "Grüße aus Köln!"


class TestMultipart:
    def test_preamble_epilogue_and_part_offsets(self):
        raw, parsed = load("multipart-mixed.eml")
        top = parsed.structure
        assert (top.type, top.subtype) == ("multipart", "mixed")
        assert top.params == (("boundary", "==outer=="),)
        assert body(raw, top).startswith(b"This is a multi-part message in MIME format.")
        assert body(raw, top).endswith(b"Epilogue text that belongs to no part.\r\n")
        text, pdf = top.parts
        assert header(raw, text) == (
            b"Content-Type: text/plain; charset=us-ascii\r\nContent-Language: en, de\r\n\r\n"
        )
        # the blank line before the delimiter is body; the CRLF before "--" is not
        assert body(raw, text) == b"Please find the report attached.\r\n"
        assert text.lines == 1
        assert text.language == ("en", "de")
        assert raw[text.start - len(b"--==outer==\r\n"):text.start] == b"--==outer==\r\n"
        assert body(raw, pdf) == b"JVBERi0xLjQKJeLjz9MK"
        assert raw[pdf.end:pdf.end + 15] == b"\r\n--==outer==--"

    def test_attachment_fields(self):
        raw, parsed = load("multipart-mixed.eml")
        pdf = parsed.structure.parts[1]
        assert (pdf.type, pdf.subtype) == ("application", "pdf")
        assert pdf.params == (("name", "report.pdf"),)
        assert pdf.encoding == "BASE64"
        assert pdf.disposition == ("attachment", (("filename", "report.pdf"), ("size", "12")))
        assert pdf.id == "<pdf1@example.org>"
        assert pdf.description == "Quarterly report"
        assert pdf.md5 == "Q2hlY2sgSW50ZWdyaXR5IQ=="
        assert pdf.location == "http://example.org/report.pdf"
        assert pdf.filename == "report.pdf"
        assert decode_part_body(raw, pdf) == b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
        assert parsed.has_attachment is True
        assert parsed.preview == "Please find the report attached."
        assert parsed.sent_date == 1704301200

    def test_nested_multipart_reusing_its_parents_boundary(self):
        # the innermost open multipart claims a delimiter, as Dovecot does
        raw, parsed = load("same-boundary.eml")
        top = parsed.structure
        assert [(p.type, p.subtype) for p in top.parts] == [
            ("multipart", "alternative"), ("image", "gif"),
        ]
        plain, markup = top.parts[0].parts
        assert body(raw, plain) == b"Plain text."
        assert body(raw, markup) == b"<p>HTML text.</p>"
        # the inner multipart's epilogue runs up to the outer delimiter
        assert body(raw, top.parts[0]).endswith(b"--SAME--\r\n\r\ninner epilogue\r\n")
        assert body(raw, top.parts[1]) == b"R0lGODlhAQABAAAAACw="
        assert parsed.has_attachment is True

    def test_missing_final_boundary(self):
        raw, parsed = load("missing-final-boundary.eml")
        first, second = parsed.structure.parts
        assert body(raw, first) == b"first"
        assert body(raw, second) == b"second, and the close delimiter never comes\n"
        assert second.end == len(raw)

    def test_missing_blank_line(self):
        raw, parsed = load("missing-blank-line.eml")
        top = parsed.structure
        assert (top.type, top.subtype) == ("multipart", "alternative")
        plain, markup = top.parts
        assert header(raw, plain) == b"Content-Type: text/plain\n"
        assert body(raw, plain).startswith(b"This line starts the body")
        assert (markup.type, markup.subtype) == ("text", "html")
        assert body(raw, markup) == b"<p>Hello <b>there</b></p>"
        assert parsed.preview.startswith("This line starts the body")

    def test_nested_alternative_in_related_with_quoted_printable(self):
        raw, parsed = load("alternative-qp-html.eml")
        related = parsed.structure
        alternative, image = related.parts
        plain, markup = alternative.parts
        assert (alternative.type, alternative.subtype) == ("multipart", "alternative")
        assert (markup.subtype, markup.encoding) == ("html", "QUOTED-PRINTABLE")
        assert plain.encoding == "QUOTED-PRINTABLE"
        assert decode_part_body(raw, plain) == (
            b"Caf\xe9 offers this week: cr\xe8me br\xfbl\xe9e for everyone."
        )
        assert image.id == "<logo@example.com>"
        assert image.disposition == ("inline", ())
        assert parsed.preview == "Café offers this week: crème brûlée for everyone."
        assert parsed.has_attachment is False, "inline image of a multipart/related"
        assert parsed.base_subject == "Offers"

    def test_html_part_text(self):
        raw, parsed = load("alternative-qp-html.eml")
        markup = parsed.structure.parts[0].parts[1]
        text = " ".join(html_to_text(decode_part_body(raw, markup).decode("latin-1")).split())
        assert text == "Café offers crème brûlée & more"

    def test_digest_default_type_is_message(self):
        raw, parsed = load("digest.eml")
        first, second = parsed.structure.parts
        assert (first.type, first.subtype) == ("message", "rfc822"), "RFC 2046 §5.1.5"
        assert first.message is not None
        assert first.message.envelope.subject == "first post"
        assert body(raw, first.message.body) == b"first body"
        assert (second.type, second.subtype) == ("text", "plain")
        assert body(raw, second) == b"not a message"

    def test_rfc2231_continuations_and_charsets(self):
        _, parsed = load("rfc2231.eml")
        part = parsed.structure.parts[0]
        assert part.params == (("title", "This is even more ***fun*** isn't it!"),)
        assert part.disposition == ("attachment", (("filename", "naïve résumé.txt"),))
        assert part.filename == "naïve résumé.txt"


class TestEncapsulation:
    def test_message_rfc822_envelope_and_offsets(self):
        raw, parsed = load("rfc3501-sections.eml")
        message_part = parsed.structure.parts[2]
        assert (message_part.type, message_part.subtype) == ("message", "rfc822")
        inner = message_part.message
        assert inner is not None
        assert inner.envelope == Envelope(
            subject="part 3",
            from_=(Address(None, None, "inner3", "example.org"),),
            sender=(Address(None, None, "inner3", "example.org"),),
            reply_to=(Address(None, None, "inner3", "example.org"),),
        )
        assert header(raw, inner.body).startswith(b"From: inner3@example.org\r\n")
        assert header(raw, inner.body).endswith(b"boundary=b3\r\n\r\n")
        assert [body(raw, p) for p in inner.body.parts] == [b"part 3.1", b"part 3.2"]
        assert message_part.lines == body(raw, message_part).count(b"\n") + 1

    def test_message_global_utf8_headers(self):
        raw, parsed = load("message-global.eml")
        forwarded = parsed.structure.parts[1]
        assert (forwarded.type, forwarded.subtype) == ("message", "global")
        env = forwarded.message.envelope
        assert env.subject == "Bücher"
        assert env.from_ == (Address("Jörg", None, "jörg", "bücher.example"),)
        assert body(raw, forwarded.message.body) == "Die Bücher sind da.".encode()
        assert parsed.base_subject == "Bericht"
        assert parsed.has_attachment is True
        assert extract_text(raw, parsed) == "Siehe unten.\nDie Bücher sind da."

    def test_base64_message_rfc822_stays_a_leaf(self):
        raw = (b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
               b"U3ViamVjdDogeA0KDQpoaQ==\r\n")
        parsed = parse_message(raw)
        assert parsed.structure.message is None
        assert decode_part_body(raw, parsed.structure) == b"Subject: x\r\n\r\nhi"


class TestSectionNumbering:
    """The example of RFC 3501 §6.4.5, built in rfc3501-sections.eml."""

    EXPECTED: ClassVar[dict] = {
        (1,): ("text", "plain", b"part 1"),
        (2,): ("application", "octet-stream", b"cGFydCAy"),
        (3,): ("message", "rfc822", None),
        (3, 1): ("text", "plain", b"part 3.1"),
        (3, 2): ("application", "octet-stream", b"part 3.2"),
        (4,): ("multipart", "mixed", None),
        (4, 1): ("image", "gif", b"R0lGODlhAQABAAAAACw="),
        (4, 2): ("message", "rfc822", None),
        (4, 2, 1): ("text", "plain", b"part 4.2.1"),
        (4, 2, 2): ("multipart", "alternative", None),
        (4, 2, 2, 1): ("text", "plain", b"part 4.2.2.1"),
        (4, 2, 2, 2): ("text", "richtext", b"part 4.2.2.2"),
    }

    def test_every_section_of_the_rfc_example(self):
        raw, parsed = load("rfc3501-sections.eml")
        for section, (type_, subtype, content) in self.EXPECTED.items():
            part = parsed.part_at(section)
            assert part is not None, section
            assert (part.type, part.subtype) == (type_, subtype), section
            if content is not None:
                assert body(raw, part) == content, section

    def test_header_text_and_mime_of_sections(self):
        raw, parsed = load("rfc3501-sections.eml")
        top = parsed.part_at(())
        assert top is parsed.structure
        # HEADER / TEXT of the whole message
        assert header(raw, top).startswith(b"From: sections@example.org")
        # 3.HEADER and 4.2.TEXT: the encapsulated message's header and body
        three = parsed.part_at((3,)).message.body
        assert b"Subject: part 3\r\n" in header(raw, three)
        four_two = parsed.part_at((4, 2)).message.body
        assert body(raw, four_two).startswith(b"--b42\r\n")
        # 4.1.MIME: the MIME header of the image part
        assert header(raw, parsed.part_at((4, 1))) == (
            b"Content-Type: image/gif\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        )

    @pytest.mark.parametrize("section", [
        (0,), (5,), (1, 1), (2, 1), (3, 3), (4, 3), (4, 1, 1), (4, 2, 3), (4, 2, 2, 3),
        (4, 2, 2, 1, 1),
    ])
    def test_sections_that_do_not_exist(self, section):
        _, parsed = load("rfc3501-sections.eml")
        assert parsed.part_at(section) is None

    def test_single_part_message_is_part_one(self):
        _, parsed = load("simple-crlf.eml")
        assert parsed.part_at((1,)) is parsed.structure
        assert parsed.part_at((2,)) is None
        assert parsed.part_at((1, 1)) is None

    def test_top_level_message_rfc822(self):
        raw = (b"Subject: outer\r\nContent-Type: message/rfc822\r\n\r\n"
               b"Subject: inner\r\n\r\ninner text\r\n")
        parsed = parse_message(raw)
        assert parsed.part_at((1,)) is parsed.structure
        inner = parsed.part_at((1, 1))
        assert inner is parsed.structure.message.body
        assert body(raw, inner) == b"inner text\r\n"
        assert parsed.part_at((1, 2)) is None

    def test_encapsulated_single_part_is_numbered_one(self):
        raw = (b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n"
               b"Content-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\nhello\r\n--x--\r\n")
        parsed = parse_message(raw)
        assert body(raw, parsed.part_at((1, 1))) == b"hello"
        assert parsed.part_at((1, 2)) is None
        assert parsed.part_at((1, 1, 1)) is None


# -------------------------------------------------------------------------------------
# Envelope addresses
# -------------------------------------------------------------------------------------


class TestEnvelope:
    def test_groups_routes_quoting_and_comments(self):
        _, parsed = load("groups.eml")
        env = parsed.envelope
        assert env.from_ == (Address("Joe Q. Public", None, "john.q.public", "example.com"),)
        assert env.sender == (Address("Secretary", None, "sec", "example.com"),)
        assert env.reply_to == (
            Address(None, None, "Team", None),
            Address("Ann", None, "ann", "example.com"),
            Address("Ben", None, "ben", "example.com"),
            Address(None, None, None, None),
            Address(None, None, "solo", "example.com"),
        )
        assert env.to == (
            Address("Mary Smith", None, "mary", "x.test"),
            Address(None, None, "jdoe", "example.org"),
            Address("Who?", None, "one", "y.test"),
        )
        assert env.cc == (
            Address(None, None, "boss", "nil.test"),
            Address('Giant; "Big" Box', None, "sysservices", "example.net"),
        )
        assert env.bcc == (
            Address(None, "@route.one,@route.two", "routed", "example.org"),
            Address(None, None, "A Group", None),
            Address("Ed Jones", None, "c", "a.test"),
            Address(None, None, "joe", "where.test"),
            Address("John", None, "jdoe", "one.test"),
            Address(None, None, None, None),
        )
        assert env.bcc[1].is_group_start and env.bcc[-1].is_group_end
        assert env.message_id == "<1234@local.machine.example>"
        assert parsed.sent_date == 880127706

    @pytest.mark.parametrize("text, expected", [
        ("", ()),
        (",,", ()),
        ("user", (Address(None, None, "user", ""),)),
        ('"quoted local"@example.org', (Address(None, None, "quoted local", "example.org"),)),
        ("<>", (Address(None, None, "", ""),)),
        ("a@[192.0.2.1]", (Address(None, None, "a", "[192.0.2.1]"),)),
        ("Unclosed <a@b.c", (Address("Unclosed", None, "a", "b.c"),)),
        ("group: a@b.c", (Address(None, None, "group", None), Address(None, None, "a", "b.c"),
                          Address(None, None, None, None))),
        ("=?utf-8?q?J=C3=B6rg?= <j@x.org>", (Address("=?utf-8?q?J=C3=B6rg?=", None, "j", "x.org"),)),
        ("a@b.c (Comment (nested)) ", (Address("Comment (nested)", None, "a", "b.c"),)),
    ])
    def test_address_list_edge_cases(self, text, expected):
        assert parse_address_list(text) == expected

    def test_first_occurrence_of_a_field_wins(self):
        parsed = parse_message(b"Subject: one\r\nSubject: two\r\n\r\n")
        assert parsed.envelope.subject == "one"


# -------------------------------------------------------------------------------------
# Header values, subjects, dates
# -------------------------------------------------------------------------------------


@pytest.mark.parametrize("subject, expected", [
    ("Re: test", "test"),
    ("re: Re: RE:test", "test"),
    ("Fwd: test", "test"),
    ("Fw: test", "test"),
    ("F: test", "F: test"),
    ("Re[2]: test", "test"),
    ("Re [2]: test", "test"),
    ("[list] Re: test", "test"),
    ("[list][other] Re: [x] test", "test"),
    ("Re: [list] test", "test"),
    ("[blob]", "[blob]"),
    ("[a][b]", "[b]"),
    ("test (fwd)", "test"),
    ("test (FWD) (fwd)  ", "test"),
    ("[fwd: Re: test]", "test"),
    ("[Fwd: [fwd: test]]", "test"),
    ("Re: [fwd: test] (fwd)", "test"),
    ("  lots\t of   space  ", "lots of space"),
    ("=?utf-8?q?Re=3A_hello?=", "hello"),
    ("Reply: not a leader", "Reply: not a leader"),
    ("", ""),
])
def test_base_subject_rfc5256(subject, expected):
    assert base_subject(subject) == expected


@pytest.mark.parametrize("value, expected", [
    ("plain text", "plain text"),
    ("=?utf-8?q?caf=C3=A9?=", "café"),
    ("=?UTF-8?B?Y2Fmw6k=?=", "café"),
    ("=?utf-8?q?a?= =?utf-8?q?b?=", "ab"),  # RFC 2047 §6.2: whitespace between words dropped
    ("=?utf-8?q?a?= x =?utf-8?q?b?=", "a x b"),
    ("=?utf-8?b?w6k=?==?utf-8?b?w6k=?=", "éé"),
    ("=?utf-8?b?4oK=?= =?utf-8?b?rA==?=", "€"),  # a character split across two words
    ("=?iso-8859-1*en?q?=E9t=E9?=", "été"),  # RFC 2231 §5 language suffix
    ("=?x-no-such-charset?q?ok?=", "ok"),
    ("=?utf-8?q?unterminated", "=?utf-8?q?unterminated"),
    ("=?utf-8?b?!!!?=", ""),
    ("=?gb2312?b?1tDOxA==?=", "中文"),
])
def test_decode_header_text(value, expected):
    assert decode_header_text(value) == expected


@pytest.mark.parametrize("value, expected", [
    ("Fri, 21 Nov 1997 09:55:06 -0600", 880127706),
    ("21 Nov 97 09:55:06 GMT", 880106106),
    ("Fri, 21 Nov 1997 15:55:06", 880127706),  # no zone: UTC
    ("not a date", None),
    ("Fri, 99 Nov 1997 09:55:06 -0600", None),
    (None, None),
    ("", None),
])
def test_parse_date(value, expected):
    assert parse_date(value) == expected


def test_html_to_text_is_linear_and_drops_invisible_content():
    assert html_to_text("<p>a<b>b</b>c</p><p>d</p>").split() == ["abc", "d"]
    assert html_to_text("x<!-- hidden -->y") == "xy"
    assert html_to_text("x<script>var a = '<p>';</script>y") == "xy"
    assert html_to_text("1 < 2 &lt; 3") == "1 < 2 < 3"
    assert html_to_text("<style>unterminated") == ""
    start = time.monotonic()
    html_to_text("<script>" * 50_000 + "<" * 50_000 + "<!--" * 50_000)
    assert time.monotonic() - start < 2


# -------------------------------------------------------------------------------------
# Transfer encodings and text extraction
# -------------------------------------------------------------------------------------


def test_decode_part_body_encodings():
    raw = (b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           b"aGVs\r\nbG8g!d2\r\n9ybGQ\r\n")  # junk character and missing padding
    assert decode_part_body(raw, parse_message(raw).structure) == b"hello world"
    raw = (b"Content-Transfer-Encoding: Quoted-Printable\r\n\r\n"
           b"soft=\r\nbreak =3D equals=\nand LF\r\n")
    assert decode_part_body(raw, parse_message(raw).structure) == (
        b"softbreak = equalsand LF\r\n"
    )
    raw = b"Content-Transfer-Encoding: 8bit\r\n\r\n\xff\xfe"
    assert decode_part_body(raw, parse_message(raw).structure) == b"\xff\xfe"


def test_unknown_transfer_encoding_is_reported():
    raw = b"Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n"
    parsed = parse_message(raw)
    assert parsed.structure.encoding == "X-UUENCODE"
    with pytest.raises(UnknownTransferEncodingError):
        decode_part_body(raw, parsed.structure)
    assert extract_text(raw, parsed) == "begin 644 x\r\n", "indexed as it is"


def test_extract_text_whole_tree_and_limit():
    raw, parsed = load("rfc3501-sections.eml")
    assert extract_text(raw, parsed) == "part 1\npart 3.1\npart 4.2.1\npart 4.2.2.1"
    assert extract_text(raw, parsed, limit=10) == "part 1\npar"
    raw, parsed = load("alternative-qp-html.eml")
    assert extract_text(raw, parsed) == "Café offers this week: crème brûlée for everyone."


def test_extract_text_html_only_and_unknown_charset():
    raw = (b"Content-Type: text/html; charset=x-martian\r\n\r\n"
           b"<html><body><h1>Title</h1><p>caf\xc3\xa9 \xff</p></body></html>")
    parsed = parse_message(raw)
    assert extract_text(raw, parsed).split() == ["Title", "café", "\ufffd"]
    assert parsed.preview == "Title café \ufffd"


def test_extract_text_skips_text_attachments():
    raw = (b"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n\r\nbody\r\n--a\r\n"
           b"Content-Type: text/plain\r\nContent-Disposition: attachment; filename=x.txt\r\n\r\n"
           b"attached\r\n--a--\r\n")
    parsed = parse_message(raw)
    assert extract_text(raw, parsed) == "body"
    assert parsed.has_attachment is True


def test_preview_is_bounded_and_collapsed():
    raw = b"Subject: long\r\n\r\n" + b"word \r\n\t " * 200
    preview = parse_message(raw).preview
    assert len(preview) == 256
    assert preview.startswith("word word word")
    assert "  " not in preview


# -------------------------------------------------------------------------------------
# Limits against hostile input
# -------------------------------------------------------------------------------------


def test_nesting_depth_is_capped():
    levels = 300
    raw = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(levels)
    ) + b"Content-Type: text/plain\r\n\r\ndeep\r\n"
    start = time.monotonic()
    parsed = parse_message(raw)
    assert time.monotonic() - start < 5
    assert max_depth(parsed.structure) == MAX_DEPTH + 1
    deepest = parsed.structure
    while deepest.parts:
        deepest = deepest.parts[0]
    assert (deepest.type, deepest.subtype) == ("application", "octet-stream")
    assert body(raw, deepest).endswith(b"deep\r\n")
    assert_well_formed(parsed.structure, 0, len(raw))


def test_encapsulation_depth_is_capped():
    raw = b"Content-Type: message/rfc822\r\n\r\n" * 200 + b"Subject: core\r\n\r\nx"
    parsed = parse_message(raw)
    assert max_depth(parsed.structure) == MAX_DEPTH + 1
    assert_well_formed(parsed.structure, 0, len(raw))


def test_part_count_is_capped():
    parts = MAX_PARTS + 500
    raw = (b"Content-Type: multipart/mixed; boundary=p\r\n\r\n"
           + b"--p\r\n\r\nx\r\n" * parts + b"--p--\r\n")
    start = time.monotonic()
    parsed = parse_message(raw)
    assert time.monotonic() - start < 10
    assert len(parsed.structure.parts) == MAX_PARTS
    last = parsed.structure.parts[-1]
    assert raw[last.end:last.end + 7] == b"\r\n--p\r\n", "the rest is left unparsed"
    assert parsed.structure.end == len(raw)
    assert_well_formed(parsed.structure, 0, len(raw))


def test_huge_header_is_cached_up_to_the_cap():
    raw = b"X-Filler: " + b"a" * (MAX_HEADER_CACHE * 2) + b"\r\nSubject: s\r\n\r\nbody"
    parsed = parse_message(raw)
    assert len(parsed.header) == MAX_HEADER_CACHE
    assert parsed.envelope.subject == "s"
    assert body(raw, parsed.structure) == b"body"


def test_many_boundary_lookalikes_stay_linear():
    raw = (b"Content-Type: multipart/mixed; boundary=abc\r\n\r\n"
           + b"--abcd--abcx --abc-\r\n" * 100_000 + b"--abc\r\n\r\nreal\r\n--abc--")
    start = time.monotonic()
    parsed = parse_message(raw)
    assert time.monotonic() - start < 5
    assert [body(raw, p) for p in parsed.structure.parts] == [b"real"]


def test_multipart_without_delimiters_gets_an_empty_part():
    raw = b"Content-Type: multipart/mixed; boundary=q\r\n\r\nonly a preamble\r\n"
    parsed = parse_message(raw)
    (empty,) = parsed.structure.parts
    assert (empty.type, empty.subtype, empty.body_size) == ("text", "plain", 0)
    assert empty.start == empty.end == len(raw)


def test_multipart_without_boundary_is_text():
    raw = b"Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\nhi\r\n"
    parsed = parse_message(raw)
    assert (parsed.structure.type, parsed.structure.subtype) == ("text", "plain")
    assert parsed.structure.parts == ()


@pytest.mark.parametrize("raw", [
    b"", b"\r\n", b"\n", b"no header at all", b":", b"Subject", b"\x00\xff\xfe",
    b"Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n",
    b"Content-Type: /\r\n\r\n", b"Content-Type: text/\r\n\r\n",
    b"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a",
    b"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a--",
    b"Content-Type: message/rfc822\r\n\r\n",
    b"Content-Type: text/plain; charset*0*=''; charset*1*=%ZZ; x*=a'b\r\n\r\n",
    b"From: (((((\r\nTo: \"\"\"\"\r\nCc: <<<<>>>>@@@;;;:::\r\n\r\n",
    b"Date: Mon, 99 Foo 99999999999 99:99:99 +9999\r\n\r\n",
])
def test_damaged_messages_parse(raw):
    parsed = parse_message(raw)
    assert parsed.size == len(raw)
    assert_well_formed(parsed.structure, 0, len(raw))
    assert wire_round_trip(parsed) == parsed


def test_empty_message():
    parsed = parse_message(b"")
    assert parsed.structure == Part(0, 0, 0, params=(("charset", "us-ascii"),))
    assert parsed.envelope == Envelope()
    assert parsed.header == b""


# -------------------------------------------------------------------------------------
# Wire format
# -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.eml")))
def test_fixture_wire_round_trip(name):
    raw, parsed = load(name)
    assert_well_formed(parsed.structure, 0, len(raw))
    restored = wire_round_trip(parsed)
    assert restored == parsed
    assert restored.part_at((1,)) == parsed.part_at((1,))


def test_from_wire_rejects_other_formats():
    with pytest.raises(ValueError):
        ParsedMessage.from_wire([99])
    with pytest.raises(ValueError):
        ParsedMessage.from_wire({"structure": 1})


# -------------------------------------------------------------------------------------
# Property tests
# -------------------------------------------------------------------------------------

_FRAGMENTS = [
    b"\r\n", b"\n", b"\r\n\r\n", b"\n\n", b"--b", b"--b--", b"--c", b"--c--", b" ", b"\t",
    b"Content-Type: multipart/mixed; boundary=b\r\n",
    b"Content-Type: multipart/digest; boundary=\"c\"\n",
    b"Content-Type: message/rfc822\r\n", b"Content-Type: message/global\n",
    b"Content-Type: text/html; charset=utf-8\r\n",
    b"Content-Transfer-Encoding: base64\r\n", b"Content-Transfer-Encoding: quoted-printable\n",
    b"Content-Disposition: attachment; filename*=utf-8''%C3%A9\r\n",
    b"From: \"a\" <b@c>, g: d@e;\r\n", b"Subject: =?utf-8?b?w6k=?= Re: [x]\r\n",
    b"<p>", b"=3D", b"=\r\n", b":",
]


@st.composite
def mime_like_bytes(draw):
    pieces = draw(st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.binary(max_size=12)),
                           max_size=60))
    return b"".join(pieces)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=2000), mime_like_bytes()))
def test_any_bytes_parse_with_nested_offsets(raw):
    parsed = parse_message(raw)
    assert parsed.size == len(raw)
    assert_well_formed(parsed.structure, 0, len(raw))
    assert parsed.header == raw[:min(parsed.structure.body_start, MAX_HEADER_CACHE)]
    assert len(parsed.preview) <= 256
    extract_text(raw, parsed)
    assert wire_round_trip(parsed) == parsed


_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp"))
    | st.just("\n"),
    min_size=1, max_size=80,
)
_ASCII_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.just("\n"),
                      min_size=1, max_size=80)


def _tree(depth: int):
    text_leaf = st.tuples(st.just("text"), st.sampled_from(["plain", "html"]),
                          st.sampled_from(["us-ascii", "utf-8", "iso-8859-1"]), _TEXT)
    binary_leaf = st.tuples(st.just("binary"), st.binary(min_size=0, max_size=64))
    if depth == 0:
        return st.one_of(text_leaf, binary_leaf)
    below = _tree(depth - 1)
    return st.one_of(
        text_leaf,
        binary_leaf,
        st.tuples(st.just("multipart"), st.sampled_from(["mixed", "alternative", "related"]),
                  st.lists(below, min_size=1, max_size=4)),
        st.tuples(st.just("message"), below),
    )


def _build(node):
    kind = node[0]
    if kind == "text":
        _, subtype, charset, text = node
        if charset == "us-ascii":
            text = text.encode("ascii", "replace").decode("ascii")
        elif charset == "iso-8859-1":
            text = text.encode("latin-1", "replace").decode("latin-1")
        return MIMEText(text, subtype, charset)
    if kind == "binary":
        return MIMEApplication(node[1])
    if kind == "multipart":
        return MIMEMultipart(node[1], _subparts=[_build(child) for child in node[2]])
    inner = _build(node[1])
    inner["Subject"] = "inner"
    return MIMEMessage(inner)


def _assert_same_shape(raw: bytes, part: Part, node) -> None:
    kind = node[0]
    if kind == "text":
        _, subtype, charset, text = node
        assert (part.type, part.subtype) == ("text", subtype)
        assert part.charset == charset
        decoded = decode_part_body(raw, part).decode(charset, "replace")
        expected = text
        if charset == "us-ascii":
            expected = text.encode("ascii", "replace").decode("ascii")
        elif charset == "iso-8859-1":
            expected = text.encode("latin-1", "replace").decode("latin-1")
        assert decoded.replace("\r\n", "\n").rstrip("\n") == expected.rstrip("\n")
    elif kind == "binary":
        assert (part.type, part.subtype) == ("application", "octet-stream")
        assert part.encoding == "BASE64"
        assert decode_part_body(raw, part) == node[1]
    elif kind == "multipart":
        assert (part.type, part.subtype) == ("multipart", node[1])
        assert len(part.parts) == len(node[2])
        for child, child_node in zip(part.parts, node[2], strict=True):
            _assert_same_shape(raw, child, child_node)
    else:
        assert (part.type, part.subtype) == ("message", "rfc822")
        assert part.message is not None
        assert part.message.envelope.subject == "inner"
        _assert_same_shape(raw, part.message.body, node[1])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_tree(3), st.booleans())
def test_generated_messages_parse_to_the_structure_that_built_them(tree, crlf):
    message = _build(tree)
    message["Subject"] = "generated"
    message["From"] = "Gen Erator <gen@example.org>"
    policy = email.policy.SMTP if crlf else email.policy.compat32
    raw = message.as_bytes(policy=policy)
    parsed = parse_message(raw)
    assert_well_formed(parsed.structure, 0, len(raw))
    _assert_same_shape(raw, parsed.structure, tree)
    assert parsed.envelope.subject == "generated"
    assert parsed.envelope.from_ == (Address("Gen Erator", None, "gen", "example.org"),)
    assert wire_round_trip(parsed) == parsed


@settings(max_examples=100, deadline=None)
@given(_tree(2))
def test_wire_round_trip_of_generated_messages(tree):
    raw = _build(tree).as_bytes()
    parsed = parse_message(raw)
    wire = parsed.to_wire()
    assert ParsedMessage.from_wire(wire) == parsed
    packed = msgpack.packb(wire, use_bin_type=True)
    assert ParsedMessage.from_wire(msgpack.unpackb(packed, raw=False)) == parsed
    assert ParsedMessage.from_wire(msgpack.unpackb(packed, raw=False, use_list=False)) == parsed


@pytest.mark.parametrize("raw", [
    b"Subject: " + b"[a]" * 40_000 + b"\r\n\r\n",
    b"Subject: x" + b" (fwd)" * 20_000 + b"\r\n\r\n",
    b"Subject: " + b"[fwd:" * 20_000 + b"x" + b"]" * 20_000 + b"\r\n\r\n",
    b"Subject: " + b"=?" * 60_000 + b"\r\n\r\n",
    b"Content-Type: " + b"(" * 100_000 + b"\r\n\r\n",
    b"Content-Type: text/plain; " + b"a=(" * 50_000 + b"\r\n\r\n",
    b"Content-Language: " + b"(x" * 60_000 + b"\r\n\r\n",
    b"From: " + b"<" * 100_000 + b"\r\n\r\n",
    b"To: " + b"a:" * 60_000 + b"\r\n\r\n",
    b"To: " + b"a," * 60_000 + b"\r\n\r\n",
    b"References: " + b"<a" * 60_000 + b"\r\n\r\n",
    b"X: y\r\n" * 200_000 + b"\r\n",
    b"Content-Type: text/html\r\n\r\n" + b"<a " * 100_000,
])
def test_hostile_header_values_cost_linear_time(raw):
    start = time.monotonic()
    parsed = parse_message(raw)
    assert time.monotonic() - start < 3
    assert_well_formed(parsed.structure, 0, len(raw))


def test_base_subject_of_hostile_subjects():
    assert base_subject("[a]" * 40_000) == "[a]"
    assert base_subject("[a]" * 40_000 + "x") == "x"
    assert base_subject("[fwd:" * 20_000 + "x" + "]" * 20_000) == "x"
    assert base_subject("İ (fwd)") == "İ", "lowercasing must not shift indices"


def test_encoded_word_and_quoted_rfc2231_file_names():
    raw = (b"Content-Type: multipart/mixed; boundary=f\r\n\r\n--f\r\n"
           b"Content-Type: application/octet-stream; name=\"=?utf-8?b?w6l0w6kucGRm?=\"\r\n\r\nx\r\n"
           b"--f\r\nContent-Disposition: attachment; filename*=\"utf-8''%C3%A9t%C3%A9.txt\"\r\n\r\ny\r\n"
           b"--f--\r\n")
    first, second = parse_message(raw).structure.parts
    assert first.param("name") == "=?utf-8?b?w6l0w6kucGRm?=", "params keep what was sent"
    assert first.filename == "été.pdf"
    assert second.filename == "été.txt"


def test_delimiter_that_looks_like_a_header_field_ends_the_header():
    # a boundary may contain ":", so "--a:b" can look like a field line
    raw = (b"Content-Type: multipart/mixed; boundary=\"a:b\"\r\n\r\n--a:b\r\n"
           b"Content-Type: text/html\r\n--a:b\r\n\r\nsecond\r\n--a:b--\r\n")
    first, second = parse_message(raw).structure.parts
    assert (first.subtype, first.body_size) == ("html", 0)
    assert header(raw, first) == b"Content-Type: text/html\r\n"
    assert body(raw, second) == b"second"


def test_deep_stack_with_many_dash_lines_stays_linear():
    levels = MAX_DEPTH - 1
    raw = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(levels)
    ) + b"\r\n" + b"--not-a-boundary\r\n" * 200_000
    start = time.monotonic()
    parsed = parse_message(raw)
    assert time.monotonic() - start < 5
    assert max_depth(parsed.structure) == levels + 1
    assert_well_formed(parsed.structure, 0, len(raw))
