"""Converting a message for a peer: 7 bits without 8BITMIME (RFC 6152 §3), short lines always.

RFC 6152 §3 leaves an SMTP client that holds 8-bit data and meets a server without the
8BITMIME extension two choices: convert the message to 7 bits following MIME (RFC 2045,
RFC 2046), or return it as undeliverable.  Postfix converts (``disable_mime_output_conversion
= no``); so do we, entity by entity, keeping the MIME structure valid.  The same conversion
shortens lines over 998 octets, which no peer has to accept (RFC 5321 §4.5.3.1.6) but which
our own listener does take (``smtp.max_line_length``); Postfix breaks such lines by inserting
line ends (``smtp_line_length_limit``), which damages the content, while re-encoding does not.

Which entities are converted: those holding 8-bit octets when the peer has no 8BITMIME, and
those holding over-long lines in any case.  How:

* a leaf ``text/*`` part (declared ``8bit``, ``7bit`` or nothing) is re-encoded as
  quoted-printable (RFC 2045 §6.7), which keeps its line structure readable; any other leaf
  type is re-encoded as base64 (RFC 2045 §6.8);
* ``multipart/*`` (RFC 2046 §5.1) is walked part by part; when 8-bit parts were converted its
  own Content-Transfer-Encoding becomes ``7bit``, the only encodings a multipart may carry
  being the identities (RFC 2045 §6.4).  A preamble or epilogue that would need conversion,
  which readers ignore anyway (RFC 2046 §5.1.1), is dropped;
* ``message/rfc822`` (RFC 2046 §5.2.1) may not be encoded itself, so the embedded message
  is converted in turn; ``message/global`` (RFC 6532 §3.5) may be, and is base64-encoded;
* a message without MIME-Version (plain RFC 5322 text) becomes a MIME ``text/plain``
  message, charset ``utf-8`` when the bytes are UTF-8 (or ``us-ascii``) and ``unknown-8bit``
  (RFC 1428) when they are not;
* without 8BITMIME, unstructured header fields holding 8-bit UTF-8 (Subject, Comments,
  Content-Description) are rewritten as encoded-words (RFC 2047 §5(1)); other 8-bit header
  fields are left as they are, as Postfix leaves them: rewriting addresses would change what
  the recipient sees.  Over-long header lines are folded at a space where there is one
  (RFC 5322 §2.2.3), else broken as Postfix breaks them.

Sloppy senders put raw 8-bit octets into parts labelled quoted-printable or base64, or
base64 without line breaks; those are repaired the way lenient readers decode them (octets
encoded as ``=XX``, dropped from base64 where decoders skip them anyway, base64 re-wrapped).

What cannot be converted makes :class:`ConversionImpossible` (5.6.3, "conversion required but
not supported", RFC 3463 §3.7): a part declared ``binary`` (its line ends are not line ends,
RFC 3030 §3), a part in an encoding we do not know, ``message/partial`` or
``message/external-body`` (which RFC 2046 §5.2.2-5.2.3 restricts to 7bit), a multipart
without a boundary, or nesting deeper than :data:`MAX_NESTING`.  The queue bounces such a
message with that status when the peer lacks 8BITMIME, and otherwise falls back to breaking
its long lines (:func:`break_long_lines`).

The input is a wire message: CRLF line ends, as the SMTP session and the queue store it.
"""

from __future__ import annotations

import base64
import binascii
import email.header
import email.parser
import email.policy
import re

__all__ = [
    "MAX_LINE",
    "MAX_NESTING",
    "ConversionImpossible",
    "break_long_lines",
    "convert_for_peer",
    "downgrade_to_7bit",
    "has_8bit",
    "has_long_lines",
    "needs_conversion",
]

#: MIME nesting depth we follow (Postfix's ``mime_nesting_limit`` is 100).
MAX_NESTING = 100
#: RFC 2045 §6.7 rule 5: encoded lines are at most 76 characters.
QP_LINE = 76
#: RFC 5321 §4.5.3.1.6: a line of message text is at most 998 octets before its CRLF.
MAX_LINE = 998

_CRLF = b"\r\n"
_UNSTRUCTURED = frozenset({b"subject", b"comments", b"content-description"})
_IDENTITY = frozenset({"", "7bit", "8bit"})
_EIGHT_BIT = re.compile(rb"[\x80-\xff]+")
#: A line of more than MAX_LINE octets before its CRLF (the CR is one of the 999+ non-LF octets).
_LONG_LINE = re.compile(rb"[^\n]{%d,}" % (MAX_LINE + 2))
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")


