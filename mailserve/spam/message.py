"""What the spam rules and the tokenizer look at: one bounded, decoded view of a message.

A message is analysed once per check, off the reactor thread, into an
:class:`AnalyzedMessage`: decoded header fields (RFC 2047), the text of every text part
(transfer encodings undone, RFC 2045 section 6), the visible text, links, images and forms
of HTML parts, attachment names, and every URL with the registered domain behind it.

Hostile input is bounded: only the first ``max_scan_bytes`` are parsed (SpamAssassin and
rspamd also look at a prefix), at most ``max_parts`` MIME parts and ``max_urls`` URLs are
kept, and nothing here can raise on malformed input -- a message that cannot be decoded is
analysed as far as it goes, and what is odd about it becomes a rule hit, not an error.
"""

from __future__ import annotations

import email.errors
import email.header
import email.parser
import email.policy
import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import unquote, urlsplit

__all__ = [
    "AnalyzedMessage",
    "FoundURL",
    "analyze_message",
    "decode_header_value",
    "domain_scripts",
    "homoglyph_skeleton",
    "split_raw_header",
]

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
#: Header section kept for analysis even when the body is cut.
MAX_HEADER_BYTES = 128 * 1024
#: Longest decoded text kept per message (characters), across all parts.
MAX_TEXT_CHARS = 512 * 1024

_URL_IN_TEXT = re.compile(r"""(?i)\b((?:https?://|www\.)[^\s<>"'()\[\]{}]{1,2000})""")
_TRAILING_PUNCTUATION = ".,;:!?*'\""
_EXECUTABLE_EXTENSIONS = frozenset(
    ["exe", "scr", "pif", "com", "bat", "cmd", "vbs", "vbe", "js", "jse", "wsf", "wsh", "hta", "msi", "msp", "lnk", "jar", "ps1", "cpl", "reg", "iso", "img"]
)

# Letters of other scripts that render like ASCII letters (from Unicode's confusables.txt,
# the subset seen in phishing domains; UTS #39 section 4 "skeleton").
_CONFUSABLES = {
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "i", "ј": "j",
    "ѕ": "s", "һ": "h", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ӏ": "l", "к": "k", "м": "m", "н": "h",
    "т": "t", "в": "b", "ɡ": "g", "ı": "i", "ο": "o", "α": "a", "ν": "v", "ι": "i", "κ": "k",
    "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ε": "e", "ѵ": "v", "ꮃ": "w", "ᴠ": "v", "ǀ": "l",
    "ⅼ": "l", "ℓ": "l", "０": "0", "１": "1", "ｏ": "o", "ａ": "a", "ｅ": "e",
}


@dataclass(frozen=True)
class FoundURL:
    """A link found in the message: where it points and, for HTML anchors, what it shows."""

    url: str
    host: str
    scheme: str
    has_userinfo: bool = False
    anchor_text: str | None = None

    @property
    def is_ip_literal(self) -> bool:
        host = self.host.strip("[]")
        return bool(re.fullmatch(r"[0-9.]+", host)) or ":" in host


@dataclass
class AnalyzedMessage:
    """A decoded, bounded view of a message (see the module docstring)."""

    headers: list[tuple[str, str]] = field(default_factory=list)
    raw_headers: list[tuple[str, bytes]] = field(default_factory=list)
    text: str = ""
    html_text: str = ""
    text_parts: int = 0
    html_parts: int = 0
    images: int = 0
    forms: int = 0
    hidden_text: int = 0
    html_tags: dict[str, int] = field(default_factory=dict)
    urls: list[FoundURL] = field(default_factory=list)
    attachments: list[str] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    has_gtube: bool = False
    truncated: bool = False
    digest: bytes = b""

    def header(self, name: str) -> str | None:
        """The first field called ``name`` (case-insensitive), decoded; ``None`` if absent."""
        lowered = name.lower()
        for key, value in self.headers:
            if key == lowered:
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        lowered = name.lower()
        return [value for key, value in self.headers if key == lowered]

    @property
    def body_text(self) -> str:
        """All visible text: plain parts and the text of HTML parts."""
        return self.text + ("\n" + self.html_text if self.html_text else "")


def split_raw_header(message: bytes) -> tuple[list[tuple[str, bytes]], int]:
    """Header fields as ``(lower-case name, raw unfolded value)`` and the body's offset.

    RFC 5322 section 2.2: a field is a name, a colon and a value that may be folded onto
    continuation lines starting with white space.  Lines without a colon end the header
    section the way a lenient MTA reads them.
    """
    fields: list[tuple[str, bytes]] = []
    position = 0
    length = min(len(message), MAX_HEADER_BYTES)
    current: list[bytes] | None = None
    while position < length:
        end = message.find(b"\n", position, length)
        end = length if end == -1 else end + 1
        line = message[position:end]
        stripped = line.rstrip(b"\r\n")
        if not stripped:
            position = end
            break
        if line[:1] in (b" ", b"\t") and current is not None:
            current.append(stripped)
        else:
            name, colon, value = stripped.partition(b":")
            if not colon or not name or b" " in name.strip() or not name.strip():
                break
            current = [value]
            fields.append((name.strip().decode("ascii", "replace").lower(), current))  # type: ignore[arg-type]
        position = end
    result = [(name, b" ".join(part.strip() for part in parts).strip()) for name, parts in fields]  # type: ignore[misc]
    return result, position


