"""The two ways a search program is refused: BAD (malformed) and NO [BADCHARSET]."""

from __future__ import annotations

#: Charsets SEARCH accepts (RFC 9051 §6.4.4: UTF-8 is required; US-ASCII is its subset).
SUPPORTED_CHARSETS = ("UTF-8", "US-ASCII")


class SearchSyntaxError(ValueError):
    """The search program is malformed: the command is answered BAD with this text."""


class BadCharset(ValueError):
    """An unsupported CHARSET: ``NO [BADCHARSET (UTF-8 US-ASCII)]`` (RFC 9051 §7.1)."""

    def __init__(self, charset: str) -> None:
        super().__init__(f"charset {charset} is not supported")
        self.charset = charset
        self.supported = SUPPORTED_CHARSETS
