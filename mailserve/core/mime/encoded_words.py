"""Encoded words (RFC 2047) in unstructured header text, decoded as mail clients decode them."""

from __future__ import annotations

import re

from mailserve.core.mime.charsets import _codec, _decode_bytes
from mailserve.core.mime.transfer import _decode_base64

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
