"""The structure scanner: one forward pass over a message that finds every MIME part.

Multipart bodies are split at boundary delimiter lines (RFC 2046 §5.1.1) and
message/rfc822 and message/global bodies (RFC 6532 §3.5) are parsed as messages, with the
byte offsets of every header and body recorded in the ``Part`` tree.
"""

from __future__ import annotations

from typing import NamedTuple

from mailserve.core.mime.addresses import _envelope
from mailserve.core.mime.content_fields import _content_type, _disposition, _encoding, _language, _location
from mailserve.core.mime.headers import _field, _header_fields, _scan_header
from mailserve.core.mime.limits import MAX_DEPTH, MAX_PARTS
from mailserve.core.mime.records import EncapsulatedMessage, Part


def _count_lines(raw: bytes, start: int, end: int) -> int:
    """Lines of a body: its line breaks, plus one for a last line without a break."""
    if end <= start:
        return 0
    lines = raw.count(b"\n", start, end)
    if raw[end - 1] != 0x0A:
        lines += 1
    return lines


class _Delimiter(NamedTuple):
    """A boundary delimiter line found in the message."""

    line_start: int
    next_line: int
    level: int  # the depth of the multipart whose boundary it is
    is_close: bool


#: Whitespace allowed after a delimiter (RFC 2046 §5.1.1 transport padding), bounded.
_MAX_PADDING = 1024

Boundaries = dict[bytes, int]


