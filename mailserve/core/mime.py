"""Message parsing at ingest: MIME structure with byte offsets, envelope, and derived fields.

A message is parsed exactly once, when it is stored.  Everything the access protocols need
later -- IMAP FETCH ENVELOPE / BODYSTRUCTURE / BODY[section] / BODY[HEADER.FIELDS], SORT and
THREAD keys, JMAP Email/get, the search indexer -- is derived from the ``ParsedMessage``
produced here plus byte-range reads of the raw message, never by re-parsing it.  That is
why every ``Part`` records the byte offsets of its header and body in the raw message.

Python's ``email`` package gives no offsets, so the structure is scanned here directly:

* a header block ends at the first empty line (RFC 5322 §2.1), or -- tolerantly, as
  Python's and Dovecot's parsers do -- at the first line that cannot be a header field;
* a multipart body is split at ``--boundary`` delimiter lines (RFC 2046 §5.1.1); the line
  break before a delimiter belongs to the delimiter, the preamble and epilogue to no part;
* message/rfc822 and message/global (RFC 6532 §3.5) bodies are parsed as messages.

Line endings are never rewritten: CRLF and bare LF both occur in stored mail and offsets
must stay exact.  Any byte string parses without raising.  Hostile input is bounded: the
nesting depth and the total number of parts are capped (the rest is kept as an opaque
leaf, as Dovecot does), header values are cut before they are parsed, and every scan is a
linear ``bytes.find`` walk.
"""

from __future__ import annotations

import binascii
import calendar
import codecs
import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_tz
from typing import Any, NamedTuple

__all__ = [
    "Address",
    "EncapsulatedMessage",
    "Envelope",
    "ParsedMessage",
    "Part",
    "UnknownTransferEncodingError",
    "base_subject",
    "decode_header_text",
    "decode_part_body",
    "extract_text",
    "parse_message",
]

#: Nesting of multiparts and encapsulated messages beyond which a part is an opaque leaf.
MAX_DEPTH = 50
#: Parts per message beyond which no further delimiters are recognised (Dovecot's
#: ``max_total_mime_parts`` default); the rest of a multipart stays in its last part.
MAX_PARTS = 10_000
#: Bytes of the top-level header block kept in ``ParsedMessage.header``.
MAX_HEADER_CACHE = 64 * 1024
#: Bytes of one header field value that are parsed (longer values are cut).
MAX_FIELD_VALUE = 128 * 1024
#: Header fields per header block that are looked at.
MAX_FIELDS = 10_000
#: Characters of preview text (JMAP ``preview`` is at most 256, RFC 8621 §4.1.4).
PREVIEW_LENGTH = 256
#: Raw body bytes decoded to build the preview.
PREVIEW_SCAN = 16 * 1024
#: Parameters per structured header field that are kept.
MAX_PARAMS = 64

#: Format of ``ParsedMessage.to_wire``; bump when the layout changes.
WIRE_VERSION = 1

Params = tuple[tuple[str, str], ...]


class UnknownTransferEncodingError(ValueError):
    """The part's Content-Transfer-Encoding is not one RFC 2045 §6 defines.

    IMAP BINARY answers such a part with ``[UNKNOWN-CTE]`` (RFC 3516 §4.3).
    """


# -------------------------------------------------------------------------------------
# The stored records
# -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Address:
    """One address of an IMAP ENVELOPE (RFC 3501 §7.4.2 / RFC 9051 §7.5.2).

    Group syntax (RFC 5322 §3.4) is represented as IMAP does: the group start has
    ``host`` None and ``mailbox`` the group name; the group end has every field None.
    ``name`` is the display name with quoting removed and encoded words left encoded.
    """

    name: str | None
    adl: str | None
    mailbox: str | None
    host: str | None

    @property
    def is_group_start(self) -> bool:
        return self.host is None and self.mailbox is not None

    @property
    def is_group_end(self) -> bool:
        return self.host is None and self.mailbox is None

    @property
    def email(self) -> str | None:
        """``mailbox@host`` for a real address, None for group markers."""
        if self.host is None or self.mailbox is None:
            return None
        return f"{self.mailbox}@{self.host}" if self.host else self.mailbox


AddressList = tuple[Address, ...]


@dataclass(frozen=True, slots=True)
class Envelope:
    """The ten fields of an IMAP ENVELOPE (RFC 3501 §7.4.2), in that order.

    Strings are the raw header values (unfolded, undecoded) or None when the field is
    absent.  ``sender`` and ``reply_to`` default to ``from_`` when absent, as the RFC
    requires of the server.
    """

    date: str | None = None
    subject: str | None = None
    from_: AddressList = ()
    sender: AddressList = ()
    reply_to: AddressList = ()
    to: AddressList = ()
    cc: AddressList = ()
    bcc: AddressList = ()
    in_reply_to: str | None = None
    message_id: str | None = None


class EncapsulatedMessage(NamedTuple):
    """The message inside a message/rfc822 or message/global part."""

    envelope: Envelope
    body: Part


