"""Charsets: the Python codec for a MIME charset label, and decoding that never fails.

Mail arrives labelled with every charset name in use, often wrongly (``us-ascii`` text with
Windows-1252 bytes); decoding follows what browsers and mail clients do rather than
rejecting the message.
"""

from __future__ import annotations

import codecs

#: Charset labels that deserve a superset decoder, as browsers do (WHATWG Encoding).
_CHARSET_ALIASES = {
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "iso-8859-9": "cp1254",
    "tis-620": "cp874",
    "shift_jis": "cp932",
    "x-sjis": "cp932",
    "utf8": "utf-8",
    "unicode-1-1-utf-7": "utf-7",
    "x-unknown": "utf-8",
    "unknown-8bit": "utf-8",
}


def _codec(charset: str | None) -> str:
    """A Python codec for a MIME charset label; unknown labels decode as UTF-8."""
    if not charset:
        return "utf-8"
    label = charset.strip().strip('"').lower()
    label = label.split("*", 1)[0]  # RFC 2231 §5 language suffix
    label = _CHARSET_ALIASES.get(label, label)
    try:
        return codecs.lookup(label).name
    except (LookupError, ValueError):
        return "utf-8"


def _decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode with the charset's codec, replacing what does not decode."""
    codec = _codec(charset)
    try:
        return data.decode(codec, "replace")
    except Exception:  # noqa: BLE001 - some codecs raise odd errors on garbage
        return data.decode("utf-8", "replace")