class ConversionImpossible(Exception):
    """The message needs 8BITMIME and cannot be converted to 7 bits (RFC 3463 5.6.3)."""

    status = "5.6.3"


def has_8bit(data: bytes) -> bool:
    """Whether ``data`` holds any octet above 127 (RFC 6152 §2 "8-bit data")."""
    return not data.isascii()


def has_long_lines(data: bytes) -> bool:
    """Whether a line of ``data`` is longer than RFC 5321 §4.5.3.1.6 allows (998 octets)."""
    return _LONG_LINE.search(data) is not None


def needs_conversion(message: bytes, allow_8bit: bool) -> bool:
    """Whether :func:`convert_for_peer` would change ``message`` for such a peer."""
    return (not allow_8bit and has_8bit(message)) or has_long_lines(message)


def convert_for_peer(message: bytes, allow_8bit: bool) -> bytes:
    """``message`` made fit for a peer with (``allow_8bit``) or without 8BITMIME.

    A message that needs nothing comes back unchanged (the same object).
    """
    if not needs_conversion(message, allow_8bit):
        return message
    return _Conversion(allow_8bit).message(message, 0)


def downgrade_to_7bit(message: bytes) -> bytes:
    """``message`` with every 8-bit entity re-encoded in 7 bits (see the module docstring)."""
    return convert_for_peer(message, allow_8bit=False)


def break_long_lines(message: bytes) -> bytes:
    """Postfix's last resort (``smtp_line_length_limit``): break every line over 998 octets by
    inserting CRLF and a space, so that header fields stay folded and nothing is lost."""
    if not has_long_lines(message):
        return message
    out = []
    for line in message.split(_CRLF):
        while len(line) > MAX_LINE:
            out.append(line[:MAX_LINE])
            line = b" " + line[MAX_LINE:]
        out.append(line)
    return _CRLF.join(out)


