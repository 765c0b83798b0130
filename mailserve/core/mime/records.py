"""The stored records: what a parse produces and what metadata keeps (``ParsedMessage``).

These records are what the access protocols read instead of re-parsing the message:
IMAP ENVELOPE and BODYSTRUCTURE (RFC 3501 §7.4.2) are rendered from ``Envelope`` and
``Part``, IMAP sections are resolved by ``Part.part_at`` (RFC 3501 §6.4.5), and
``ParsedMessage.to_wire`` / ``from_wire`` are the compact form the metadata store holds.
Why everything is derived once, at ingest, is told in the docstring of
:mod:`mailserve.core.mime`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from mailserve.core.mime.encoded_words import decode_header_text

#: Format of ``ParsedMessage.to_wire``; bump when the layout changes.
WIRE_VERSION = 1

Params = tuple[tuple[str, str], ...]


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
