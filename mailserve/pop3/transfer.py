"""Streaming a stored message as a POP3 multi-line response (RFC 1939 §3).

A multi-line response is CRLF-terminated lines; a line starting with "." is sent with one more
"." ("byte-stuffed"), and the response ends with ".CRLF" on a line of its own. Stored messages
may have bare LF line ends (see ``maildrop.transmitted_size``), which are sent as CRLF so that
clients see proper lines and the sizes LIST announced hold. The encoder keeps a little state
between chunks, so a message of any size is sent in bounded memory.
"""

from __future__ import annotations

import re

_BARE_LF = re.compile(rb"(?<!\r)\n")

TERMINATOR = b".\r\n"


class MultilineEncoder:
    """Turn message bytes, fed in chunks of any size, into the body of a multi-line response."""

    def __init__(self) -> None:
        self._at_line_start = True
        self._pending_cr = False

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        if self._pending_cr:
            chunk = b"\r" + chunk
            self._pending_cr = False
        if chunk.endswith(b"\r"):
            # The CR may be the first half of a CRLF split between chunks: decide later.
            chunk = chunk[:-1]
            self._pending_cr = True
            if not chunk:
                return b""
        chunk = _BARE_LF.sub(b"\r\n", chunk)
        stuffed = chunk.replace(b"\r\n.", b"\r\n..")
        if self._at_line_start and stuffed.startswith(b"."):
            stuffed = b"." + stuffed
        self._at_line_start = stuffed.endswith(b"\r\n")
        return stuffed

    def finish(self) -> bytes:
        """The rest of the response: any held CR, a final CRLF if the message lacks one, ".CRLF"."""
        tail = b""
        if self._pending_cr:
            self._pending_cr = False
            tail = b"\r\n"  # a message ending in a lone CR: that CR ends its last line
            self._at_line_start = True
        if not self._at_line_start:
            tail += b"\r\n"
        return tail + TERMINATOR


def count_lines(data: bytes) -> int:
    """Line ends in ``data`` (LF, whether or not preceded by CR)."""
    return data.count(b"\n")


def cut_after_lines(data: bytes, lines: int) -> bytes:
    """``data`` up to and including its ``lines``-th line end (all of it if it has fewer)."""
    position = -1
    for _ in range(lines):
        position = data.find(b"\n", position + 1)
        if position < 0:
            return data
    return data[: position + 1]