@dataclass(frozen=True, slots=True)
class Part:
    """One MIME entity with its byte offsets in the raw message.

    ``raw[start:body_start]`` is the entity's header block including the empty line that
    ends it (IMAP ``BODY[n.MIME]`` / ``BODY[HEADER]``); ``raw[body_start:end]`` is its body
    (IMAP ``BODY[n]`` / ``BODY[TEXT]``).  For the parts of a multipart the line break
    before the next delimiter is not included (RFC 2046 §5.1.1).

    The remaining fields are those of an IMAP BODYSTRUCTURE (RFC 3501 §7.4.2).  A
    multipart whose body holds no delimiter at all gets one empty text/plain child at its
    end, because IMAP cannot express a multipart without parts.  ``message`` is set for
    message/rfc822 and message/global parts whose body is a message; it is None for one
    that is transfer-encoded (RFC 2046 §5.2.1 forbids that, but it occurs), which IMAP
    then describes as a basic body.  ``lines`` counts line breaks in the body, plus one
    for a last line without one.
    """

    start: int
    body_start: int
    end: int
    type: str = "text"
    subtype: str = "plain"
    params: Params = ()
    id: str | None = None
    description: str | None = None
    encoding: str = "7BIT"
    disposition: tuple[str, Params] | None = None
    language: tuple[str, ...] | None = None
    location: str | None = None
    md5: str | None = None
    body_size: int = 0
    lines: int = 0
    parts: tuple[Part, ...] = ()
    message: EncapsulatedMessage | None = None

    @property
    def is_multipart(self) -> bool:
        return self.type == "multipart"

    @property
    def mime_type(self) -> str:
        return f"{self.type}/{self.subtype}"

    def param(self, name: str) -> str | None:
        """A Content-Type parameter by (case-insensitive) name."""
        name = name.lower()
        for key, value in self.params:
            if key == name:
                return value
        return None

    @property
    def charset(self) -> str | None:
        return self.param("charset")

    @property
    def filename(self) -> str | None:
        """The file name from Content-Disposition, else from Content-Type ``name``.

        RFC 2231 encoding is already undone in ``params``; RFC 2047 encoded words, which
        RFC 2047 §5 forbids in parameters but many senders use, are decoded here as mail
        clients decode them.
        """
        name: str | None = None
        if self.disposition is not None:
            for key, value in self.disposition[1]:
                if key == "filename":
                    name = value
                    break
        if name is None:
            name = self.param("name")
        return None if name is None else decode_header_text(name)

    def walk(self) -> Iterator[Part]:
        """This part and every part below it, depth first, entering encapsulated messages."""
        stack: list[Part] = [self]
        while stack:
            part = stack.pop()
            yield part
            if part.message is not None:
                stack.append(part.message.body)
            stack.extend(reversed(part.parts))

    def part_at(self, section: tuple[int, ...]) -> Part | None:
        """The part named by an IMAP section number, or None if there is none.

        RFC 3501 §6.4.5: every multipart's parts are numbered from 1; a body that is not
        multipart is part 1 of its message; the parts of a message/rfc822 part are
        numbered under it as if it were the top-level message.  Called on the top-level
        structure; ``()`` names the whole message.
        """
        node = self
        at_message_body = True  # ``node`` is the body of a message (top or encapsulated)
        for number in section:
            if number < 1:
                return None
            if node.parts:
                if number > len(node.parts):
                    return None
                node = node.parts[number - 1]
            elif at_message_body:
                if number != 1:
                    return None
            elif node.message is not None:
                body = node.message.body
                if body.parts:
                    if number > len(body.parts):
                        return None
                    node = body.parts[number - 1]
                else:
                    if number != 1:
                        return None
                    node = body
            else:
                return None
            at_message_body = False
        return node


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """Everything derived from a message at ingest (see the module docstring)."""

    structure: Part
    envelope: Envelope
    header: bytes
    size: int
    preview: str = ""
    has_attachment: bool = False
    sent_date: int | None = None
    message_id: str | None = None
    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    base_subject: str = ""

    def part_at(self, section: tuple[int, ...]) -> Part | None:
        """The part for an IMAP section number (RFC 3501 §6.4.5)."""
        return self.structure.part_at(section)

    def to_wire(self) -> list:
        """A compact positional form of nested lists for msgpack."""
        return [
            WIRE_VERSION,
            _part_to_wire(self.structure),
            _envelope_to_wire(self.envelope),
            self.header,
            self.size,
            self.preview,
            self.has_attachment,
            self.sent_date,
            self.message_id,
            list(self.in_reply_to),
            list(self.references),
            self.base_subject,
        ]

    @classmethod
    def from_wire(cls, obj: Any) -> ParsedMessage:
        """Rebuild the ``ParsedMessage`` that ``to_wire`` produced (lists or tuples)."""
        if not isinstance(obj, (list, tuple)) or not obj or obj[0] != WIRE_VERSION:
            raise ValueError(f"not a parsed message in wire format version {WIRE_VERSION}")
        (_, structure, envelope, header, size, preview, has_attachment, sent_date,
         message_id, in_reply_to, references, subject) = obj
        return cls(
            structure=_part_from_wire(structure),
            envelope=_envelope_from_wire(envelope),
            header=bytes(header),
            size=size,
            preview=preview,
            has_attachment=bool(has_attachment),
            sent_date=sent_date,
            message_id=message_id,
            in_reply_to=tuple(in_reply_to),
            references=tuple(references),
            base_subject=subject,
        )


def _params_to_wire(params: Params) -> list:
    return [list(pair) for pair in params]


def _params_from_wire(obj: Any) -> Params:
    return tuple((name, value) for name, value in obj)


def _addresses_to_wire(addresses: AddressList) -> list:
    return [[a.name, a.adl, a.mailbox, a.host] for a in addresses]


def _addresses_from_wire(obj: Any) -> AddressList:
    return tuple(Address(*item) for item in obj)


def _envelope_to_wire(envelope: Envelope) -> list:
    return [
        envelope.date,
        envelope.subject,
        _addresses_to_wire(envelope.from_),
        _addresses_to_wire(envelope.sender),
        _addresses_to_wire(envelope.reply_to),
        _addresses_to_wire(envelope.to),
        _addresses_to_wire(envelope.cc),
        _addresses_to_wire(envelope.bcc),
        envelope.in_reply_to,
        envelope.message_id,
    ]


def _envelope_from_wire(obj: Any) -> Envelope:
    date, subject, from_, sender, reply_to, to, cc, bcc, in_reply_to, message_id = obj
    return Envelope(
        date, subject,
        _addresses_from_wire(from_), _addresses_from_wire(sender),
        _addresses_from_wire(reply_to), _addresses_from_wire(to),
        _addresses_from_wire(cc), _addresses_from_wire(bcc),
        in_reply_to, message_id,
    )


def _part_to_wire(part: Part) -> list:
    return [
        part.start, part.body_start, part.end, part.type, part.subtype,
        _params_to_wire(part.params), part.id, part.description, part.encoding,
        None if part.disposition is None
        else [part.disposition[0], _params_to_wire(part.disposition[1])],
        None if part.language is None else list(part.language),
        part.location, part.md5, part.body_size, part.lines,
        [_part_to_wire(child) for child in part.parts],
        None if part.message is None
        else [_envelope_to_wire(part.message.envelope), _part_to_wire(part.message.body)],
    ]


def _part_from_wire(obj: Any) -> Part:
    (start, body_start, end, type_, subtype, params, id_, description, encoding,
     disposition, language, location, md5, body_size, lines, parts, message) = obj
    return Part(
        start=start, body_start=body_start, end=end, type=type_, subtype=subtype,
        params=_params_from_wire(params), id=id_, description=description, encoding=encoding,
        disposition=None if disposition is None
        else (disposition[0], _params_from_wire(disposition[1])),
        language=None if language is None else tuple(language),
        location=location, md5=md5, body_size=body_size, lines=lines,
        parts=tuple(_part_from_wire(child) for child in parts),
        message=None if message is None
        else EncapsulatedMessage(_envelope_from_wire(message[0]), _part_from_wire(message[1])),
    )


# -------------------------------------------------------------------------------------
# Header blocks
# -------------------------------------------------------------------------------------

_FOLD = re.compile(r"\r?\n(?=[ \t])")
_LINE_BREAKS = re.compile(r"\r?\n|\r")