def decode_header_value(raw: bytes) -> str:
    """An RFC 2047 decoded, whitespace-normalised header value; never raises."""
    text = raw.decode("utf-8", "replace")
    if "=?" not in text:
        return " ".join(text.split())
    try:
        decoded = str(email.header.make_header(email.header.decode_header(text)))
    except (email.errors.HeaderParseError, UnicodeError, LookupError, ValueError):
        # Malformed encoded-words are shown as sent (RFC 2047 section 6.3).
        decoded = text
    return " ".join(decoded.split())


def homoglyph_skeleton(label: str) -> str:
    """``label`` with letters of other scripts that look like ASCII replaced by that ASCII."""
    return "".join(_CONFUSABLES.get(char, char) for char in label.lower())


def _script(char: str) -> str | None:
    if char.isascii():
        return "LATIN" if char.isalpha() else None
    try:
        name = unicodedata.name(char)
    except ValueError:
        return None
    for script in ("LATIN", "CYRILLIC", "GREEK", "ARMENIAN", "CHEROKEE", "FULLWIDTH"):
        if name.startswith(script):
            return script
    return name.split(" ", 1)[0] if char.isalpha() else None


def domain_scripts(label: str) -> set[str]:
    """The scripts (UTS #39 section 5.1) of the letters of one domain label."""
    return {script for script in map(_script, label) if script}


def _unicode_host(host: str) -> str:
    labels = []
    for label in host.split("."):
        if label.startswith("xn--"):
            try:
                label = label.encode("ascii").decode("idna")
            except UnicodeError:
                pass
        labels.append(label)
    return ".".join(labels)


def _parse_url(text: str, anchor: str | None = None) -> FoundURL | None:
    url = text.strip().rstrip(_TRAILING_PUNCTUATION)
    if url.lower().startswith("www."):
        url = "http://" + url
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    host = unquote(host).lower().rstrip(".")
    return FoundURL(
        url=url[:2000],
        host=_unicode_host(host),
        scheme=parts.scheme.lower(),
        has_userinfo="@" in parts.netloc,
        anchor_text=anchor,
    )


