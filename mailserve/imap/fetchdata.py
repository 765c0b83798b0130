"""FETCH data items built from the metadata cached at ingest (RFC 9051 §6.4.5, §7.5.2).

Nothing here re-parses a message: ENVELOPE and BODYSTRUCTURE come from the
``ParsedMessage`` stored when the message arrived, header subsets are cut from
``ParsedMessage.header`` (or from the part's header bytes, read by range), and every
other section is a byte range of the blob so big bodies are streamed, not loaded.

API (used by the IMAP session)
------------------------------
``envelope(parsed, utf8=False) -> bytes``
    The ENVELOPE s-expression, e.g. ``b'("date" "subject" ((NIL NIL "a" "b.c")) ...)'``.
``bodystructure(parsed, extensible=True, utf8=False) -> bytes``
    BODYSTRUCTURE (``extensible=True``) or BODY (``False``).
``parse_section(text, partial=None, binary=False) -> SectionSpec``
    ``text`` is what stood between the brackets of ``BODY[...]`` / ``BODY.PEEK[...]`` /
    ``BINARY[...]`` (e.g. ``"1.2.HEADER.FIELDS (From To)"``), ``partial`` the
    ``"<o.l>"``/``"o.l"`` suffix if any.  Raises ``SectionError`` (a ``ValueError``: answer BAD).
``body_section(parsed, spec) -> SectionRange``
    Resolves the spec against the message: ``SectionRange.data`` is set for small
    synthesized bytes; otherwise ``SectionRange.start``/``.length`` is a range of the blob
    and ``.header_fields``/``.exclude`` say to filter header fields from those bytes with
    ``filter_header``.  ``SectionRange.label`` is the item name to send back
    (``b"BODY[1.MIME]<0>"``).  A missing part yields empty data (RFC 9051 §6.4.5).
``await read_section(section, read_blob) -> bytes``
    The bytes of a ``SectionRange`` (``read_blob(offset, length) -> Deferred[bytes]``),
    with header filtering, BINARY decoding and the partial window applied.
``binary_size(parsed, spec, read_blob) -> Deferred[int]`` / ``async``
    BINARY.SIZE[part] (RFC 3516 §4.2): the decoded size; raises ``UnknownCTE``.
``filter_header(block, names, exclude) -> bytes``
    HEADER.FIELDS / HEADER.FIELDS.NOT on a raw header block, fields kept in message order.
``imap_string(value, utf8=False) -> bytes``, ``nstring(value, utf8=False) -> bytes``
    Quoted string when possible, literal otherwise (RFC 9051 §4.3); ``NIL`` for None.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from mailserve.core.mime import (
    Address,
    Envelope,
    ParsedMessage,
    Part,
    UnknownTransferEncodingError,
)

__all__ = [
    "SectionError",
    "SectionRange",
    "SectionSpec",
    "UnknownCTE",
    "binary_size",
    "body_section",
    "bodystructure",
    "envelope",
    "filter_header",
    "format_envelope",
    "imap_string",
    "literal",
    "nstring",
    "parse_section",
    "parse_section_item",
    "read_section",
]

#: Longest string sent quoted; longer ones go as literals (easier on clients' parsers).
MAX_QUOTED = 1024
#: Most field names in one HEADER.FIELDS list (hostile input bound).
MAX_HEADER_FIELDS = 1000
#: Deepest section part number path (``1.2.3...``) accepted.
MAX_SECTION_DEPTH = 100
#: Largest number in a section spec or partial (RFC 9051 §9 ``number`` is 32-bit unsigned).
MAX_NUMBER = 2**32 - 1


class SectionError(ValueError):
    """A malformed section or partial specification (the command gets BAD)."""


class UnknownCTE(ValueError):
    """BINARY of a part whose transfer encoding is unknown (RFC 3516 §4.3: ``NO [UNKNOWN-CTE]``)."""


# -------------------------------------------------------------------------------------
# Strings (RFC 9051 §4.3)
# -------------------------------------------------------------------------------------

_QUOTED_UNSAFE = re.compile(rb"[\x00\r\n]")


def literal(data: bytes, binary: bool = False) -> bytes:
    """``{n}\\r\\n`` + data, or ``~{n}`` (literal8, RFC 3516 §4.4) for BINARY data with NUL.

    A plain literal cannot carry NUL (RFC 9051 §9 ``CHAR8``): outside BINARY each NUL of a
    message stored from a literal8 is sent as 0x80, as Dovecot does, so sizes and partial
    offsets stay those of the stored message.
    """
    if b"\x00" not in data:
        return b"{%d}\r\n" % len(data) + data
    if binary:
        return b"~{%d}\r\n" % len(data) + data
    return b"{%d}\r\n" % len(data) + data.replace(b"\x00", b"\x80")


def _encode_word(text: str) -> str:
    """RFC 2047 encoded words for ``text``: the downgrade of RFC 6855 §7 for clients
    that did not enable UTF8=ACCEPT.  Words stay under 76 characters (RFC 2047 §2) and
    never split a character."""
    words = []
    chunk = ""
    for char in text:
        if len((chunk + char).encode("utf-8")) > 45:
            words.append(chunk)
            chunk = ""
        chunk += char
    if chunk:
        words.append(chunk)
    return " ".join("=?utf-8?b?" + base64.b64encode(w.encode("utf-8")).decode("ascii") + "?=" for w in words)


def imap_string(value: str | bytes, utf8: bool = False, encode_words: bool = False) -> bytes:
    """A string as IMAP ``quoted`` when it can be, else as a literal (RFC 9051 §4.3).

    Quoted strings cannot hold CR, LF or NUL, and hold 8-bit characters only once the
    client enabled UTF8=ACCEPT (RFC 9051 §4.3, RFC 6855 §3).  Without it, 8-bit text is
    either RFC 2047-encoded (``encode_words``: display names, subjects; RFC 6855 §7) or
    sent as a literal.  NUL is never allowed in a non-binary literal, so it is dropped.
    """
    if isinstance(value, str):
        if encode_words and not utf8 and not value.isascii():
            value = _encode_word(value)
        data = value.encode("utf-8", "surrogateescape")
    else:
        data = value
    if b"\x00" in data:
        data = data.replace(b"\x00", b"")
    if len(data) <= MAX_QUOTED and not _QUOTED_UNSAFE.search(data) and (utf8 or data.isascii()):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return literal(data)


def nstring(value: str | bytes | None, utf8: bool = False, encode_words: bool = False) -> bytes:
    """``NIL`` for None, else ``imap_string``."""
    if value is None:
        return b"NIL"
    return imap_string(value, utf8, encode_words)


# -------------------------------------------------------------------------------------
# ENVELOPE (RFC 9051 §7.5.2)
# -------------------------------------------------------------------------------------


def _address(address: Address, utf8: bool) -> bytes:
    return b"(" + b" ".join((
        nstring(address.name, utf8, encode_words=True),
        nstring(address.adl, utf8),
        nstring(address.mailbox, utf8),
        nstring(address.host, utf8),
    )) + b")"


def _address_list(addresses: Sequence[Address], utf8: bool) -> bytes:
    """``NIL`` for an absent field, else a list of addresses (RFC 9051 §7.5.2: an empty
    list is sent as NIL, never as ``()``)."""
    if not addresses:
        return b"NIL"
    return b"(" + b"".join(_address(a, utf8) for a in addresses) + b")"


def format_envelope(env: Envelope, utf8: bool = False) -> bytes:
    """The ENVELOPE of an ``Envelope`` record (also used inside BODYSTRUCTURE)."""
    return b"(" + b" ".join((
        nstring(env.date, utf8),
        nstring(env.subject, utf8, encode_words=True),
        _address_list(env.from_, utf8),
        _address_list(env.sender, utf8),
        _address_list(env.reply_to, utf8),
        _address_list(env.to, utf8),
        _address_list(env.cc, utf8),
        _address_list(env.bcc, utf8),
        nstring(env.in_reply_to, utf8),
        nstring(env.message_id, utf8),
    )) + b")"


def envelope(parsed: ParsedMessage, utf8: bool = False) -> bytes:
    """FETCH ENVELOPE from the envelope cached at ingest (RFC 9051 §7.5.2).

    The strings are the header values as they appear in the message (encoded words not
    decoded, RFC 9051 §7.5.2 "ENVELOPE"); ``sender`` and ``reply-to`` already default to
    ``from`` in the cached record, as the RFC requires.
    """
    return format_envelope(parsed.envelope, utf8)


# -------------------------------------------------------------------------------------
# BODY and BODYSTRUCTURE (RFC 9051 §7.5.2)
# -------------------------------------------------------------------------------------


def _params(params: Sequence[tuple[str, str]], utf8: bool) -> bytes:
    if not params:
        return b"NIL"
    items = []
    for name, value in params:
        items.append(imap_string(name.upper(), utf8))
        items.append(imap_string(value, utf8, encode_words=True))
    return b"(" + b" ".join(items) + b")"


def _disposition(part: Part, utf8: bool) -> bytes:
    if part.disposition is None:
        return b"NIL"
    kind, params = part.disposition
    return b"(" + imap_string(kind.upper(), utf8) + b" " + _params(params, utf8) + b")"


def _language(part: Part, utf8: bool) -> bytes:
    if not part.language:
        return b"NIL"
    if len(part.language) == 1:
        return imap_string(part.language[0], utf8)
    return b"(" + b" ".join(imap_string(tag, utf8) for tag in part.language) + b")"


def _structure(part: Part, extensible: bool, utf8: bool) -> bytes:
    if part.parts:
        # body-type-mpart = 1*body SP media-subtype [SP body-ext-mpart]
        out = b"".join(_structure(child, extensible, utf8) for child in part.parts)
        out += b" " + imap_string(part.subtype.upper(), utf8)
        if extensible:
            out += b" " + b" ".join((
                _params(part.params, utf8),
                _disposition(part, utf8),
                _language(part, utf8),
                nstring(part.location, utf8),
            ))
        return b"(" + out + b")"
    fields = [
        imap_string(part.type.upper(), utf8),
        imap_string(part.subtype.upper(), utf8),
        _params(part.params, utf8),
        nstring(part.id, utf8),
        nstring(part.description, utf8, encode_words=True),
        imap_string(part.encoding.upper(), utf8),
        b"%d" % part.body_size,
    ]
    if part.message is not None:
        # body-type-msg: envelope, body structure and lines of the encapsulated message
        fields.append(format_envelope(part.message.envelope, utf8))
        fields.append(_structure(part.message.body, extensible, utf8))
        fields.append(b"%d" % part.lines)
    elif part.type == "text":
        fields.append(b"%d" % part.lines)
    if extensible:
        fields.extend((
            nstring(part.md5, utf8),
            _disposition(part, utf8),
            _language(part, utf8),
            nstring(part.location, utf8),
        ))
    return b"(" + b" ".join(fields) + b")"


def bodystructure(parsed: ParsedMessage, extensible: bool = True, utf8: bool = False) -> bytes:
    """FETCH BODYSTRUCTURE (``extensible``) or BODY from the structure cached at ingest.

    RFC 9051 §7.5.2: BODY is BODYSTRUCTURE without the extension data (MD5,
    disposition, language, location; multipart parameters).  Type, subtype, parameter
    names and the encoding are sent upper-case, as in the RFC's examples.
    """
    return _structure(parsed.structure, extensible, utf8)


# -------------------------------------------------------------------------------------
# Sections: BODY[...] and BINARY[...] (RFC 9051 §6.4.5, RFC 3516 §4)
# -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SectionSpec:
    """A parsed ``section`` with its optional partial.

    ``part`` is the numeric path (``()`` for the message itself), ``text`` one of
    ``""``, ``"HEADER"``, ``"HEADER.FIELDS"``, ``"HEADER.FIELDS.NOT"``, ``"TEXT"``, ``"MIME"``;
    ``fields`` the header-list names as the client sent them.
    """

    part: tuple[int, ...] = ()
    text: str = ""
    fields: tuple[str, ...] = ()
    partial: tuple[int, int] | None = None
    binary: bool = False

    @property
    def section_text(self) -> str:
        """The section as echoed in the response (``1.HEADER.FIELDS (From To)``)."""
        pieces = [".".join(str(n) for n in self.part)] if self.part else []
        if self.text:
            pieces.append(self.text)
        out = ".".join(pieces)
        if self.fields:
            out += " (" + " ".join(_header_name_text(f) for f in self.fields) + ")"
        return out

    def label(self, peek_removed: bool = True) -> bytes:
        """The FETCH response item name: ``BODY[...]``/``BINARY[...]`` plus ``<origin>``.

        RFC 9051 §7.5.2: BODY.PEEK is answered as BODY; a partial fetch is labelled with
        its origin only.
        """
        name = "BINARY" if self.binary else "BODY"
        out = f"{name}[{self.section_text}]"
        if self.partial is not None:
            out += f"<{self.partial[0]}>"
        return out.encode("utf-8")


def _header_name_text(name: str) -> str:
    if name and all(0x21 <= ord(c) <= 0x7E and c not in '(){%*"\\]' for c in name):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


_NUMBER = re.compile(r"[0-9]+")
_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")


def _number(text: str, what: str, nonzero: bool) -> int:
    if not _NUMBER.fullmatch(text):
        raise SectionError(f"{what} must be a number, not {text!r}")
    value = int(text)
    if value > MAX_NUMBER or (nonzero and value == 0):
        raise SectionError(f"{what} {text} is out of range")
    return value


def _parse_partial(partial: str | None) -> tuple[int, int] | None:
    """``<origin.length>`` (RFC 9051 §6.4.5); the length must be non-zero."""
    if partial is None:
        return None
    text = partial.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    origin, dot, length = text.partition(".")
    if not dot:
        raise SectionError(f"partial {partial!r} must be <origin.length>")
    return _number(origin, "partial origin", False), _number(length, "partial length", True)


def _split_field_list(text: str) -> tuple[str, ...]:
    """The names of a ``header-list`` (``"(" header-fld-name *(SP header-fld-name) ")"``)."""
    text = text.strip()
    if not (text.startswith("(") and text.endswith(")")):
        raise SectionError("HEADER.FIELDS needs a parenthesised list of field names")
    names: list[str] = []
    pos = 1
    body = text[:-1]
    while pos < len(body):
        if body[pos] == " ":
            pos += 1
            continue
        if body[pos] == '"':
            end = pos + 1
            value = []
            while end < len(body) and body[end] != '"':
                if body[end] == "\\" and end + 1 < len(body):
                    end += 1
                value.append(body[end])
                end += 1
            if end >= len(body):
                raise SectionError("unterminated quoted field name")
            name = "".join(value)
            pos = end + 1
        else:
            end = body.find(" ", pos)
            end = len(body) if end < 0 else end
            name = body[pos:end]
            pos = end
        if not _FIELD_NAME.fullmatch(name):
            raise SectionError(f"{name!r} is not a header field name")
        names.append(name)
        if len(names) > MAX_HEADER_FIELDS:
            raise SectionError(f"more than {MAX_HEADER_FIELDS} header field names")
    if not names:
        raise SectionError("HEADER.FIELDS needs at least one field name")
    return tuple(names)


def parse_section(text: str | bytes, partial: str | None = None, binary: bool = False) -> SectionSpec:
    """Parse the text between the brackets of ``BODY[...]``/``BINARY[...]``.

    Grammar of RFC 9051 §9 ``section-spec``; BINARY takes only a ``section-part``
    (RFC 3516 §6).  The header-list may also be given as ``fields`` already split by the
    command parser by passing ``text`` ending in ``HEADER.FIELDS`` plus the list text.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    rest = text.strip()
    fields: tuple[str, ...] = ()
    head, space, tail = rest.partition(" ")
    if space:
        fields = _split_field_list(tail)
        rest = head
    numbers: list[int] = []
    keyword = ""
    for piece in rest.split(".") if rest else []:
        if keyword:
            keyword += "." + piece.upper()
        elif _NUMBER.fullmatch(piece):
            numbers.append(_number(piece, "section part", True))
            if len(numbers) > MAX_SECTION_DEPTH:
                raise SectionError("section part is nested too deep")
        else:
            keyword = piece.upper()
    if binary and keyword:
        raise SectionError("BINARY takes only part numbers")
    allowed = ("", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT") + (("MIME",) if numbers else ())
    if keyword not in allowed:
        raise SectionError(f"unknown section {text!r}")
    if keyword.startswith("HEADER.FIELDS") != bool(fields):
        raise SectionError(f"{keyword or 'section'} {'needs' if not fields else 'takes no'} field list")
    return SectionSpec(tuple(numbers), keyword, fields, _parse_partial(partial), binary)


@dataclass(frozen=True)
class SectionRange:
    """Where the bytes of a section come from.

    Either ``data`` (small, synthesized, already final before the partial window) or the
    blob range ``start``..``start + length``; ``header_fields`` (with ``exclude``) asks
    for HEADER.FIELDS filtering of the range's bytes; ``encoding`` asks for BINARY
    decoding (RFC 3516).  ``size`` is the size before the partial window when it is known
    without reading (None when filtering or decoding must happen first).
    """

    spec: SectionSpec
    start: int = 0
    length: int = 0
    data: bytes | None = None
    header_fields: tuple[str, ...] = ()
    exclude: bool = False
    encoding: str | None = None

    @property
    def label(self) -> bytes:
        return self.spec.label()

    @property
    def streamable(self) -> bool:
        """True when the answer is a plain byte range of the blob (stream it by range)."""
        return self.data is None and not self.header_fields and self.encoding is None

    def window(self) -> tuple[int, int]:
        """For a streamable section: the blob range after the partial window."""
        if self.spec.partial is None:
            return self.start, self.length
        origin, count = self.spec.partial
        origin = min(origin, self.length)
        return self.start + origin, min(count, self.length - origin)


def filter_header(block: bytes, names: Sequence[str], exclude: bool = False) -> bytes:
    """HEADER.FIELDS (or ``.NOT`` with ``exclude``) of a raw header block.

    RFC 9051 §6.4.5: fields are matched by name case-insensitively and returned in the
    order they appear, folded lines intact; the blank line that ends the header is kept
    whenever the original had one.
    """
    wanted = {n.lower().encode("ascii", "replace") for n in names}
    out: list[bytes] = []
    keep = False
    ending = b""
    for line in block.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            ending = line
            break
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
            continue
        name = line.split(b":", 1)[0].rstrip(b" \t").lower()
        keep = (name in wanted) != exclude
        if keep:
            out.append(line)
    if out and not out[-1].endswith(b"\n"):
        out[-1] += b"\r\n"
    return b"".join(out) + (b"\r\n" if ending else b"")


def _header_section(spec: SectionSpec, entity: Part, cached: bytes | None) -> SectionRange:
    """HEADER / HEADER.FIELDS[.NOT] of ``entity``; the top-level header cached at ingest
    is used when it is complete (``MAX_HEADER_CACHE``), else its range of the blob."""
    length = entity.body_start - entity.start
    if cached is not None and len(cached) == length:
        if spec.text == "HEADER":
            return SectionRange(spec, data=cached)
        return SectionRange(spec, data=filter_header(cached, spec.fields, spec.text.endswith(".NOT")))
    if spec.text == "HEADER":
        return SectionRange(spec, entity.start, length)
    return SectionRange(spec, entity.start, length, header_fields=spec.fields,
                        exclude=spec.text.endswith(".NOT"))


def body_section(parsed: ParsedMessage, spec: SectionSpec) -> SectionRange:
    """Resolve a section against the structure cached at ingest (RFC 9051 §6.4.5).

    * ``[]`` is the whole message; ``[HEADER]``/``[TEXT]`` its header and body;
    * ``[n.m]`` the body of that part (for a message/rfc822 part: the whole encapsulated
      message); ``[n.MIME]`` the part's own MIME header;
    * ``[n.HEADER]``, ``[n.TEXT]``, ``[n.HEADER.FIELDS ...]`` address the message inside
      a message/rfc822 (or message/global) part n.  For any other part they are empty,
      as is a part number that does not exist (RFC 9051 §6.4.5: "a non-existent part
      returns an empty string", as Dovecot does).
    """
    top = parsed.structure
    if not spec.part:
        if spec.text == "":
            return SectionRange(spec, 0, parsed.size)
        if spec.text == "TEXT":
            return SectionRange(spec, top.body_start, top.end - top.body_start)
        return _header_section(spec, top, parsed.header)
    part = parsed.part_at(spec.part)
    if part is None:
        return SectionRange(spec, data=b"")
    if spec.text == "":
        encoding = None
        if spec.binary and not part.parts and part.message is None:
            encoding = part.encoding.upper()
            if encoding in ("7BIT", "8BIT", "BINARY"):
                encoding = None
        return SectionRange(spec, part.body_start, part.end - part.body_start, encoding=encoding)
    if spec.text == "MIME":
        # The header of a top-level non-multipart body is the message header itself.
        cached = parsed.header if part.start == top.start else None
        return _mime_section(spec, part, cached)
    if part.message is None:
        return SectionRange(spec, data=b"")
    inner = part.message.body
    if spec.text == "TEXT":
        return SectionRange(spec, inner.body_start, inner.end - inner.body_start)
    return _header_section(spec, inner, None)


def _mime_section(spec: SectionSpec, part: Part, cached: bytes | None) -> SectionRange:
    length = part.body_start - part.start
    if cached is not None and len(cached) == length:
        return SectionRange(spec, data=cached)
    return SectionRange(spec, part.start, length)


def _decode(data: bytes, encoding: str) -> bytes:
    if encoding == "BASE64":
        # RFC 2045 §6.8: characters outside the alphabet are ignored
        cleaned = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
        cleaned = cleaned[: len(cleaned) - len(cleaned) % 4] if len(cleaned) % 4 == 1 else cleaned
        try:
            return base64.b64decode(cleaned + b"=" * (-len(cleaned) % 4))
        except binascii.Error as exc:
            raise UnknownCTE(str(exc)) from exc
    if encoding == "QUOTED-PRINTABLE":
        return binascii.a2b_qp(data)
    raise UnknownCTE(f"unknown Content-Transfer-Encoding {encoding}")


ReadBlob = Callable[[int, int], Awaitable[bytes]]


async def read_section(section: SectionRange, read_blob: ReadBlob) -> bytes:
    """The final bytes of a section: read, filtered, decoded, then cut to the partial.

    ``read_blob(offset, length)`` returns the blob's bytes (a Deferred or coroutine; the
    core reads them off the reactor thread).  For a streamable section only the partial
    window is read.
    """
    if section.streamable:
        start, length = section.window()
        return await read_blob(start, length) if length > 0 else b""
    if section.data is not None:
        data = section.data
    else:
        data = await read_blob(section.start, section.length) if section.length else b""
        if section.header_fields:
            data = filter_header(data, section.header_fields, section.exclude)
        if section.encoding is not None:
            try:
                data = _decode(data, section.encoding)
            except UnknownTransferEncodingError as exc:
                raise UnknownCTE(str(exc)) from exc
    if section.spec.partial is not None:
        origin, count = section.spec.partial
        data = data[origin:origin + count]
    return data


async def binary_size(parsed: ParsedMessage, spec: SectionSpec, read_blob: ReadBlob) -> int:
    """BINARY.SIZE[part] (RFC 3516 §4.2): the size of the part after decoding.

    Identity encodings need no read; base64 and quoted-printable parts are decoded.
    """
    section = body_section(parsed, SectionSpec(spec.part, binary=True))
    if section.streamable:
        return section.length
    return len(await read_section(section, read_blob))


_SECTION_ITEM = re.compile(r"(BODY|BODY\.PEEK|BINARY|BINARY\.PEEK|BINARY\.SIZE)\[(.*)\](<[0-9]+\.[0-9]+>)?",
                           re.IGNORECASE | re.DOTALL)


def parse_section_item(atom: str) -> tuple[str, bool, SectionSpec]:
    """Split a FETCH attribute atom such as ``BODY.PEEK[HEADER.FIELDS (FROM)]<0.2048>``.

    Returns ``(name, peek, spec)`` with ``name`` one of ``BODY``, ``BINARY``,
    ``BINARY.SIZE`` (RFC 9051 §6.4.5, RFC 3516 §4).  BINARY.SIZE takes no partial.
    """
    match = _SECTION_ITEM.fullmatch(atom)
    if match is None:
        raise SectionError(f"{atom!r} is not a section fetch item")
    kind = match.group(1).upper()
    peek = kind.endswith(".PEEK")
    name = kind.removesuffix(".PEEK")
    binary = name.startswith("BINARY")
    if name == "BINARY.SIZE" and match.group(3):
        raise SectionError("BINARY.SIZE takes no partial")
    return name, peek, parse_section(match.group(2), match.group(3), binary)