def _header_text(value: bytes) -> str:
    """A header value as text: UTF-8 (RFC 6532), invalid bytes replaced, unfolded.

    Unfolding (RFC 5322 §2.2.3) removes each line break that is followed by whitespace;
    stray line breaks left over are turned into spaces.
    """
    if len(value) > MAX_FIELD_VALUE:
        value = value[:MAX_FIELD_VALUE]
    text = value.decode("utf-8", "replace")
    text = _FOLD.sub("", text)
    text = _LINE_BREAKS.sub(" ", text)
    return text.strip()


#: Field lines and their continuation lines (RFC 5322 §2.2, §2.2.3), matched in one go.
_HEADER_LINES = re.compile(
    rb"(?:[\x21-\x39\x3b-\x7e]+[ \t]*:[^\n]*\n(?:[ \t][^\n]*\n)*)*"
)
#: A field line that ends the data without a line break.
_LAST_FIELD_LINE = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:[^\n]*")
#: The start of a field (never a continuation line, which begins with whitespace).
_FIELD_START = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:", re.MULTILINE)


def _scan_header(raw: bytes, start: int, end: int) -> tuple[int, int]:
    """Find where the header block at ``start`` ends.

    Returns ``(fields_end, body_start)``: the end of the last field line, and where the
    body begins.  The block ends with the first empty line (RFC 5322 §2.1), which belongs
    to neither.  A line that is neither a field nor a continuation also ends it and
    starts the body -- the "missing blank line" damage that Python's parser and Dovecot
    tolerate the same way.  Without either, the header runs to ``end``.  ``start`` must be
    the start of a line.
    """
    stop = _HEADER_LINES.match(raw, start, end).end()
    if stop >= end:
        return end, end
    if raw[stop] == 0x0A:
        return stop, stop + 1
    if raw.startswith(b"\r\n", stop, end):
        return stop, stop + 2
    if raw.find(b"\n", stop, end) < 0 and (
        _LAST_FIELD_LINE.fullmatch(raw, stop, end)
        or (stop > start and raw[stop] in (0x20, 0x09))
    ):
        return end, end  # a last field line without its line break
    return stop, stop


def _header_fields(raw: bytes, start: int, end: int) -> dict[str, bytes]:
    """The fields of the header lines in ``raw[start:end]``, first occurrence of each.

    Maps the lowercased field name to the raw value bytes (folding included).  At most
    ``MAX_FIELDS`` fields are looked at.
    """
    fields: dict[str, bytes] = {}
    name: str | None = None
    value_start = 0
    for count, match in enumerate(_FIELD_START.finditer(raw, start, end)):
        if name is not None and name not in fields:
            fields[name] = raw[value_start:match.start()]
        if count >= MAX_FIELDS:
            return fields
        name = match.group(1).decode("ascii").lower()
        value_start = match.end()
    if name is not None and name not in fields:
        fields[name] = raw[value_start:end]
    return fields


def _field(fields: dict[str, bytes], name: str) -> str | None:
    value = fields.get(name)
    return None if value is None else _header_text(value)


# -------------------------------------------------------------------------------------
# Structured MIME fields: Content-Type and friends (RFC 2045, RFC 2183, RFC 2231)
# -------------------------------------------------------------------------------------

_TOKEN_END = re.compile(r'[\s;="()]')


def _comment_end(text: str, pos: int) -> int:
    """The index after the RFC 5322 comment opening at ``pos`` (comments nest, §3.2.2)."""
    depth = 0
    length = len(text)
    while pos < length:
        char = text[pos]
        if char == "\\":
            pos += 2
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return pos + 1
        pos += 1
    return length


def _strip_comments(text: str) -> str:
    """``text`` without its comments, in one linear pass (quoted strings kept as they are)."""
    if "(" not in text:
        return text
    out: list[str] = []
    pos = 0
    length = len(text)
    while pos < length:
        opening = text.find("(", pos)
        quote = text.find('"', pos)
        if 0 <= quote < opening or (opening < 0 and quote >= 0):
            _, after = _read_quoted(text, quote)
            out.append(text[pos:after])
            pos = after
            continue
        if opening < 0:
            out.append(text[pos:])
            break
        out.append(text[pos:opening])
        pos = _comment_end(text, opening)
    return "".join(out)


def _skip_cfws(text: str, pos: int) -> int:
    """Skip whitespace and comments (RFC 5322 §3.2.2 CFWS)."""
    length = len(text)
    while pos < length:
        char = text[pos]
        if char in " \t\r\n":
            pos += 1
        elif char == "(":
            pos = _comment_end(text, pos)
        else:
            break
    return pos


def _read_quoted(text: str, pos: int) -> tuple[str, int]:
    """Read a quoted-string starting at the opening quote; unterminated runs to the end."""
    out = []
    pos += 1
    length = len(text)
    while pos < length:
        char = text[pos]
        if char == "\\" and pos + 1 < length:
            out.append(text[pos + 1])
            pos += 2
            continue
        if char == '"':
            return "".join(out), pos + 1
        out.append(char)
        pos += 1
    return "".join(out), pos


def _parse_parameterised(text: str) -> tuple[str, list[tuple[str, str, bool]]]:
    """Split ``value; name=value; ...`` into the leading value and raw parameters.

    Each parameter is ``(name, value, was_quoted)``.  Tolerant of missing values, stray
    semicolons, comments and unterminated quotes.
    """
    pos = _skip_cfws(text, 0)
    semicolon = text.find(";", pos)
    leading = text[pos:] if semicolon < 0 else text[pos:semicolon]
    leading = _strip_comments(leading).strip()
    params: list[tuple[str, str, bool]] = []
    if semicolon < 0:
        return leading, params
    pos = semicolon + 1
    length = len(text)
    while pos < length and len(params) < MAX_PARAMS * 4:
        pos = _skip_cfws(text, pos)
        if pos >= length:
            break
        if text[pos] == ";":
            pos += 1
            continue
        match = _TOKEN_END.search(text, pos)
        name_end = length if match is None else match.start()
        name = text[pos:name_end].strip().lower()
        pos = _skip_cfws(text, name_end)
        if pos >= length or text[pos] != "=":
            # a name without value: skip to the next separator
            semicolon = text.find(";", pos)
            pos = length if semicolon < 0 else semicolon + 1
            continue
        pos = _skip_cfws(text, pos + 1)
        if pos < length and text[pos] == '"':
            value, pos = _read_quoted(text, pos)
            quoted = True
        else:
            semicolon = text.find(";", pos)
            value_end = length if semicolon < 0 else semicolon
            value = text[pos:value_end].strip()
            pos = value_end
            quoted = False
        if name:
            params.append((name, value, quoted))
        semicolon = text.find(";", pos)
        pos = length if semicolon < 0 else semicolon + 1
    return leading, params


_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_SECTION = re.compile(r"^(.*?)\*(\d+)(\*?)$")


def _percent_decode(value: str) -> bytes:
    raw = value.encode("utf-8", "surrogateescape")
    return re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), raw)


