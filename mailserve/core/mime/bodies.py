"""What is read out of part bodies: decoded bytes, text for the index and preview, attachments.

IMAP BINARY (RFC 3516) wants a body with its transfer encoding undone; the search indexer
and the JMAP preview (RFC 8621 §4.1.4) want the readable text of a message; JMAP
``hasAttachment`` wants to know whether anything else is there.
"""

from __future__ import annotations

from collections.abc import Iterator

from mailserve.core.mime.charsets import _decode_bytes
from mailserve.core.mime.html_text import html_to_text
from mailserve.core.mime.limits import PREVIEW_LENGTH, PREVIEW_SCAN
from mailserve.core.mime.records import ParsedMessage, Part
from mailserve.core.mime.transfer import UnknownTransferEncodingError, _decode_transfer


def decode_part_body(raw: bytes, part: Part) -> bytes:
    """The body of ``part`` with its Content-Transfer-Encoding undone (RFC 2045 §6).

    For IMAP BINARY (RFC 3516).  Raises ``UnknownTransferEncodingError`` for an encoding
    RFC 2045 does not define, which IMAP reports as ``[UNKNOWN-CTE]``.
    """
    return _decode_transfer(raw[part.body_start:part.end], part.encoding)


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
