"""A message's values as SEARCH, SORT and THREAD compare them: folded text, header fields, days."""

from __future__ import annotations

import re
import unicodedata
from datetime import date, datetime, tzinfo
from email.utils import parsedate_tz

from mailserve.core.mime import ParsedMessage, decode_header_text
from mailserve.core.model import Message


def fold(text: str) -> str:
    """Case-insensitive comparison form: NFKC, Unicode case folding, NFKC again.

    The "i;unicode-casemap" idea (RFC 5051) that the full-text index also uses, so a
    substring found here is found there and vice versa.
    """
    if text.isascii():
        return text.lower()
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


_FOLDED_LINE = re.compile(r"\r?\n(?=[ \t])")


def header_fields(block: bytes) -> list[tuple[str, str]]:
    """``(lowercase name, unfolded decoded value)`` for every field of a header block.

    RFC 5322 §2.2.3 unfolding, then RFC 2047 encoded words decoded, so SEARCH matches what
    the user sees (as Dovecot and Cyrus do).
    """
    text = block.decode("utf-8", "replace")
    out: list[tuple[str, str]] = []
    for line in _FOLDED_LINE.sub("", text).splitlines():
        if not line.strip():
            break
        name, colon, value = line.partition(":")
        if not colon or not name.strip() or name[0] in " \t":
            continue
        out.append((name.strip().lower(), decode_header_text(value.strip())))
    return out


def internal_day(message: Message, tz: tzinfo) -> date:
    """The day of the internal date in ``tz`` (RFC 9051 §6.4.4: time and zone disregarded)."""
    return datetime.fromtimestamp(message.internal_date, tz).date()


def sent_day(parsed: ParsedMessage, message: Message, tz: tzinfo) -> date:
    """The day of the Date: header as written (its own zone disregarded, RFC 9051 §6.4.4).

    A message without a usable Date: falls back to its internal date, as RFC 5256 §2.2
    does for the sent date.
    """
    value = parsed.envelope.date
    if value:
        try:
            fields = parsedate_tz(value[:256])
        except Exception:  # noqa: BLE001 - the email package raises many types on junk
            fields = None
        if fields is not None:
            try:
                return date(fields[0], fields[1], fields[2])
            except (ValueError, TypeError):
                pass
    return internal_day(message, tz)


def sent_timestamp(parsed: ParsedMessage, message: Message) -> int:
    """RFC 5256 §2.2 sent date: the Date: header in UTC, else the internal date."""
    return parsed.sent_date if parsed.sent_date is not None else message.internal_date