class _StructureScanner:
    """One parse of one message: a single forward pass with a stack of open boundaries.

    Every multipart pushes its boundary; a delimiter line is attributed to the innermost
    open multipart with that boundary, so a nested multipart that reuses its parent's
    boundary (old Outlook Express does) still gets its own parts, as in Dovecot.  A
    delimiter of an outer multipart ends every entity inside it, which handles missing
    close delimiters.  Each byte is looked at about once.
    """

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.size = len(raw)
        self.parts_left = MAX_PARTS
        self.longest_boundary = 0

    # -- delimiters --------------------------------------------------------------------
    def delimiter_at(self, line_start: int, boundaries: Boundaries) -> _Delimiter | None:
        """The delimiter on the line at ``line_start``, if it is one (RFC 2046 §5.1.1).

        ``--boundary`` followed only by whitespace, or ``--boundary--`` (close), also
        followed only by whitespace; ``--boundaryX`` is not a delimiter of ``boundary``.
        """
        raw = self.raw
        newline = raw.find(b"\n", line_start, line_start + self.longest_boundary + _MAX_PADDING)
        if newline < 0:
            if self.size - line_start > self.longest_boundary + _MAX_PADDING:
                return None
            line_end = next_line = self.size
        else:
            line_end, next_line = newline, newline + 1
        token = raw[line_start + 2:line_end].rstrip(b" \t\r")
        level = boundaries.get(token)
        if level is not None:
            return _Delimiter(line_start, next_line, level, False)
        if token.endswith(b"--"):
            level = boundaries.get(token[:-2])
            if level is not None:
                return _Delimiter(line_start, next_line, level, True)
        return None

    def next_delimiter(self, pos: int, boundaries: Boundaries) -> _Delimiter | None:
        """The first delimiter of any open boundary on a line at or after ``pos``."""
        if not boundaries:
            return None
        raw = self.raw
        if raw.startswith(b"--", pos):
            found = self.delimiter_at(pos, boundaries)
            if found is not None:
                return found
        while True:
            candidate = raw.find(b"\n--", pos)
            if candidate < 0:
                return None
            found = self.delimiter_at(candidate + 1, boundaries)
            if found is not None:
                return found
            pos = candidate + 1

    def end_before(self, stop: _Delimiter | None, lower: int) -> int:
        """Where an entity ends: before the line break that precedes ``stop``.

        RFC 2046 §5.1.1: that line break is conceptually part of the delimiter.
        """
        if stop is None:
            return self.size
        end = stop.line_start
        if end > lower and self.raw[end - 1] == 0x0A:
            end -= 1
            if end > lower and self.raw[end - 1] == 0x0D:
                end -= 1
        return end

    # -- entities ------------------------------------------------------------------------
    def header(self, start: int, boundaries: Boundaries) -> tuple[int, dict[str, bytes]]:
        """``(body_start, fields)`` of the header block at ``start``.

        A delimiter line ends the header too (a boundary may contain a colon, so such a
        line can look like a field).
        """
        raw = self.raw
        fields_end, body_start = _scan_header(raw, start, self.size)
        if boundaries and fields_end > start:
            line_start = start
            if not raw.startswith(b"--", start):
                newline = raw.find(b"\n--", start, fields_end)
                line_start = fields_end if newline < 0 else newline + 1
            while line_start < fields_end:
                if self.delimiter_at(line_start, boundaries) is not None:
                    fields_end = body_start = line_start
                    break
                newline = raw.find(b"\n--", line_start, fields_end)
                line_start = fields_end if newline < 0 else newline + 1
        return body_start, _header_fields(raw, start, fields_end)

    def entity(self, start: int, boundaries: Boundaries, depth: int,
               default: tuple[str, str] = ("text", "plain"),
               ) -> tuple[Part, dict[str, bytes], _Delimiter | None]:
        """Parse the entity at ``start``; return it, its header fields, and the delimiter
        that ended it (None at the end of the message)."""
        raw = self.raw
        body_start, fields = self.header(start, boundaries)
        type_, subtype, params, _valid = _content_type(fields, default)
        encoding = _encoding(fields)
        children: tuple[Part, ...] = ()
        message: EncapsulatedMessage | None = None
        boundary = dict(params).get("boundary", "") if type_ == "multipart" else ""

        if type_ == "multipart" and (not boundary or depth >= MAX_DEPTH):
            if boundary:  # too deep: keep the bytes, drop the structure
                type_, subtype, params = "application", "octet-stream", ()
            else:  # RFC 2046 §5.1.1 requires a boundary; treat as text, as Dovecot does
                type_, subtype, params = "text", "plain", (("charset", "us-ascii"),)
        elif type_ == "message" and subtype in ("rfc822", "global") and depth >= MAX_DEPTH:
            type_, subtype, params = "application", "octet-stream", ()

        if type_ == "multipart":
            child_default = ("message", "rfc822") if subtype == "digest" else ("text", "plain")
            children, end, stop = self.multipart(
                boundary.encode("utf-8", "surrogateescape"), body_start, boundaries, depth,
                child_default,
            )
        elif (type_ == "message" and subtype in ("rfc822", "global")
              and encoding in ("7BIT", "8BIT", "BINARY")):
            inner, inner_fields, stop = self.entity(body_start, boundaries, depth + 1)
            end = inner.end
            message = EncapsulatedMessage(_envelope(inner_fields), inner)
        else:
            stop = self.next_delimiter(body_start, boundaries)
            end = self.end_before(stop, body_start)

        part = Part(
            start=start,
            body_start=body_start,
            end=end,
            type=type_,
            subtype=subtype,
            params=params,
            id=_field(fields, "content-id"),
            description=_field(fields, "content-description"),
            encoding=encoding,
            disposition=_disposition(fields),
            language=_language(fields),
            location=_location(fields),
            md5=_field(fields, "content-md5"),
            body_size=end - body_start,
            lines=_count_lines(raw, body_start, end),
            parts=children,
            message=message,
        )
        return part, fields, stop

    def multipart(self, boundary: bytes, body_start: int, outer: Boundaries, depth: int,
                  default: tuple[str, str],
                  ) -> tuple[tuple[Part, ...], int, _Delimiter | None]:
        """The parts of a multipart body (RFC 2046 §5.1.1); also its end and stop."""
        self.longest_boundary = max(self.longest_boundary, len(boundary))
        boundaries = {**outer, boundary: depth}
        children: list[Part] = []
        found = self.next_delimiter(body_start, boundaries)
        # the preamble runs up to the first delimiter
        while found is not None and found.level == depth and not found.is_close:
            if self.parts_left <= 0:
                break  # budget spent: the rest stays unparsed in this multipart's body
            self.parts_left -= 1
            child, _fields, found = self.entity(found.next_line, boundaries, depth + 1, default)
            children.append(child)
        if found is not None and found.level == depth:
            # after the close delimiter (or past the budget): the epilogue, up to the next
            # delimiter of an enclosing multipart
            stop = self.next_delimiter(found.next_line, outer)
        else:
            stop = found  # an enclosing multipart's delimiter, or the end: no close
        end = self.end_before(stop, body_start)
        if not children:
            children.append(Part(start=end, body_start=end, end=end,
                                 params=(("charset", "us-ascii"),)))
        return tuple(children), end, stop