def _decode_params(raw_params: list[tuple[str, str, bool]]) -> Params:
    """Join and decode RFC 2231 parameter continuations and charsets (RFC 2231 §3-4).

    ``title*0*=us-ascii'en'This%20is; title*1=" even more"`` becomes one ``title``.  The
    first occurrence of a name wins; at most ``MAX_PARAMS`` are kept.
    """
    plain: dict[str, str] = {}
    extended: dict[str, str] = {}
    sections: dict[str, dict[int, tuple[str, bool]]] = {}
    order: list[str] = []
    for name, value, _quoted in raw_params:
        match = _SECTION.match(name)
        if match is not None:
            base, number, star = match.group(1), int(match.group(2)), bool(match.group(3))
            if base not in sections:
                sections[base] = {}
                if base not in order:
                    order.append(base)
            if number < 1000:
                # RFC 2231 §4 forbids quoting an encoded section; senders do it anyway
                sections[base].setdefault(number, (value, star))
        elif name.endswith("*"):
            base = name[:-1]
            if base not in order:
                order.append(base)
            extended.setdefault(base, value)
        else:
            if name not in order:
                order.append(name)
            plain.setdefault(name, value)
    out: list[tuple[str, str]] = []
    for name in order:
        value: str | None = None
        if name in extended:
            value = _decode_2231_value(extended[name])
        elif name in sections:
            value = _join_sections(sections[name])
        if value is None:
            value = plain.get(name)
        if value is not None:
            out.append((name, value))
        if len(out) >= MAX_PARAMS:
            break
    return tuple(out)


def _decode_2231_value(value: str) -> str:
    """Decode ``charset'language'percent-encoded`` (RFC 2231 §4)."""
    pieces = value.split("'", 2)
    if len(pieces) == 3:
        charset, _language, encoded = pieces
    else:
        charset, encoded = "", value
    return _decode_bytes(_percent_decode(encoded), charset or "utf-8")


def _join_sections(sections: dict[int, tuple[str, bool]]) -> str:
    """Concatenate continuation sections 0, 1, 2... in order until one is missing."""
    charset = ""
    data = bytearray()
    number = 0
    while number in sections:
        value, encoded = sections[number]
        if encoded:
            if number == 0:
                pieces = value.split("'", 2)
                if len(pieces) == 3:
                    charset, value = pieces[0], pieces[2]
            data += _percent_decode(value)
        else:
            data += value.encode("utf-8", "surrogateescape")
        number += 1
    return _decode_bytes(bytes(data), charset or "utf-8")


def _content_type(fields: dict[str, bytes], default: tuple[str, str]) -> tuple[str, str, Params, bool]:
    """Type, subtype, parameters and whether the field was present and valid.

    RFC 2045 §5.2: no Content-Type, or one that cannot be parsed, means
    ``text/plain; charset=us-ascii`` (``message/rfc822`` inside multipart/digest,
    RFC 2046 §5.1.5).
    """
    value = _field(fields, "content-type")
    if value is not None:
        leading, raw_params = _parse_parameterised(value)
        type_, slash, subtype = leading.partition("/")
        type_ = type_.strip().lower()
        subtype = subtype.strip().lower()
        if slash and _is_token(type_) and _is_token(subtype):
            return type_, subtype, _decode_params(raw_params), True
    if default == ("text", "plain"):
        return "text", "plain", (("charset", "us-ascii"),), False
    return default[0], default[1], (), False


_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")


def _is_token(text: str) -> bool:
    return bool(_TOKEN.fullmatch(text))


def _disposition(fields: dict[str, bytes]) -> tuple[str, Params] | None:
    """Content-Disposition (RFC 2183 §2) as (lowercased type, decoded parameters)."""
    value = _field(fields, "content-disposition")
    if value is None:
        return None
    leading, raw_params = _parse_parameterised(value)
    leading = leading.lower()
    if not leading or not _is_token(leading):
        return None
    return leading, _decode_params(raw_params)


def _language(fields: dict[str, bytes]) -> tuple[str, ...] | None:
    """Content-Language (RFC 3282 §2): a comma-separated list of language tags."""
    value = _field(fields, "content-language")
    if value is None:
        return None
    value = _strip_comments(value)
    tags = tuple(tag.strip() for tag in value.split(",") if tag.strip())
    return tags[:MAX_PARAMS] or None


def _encoding(fields: dict[str, bytes]) -> str:
    """Content-Transfer-Encoding token, uppercased; RFC 2045 §6.1 default 7BIT."""
    value = _field(fields, "content-transfer-encoding")
    if value is None:
        return "7BIT"
    value = _strip_comments(value).strip().strip('"').strip()
    return value.upper() or "7BIT"


def _location(fields: dict[str, bytes]) -> str | None:
    """Content-Location (RFC 2557 §4.2): folding whitespace inside the URI is removed."""
    value = _field(fields, "content-location")
    if value is None:
        return None
    value = value.strip().strip('"')
    return "".join(value.split())


# -------------------------------------------------------------------------------------
# Addresses (RFC 5322 §3.4) in IMAP envelope form
# -------------------------------------------------------------------------------------

_ATOM = 0
_QUOTED = 1
_COMMENT = 2
_LITERAL = 3
_SPECIAL = 4

_ADDRESS_SPECIALS = frozenset('<>@,;:.')
_ATOM_STOP = re.compile(r'[\s()<>@,;:."\[\]]')


def _tokenize_addresses(text: str) -> list[tuple[int, str]]:
    """Split an address header into atoms, quoted strings, comments, literals, specials."""
    tokens: list[tuple[int, str]] = []
    pos = 0
    length = len(text)
    while pos < length:
        char = text[pos]
        if char in " \t\r\n":
            pos += 1
        elif char == '"':
            value, pos = _read_quoted(text, pos)
            tokens.append((_QUOTED, value))
        elif char == "(":
            end = _comment_end(text, pos)
            tokens.append((_COMMENT, text[pos + 1:end - 1] if text[end - 1] == ")" else text[pos + 1:end]))
            pos = end
        elif char == "[":
            close = text.find("]", pos)
            close = length if close < 0 else close + 1
            tokens.append((_LITERAL, text[pos:close]))
            pos = close
        elif char in _ADDRESS_SPECIALS:
            tokens.append((_SPECIAL, char))
            pos += 1
        else:
            match = _ATOM_STOP.search(text, pos + 1)
            end = length if match is None else match.start()
            tokens.append((_ATOM, text[pos:end]))
            pos = end
    return tokens


def _render_phrase(tokens: list[tuple[int, str]]) -> str:
    """A display name: words joined by one space, quotes removed, dots attached."""
    out: list[str] = []
    for kind, value in tokens:
        if kind == _COMMENT:
            continue
        if kind == _SPECIAL and value == "." and out:
            out[-1] += "."
            continue
        out.append(value)
    return " ".join(out)


