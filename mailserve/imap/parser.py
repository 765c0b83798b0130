"""The IMAP command grammar: streaming framing of lines and literals, then tokens.

Framing and tokenising are separate steps.  ``CommandFramer`` is fed raw bytes as they
arrive and cuts them into complete commands -- a command line plus the literals it
announces (RFC 9051 §4.3, §7.5 ``+`` continuation) -- enforcing every size limit *before*
the bytes are buffered: a line longer than the limit is skipped, a literal larger than the
limit is refused when it is announced, so a hostile client never makes the server hold
more than the configured sizes.  ``tokenize`` then turns one complete command into
tokens:

* ``Atom`` (a ``str``): atoms, numbers, ``NIL``, sequence sets, flags such as ``\\Seen``,
  and FETCH attributes with their section and partial, e.g. ``BODY.PEEK[HEADER.FIELDS
  (FROM TO)]<0.2048>`` as ONE atom (the bracketed part may contain spaces and parentheses);
* ``String`` (a ``bytes``): quoted strings and literals (``Literal``, a ``String``
  subclass, ``{n}`` or RFC 7888 ``{n+}``; ``Literal.binary`` is true for RFC 3516 ``~{n}`` literal8);
* ``list``: a parenthesised list of tokens.

Search keys, SORT criteria and the like are interpreted by the command that receives
them; this module knows only the shared lexical rules.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "Atom",
    "Command",
    "CommandFramer",
    "FramingError",
    "LineTooLong",
    "Literal",
    "LiteralRequest",
    "ParseError",
    "SequenceSet",
    "String",
    "astring",
    "decode_mailbox_name",
    "encode_mailbox_name",
    "format_flags",
    "is_atom",
    "number",
    "quote",
    "tokenize",
]

#: Deepest nesting of parenthesised lists accepted in one command.
MAX_NESTING = 64
#: Most tokens in one command (an upper bound; the line limit usually bites first).
MAX_TOKENS = 100_000
#: Largest number in an IMAP number (RFC 9051 §9 ``number``: unsigned 32-bit).
MAX_NUMBER = 0xFFFFFFFF
#: ``number64`` (RFC 9051 §9, used by modseqs).
MAX_NUMBER64 = 0x7FFFFFFFFFFFFFFF

_LITERAL_AT_END = re.compile(rb"(~?)\{(\d{1,20})(\+?)\}\r?\n?$")


class ParseError(ValueError):
    """The command is malformed; ``str()`` is the reason sent in the ``BAD`` response."""


class FramingError(Exception):
    """Base of problems found while cutting commands (they carry the tag if it was read)."""

    def __init__(self, message: str, tag: str | None = None) -> None:
        super().__init__(message)
        self.tag = tag


class LineTooLong(FramingError):
    """A command line passed the limit; its remaining bytes up to CRLF were discarded."""


class Atom(str):
    """An unquoted token: atom, number, NIL, flag, sequence set or FETCH attribute."""

    __slots__ = ()


class String(bytes):
    """A quoted string or a literal (RFC 9051 §4.3): always bytes on the wire."""

    __slots__ = ()


class Literal(String):
    """A literal ``{n}`` / ``{n+}`` / ``{n-}``, or with ``binary`` a literal8 ``~{n}``."""

    binary: bool = False


@dataclass
class Command:
    """One complete command as received: its line segments and literal bodies, in order."""

    segments: list[bytes] = field(default_factory=list)
    literals: list[Literal] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(len(s) for s in self.segments) + sum(len(b) for b in self.literals)


@dataclass
class LiteralRequest:
    """A synchronizing literal was announced: the caller answers ``+`` or refuses it.

    ``tag`` and ``command`` are those of the command being read, so the refusal can be
    tagged; ``size`` is the announced length.
    """

    tag: str | None
    command: str
    size: int
    allowed: bool


class LiteralRefused(FramingError):
    """A non-synchronizing literal over the limit: its bytes are already on their way.

    The stream cannot be resynchronised (RFC 7888 §4), so the session must end.
    """


def _head(line: bytes) -> tuple[str | None, str]:
    """The tag and upper-cased command name (``UID FETCH`` as one) of a command line."""
    words = line.split(b" ", 3)
    tag = words[0].decode("ascii", "replace") if words and words[0] else None
    name = words[1].rstrip(b"\r\n").decode("ascii", "replace").upper() if len(words) > 1 else ""
    if name == "UID" and len(words) > 2:
        name += " " + words[2].rstrip(b"\r\n").decode("ascii", "replace").upper()
    return tag, name


class CommandFramer:
    """Cut a byte stream into commands, enforcing limits before bytes are kept.

    ``literal_limit(command_name)`` gives the largest literal the named command may carry
    (APPEND takes messages; every other command only short strings).  Non-APPEND commands
    are further held to ``max_line`` bytes in total, literals included.

    Call ``feed(data)`` then ``next()`` repeatedly: it returns a ``Command``, a
    ``LiteralRequest`` (the caller must then call ``accept_literal()`` after sending ``+``,
    or ``refuse_literal()`` after sending the tagged refusal), ``None`` when more bytes are
    needed, or raises a ``FramingError`` after which framing resumes at the next command.
    ``take_line()`` hands over one raw line (for AUTHENTICATE responses and IDLE's DONE).
    """

    def __init__(self, max_line: int, literal_limit: Callable[[str], int]) -> None:
        self.max_line = max_line
        self.literal_limit = literal_limit
        self._buffer = bytearray()
        self._command = Command()
        self._tag: str | None = None
        self._name = ""
        self._pending: tuple[int, bool, bool] | None = None  # size, sync, binary
        self._awaiting_decision = False
        self._literal_wanted = 0
        self._skipping = False
        self._skip_tag: str | None = None

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def in_command(self) -> bool:
        """Whether part of a command has been read (a literal or a continued line)."""
        return bool(self._command.segments) or self._literal_wanted > 0

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def discard_buffer(self) -> None:
        """Drop everything buffered (after STARTTLS, RFC 9051 §6.2.1: no plaintext injection)."""
        self._buffer.clear()
        self._reset()

    def _reset(self) -> None:
        self._command = Command()
        self._tag = None
        self._name = ""
        self._pending = None
        self._awaiting_decision = False
        self._literal_wanted = 0

    def _budget(self) -> int:
        if self._name in ("APPEND",):
            return self.literal_limit(self._name) + self.max_line
        return self.max_line

    def take_line(self) -> bytes | None:
        """One raw line without its line end, or ``None`` if no full line is buffered."""
        end = self._buffer.find(b"\n")
        if end < 0:
            if len(self._buffer) > self.max_line:
                self._buffer.clear()
                raise LineTooLong("line too long")
            return None
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        if len(line) > self.max_line:
            raise LineTooLong("line too long")
        return line.rstrip(b"\r")

    def accept_literal(self) -> None:
        assert self._awaiting_decision and self._pending is not None
        self._awaiting_decision = False
        size, _, binary = self._pending
        self._literal_wanted = size
        self._pending = (size, False, binary)

    def refuse_literal(self) -> None:
        """The client, told NO/BAD instead of ``+``, will not send the literal nor the rest."""
        self._reset()

    def next(self) -> Command | LiteralRequest | None:
        if self._awaiting_decision:
            return None
        while True:
            if self._skipping:
                end = self._buffer.find(b"\n")
                if end < 0:
                    self._buffer.clear()
                    return None
                del self._buffer[: end + 1]
                self._skipping = False
                tag, self._skip_tag = self._skip_tag, None
                raise LineTooLong("command line too long", tag)
            if self._literal_wanted:
                if len(self._buffer) < self._literal_wanted:
                    return None
                size, _, binary = self._pending  # type: ignore[misc]
                body = Literal(bytes(self._buffer[:size]))
                if binary:
                    body.binary = True
                del self._buffer[:size]
                self._command.literals.append(body)
                self._literal_wanted = 0
                self._pending = None
                continue
            end = self._buffer.find(b"\n")
            used = self._command.size
            if end < 0:
                if used + len(self._buffer) > self._budget():
                    self._start_skipping()
                    continue
                return None
            line = bytes(self._buffer[: end + 1])
            if used + len(line) > self._budget():
                self._start_skipping()
                continue
            del self._buffer[: end + 1]
            if not self._command.segments:
                self._tag, self._name = _head(line)
            self._command.segments.append(line)
            match = _LITERAL_AT_END.search(line)
            if match is None:
                command, self._command = self._command, Command()
                self._tag, self._name = None, ""
                return command
            binary = bool(match.group(1))
            size = int(match.group(2))
            sync = match.group(3) != b"+"
            limit = self.literal_limit(self._name)
            if not sync and size > limit:
                tag = self._tag
                self._reset()
                raise LiteralRefused(f"literal of {size} octets is larger than the limit of {limit}", tag)
            self._pending = (size, sync, binary)
            if sync:
                self._awaiting_decision = True
                over = size > limit or used + len(line) + size > self._budget()
                return LiteralRequest(self._tag, self._name, size, not over)
            if used + len(line) + size > self._budget():
                tag = self._tag
                self._reset()
                raise LiteralRefused("command is larger than the limit", tag)
            self._literal_wanted = size
            if size == 0:
                self._command.literals.append(Literal(b""))
                self._pending = None

    def _start_skipping(self) -> None:
        self._skip_tag = self._tag or _head(bytes(self._buffer[:200]))[0]
        self._skipping = True
        self._reset()


# -- tokens -----------------------------------------------------------------------------------
_ATOM_STOP = frozenset(b" ()\r\n")  # '"' and '{' are checked where a token starts


def tokenize(command: Command) -> list:
    """The tokens of a complete command (tag and command name included).

    Raises ``ParseError`` with a reason for anything RFC 9051 §9 does not allow at the
    lexical level: unbalanced parentheses, bad quoting, stray characters, too deep nesting.
    """
    segments = command.segments
    literals = iter(command.literals)
    stack: list[list] = [[]]
    count = 0
    for index, raw in enumerate(segments):
        line = raw[:-2] if raw.endswith(b"\r\n") else raw.rstrip(b"\n")
        literal_marker = index < len(segments) - 1
        if literal_marker:
            match = _LITERAL_AT_END.search(raw)
            assert match is not None
            line = raw[: match.start()]
        pos = 0
        n = len(line)
        while pos < n:
            c = line[pos]
            if c == 0x20:  # SP
                if pos + 1 < n and line[pos + 1] == 0x20:
                    raise ParseError("two spaces in a row")
                pos += 1
                continue
            count += 1
            if count > MAX_TOKENS:
                raise ParseError("too many tokens")
            if c == 0x28:  # (
                if len(stack) > MAX_NESTING:
                    raise ParseError("lists nested too deeply")
                new: list = []
                stack[-1].append(new)
                stack.append(new)
                pos += 1
            elif c == 0x29:  # )
                if len(stack) == 1:
                    raise ParseError("unbalanced ')'")
                stack.pop()
                pos += 1
                if pos < n and line[pos] not in b" )":
                    raise ParseError("missing space after ')'")
            elif c == 0x22:  # "
                value, pos = _quoted(line, pos)
                stack[-1].append(value)
            elif c in (0x0D, 0x0A) or c == 0:
                raise ParseError("control character in command")
            else:
                atom, pos = _atom(line, pos)
                stack[-1].append(atom)
        if literal_marker:
            body = next(literals)
            stack[-1].append(body)
            count += 1
            nxt = segments[index + 1]
            if nxt[:1] not in (b" ", b")", b"\r", b"\n"):
                raise ParseError("missing space after literal")
    if len(stack) != 1:
        raise ParseError("unbalanced '('")
    return stack[0]


def _quoted(line: bytes, pos: int) -> tuple[String, int]:
    out = bytearray()
    pos += 1
    n = len(line)
    while pos < n:
        c = line[pos]
        if c == 0x5C:  # backslash: only \" and \\ are defined (RFC 9051 §4.3)
            if pos + 1 >= n or line[pos + 1] not in b'"\\':
                raise ParseError("invalid escape in quoted string")
            out.append(line[pos + 1])
            pos += 2
            continue
        if c == 0x22:
            pos += 1
            if pos < n and line[pos] not in b" )":
                raise ParseError("missing space after quoted string")
            return String(bytes(out)), pos
        if c in (0x0D, 0x0A, 0):
            raise ParseError("control character in quoted string")
        out.append(c)
        pos += 1
    raise ParseError("unterminated quoted string")


def _atom(line: bytes, pos: int) -> tuple[Atom, int]:
    start = pos
    n = len(line)
    while pos < n:
        c = line[pos]
        if c == 0x5B:  # [ : a section, read to the matching ] (may hold SP and parens)
            depth = 0
            while pos < n:
                c = line[pos]
                if c == 0x5B:
                    depth += 1
                elif c == 0x5D:
                    depth -= 1
                    if depth == 0:
                        break
                elif c == 0x22:
                    _, pos = _quoted_inner(line, pos)
                    continue
                pos += 1
            if pos >= n:
                raise ParseError("unterminated '['")
            pos += 1
            continue
        if c in _ATOM_STOP:
            break
        if c < 0x20 or c == 0x7F or c in b'"{':
            if c == 0x7B and pos == start:
                raise ParseError("literal is not at the end of a line")
            if c < 0x20 or c == 0x7F or c == 0x22:
                raise ParseError("invalid character in atom")
        pos += 1
    try:
        text = line[start:pos].decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("invalid UTF-8 in atom") from None
    return Atom(text), pos


def _quoted_inner(line: bytes, pos: int) -> tuple[bytes, int]:
    """A quoted string inside a section spec; returns the position after it."""
    pos += 1
    while pos < len(line):
        if line[pos] == 0x5C:
            pos += 2
            continue
        if line[pos] == 0x22:
            return b"", pos + 1
        pos += 1
    raise ParseError("unterminated quoted string")


# -- token helpers ------------------------------------------------------------------------------
def is_atom(token: object, *names: str) -> bool:
    """Whether ``token`` is an atom equal (case-insensitively) to one of ``names``."""
    return isinstance(token, Atom) and token.upper() in names


def astring(token: object, what: str = "argument") -> str:
    """An astring (atom or string) as text; strings are UTF-8 (RFC 9051 §4.3, RFC 6855)."""
    if isinstance(token, Atom):
        return str(token)
    if isinstance(token, bytes):
        try:
            return token.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError(f"{what} is not valid UTF-8") from None
    raise ParseError(f"{what} must be an atom or string")


def number(token: object, what: str = "number", maximum: int = MAX_NUMBER, minimum: int = 0) -> int:
    if not isinstance(token, Atom) or not token.isdigit() or not token.isascii():
        raise ParseError(f"{what} must be a number")
    value = int(token)
    if value > maximum or value < minimum:
        raise ParseError(f"{what} is out of range")
    return value


# -- sequence sets -----------------------------------------------------------------------------
class SequenceSet:
    """An RFC 9051 §9 ``sequence-set``: ranges of numbers where ``*`` is the largest in use.

    ``ranges`` holds ``(low, high)`` pairs with ``None`` for ``*``; ``saved`` marks the
    SEARCHRES ``$`` reference (RFC 5182 §2.1), resolved by the session.
    """

    __slots__ = ("ranges", "saved")

    MAX_RANGES = 10_000

    def __init__(self, ranges: list[tuple[int | None, int | None]], saved: bool = False) -> None:
        self.ranges = ranges
        self.saved = saved

    @classmethod
    def parse(cls, token: object, allow_saved: bool = True) -> SequenceSet:
        if not isinstance(token, Atom) or not token:
            raise ParseError("expected a sequence set")
        if token == "$":
            if not allow_saved:
                raise ParseError("'$' is not allowed here")
            return cls([], saved=True)
        parts = token.split(",")
        if len(parts) > cls.MAX_RANGES:
            raise ParseError("sequence set has too many ranges")
        ranges: list[tuple[int | None, int | None]] = []
        for part in parts:
            low, sep, high = part.partition(":")
            a = cls._value(low)
            b = cls._value(high) if sep else a
            ranges.append((a, b))
        return cls(ranges)

    @staticmethod
    def _value(text: str) -> int | None:
        if text == "*":
            return None
        if not text.isdigit() or not text.isascii() or text.startswith("0"):
            raise ParseError(f"invalid sequence number {text!r}")
        value = int(text)
        if value > MAX_NUMBER:
            raise ParseError("sequence number out of range")
        return value

    def resolve(self, largest: int) -> list[tuple[int, int]]:
        """Ordered, merged ``(low, high)`` ranges with ``*`` replaced by ``largest``."""
        out = []
        for a, b in self.ranges:
            lo = largest if a is None else a
            hi = largest if b is None else b
            if lo > hi:
                lo, hi = hi, lo
            out.append((lo, hi))
        return merge_ranges(out)

    def contains(self, value: int, largest: int) -> bool:
        return any(lo <= value <= hi for lo, hi in self.resolve(largest))


def merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Inclusive ``(low, high)`` ranges sorted, with overlapping and adjacent ones merged."""
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def format_sequence_set(numbers: list[int]) -> str:
    """Compact ``1:3,7,9:10`` form of sorted, distinct numbers (for COPYUID, ESEARCH ALL)."""
    if not numbers:
        return ""
    parts = []
    start = prev = numbers[0]
    for value in numbers[1:]:
        if value == prev + 1:
            prev = value
            continue
        parts.append(f"{start}:{prev}" if start != prev else str(start))
        start = prev = value
    parts.append(f"{start}:{prev}" if start != prev else str(start))
    return ",".join(parts)


# -- response formatting -----------------------------------------------------------------------
_QUOTABLE = re.compile(rb'^[\x01-\x09\x0b\x0c\x0e-\x7f]*$')


def quote(value: str | bytes | None, utf8: bool = False) -> bytes:
    """``value`` as an IMAP string: quoted when it can be, else a literal (RFC 9051 §4.3).

    ``None`` is ``NIL``.  8-bit text goes in a literal unless the client enabled UTF-8
    (RFC 9051 §4.3 and RFC 6855 §3 allow UTF-8 in quoted strings then).
    """
    if value is None:
        return b"NIL"
    data = value.encode("utf-8") if isinstance(value, str) else value
    if b"\0" in data:
        data = data.replace(b"\0", b"")  # no IMAP string may carry NUL (RFC 9051 §4.3)
    if len(data) < 1024 and (_QUOTABLE.match(data) or (utf8 and b"\r" not in data and b"\n" not in data
                                                      and b"\0" not in data and _valid_utf8(data))):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(data) + data


def _valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def format_flags(flags) -> bytes:
    """A flag list in a stable order: system flags first, then keywords alphabetically."""
    system = [f for f in flags if f.startswith("\\")]
    keywords = [f for f in flags if not f.startswith("\\")]
    return ("(" + " ".join(sorted(system) + sorted(keywords)) + ")").encode("utf-8")


# -- mailbox names (RFC 3501 §5.1.3 modified UTF-7) ---------------------------------------
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,"
_B64_INDEX = {c: i for i, c in enumerate(_B64)}


def encode_mailbox_name(name: str) -> str:
    """Modified UTF-7 for clients that have not enabled UTF-8 (RFC 3501 §5.1.3)."""
    out = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            data = "".join(pending).encode("utf-16-be")
            bits = "".join(f"{b:08b}" for b in data)
            bits += "0" * (-len(bits) % 6)
            out.append("&" + "".join(_B64[int(bits[i:i + 6], 2)] for i in range(0, len(bits), 6)) + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def decode_mailbox_name(text: str) -> str:
    """Strict modified UTF-7 decoding; ``ParseError`` for anything malformed."""
    if "&" not in text:
        if any(ord(c) > 0x7E for c in text):
            raise ParseError("mailbox name has 8-bit characters; modified UTF-7 or UTF8=ACCEPT is required")
        return text
    out = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch != "&":
            if ord(ch) > 0x7E or ord(ch) < 0x20:
                raise ParseError("invalid character in mailbox name")
            out.append(ch)
            i += 1
            continue
        end = text.find("-", i + 1)
        if end < 0:
            raise ParseError("unterminated modified UTF-7 sequence in mailbox name")
        chunk = text[i + 1:end]
        i = end + 1
        if not chunk:
            out.append("&")
            continue
        try:
            bits = "".join(f"{_B64_INDEX[c]:06b}" for c in chunk)
        except KeyError:
            raise ParseError("invalid modified UTF-7 in mailbox name") from None
        usable = len(bits) - len(bits) % 16
        if set(bits[usable:]) - {"0"} or len(bits) - usable >= 6:
            raise ParseError("invalid modified UTF-7 padding in mailbox name")
        data = bytes(int(bits[k:k + 8], 2) for k in range(0, usable, 8))
        try:
            decoded = data.decode("utf-16-be")
        except UnicodeDecodeError:
            raise ParseError("invalid modified UTF-7 in mailbox name") from None
        if any(0x20 <= ord(c) <= 0x7E for c in decoded):
            raise ParseError("modified UTF-7 must not encode printable ASCII")
        out.append(decoded)
    return "".join(out)
