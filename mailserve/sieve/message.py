"""The message a Sieve script looks at (RFC 5228 §2.7, §5).

Header values handed to tests are unfolded and decoded per RFC 2047 (RFC 5228
§2.7.2 requires decoding encoded words before comparison); addresses are
parsed from the undecoded value, since RFC 2047 never encodes an addr-spec.
Body parts are extracted lazily with the stdlib ``email`` package for the
body extension (RFC 5173).
"""

from __future__ import annotations

import email.errors
import email.header
import email.parser
import email.policy
import html.parser
from dataclasses import dataclass, field
from email.message import Message


def split_message(raw: bytes) -> tuple[bytes, bytes]:
    """Header block and body of ``raw`` (RFC 5322 §2.1: the first empty line
    separates them; bare-LF messages are accepted too)."""
    if raw.startswith(b"\r\n"):
        return b"", raw[2:]
    if raw.startswith(b"\n"):
        return b"", raw[1:]
    crlf = raw.find(b"\r\n\r\n")
    lf = raw.find(b"\n\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return raw[: crlf + 2], raw[crlf + 4 :]
    if lf >= 0:
        return raw[: lf + 1], raw[lf + 2 :]
    return raw, b""


def parse_header_block(block: bytes) -> list[tuple[str, str]]:
    """``(name, raw value)`` pairs in message order; folding is preserved in
    the raw value so an unchanged header can be written back byte for byte."""
    headers: list[tuple[str, str]] = []
    text = block.decode("utf-8", errors="surrogateescape")
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line:
            continue
        if line[0] in " \t" and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + "\r\n" + line)
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip() or " " in name.strip():
            continue  # RFC 5322 §2.2: not a header field; ignored as Pigeonhole does
        headers.append((name.strip(), value.removeprefix(" ")))
    return headers


def unfold(value: str) -> str:
    """RFC 5322 §2.2.3 unfolding, then surrounding blanks trimmed."""
    return value.replace("\r\n", "").replace("\n", "").strip(" \t")


def decode_header_value(value: str) -> str:
    """Unfold and decode RFC 2047 encoded words; undecodable words stay as
    they are rather than failing the script."""
    unfolded = unfold(value)
    if "=?" not in unfolded:
        return unfolded.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")
    try:
        return str(email.header.make_header(email.header.decode_header(unfolded)))
    except (ValueError, LookupError, UnicodeError, email.errors.HeaderParseError):
        return unfolded


class _HtmlText(html.parser.HTMLParser):
    """Text content of an HTML part, for body :text (RFC 5173 §5.3)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    extractor = _HtmlText()
    extractor.feed(markup)
    extractor.close()
    return "".join(extractor.parts)


@dataclass(frozen=True)
class BodyPart:
    """One leaf MIME part: its content type and decoded text."""

    content_type: str
    text: str


@dataclass
class SieveMessage:
    """A message being delivered, with its SMTP envelope.

    ``envelope_from`` is the reverse-path without angle brackets (``""`` for
    the null sender); ``envelope_to`` the recipient this script runs for.
    """

    raw: bytes
    envelope_from: str = ""
    envelope_to: str = ""
    headers: list[tuple[str, str]] = field(init=False)
    body: bytes = field(init=False)

    def __post_init__(self) -> None:
        block, self.body = split_message(self.raw)
        self.headers = parse_header_block(block)
        self._parsed: Message | None = None

    @property
    def size(self) -> int:
        """RFC 5228 §5.9: the size in octets, as delivered."""
        return len(self.raw)

    def header_values(self, name: str) -> list[str]:
        """Decoded values of every ``name`` header, top to bottom."""
        lowered = name.lower()
        return [decode_header_value(value) for field_name, value in self.headers if field_name.lower() == lowered]

    def parsed(self) -> Message:
        if self._parsed is None:
            self._parsed = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(self.raw)
        return self._parsed

    def raw_body(self) -> str:
        """body :raw (RFC 5173 §5.1): the undecoded body."""
        return self.body.decode("utf-8", errors="replace")

    def body_parts(self) -> list[BodyPart]:
        """Every leaf part, transfer-decoded and converted to Unicode
        (RFC 5173 §5.2)."""
        parts: list[BodyPart] = []
        for part in self.parsed().walk():
            if part.is_multipart():
                continue
            content_type = part.get_content_type().lower()
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes):
                payload = b""
            charset = part.get_content_charset() or "us-ascii"
            try:
                text = payload.decode(charset, errors="replace")
            except LookupError:
                text = payload.decode("utf-8", errors="replace")
            parts.append(BodyPart(content_type, text))
        return parts