def _render_compact(tokens: list[tuple[int, str]]) -> str:
    """A local part or domain: tokens joined without spaces, comments dropped."""
    return "".join(value for kind, value in tokens if kind != _COMMENT)


def _last_comment(tokens: list[tuple[int, str]]) -> str | None:
    for kind, value in reversed(tokens):
        if kind == _COMMENT and value.strip():
            return value.strip()
    return None


def _addr_spec(tokens: list[tuple[int, str]]) -> tuple[str, str]:
    """``local@domain`` -> (mailbox, host); a missing part is the empty string."""
    for index in range(len(tokens) - 1, -1, -1):
        if tokens[index] == (_SPECIAL, "@"):
            return _render_compact(tokens[:index]), _render_compact(tokens[index + 1:])
    return _render_compact(tokens), ""


def _angle_addr(tokens: list[tuple[int, str]]) -> tuple[str | None, str, str]:
    """The inside of ``<...>``: optional obsolete route (RFC 5322 §4.4), then addr-spec."""
    route: str | None = None
    for index in range(len(tokens) - 1, -1, -1):
        if tokens[index] == (_SPECIAL, ":"):
            route = _render_compact(tokens[:index]) or None
            tokens = tokens[index + 1:]
            break
    mailbox, host = _addr_spec(tokens)
    return route, mailbox, host


def parse_address_list(text: str) -> AddressList:
    """Parse an address-list header value into IMAP envelope addresses.

    Tolerant of everything real mail contains: missing angle brackets, comments used as
    names (``user@host (Name)``), unterminated groups and quotes, empty elements.
    """
    tokens = _tokenize_addresses(text[:MAX_FIELD_VALUE])
    out: list[Address] = []
    in_group = False
    index = 0
    count = len(tokens)
    while index < count:
        kind, value = tokens[index]
        if kind == _SPECIAL and value == ",":
            index += 1
            continue
        stop = index
        while stop < count and not (tokens[stop][0] == _SPECIAL and tokens[stop][1] in "<:,;"):
            stop += 1
        phrase = tokens[index:stop]
        delimiter = tokens[stop][1] if stop < count else ""
        if delimiter == ":":
            if in_group:
                out.append(Address(None, None, None, None))
            out.append(Address(None, None, _render_phrase(phrase), None))
            in_group = True
            index = stop + 1
            continue
        if delimiter == "<":
            close = stop + 1
            while close < count and tokens[close] != (_SPECIAL, ">"):
                close += 1
            route, mailbox, host = _angle_addr(tokens[stop + 1:close])
            name = _render_phrase(phrase) or None
            out.append(Address(name, route, mailbox, host))
            index = close + 1
            while index < count and not (tokens[index][0] == _SPECIAL and tokens[index][1] in ",;"):
                index += 1
            continue
        if any(kind != _COMMENT for kind, _ in phrase):
            mailbox, host = _addr_spec(phrase)
            out.append(Address(_last_comment(phrase), None, mailbox, host))
        if delimiter == ";":
            if in_group:
                out.append(Address(None, None, None, None))
                in_group = False
            index = stop + 1
            continue
        index = stop
    if in_group:
        out.append(Address(None, None, None, None))
    return tuple(out)


def _address_field(fields: dict[str, bytes], name: str) -> AddressList:
    value = _field(fields, name)
    return () if value is None else parse_address_list(value)


def _envelope(fields: dict[str, bytes]) -> Envelope:
    """The IMAP ENVELOPE of a header block (RFC 3501 §7.4.2)."""
    from_ = _address_field(fields, "from")
    sender = _address_field(fields, "sender") or from_
    reply_to = _address_field(fields, "reply-to") or from_
    return Envelope(
        date=_field(fields, "date"),
        subject=_field(fields, "subject"),
        from_=from_,
        sender=sender,
        reply_to=reply_to,
        to=_address_field(fields, "to"),
        cc=_address_field(fields, "cc"),
        bcc=_address_field(fields, "bcc"),
        in_reply_to=_field(fields, "in-reply-to"),
        message_id=_field(fields, "message-id"),
    )


# -------------------------------------------------------------------------------------
# Message ids, dates, subjects
# -------------------------------------------------------------------------------------

_MSG_ID = re.compile(r"<\s*([^<>\s]+?)\s*>")


def parse_message_ids(value: str | None) -> tuple[str, ...]:
    """The msg-ids in a Message-ID / In-Reply-To / References value, without ``<>``.

    RFC 5322 §3.6.4; phrases and comments between ids (obsolete syntax) are skipped.
    """
    if not value:
        return ()
    return tuple(_MSG_ID.findall(value[:MAX_FIELD_VALUE]))


def _message_id(value: str | None) -> str | None:
    """The Message-ID; a bare id without brackets is accepted if it looks like one."""
    ids = parse_message_ids(value)
    if ids:
        return ids[0]
    if value:
        bare = value.strip()
        if bare and "@" in bare and not any(c.isspace() for c in bare):
            return bare
    return None


def parse_date(value: str | None) -> int | None:
    """Unix time of an RFC 5322 §3.3 date (obsolete forms accepted), or None.

    A date without zone is taken as UTC (``-0000``, "no information about the local
    time zone").
    """
    if not value:
        return None
    try:
        parsed = parsedate_tz(value[:256])
    except Exception:  # noqa: BLE001 - the email package raises many types on junk
        return None
    if parsed is None:
        return None
    try:
        year, month, day, hour, minute, second = parsed[:6]
        # datetime validates every field; leap seconds (RFC 5322 allows 60) are clamped
        moment = datetime(year, month, day, hour, minute, min(second, 59), tzinfo=UTC)
        offset = parsed[9] or 0
        if abs(offset) > 99 * 3600 + 59 * 60:
            return None
        return calendar.timegm(moment.timetuple()) - offset
    except (OverflowError, ValueError, TypeError):
        return None


_BLOB = r"\[[^\[\]]*\][ \t]*"
_SUBJ_LEADER = re.compile(
    r"(?:(?:" + _BLOB + r")*(?:re|fwd?)[ \t]*(?:" + _BLOB + r")?:|[ \t])", re.IGNORECASE
)
_SUBJ_BLOB = re.compile(_BLOB)
_WSP_RUN = re.compile(r"[ \t\r\n]+")


