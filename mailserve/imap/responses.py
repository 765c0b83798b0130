"""What a command handler raises to end with something other than ``OK``, and shared formats."""

from __future__ import annotations

import calendar
import re
import time

from mailserve.imap.parser import ParseError

#: Months as IMAP dates spell them (RFC 9051 §9 ``date-month``).
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER = {m.lower(): i + 1 for i, m in enumerate(MONTHS)}


class CommandFailed(Exception):
    """The command is well-formed but cannot be done: tagged ``NO`` (RFC 9051 §7.1.2).

    ``code`` is a response code without brackets (RFC 5530), e.g. ``"TRYCREATE"``.
    """

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class BadCommand(ParseError):
    """The command is malformed or not valid now: tagged ``BAD`` (RFC 9051 §7.1.3)."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class AlreadyAnswered(Exception):
    """Raised by a handler that sent its own tagged response (STARTTLS)."""


def no_args(args: list) -> None:
    """A command that takes no arguments got some: a syntax error, tagged ``BAD`` (RFC 9051 §7.1.3)."""
    if args:
        raise BadCommand("unexpected arguments")


def format_internal_date(timestamp: int) -> bytes:
    """``"17-Jul-1996 02:44:25 +0000"``: the ``date-time`` of RFC 9051 §9, in UTC."""
    t = time.gmtime(timestamp)
    return b'"%2d-%s-%04d %02d:%02d:%02d +0000"' % (
        t.tm_mday, MONTHS[t.tm_mon - 1].encode(), t.tm_year, t.tm_hour, t.tm_min, t.tm_sec)


_DATE_TIME = re.compile(
    r"^([ \d]?\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)$")
_DATE = re.compile(r"^(\d{1,2})-([A-Za-z]{3})-(\d{4})$")


def parse_date_time(text: str) -> int:
    """An APPEND ``date-time`` as a Unix time; ``ParseError`` if malformed (RFC 9051 §6.3.12)."""
    match = _DATE_TIME.match(text)
    if not match:
        raise ParseError("invalid date-time (expected \"dd-Mon-yyyy hh:mm:ss +zzzz\")")
    day, mon, year, hh, mm, ss, sign, zh, zm = match.groups()
    month = _MONTH_NUMBER.get(mon.lower())
    if month is None:
        raise ParseError("invalid month in date-time")
    try:
        base = calendar.timegm((int(year), month, int(day), int(hh), int(mm), int(ss), 0, 0, 0))
        time.struct_time((int(year), month, int(day), int(hh), int(mm), int(ss), 0, 0, 0))
    except (ValueError, OverflowError):
        raise ParseError("invalid date-time") from None
    if not (1 <= int(day) <= 31 and int(hh) < 24 and int(mm) < 60 and int(ss) < 61 and int(zm) < 60):
        raise ParseError("invalid date-time")
    offset = (int(zh) * 3600 + int(zm) * 60) * (1 if sign == "+" else -1)
    return base - offset
