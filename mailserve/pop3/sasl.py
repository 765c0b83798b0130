"""SASL PLAIN (RFC 4616) for the protocols that offer it: POP3 ``AUTH`` and ManageSieve ``AUTHENTICATE``.

Only the message format lives here; each protocol frames challenges and responses its own way
(RFC 5034 §4 base64 lines for POP3, RFC 5804 §2.1 strings for ManageSieve).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

#: RFC 4616 §2 limits each of authzid, authcid and passwd to 255 octets.
MAX_FIELD_OCTETS = 255
#: Largest base64 response worth decoding: three fields of 255 octets, two NULs, base64 overhead.
MAX_ENCODED_RESPONSE = 4 * ((3 * MAX_FIELD_OCTETS + 2 + 2) // 3)


class SASLError(Exception):
    """The client's SASL response is malformed; ``str()`` is fit to send back."""


@dataclass(frozen=True)
class PlainCredentials:
    """What a PLAIN response carries (RFC 4616 §2)."""

    authzid: str
    authcid: str
    password: str


def decode_base64(text: str | bytes) -> bytes:
    """Strict base64 (RFC 4648 §4) as RFC 5034 §4 and RFC 5804 §2.1 require; ``=`` alone is empty."""
    if isinstance(text, str):
        try:
            text = text.encode("ascii")
        except UnicodeEncodeError:
            raise SASLError("response is not base64") from None
    text = text.strip()
    if text == b"=":
        return b""
    if len(text) > MAX_ENCODED_RESPONSE:
        raise SASLError("response too long")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SASLError("response is not valid base64") from None


def parse_plain(message: bytes) -> PlainCredentials:
    """Split ``[authzid] NUL authcid NUL passwd`` (RFC 4616 §2), all UTF-8.

    An authorization identity different from the authentication identity would be a proxy
    login, which mailserve does not grant, so it is refused here (RFC 4616 §2: the server
    "MUST verify that the authcid is authorized to act as the authzid").
    """
    fields = message.split(b"\x00")
    if len(fields) != 3:
        raise SASLError("malformed PLAIN response")
    if any(len(f) > MAX_FIELD_OCTETS for f in fields):
        raise SASLError("PLAIN response field too long")
    try:
        authzid, authcid, password = (f.decode("utf-8") for f in fields)
    except UnicodeDecodeError:
        raise SASLError("PLAIN response is not UTF-8") from None
    if not authcid or not password:
        raise SASLError("empty user name or password")
    if authzid and authzid != authcid:
        raise SASLError("authorization as another user is not permitted")
    return PlainCredentials(authzid, authcid, password)
