"""Addresses (RFC 5322 §3.4) in IMAP envelope form, and the envelope of a header block.

IMAP ENVELOPE (RFC 3501 §7.4.2) lists addresses as (name, adl, mailbox, host) with group
markers, so address lists are parsed into that form directly, tolerant of the damaged
syntax real mail carries.
"""

from __future__ import annotations

import re

from mailserve.core.mime.headers import _field
from mailserve.core.mime.lexical import _comment_end, _read_quoted
from mailserve.core.mime.limits import MAX_FIELD_VALUE
from mailserve.core.mime.records import Address, AddressList, Envelope

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