def base_subject(subject: str | None) -> str:
    """The base subject of RFC 5256 §2.1, used by SORT SUBJECT and THREAD.

    Steps as numbered in the RFC: (1) decode encoded words and collapse whitespace,
    (2) strip ``(fwd)`` and whitespace trailers, (3) strip ``Re:``/``Fw:``/``Fwd:``
    leaders with their blobs, (4) strip a leading ``[blob]`` unless nothing would be left,
    (5) repeat 3-4, (6) unwrap ``[fwd: ...]`` and go back to 2.

    The text is never copied while stripping (start and end indices move instead), and a
    run of blobs is removed at once, so a hostile subject costs linear time.
    """
    if not subject:
        return ""
    text = _WSP_RUN.sub(" ", decode_header_text(subject[:MAX_FIELD_VALUE]))  # step 1
    start, end = 0, len(text)
    while True:
        while end > start:  # step 2
            if text[end - 1] in " \t":
                end -= 1
            elif end - start >= 5 and text[end - 5:end].lower() == "(fwd)":
                end -= 5
            else:
                break
        while start < end:  # step 3
            match = _SUBJ_LEADER.match(text, start, end)
            if match is None:
                break
            start = match.end()
        # Step 4, repeated by step 5.  A leader failed here, and it would fail at every
        # blob of the run that starts here too (it would have matched the whole run), so
        # step 3 cannot apply again: remove the run's blobs one by one while something is
        # left after each.
        match = _SUBJ_BLOB.match(text, start, end)
        while match is not None and match.end() < end:
            start = match.end()
            match = _SUBJ_BLOB.match(text, start, end)
        # step 6
        if end - start >= 6 and text[start:start + 5].lower() == "[fwd:" and text[end - 1] == "]":
            start += 5
            end -= 1
            continue
        return text[start:end]


# -------------------------------------------------------------------------------------
# Encoded words and charsets
# -------------------------------------------------------------------------------------

#: Charset labels that deserve a superset decoder, as browsers do (WHATWG Encoding).
_CHARSET_ALIASES = {
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "iso-8859-9": "cp1254",
    "tis-620": "cp874",
    "shift_jis": "cp932",
    "x-sjis": "cp932",
    "utf8": "utf-8",
    "unicode-1-1-utf-7": "utf-7",
    "x-unknown": "utf-8",
    "unknown-8bit": "utf-8",
}


def _codec(charset: str | None) -> str:
    """A Python codec for a MIME charset label; unknown labels decode as UTF-8."""
    if not charset:
        return "utf-8"
    label = charset.strip().strip('"').lower()
    label = label.split("*", 1)[0]  # RFC 2231 §5 language suffix
    label = _CHARSET_ALIASES.get(label, label)
    try:
        return codecs.lookup(label).name
    except (LookupError, ValueError):
        return "utf-8"


def _decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode with the charset's codec, replacing what does not decode."""
    codec = _codec(charset)
    try:
        return data.decode(codec, "replace")
    except Exception:  # noqa: BLE001 - some codecs raise odd errors on garbage
        return data.decode("utf-8", "replace")


_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")


def _decode_word_bytes(encoding: str, text: str) -> bytes:
    if encoding in "bB":
        return _decode_base64(text.encode("ascii", "ignore"))
    data = text.replace("_", " ").encode("utf-8", "surrogateescape")
    return re.sub(rb"=([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), data)


def decode_header_text(value: str) -> str:
    """Decode RFC 2047 encoded words in unstructured header text, tolerantly.

    Whitespace between adjacent encoded words is dropped (RFC 2047 §6.2).  Adjacent words
    in one charset are joined before decoding, because real senders split multi-byte
    characters across words.  Encoded words glued to other text are decoded too, and an
    unknown charset decodes as UTF-8 with replacement, as mail clients do.
    """
    if "=?" not in value:
        return value
    out: list[str] = []
    pending_charset: str | None = None
    pending = bytearray()
    pos = 0
    for match in _ENCODED_WORD.finditer(value):
        between = value[pos:match.start()]
        if between and not (pending_charset is not None and not between.strip()):
            if pending_charset is not None:
                out.append(_decode_bytes(bytes(pending), pending_charset))
                pending_charset, pending = None, bytearray()
            out.append(between)
        charset = match.group(1)
        data = _decode_word_bytes(match.group(2), match.group(3))
        if pending_charset is not None and _codec(charset) != _codec(pending_charset):
            out.append(_decode_bytes(bytes(pending), pending_charset))
            pending = bytearray()
        pending_charset = charset
        pending += data
        pos = match.end()
    if pending_charset is not None:
        out.append(_decode_bytes(bytes(pending), pending_charset))
    out.append(value[pos:])
    return "".join(out)


# -------------------------------------------------------------------------------------
# Transfer encodings and text
# -------------------------------------------------------------------------------------

_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_BASE64 = bytes(b for b in range(256) if b not in _BASE64_ALPHABET)


def _decode_base64(data: bytes) -> bytes:
    """Base64 as mail clients decode it: junk characters ignored, padding repaired."""
    cleaned = data.translate(None, _NOT_BASE64)
    remainder = len(cleaned) % 4
    if remainder == 1:
        cleaned = cleaned[:-1]
    elif remainder:
        cleaned += b"=" * (4 - remainder)
    try:
        return binascii.a2b_base64(cleaned)
    except binascii.Error:
        return b""


def _decode_transfer(data: bytes, encoding: str) -> bytes:
    if encoding == "BASE64":
        return _decode_base64(data)
    if encoding == "QUOTED-PRINTABLE":
        return binascii.a2b_qp(data)
    if encoding in ("7BIT", "8BIT", "BINARY"):
        return data
    raise UnknownTransferEncodingError(encoding)


def decode_part_body(raw: bytes, part: Part) -> bytes:
    """The body of ``part`` with its Content-Transfer-Encoding undone (RFC 2045 §6).

    For IMAP BINARY (RFC 3516).  Raises ``UnknownTransferEncodingError`` for an encoding
    RFC 2045 does not define, which IMAP reports as ``[UNKNOWN-CTE]``.
    """
    return _decode_transfer(raw[part.body_start:part.end], part.encoding)


_BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "footer",
    "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p",
    "pre", "section", "table", "td", "th", "tr", "ul", "title",
})
_TAG_NAME = re.compile(r"</?\s*([a-zA-Z][a-zA-Z0-9]*)")


def html_to_text(markup: str) -> str:
    """Visible text of HTML: tags removed, script/style/comments dropped, entities decoded.

    A single linear scan (no backtracking regex over the whole document), so hostile
    markup cannot make it slow.  Block-level tags become line breaks so words do not run
    together; inline tags vanish.
    """
    out: list[str] = []
    lowered = markup.lower()
    pos = 0
    length = len(markup)
    while pos < length:
        lt = markup.find("<", pos)
        if lt < 0:
            out.append(markup[pos:])
            break
        out.append(markup[pos:lt])
        following = markup[lt + 1:lt + 2]
        if not (following.isalpha() or following in ("/", "!", "?")):
            out.append("<")  # a bare "<" in text, not markup
            pos = lt + 1
            continue
        if markup.startswith("<!--", lt):
            close = markup.find("-->", lt + 4)
            pos = length if close < 0 else close + 3
            continue
        gt = markup.find(">", lt + 1)
        if gt < 0:
            break
        match = _TAG_NAME.match(markup, lt, gt)
        if match is None:
            if markup.startswith("<!", lt) or markup.startswith("<?", lt):
                pos = gt + 1
            else:
                out.append("<")
                pos = lt + 1
            continue
        name = match.group(1).lower()
        pos = gt + 1
        if name in ("script", "style", "head") and not markup.startswith("</", lt):
            close = lowered.find("</" + name, pos)
            if close < 0:
                pos = length
            else:
                end = markup.find(">", close)
                pos = length if end < 0 else end + 1
            continue
        if name in _BLOCK_TAGS:
            out.append("\n")
    return html.unescape("".join(out))


