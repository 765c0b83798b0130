"""Transfer encodings (RFC 2045 §6): undoing base64 and quoted-printable on raw bytes.

Decoding is as tolerant as mail clients are (junk in base64 ignored, padding repaired),
because stored mail is often damaged; only an encoding RFC 2045 does not define is an
error, which IMAP BINARY reports as ``[UNKNOWN-CTE]`` (RFC 3516 §4.3).
"""

from __future__ import annotations

import binascii


class UnknownTransferEncodingError(ValueError):
    """The part's Content-Transfer-Encoding is not one RFC 2045 §6 defines.

    IMAP BINARY answers such a part with ``[UNKNOWN-CTE]`` (RFC 3516 §4.3).
    """


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