class _HTMLExtractor(HTMLParser):
    """Visible text, links with their anchor text, images, forms and hidden text of HTML."""

    _SKIP = frozenset({"script", "style", "head", "title", "noscript"})
    _BLOCK = frozenset({"p", "br", "div", "tr", "li", "h1", "h2", "h3", "h4", "td", "table"})

    def __init__(self, max_urls: int) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.links: list[FoundURL] = []
        self.tags: dict[str, int] = {}
        self.images = 0
        self.forms = 0
        self.hidden = 0
        self._skip_depth = 0
        self._hidden_depth = 0
        self._anchor_href: str | None = None
        self._anchor_text: list[str] = []
        self._max_urls = max_urls
        self._stack: list[tuple[str, bool]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if len(self.tags) < 200 or tag in self.tags:
            self.tags[tag] = self.tags.get(tag, 0) + 1
        attributes = {name: (value or "") for name, value in attrs}
        style = attributes.get("style", "").replace(" ", "").lower()
        hidden = (
            "display:none" in style
            or "visibility:hidden" in style
            or re.search(r"font-size:0(?![.\d])", style) is not None
            or "hidden" in attributes
        )
        if tag in ("br", "img", "input", "meta", "link", "hr"):
            if tag == "img":
                self.images += 1
            if tag == "br":
                self.text.append("\n")
            return
        if tag in self._SKIP:
            self._skip_depth += 1
        if hidden:
            self._hidden_depth += 1
        if len(self._stack) < 1000:
            self._stack.append((tag, hidden))
        if tag == "form":
            self.forms += 1
        if tag == "a":
            self._anchor_href = attributes.get("href")
            self._anchor_text = []
        if tag in self._BLOCK:
            self.text.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._anchor_href is not None:
            if len(self.links) < self._max_urls:
                shown = " ".join("".join(self._anchor_text)[:2000].split())[:300]
                found = _parse_url(self._anchor_href, shown)
                if found is not None:
                    self.links.append(found)
            self._anchor_href = None
            self.text.append(" ")  # keep neighbouring link texts apart
        # Close up to the matching open tag (HTML in mail is rarely well nested).
        # Look only a little way down, so unmatched end tags cost O(1) each.
        for index in range(len(self._stack) - 1, max(-1, len(self._stack) - 65), -1):
            if self._stack[index][0] == tag:
                for closed, was_hidden in self._stack[index:]:
                    if closed in self._SKIP:
                        self._skip_depth = max(0, self._skip_depth - 1)
                    if was_hidden:
                        self._hidden_depth = max(0, self._hidden_depth - 1)
                del self._stack[index:]
                break
        if tag in self._BLOCK:
            self.text.append("\n")

    def handle_data(self, data: str) -> None:
        if self._skip_depth:
            return
        if self._hidden_depth:
            if data.strip():
                self.hidden += len(data.strip())
            return
        self.text.append(data)
        if self._anchor_href is not None:
            self._anchor_text.append(data)


def _decode_part(payload: bytes, charset: str | None) -> str:
    try:
        return payload.decode(charset or "utf-8", "replace")
    except LookupError:  # unknown charset name: RFC 2046 section 4.1.2 suggests showing raw
        return payload.decode("latin-1")


def analyze_message(
    message: bytes, max_scan_bytes: int = 262144, max_parts: int = 64, max_urls: int = 200
) -> AnalyzedMessage:
    """Decode ``message`` into an :class:`AnalyzedMessage`, within the given bounds.

    Blocking (parsing and decoding): call it off the reactor thread.
    """
    result = AnalyzedMessage()
    raw_headers, body_offset = split_raw_header(message)
    result.raw_headers = raw_headers
    result.headers = [(name, decode_header_value(value)) for name, value in raw_headers[:1000]]
    body = message[body_offset:]
    result.digest = _learning_digest(result, body)
    result.has_gtube = GTUBE in message[: max_scan_bytes + len(GTUBE)]
    scanned = message[: max(max_scan_bytes, body_offset)]
    result.truncated = len(scanned) < len(message)
    parsed = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(scanned)
    text_chunks: list[str] = []
    html_chunks: list[str] = []
    seen_urls: set[str] = set()
    parts = 0
    for part in parsed.walk():
        parts += 1
        if parts > max_parts:
            result.truncated = True
            break
        content_type = part.get_content_type().lower()
        if len(result.content_types) < max_parts:
            result.content_types.append(content_type)
        if part.is_multipart():
            continue
        filename = part.get_filename(None)
        disposition = (part.get("Content-Disposition") or "").split(";", 1)[0].strip().lower()
        if filename or disposition == "attachment":
            result.attachments.append(decode_header_value(str(filename or "").encode("utf-8", "replace"))[:255])
            if not content_type.startswith("text/"):
                continue
            if disposition == "attachment":
                continue
        if not content_type.startswith("text/"):
            continue
        try:
            payload = part.get_payload(decode=True) or b""
        except (ValueError, LookupError, AssertionError):
            payload = b""
        text = _decode_part(payload, part.get_content_charset())
        if content_type == "text/html":
            result.html_parts += 1
            extractor = _HTMLExtractor(max_urls)
            try:
                extractor.feed(text[:MAX_TEXT_CHARS])
                extractor.close()
            except (AssertionError, ValueError):
                # html.parser is lenient; what it read before giving up still counts.
                result.truncated = True
            html_chunks.append("".join(extractor.text))
            result.images += extractor.images
            result.forms += extractor.forms
            result.hidden_text += extractor.hidden
            for tag, count in extractor.tags.items():
                result.html_tags[tag] = result.html_tags.get(tag, 0) + count
            for link in extractor.links:
                if link.url not in seen_urls and len(result.urls) < max_urls:
                    seen_urls.add(link.url)
                    result.urls.append(link)
        else:
            result.text_parts += 1
            text_chunks.append(text)
    result.text = "\n".join(text_chunks)[:MAX_TEXT_CHARS]
    result.html_text = re.sub(r"[ \t\r\f\v]+", " ", "\n".join(html_chunks))[:MAX_TEXT_CHARS]
    for match in _URL_IN_TEXT.finditer(result.body_text):
        if len(result.urls) >= max_urls:
            result.truncated = True
            break
        found = _parse_url(match.group(1))
        if found is not None and found.url not in seen_urls:
            seen_urls.add(found.url)
            result.urls.append(found)
    return result


def _learning_digest(result: AnalyzedMessage, body: bytes) -> bytes:
    """Identity of a message for Bayes learning, stable under headers added in transit.

    The body and the Message-ID stay the same when our own trace and spam header fields
    are prepended, so moving the delivered copy into Junk finds what autolearn did.
    """
    message_id = next((v for k, v in result.raw_headers if k == "message-id"), b"")
    return hashlib.sha256(message_id.strip() + b"\x00" + body).digest()[:16]


def executable_attachment(name: str) -> bool:
    """Whether a file name ends in an extension Windows runs when opened."""
    base = name.lower().rstrip(". ")
    return "." in base and base.rsplit(".", 1)[1] in _EXECUTABLE_EXTENSIONS