def _part_text(raw: bytes, part: Part, max_bytes: int | None = None) -> str:
    """Decoded text of a text/plain or text/html leaf (HTML reduced to its text)."""
    end = part.end if max_bytes is None else min(part.end, part.body_start + max_bytes)
    data = raw[part.body_start:end]
    try:
        data = _decode_transfer(data, part.encoding)
    except UnknownTransferEncodingError:
        pass
    text = _decode_bytes(data, part.charset)
    if part.subtype == "html":
        text = html_to_text(text)
    return text


def _is_attachment(part: Part) -> bool:
    return part.disposition is not None and part.disposition[0] == "attachment"


def _text_leaves(part: Part, into_messages: bool) -> Iterator[Part]:
    """Text/plain and text/html body parts in reading order.

    In a multipart/alternative only one alternative is read -- the plain text one if
    present -- so the same text is not taken twice.  Attachments are skipped.
    """
    if part.parts:
        children: tuple[Part, ...] = part.parts
        if part.subtype == "alternative":
            plain = [c for c in children if c.type == "text" and c.subtype == "plain"]
            chosen = plain[:1] or [c for c in children if c.type == "text" and c.subtype == "html"][:1]
            others = [c for c in children if c.type == "multipart"]
            children = tuple(chosen) if chosen else tuple(others[:1])
        for child in children:
            yield from _text_leaves(child, into_messages)
    elif part.message is not None:
        if into_messages:
            yield from _text_leaves(part.message.body, into_messages)
    elif part.type == "text" and part.subtype in ("plain", "html") and not _is_attachment(part):
        yield part


def extract_text(raw: bytes, parsed: ParsedMessage, limit: int = 1_000_000) -> str:
    """The decoded text of a message for the search indexer, at most ``limit`` characters.

    Text/plain and text/html parts of the whole tree, encapsulated messages included,
    with transfer encodings (base64, quoted-printable) undone, charsets decoded (unknown
    ones as UTF-8 with replacement) and HTML reduced to its visible text.
    """
    pieces: list[str] = []
    total = 0
    for part in _text_leaves(parsed.structure, into_messages=True):
        remaining = limit - total
        if remaining <= 0:
            break
        # a character is at least one byte of the decoded body; base64 is 4/3 larger
        text = _part_text(raw, part, max_bytes=remaining * 2 + 1024)
        text = text[:remaining]
        pieces.append(text)
        total += len(text) + 1
    return "\n".join(pieces)[:limit]


def _preview(raw: bytes, structure: Part) -> str:
    """JMAP preview (RFC 8621 §4.1.4): start of the first text part, whitespace collapsed."""
    for part in _text_leaves(structure, into_messages=False):
        text = " ".join(_part_text(raw, part, max_bytes=PREVIEW_SCAN).split())
        if text:
            return text[:PREVIEW_LENGTH]
    return ""


_SIGNATURE_TYPES = frozenset({
    "application/pgp-signature", "application/pkcs7-signature",
    "application/x-pkcs7-signature", "application/pgp-keys",
})


def _has_attachment(structure: Part) -> bool:
    """Whether the message carries something a user would call an attachment.

    RFC 8621 leaves this to the server; like Cyrus and Stalwart we count parts marked
    ``attachment``, encapsulated messages, and non-text leaves, but not inline parts of a
    multipart/related (embedded images) nor signatures.
    """
    body_parts = {id(p) for p in _text_leaves(structure, into_messages=False)}

    def visit(part: Part, in_related: bool) -> bool:
        if part.parts:
            related = in_related or part.subtype == "related"
            return any(visit(child, related) for child in part.parts)
        if part.mime_type in _SIGNATURE_TYPES:
            return False
        if _is_attachment(part) or part.message is not None:
            return True
        if part.type == "text":
            return id(part) not in body_parts and part.filename is not None
        # an inline part of a multipart/related is an embedded resource, not an attachment
        return not (in_related and (part.disposition is None or part.disposition[0] == "inline"))

    return visit(structure, False)


# -------------------------------------------------------------------------------------
# The structure scanner
# -------------------------------------------------------------------------------------


def _count_lines(raw: bytes, start: int, end: int) -> int:
    """Lines of a body: its line breaks, plus one for a last line without a break."""
    if end <= start:
        return 0
    lines = raw.count(b"\n", start, end)
    if raw[end - 1] != 0x0A:
        lines += 1
    return lines


class _Delimiter(NamedTuple):
    """A boundary delimiter line found in the message."""

    line_start: int
    next_line: int
    level: int  # the depth of the multipart whose boundary it is
    is_close: bool


#: Whitespace allowed after a delimiter (RFC 2046 §5.1.1 transport padding), bounded.
_MAX_PADDING = 1024

Boundaries = dict[bytes, int]


