"""Header blocks: where a header ends, its fields, and a field's value as text.

Scanned directly on the raw bytes (RFC 5322 §2.1-§2.2) because the structure needs the
byte offset where each header block ends, which Python's ``email`` package does not give.
"""

from __future__ import annotations

import re

from mailserve.core.mime.limits import MAX_FIELD_VALUE, MAX_FIELDS

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
