"""The entry point: parse a raw message once, at ingest, into a ``ParsedMessage``."""

from __future__ import annotations

from mailserve.core.mime.addresses import _envelope
from mailserve.core.mime.bodies import _has_attachment, _preview
from mailserve.core.mime.headers import _field
from mailserve.core.mime.limits import MAX_HEADER_CACHE
from mailserve.core.mime.message_keys import _message_id, base_subject, parse_date, parse_message_ids
from mailserve.core.mime.records import ParsedMessage
from mailserve.core.mime.scanner import _StructureScanner


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