class _StructureScanner:
    """One parse of one message: a single forward pass with a stack of open boundaries.

    Every multipart pushes its boundary; a delimiter line is attributed to the innermost
    open multipart with that boundary, so a nested multipart that reuses its parent's
    boundary (old Outlook Express does) still gets its own parts, as in Dovecot.  A
    delimiter of an outer multipart ends every entity inside it, which handles missing
    close delimiters.  Each byte is looked at about once.
    """

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.size = len(raw)
        self.parts_left = MAX_PARTS
        self.longest_boundary = 0

    # -- delimiters --------------------------------------------------------------------
    def delimiter_at(self, line_start: int, boundaries: Boundaries) -> _Delimiter | None:
        """The delimiter on the line at ``line_start``, if it is one (RFC 2046 §5.1.1).

        ``--boundary`` followed only by whitespace, or ``--boundary--`` (close), also
        followed only by whitespace; ``--boundaryX`` is not a delimiter of ``boundary``.
        """
        raw = self.raw
        newline = raw.find(b"\n", line_start, line_start + self.longest_boundary + _MAX_PADDING)
        if newline < 0:
            if self.size - line_start > self.longest_boundary + _MAX_PADDING:
                return None
            line_end = next_line = self.size
        else:
            line_end, next_line = newline, newline + 1
        token = raw[line_start + 2:line_end].rstrip(b" \t\r")
        level = boundaries.get(token)
        if level is not None:
            return _Delimiter(line_start, next_line, level, False)
        if token.endswith(b"--"):
            level = boundaries.get(token[:-2])
            if level is not None:
                return _Delimiter(line_start, next_line, level, True)
        return None

    def next_delimiter(self, pos: int, boundaries: Boundaries) -> _Delimiter | None:
        """The first delimiter of any open boundary on a line at or after ``pos``."""
        if not boundaries:
            return None
        raw = self.raw
        if raw.startswith(b"--", pos):
            found = self.delimiter_at(pos, boundaries)
            if found is not None:
                return found
        while True:
            candidate = raw.find(b"\n--", pos)
            if candidate < 0:
                return None
            found = self.delimiter_at(candidate + 1, boundaries)
            if found is not None:
                return found
            pos = candidate + 1

    def end_before(self, stop: _Delimiter | None, lower: int) -> int:
        """Where an entity ends: before the line break that precedes ``stop``.

        RFC 2046 §5.1.1: that line break is conceptually part of the delimiter.
        """
        if stop is None:
            return self.size
        end = stop.line_start
        if end > lower and self.raw[end - 1] == 0x0A:
            end -= 1
            if end > lower and self.raw[end - 1] == 0x0D:
                end -= 1
        return end

    # -- entities ------------------------------------------------------------------------
    def header(self, start: int, boundaries: Boundaries) -> tuple[int, dict[str, bytes]]:
        """``(body_start, fields)`` of the header block at ``start``.

        A delimiter line ends the header too (a boundary may contain a colon, so such a
        line can look like a field).
        """
        raw = self.raw
        fields_end, body_start = _scan_header(raw, start, self.size)
        if boundaries and fields_end > start:
            line_start = start
            if not raw.startswith(b"--", start):
                newline = raw.find(b"\n--", start, fields_end)
                line_start = fields_end if newline < 0 else newline + 1
            while line_start < fields_end:
                if self.delimiter_at(line_start, boundaries) is not None:
                    fields_end = body_start = line_start
                    break
                newline = raw.find(b"\n--", line_start, fields_end)
                line_start = fields_end if newline < 0 else newline + 1
        return body_start, _header_fields(raw, start, fields_end)

    def entity(self, start: int, boundaries: Boundaries, depth: int,
               default: tuple[str, str] = ("text", "plain"),
               ) -> tuple[Part, dict[str, bytes], _Delimiter | None]:
        """Parse the entity at ``start``; return it, its header fields, and the delimiter
        that ended it (None at the end of the message)."""
        raw = self.raw
        body_start, fields = self.header(start, boundaries)
        type_, subtype, params, _valid = _content_type(fields, default)
        encoding = _encoding(fields)
        children: tuple[Part, ...] = ()
        message: EncapsulatedMessage | None = None
        boundary = dict(params).get("boundary", "") if type_ == "multipart" else ""

        if type_ == "multipart" and (not boundary or depth >= MAX_DEPTH):
            if boundary:  # too deep: keep the bytes, drop the structure
                type_, subtype, params = "application", "octet-stream", ()
            else:  # RFC 2046 §5.1.1 requires a boundary; treat as text, as Dovecot does
                type_, subtype, params = "text", "plain", (("charset", "us-ascii"),)
        elif type_ == "message" and subtype in ("rfc822", "global") and depth >= MAX_DEPTH:
            type_, subtype, params = "application", "octet-stream", ()

        if type_ == "multipart":
            child_default = ("message", "rfc822") if subtype == "digest" else ("text", "plain")
            children, end, stop = self.multipart(
                boundary.encode("utf-8", "surrogateescape"), body_start, boundaries, depth,
                child_default,
            )
        elif (type_ == "message" and subtype in ("rfc822", "global")
              and encoding in ("7BIT", "8BIT", "BINARY")):
            inner, inner_fields, stop = self.entity(body_start, boundaries, depth + 1)
            end = inner.end
            message = EncapsulatedMessage(_envelope(inner_fields), inner)
        else:
            stop = self.next_delimiter(body_start, boundaries)
            end = self.end_before(stop, body_start)

        part = Part(
            start=start,
            body_start=body_start,
            end=end,
            type=type_,
            subtype=subtype,
            params=params,
            id=_field(fields, "content-id"),
            description=_field(fields, "content-description"),
            encoding=encoding,
            disposition=_disposition(fields),
            language=_language(fields),
            location=_location(fields),
            md5=_field(fields, "content-md5"),
            body_size=end - body_start,
            lines=_count_lines(raw, body_start, end),
            parts=children,
            message=message,
        )
        return part, fields, stop

    def multipart(self, boundary: bytes, body_start: int, outer: Boundaries, depth: int,
                  default: tuple[str, str],
                  ) -> tuple[tuple[Part, ...], int, _Delimiter | None]:
        """The parts of a multipart body (RFC 2046 §5.1.1); also its end and stop."""
        self.longest_boundary = max(self.longest_boundary, len(boundary))
        boundaries = {**outer, boundary: depth}
        children: list[Part] = []
        found = self.next_delimiter(body_start, boundaries)
        # the preamble runs up to the first delimiter
        while found is not None and found.level == depth and not found.is_close:
            if self.parts_left <= 0:
                break  # budget spent: the rest stays unparsed in this multipart's body
            self.parts_left -= 1
            child, _fields, found = self.entity(found.next_line, boundaries, depth + 1, default)
            children.append(child)
        if found is not None and found.level == depth:
            # after the close delimiter (or past the budget): the epilogue, up to the next
            # delimiter of an enclosing multipart
            stop = self.next_delimiter(found.next_line, outer)
        else:
            stop = found  # an enclosing multipart's delimiter, or the end: no close
        end = self.end_before(stop, body_start)
        if not children:
            children.append(Part(start=end, body_start=end, end=end,
                                 params=(("charset", "us-ascii"),)))
        return tuple(children), end, stop


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse a raw message once, at ingest; never raises, whatever the bytes.

    The result holds the MIME structure with byte offsets, the IMAP envelope, the raw
    header block (up to ``MAX_HEADER_CACHE`` bytes), the JMAP preview and attachment flag,
    and the threading and sorting keys (RFC 5256).
    """
    raw = bytes(raw)
    scanner = _StructureScanner(raw)
    structure, fields, _ = scanner.entity(0, {}, 0)
    envelope = _envelope(fields)
    return ParsedMessage(
        structure=structure,
        envelope=envelope,
        header=raw[:min(structure.body_start, MAX_HEADER_CACHE)],
        size=len(raw),
        preview=_preview(raw, structure),
        has_attachment=_has_attachment(structure),
        sent_date=parse_date(envelope.date),
        message_id=_message_id(envelope.message_id),
        in_reply_to=parse_message_ids(envelope.in_reply_to),
        references=parse_message_ids(_field(fields, "references")),
        base_subject=base_subject(envelope.subject),
    )
