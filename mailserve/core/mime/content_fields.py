"""Structured MIME fields: Content-Type and friends (RFC 2045, RFC 2183, RFC 2231).

Turns the raw values of Content-Type, Content-Disposition, Content-Language,
Content-Transfer-Encoding and Content-Location into the parts of an IMAP BODYSTRUCTURE,
with RFC 2231 parameter continuations and charsets decoded and the RFC 2045 defaults
applied where a field is missing or unparseable.
"""

from __future__ import annotations

import re

from mailserve.core.mime.charsets import _decode_bytes
from mailserve.core.mime.headers import _field
from mailserve.core.mime.lexical import _read_quoted, _skip_cfws, _strip_comments
from mailserve.core.mime.limits import MAX_PARAMS
from mailserve.core.mime.records import Params

_TOKEN_END = re.compile(r'[\s;="()]')


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