# -- entities ---------------------------------------------------------------------------------------
class _Conversion:
    """One conversion: which content needs it depends on whether the peer takes 8-bit data."""

    def __init__(self, allow_8bit: bool) -> None:
        self.allow_8bit = allow_8bit

    def needs(self, data: bytes) -> bool:
        return needs_conversion(data, self.allow_8bit)

    def fields(self, fields: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        if not self.allow_8bit:
            fields = _encode_unstructured(fields)
        return _fold_long_fields(fields)

    def message(self, message: bytes, depth: int) -> bytes:
        """A whole message (top level, or inside message/rfc822), MIME or not."""
        header, body = _split_entity(message)
        fields = _parse_fields(header)
        if _field(fields, b"mime-version") is not None:
            return self.entity(fields, body, "text/plain", depth)
        if _field(fields, b"content-type") is not None or _field(fields, b"content-transfer-encoding") is not None:
            # MIME fields without MIME-Version: read as MIME anyway, as every reader does.
            return self.entity(fields + [(b"MIME-Version", b"MIME-Version: 1.0\r\n")], body, "text/plain", depth)
        fields = self.fields(fields)
        if not self.needs(body):
            return _join(fields, body)
        charset = "us-ascii" if not has_8bit(body) else "utf-8" if _is_utf8(body) else "unknown-8bit"
        fields += [
            (b"MIME-Version", b"MIME-Version: 1.0\r\n"),
            (b"Content-Type", f"Content-Type: text/plain; charset={charset}\r\n".encode()),
            (b"Content-Transfer-Encoding", b"Content-Transfer-Encoding: quoted-printable\r\n"),
        ]
        return _join(fields, _quoted_printable(body))

    def entity(self, fields: list[tuple[bytes, bytes]], body: bytes, default_type: str, depth: int) -> bytes:
        """One MIME entity (header fields already parsed), converted."""
        if depth > MAX_NESTING:
            raise ConversionImpossible(f"MIME nesting deeper than {MAX_NESTING} levels")
        fields = self.fields(fields)
        if not self.needs(body):
            return _join(fields, body)
        content_type, boundary = _content_type(fields, default_type)
        encoding = _transfer_encoding(fields)
        if encoding == "binary":
            raise ConversionImpossible("a part with Content-Transfer-Encoding binary cannot be sent as 7 bits")
        if encoding == "quoted-printable":
            # Raw 8-bit octets are invalid here (RFC 2045 §6.7 rule 1 would have encoded them);
            # lenient readers take them literally, so encoding them keeps what those readers see.
            body = _EIGHT_BIT.sub(lambda match: b"".join(b"=%02X" % octet for octet in match.group()), body)
            if has_long_lines(body):
                raise ConversionImpossible("a quoted-printable part with lines over 998 octets")
            return _join(fields, body)
        if encoding == "base64":
            # Octets outside the base64 alphabet are ignored by decoders (RFC 2045 §6.8): drop
            # them, and give what is left lines of 76 characters again.
            return _join(fields, _rewrap_base64(body))
        if encoding not in _IDENTITY:
            raise ConversionImpossible(f"a part in {encoding} encoding cannot be converted")
        major, _, minor = content_type.partition("/")
        if major == "multipart":
            if not boundary:
                raise ConversionImpossible("multipart entity without a boundary")
            body = self.multipart(body, boundary, "message/rfc822" if minor == "digest" else "text/plain", depth)
            return _join(fields if has_8bit(body) else _set_encoding(fields, "7bit"), body)
        if content_type == "message/rfc822":
            body = self.message(body, depth + 1)
            return _join(fields if has_8bit(body) else _set_encoding(fields, "7bit"), body)
        if content_type in ("message/partial", "message/external-body"):
            raise ConversionImpossible(f"{content_type} may only hold 7-bit data (RFC 2046 §5.2)")
        if major == "text":
            return _join(_set_encoding(fields, "quoted-printable"), _quoted_printable(body))
        return _join(_set_encoding(fields, "base64"), _base64(body))

    def multipart(self, body: bytes, boundary: bytes, default_type: str, depth: int) -> bytes:
        """RFC 2046 §5.1.1: split on the delimiter lines, convert the parts that need it, join again.

        The CRLF before a delimiter belongs to the delimiter, so splitting the body into lines
        and joining them again rebuilds it exactly; only the lines of converted parts change.
        """
        delimiter = b"--" + boundary
        out: list[bytes] = []
        segment: list[bytes] = []
        in_part = False  # False: the preamble, or the epilogue once the close delimiter was seen
        closed = False

        def flush() -> None:
            text = _CRLF.join(segment)
            if not self.needs(text):
                out.extend(segment)
            elif in_part:
                header, part_body = _split_entity(text)
                out.extend(self.entity(_parse_fields(header), part_body, default_type, depth + 1).split(_CRLF))
            elif closed:
                out.append(b"")  # such an epilogue is dropped; the body still ends with CRLF
            segment.clear()

        for line in body.split(_CRLF):
            if not closed and line.startswith(delimiter):
                rest = line[len(delimiter):]
                closing = rest.startswith(b"--")
                if not (rest[2:] if closing else rest).strip(b" \t"):  # transport padding only
                    flush()
                    out.append(line)
                    closed, in_part = closing, not closing
                    continue
            segment.append(line)
        flush()
        return _CRLF.join(out)


# -- header fields -----------------------------------------------------------------------------------
def _split_entity(entity: bytes) -> tuple[bytes, bytes]:
    """Header block (with its final CRLF) and body; an entity that starts with CRLF has no header."""
    if entity.startswith(_CRLF):
        return b"", entity[2:]
    end = entity.find(b"\r\n\r\n")
    if end < 0:
        return (entity if entity.endswith(_CRLF) else entity + _CRLF), b""
    return entity[:end + 2], entity[end + 4:]


def _parse_fields(header: bytes) -> list[tuple[bytes, bytes]]:
    """``(name, raw field with folding and CRLF)`` for each field, in order."""
    fields: list[tuple[bytes, bytes]] = []
    if not header:
        return fields
    for line in header.split(_CRLF)[:-1] if header.endswith(_CRLF) else header.split(_CRLF):
        if line[:1] in (b" ", b"\t") and fields:
            name, raw = fields[-1]
            fields[-1] = (name, raw + line + _CRLF)
            continue
        name = line.partition(b":")[0].strip()
        fields.append((name if _FIELD_NAME.fullmatch(name) else b"", line + _CRLF))
    return fields


def _join(fields: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    return b"".join(raw for _, raw in fields) + _CRLF + body


def _field(fields: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for field_name, raw in fields:
        if field_name.lower() == name:
            return raw
    return None


def _content_type(fields: list[tuple[bytes, bytes]], default_type: str) -> tuple[str, bytes | None]:
    """The lowercased type/subtype and the boundary parameter (RFC 2045 §5, RFC 2231 aware)."""
    raw = _field(fields, b"content-type")
    if raw is None:
        return default_type, None
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw + _CRLF)
    content_type = parsed.get_content_type()
    if "/" not in (parsed.get("content-type") or ""):
        content_type = default_type  # RFC 2045 §5.2: an invalid Content-Type means the default
    boundary = parsed.get_boundary()
    return content_type, (boundary.encode("utf-8", "surrogateescape") if boundary else None)


def _transfer_encoding(fields: list[tuple[bytes, bytes]]) -> str:
    raw = _field(fields, b"content-transfer-encoding")
    if raw is None:
        return ""
    value = raw.partition(b":")[2]
    value = re.sub(rb"\([^()]*\)", b"", value)  # RFC 2045 §6.1 allows comments
    return value.strip().decode("ascii", "replace").lower()


def _set_encoding(fields: list[tuple[bytes, bytes]], encoding: str) -> list[tuple[bytes, bytes]]:
    replaced = f"Content-Transfer-Encoding: {encoding}\r\n".encode()
    out = [(n, r) for n, r in fields if n.lower() != b"content-transfer-encoding"]
    if encoding == "7bit" and len(out) == len(fields):
        return out  # 7bit is the default (RFC 2045 §6.1): no field needed
    out.append((b"Content-Transfer-Encoding", replaced))
    return out


def _encode_unstructured(fields: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """RFC 2047 §5(1): 8-bit UTF-8 in unstructured fields becomes encoded-words."""
    out = []
    for name, raw in fields:
        if name.lower() in _UNSTRUCTURED and has_8bit(raw):
            value = raw.partition(b":")[2]
            unfolded = re.sub(rb"\r\n(?=[ \t])", b"", value).strip()
            if _is_utf8(unfolded):
                encoded = email.header.Header(unfolded.decode("utf-8"), "utf-8", header_name=name.decode()).encode(
                    linesep="\r\n")
                raw = name + b": " + encoded.encode("ascii") + _CRLF
        out.append((name, raw))
    return out


def _fold_long_fields(fields: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """RFC 5322 §2.2.3: fold lines over 998 octets before a space; break them where there is none."""
    out = []
    for name, raw in fields:
        if has_long_lines(raw):
            lines = []
            for line in raw.removesuffix(_CRLF).split(_CRLF):
                while len(line) > MAX_LINE:
                    cut = max(line.rfind(b" ", 1, MAX_LINE), line.rfind(b"\t", 1, MAX_LINE))
                    if cut <= 0 or not line[:cut].strip():
                        cut = MAX_LINE
                        lines.append(line[:cut])
                        line = b" " + line[cut:]
                    else:
                        lines.append(line[:cut])
                        line = line[cut:]
                lines.append(line)
            raw = _CRLF.join(lines) + _CRLF
        out.append((name, raw))
    return out


# -- encodings -------------------------------------------------------------------------------------------
def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _quoted_printable(body: bytes) -> bytes:
    """RFC 2045 §6.7: CRLF stays a hard line break; lines are soft-broken at 76 characters."""
    trailing = body.endswith(_CRLF)
    lines = (body[:-2] if trailing else body).split(_CRLF)
    encoded = [_qp_line(line) for line in lines]
    return _CRLF.join(encoded) + (_CRLF if trailing else b"")


def _qp_line(line: bytes) -> bytes:
    """One line (without its CRLF) as quoted-printable lines joined by soft breaks."""
    if b"\r" not in line and b"\n" not in line:
        # binascii does rules 1-5 in C; alone on one line its soft breaks are "=\n".
        return binascii.b2a_qp(line, quotetabs=False, istext=True).replace(b"=\n", b"=\r\n")
    tokens = []
    last = len(line) - 1
    for index, octet in enumerate(line):
        if octet in (0x20, 0x09):
            # Rule 3: whitespace at the end of a line must be encoded.
            tokens.append(b"=%02X" % octet if index == last else bytes((octet,)))
        elif 33 <= octet <= 126 and octet != 0x3D:
            tokens.append(bytes((octet,)))
        else:
            # 8-bit octets, "=", and controls: a bare CR or LF is data here, not a line end.
            tokens.append(b"=%02X" % octet)
    out: list[bytes] = []
    current = b""
    for token in tokens:
        if len(current) + len(token) > QP_LINE - 1:
            out.append(current + b"=")
            current = b""
        current += token
    out.append(current)
    return _CRLF.join(out)


def _rewrap_base64(body: bytes) -> bytes:
    compact = re.sub(rb"[^A-Za-z0-9+/=]+", b"", body)
    lines = [compact[i:i + QP_LINE] for i in range(0, len(compact), QP_LINE)]
    return _CRLF.join(lines) + (_CRLF if body.endswith(_CRLF) else b"")


def _base64(body: bytes) -> bytes:
    """RFC 2045 §6.8: 76-character lines; a body that ended with a line end still does."""
    encoded = base64.encodebytes(body).rstrip(b"\n").replace(b"\n", _CRLF)
    return encoded + _CRLF if body.endswith(_CRLF) else encoded
