"""IMAP SEARCH, SORT and THREAD: parsing, evaluation and result formatting.

Token format (shared with the command parser, ``mailserve/imap/parser.py``): a command's
arguments are a list in which atoms are ``str``, quoted strings and literals are
``bytes``, and parenthesised lists are Python ``list`` objects of the same kinds.

API (used by the IMAP session)
------------------------------
``parse_search_command(tokens, utf8=False) -> SearchCommand``
    The arguments after ``SEARCH`` (or ``UID SEARCH``): optional ``RETURN (...)``
    (RFC 4731), optional ``CHARSET x``, then the keys.  ``SearchCommand.returns``,
    ``.charset``, ``.key``.  Raises ``SearchSyntaxError`` (answer BAD with its message)
    or ``BadCharset`` (answer ``NO [BADCHARSET (UTF-8 US-ASCII)]``).
``parse_search(tokens, charset="UTF-8") -> SearchKey``
    Just the search keys (for SORT and THREAD, after their own arguments).
``parse_sort_command(tokens) -> SortCommand`` / ``parse_thread_command(tokens) -> ThreadCommand``
    ``SORT (criteria) charset keys`` (RFC 5256 §3) and ``THREAD algorithm charset keys``.
``SearchContext(messages, ...)``
    What evaluation runs over: ``messages`` is the selected mailbox in sequence order as
    ``SearchMessage(seq, uid, message, recent)`` where ``message`` is the core's
    ``Message`` record; ``parsed(blob_id) -> ParsedMessage`` (the core's ``get_parsed``);
    ``text`` an object with ``async matching(field, needle, message_ids) -> set[int]``
    (``MailSearch.for_account(account)``); ``saved`` the SEARCHRES ``$`` UIDs.
``await evaluate(key, context, uid=False) -> list[int]``
    Matching sequence numbers (or UIDs when ``uid``), ascending.
``format_search(numbers, ...) / format_esearch(numbers, returns, tag, uid, ...)``
    ``* SEARCH`` / ``* ESEARCH`` response lines (RFC 4731 MIN MAX COUNT ALL, with
    sequence-set compression).  ``SAVE``: the session stores the matched UIDs itself.
``await sort(criteria, key, context, uid=False) -> list[int]``
    RFC 5256 SORT (ARRIVAL CC DATE FROM REVERSE SIZE SUBJECT TO, DISPLAYFROM/DISPLAYTO of RFC 5957).
``await thread(algorithm, key, context, uid=False) -> list[ThreadNode]`` and
``format_threads(nodes) -> bytes``
    ORDEREDSUBJECT and REFERENCES (RFC 5256 §3), then the ``* THREAD`` payload.
``uses_modseq(key)``, ``result_modseq(numbers, context, uid)``, ``format_sort(numbers, modseq)``
    CONDSTORE decorations (RFC 7162 §3.1.5).

Semantics worth knowing
-----------------------
* Header keys (FROM, SUBJECT, HEADER ...) match the unfolded, RFC 2047-decoded field
  values of the header cached at ingest (its first 64 KiB), case-insensitively under
  Unicode case folding; every occurrence of a repeated field counts.
* BEFORE/ON/SINCE use the internal date's day in ``SearchContext.tz`` (UTC by default);
  SENT* use the day written in the Date: header, or the internal date when there is
  none (the RFC 5256 §2.2 fallback, so SEARCH and SORT agree).
* KEYWORD compares keywords case-insensitively, as Dovecot does.
* Evaluation is set-based: each key is applied to the whole candidate set once, AND
  narrows the set for the keys after it, and BODY/TEXT see only the messages the other
  ANDed keys left.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from email.utils import parsedate_tz
from typing import Any, NamedTuple, Protocol

from mailserve.core.mime import ParsedMessage, decode_header_text
from mailserve.core.model import Message, normalise_flag

__all__ = [
    "BadCharset",
    "SearchCommand",
    "SearchContext",
    "SearchKey",
    "SearchMessage",
    "SearchSyntaxError",
    "SequenceSet",
    "SortCommand",
    "ThreadCommand",
    "ThreadNode",
    "evaluate",
    "format_esearch",
    "format_search",
    "format_threads",
    "parse_search",
    "parse_search_command",
    "parse_sequence_set",
    "parse_sort_command",
    "parse_thread_command",
    "result_modseq",
    "saved_result",
    "sequence_set_text",
    "sort",
    "thread",
]

#: Charsets SEARCH accepts (RFC 9051 §6.4.4: UTF-8 is required; US-ASCII is its subset).
SUPPORTED_CHARSETS = ("UTF-8", "US-ASCII")
#: Most search keys in one command, and deepest nesting of NOT/OR/lists: a hostile
#: ``NOT NOT NOT ...`` must neither exhaust the stack nor take long to evaluate.
MAX_KEYS = 10_000
MAX_DEPTH = 64
#: Most ranges in one sequence set.
MAX_RANGES = 100_000
#: Largest UID / sequence number (RFC 9051 §9 ``nz-number``) and mod-sequence (RFC 7162 §7).
MAX_NUMBER = 2**32 - 1
MAX_MODSEQ = 2**63 - 1
#: Messages evaluated on the calling (reactor) thread; larger searches run in a worker.
INLINE_LIMIT = 500


class SearchSyntaxError(ValueError):
    """The search program is malformed: the command is answered BAD with this text."""


class BadCharset(ValueError):
    """An unsupported CHARSET: ``NO [BADCHARSET (UTF-8 US-ASCII)]`` (RFC 9051 §7.1)."""

    def __init__(self, charset: str) -> None:
        super().__init__(f"charset {charset} is not supported")
        self.charset = charset
        self.supported = SUPPORTED_CHARSETS


# -------------------------------------------------------------------------------------
# Sequence sets (RFC 9051 §9 ``sequence-set``, RFC 5182 ``$``)
# -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SequenceSet:
    """Ranges of numbers where ``None`` stands for ``*`` ("the largest number in use").

    ``saved`` marks the SEARCHRES reference ``$`` (RFC 5182 §2.1).  Membership is a
    binary search over merged ranges: ``1:4294967295`` is never expanded.
    """

    ranges: tuple[tuple[int | None, int | None], ...] = ()
    saved: bool = False

    def resolve(self, largest: int) -> list[tuple[int, int]]:
        """Merged, sorted ``(low, high)`` ranges with ``*`` replaced by ``largest``.

        RFC 9051 §9: ``n:m`` equals ``m:n``; ``*`` in an empty mailbox matches nothing.
        """
        out = []
        for low, high in self.ranges:
            lo = largest if low is None else low
            hi = largest if high is None else high
            if lo > hi:
                lo, hi = hi, lo
            if hi < 1:
                continue
            out.append((max(lo, 1), hi))
        out.sort()
        merged: list[tuple[int, int]] = []
        for lo, hi in out:
            if merged and lo <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        return merged


def parse_sequence_set(text: str, allow_saved: bool = True) -> SequenceSet:
    """Parse ``1:3,5,7:*`` or ``$``; raise ``SearchSyntaxError`` when malformed."""
    if text == "$":
        if not allow_saved:
            raise SearchSyntaxError("$ is not allowed here")
        return SequenceSet(saved=True)
    if not text:
        raise SearchSyntaxError("empty sequence set")
    ranges: list[tuple[int | None, int | None]] = []
    for item in text.split(","):
        low_text, colon, high_text = item.partition(":")
        low = _seq_number(low_text)
        high = _seq_number(high_text) if colon else low
        ranges.append((low, high))
        if len(ranges) > MAX_RANGES:
            raise SearchSyntaxError(f"sequence set has more than {MAX_RANGES} ranges")
    return SequenceSet(tuple(ranges))


_DIGITS = re.compile(r"[1-9][0-9]*")


def _seq_number(text: str) -> int | None:
    if text == "*":
        return None
    if not _DIGITS.fullmatch(text) or int(text) > MAX_NUMBER:
        raise SearchSyntaxError(f"{text!r} is not a valid sequence number")
    return int(text)


def sequence_set_text(numbers: Iterable[int]) -> str:
    """Compress ascending numbers into ranges: ``1:3,5,7:9`` (RFC 4731 §3.1 ``ALL``)."""
    pieces: list[str] = []
    start = prev = None
    for n in sorted(set(numbers)):
        if prev is not None and n == prev + 1:
            prev = n
            continue
        if start is not None:
            pieces.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = n
    if start is not None:
        pieces.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(pieces)


# -------------------------------------------------------------------------------------
# Search keys
# -------------------------------------------------------------------------------------


class SearchKey:
    """Base of the search key tree (RFC 9051 §6.4.4)."""


@dataclass(frozen=True)
class All(SearchKey):
    pass


@dataclass(frozen=True)
class FlagKey(SearchKey):
    """ANSWERED, DELETED, DRAFT, FLAGGED, SEEN, KEYWORD x (``present``) and their UN- forms."""

    flag: str
    present: bool = True


@dataclass(frozen=True)
class RecentKey(SearchKey):
    """RECENT: the session's ``\\Recent`` (RFC 3501 §2.3.2); NEW and OLD are built from it."""


@dataclass(frozen=True)
class SetKey(SearchKey):
    """A sequence set (``uid=False``), ``UID`` set, or ``$`` (RFC 5182)."""

    numbers: SequenceSet
    uid: bool = False


@dataclass(frozen=True)
class SizeKey(SearchKey):
    """LARGER n (``larger``) / SMALLER n: RFC822.SIZE strictly greater / less."""

    size: int
    larger: bool


@dataclass(frozen=True)
class DateKey(SearchKey):
    """BEFORE/ON/SINCE (internal date) or SENTBEFORE/SENTON/SENTSINCE (``sent``).

    ``relation`` is ``"before"``, ``"on"`` or ``"since"``; times and zones are
    disregarded (RFC 9051 §6.4.4).
    """

    relation: str
    day: date
    sent: bool = False


@dataclass(frozen=True)
class AgeKey(SearchKey):
    """OLDER / YOUNGER n seconds (RFC 5032 §3), on the internal date."""

    seconds: int
    older: bool


@dataclass(frozen=True)
class HeaderKey(SearchKey):
    """HEADER name text, and FROM/TO/CC/BCC/SUBJECT: a substring of the field's value."""

    name: str
    text: str


@dataclass(frozen=True)
class TextKey(SearchKey):
    """BODY (``field="body"``) or TEXT (``"text"``): through the full-text index."""

    field: str
    text: str


@dataclass(frozen=True)
class ModSeqKey(SearchKey):
    """MODSEQ [entry type] n (RFC 7162 §3.1.5): mod-sequence at least ``modseq``."""

    modseq: int


@dataclass(frozen=True)
class NotKey(SearchKey):
    key: SearchKey


@dataclass(frozen=True)
class OrKey(SearchKey):
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True)
class AndKey(SearchKey):
    keys: tuple[SearchKey, ...]


_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
}
_HEADER_KEYS = {"FROM": "from", "TO": "to", "CC": "cc", "BCC": "bcc", "SUBJECT": "subject"}
_DATE_KEYS = {
    "BEFORE": ("before", False),
    "ON": ("on", False),
    "SINCE": ("since", False),
    "SENTBEFORE": ("before", True),
    "SENTON": ("on", True),
    "SENTSINCE": ("since", True),
}
_MONTHS = {m: i for i, m in enumerate(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1)}
_DATE = re.compile(r"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_SEQ_SET = re.compile(r"[0-9*$][0-9*:,]*")
#: ``flag-keyword`` is an atom (RFC 9051 §9): no atom-specials, no backslash.
_FLAG_KEYWORD = re.compile(r'[^\x00-\x20\x7f-\uffff(){%*"\\\]]+')


def _check_charset(charset: str | None) -> str:
    name = (charset or "UTF-8").upper()
    if name not in SUPPORTED_CHARSETS:
        raise BadCharset(charset or "")
    return name


class _KeyParser:
    """Recursive descent over the token list (see the module docstring for the format)."""

    def __init__(self, tokens: Sequence[Any], charset: str) -> None:
        self.tokens = list(tokens)
        self.pos = 0
        self.charset = charset
        self.count = 0

    def parse_program(self) -> SearchKey:
        if not self.tokens:
            raise SearchSyntaxError("missing search criteria")
        keys = []
        while self.pos < len(self.tokens):
            keys.append(self.key(0))
        return keys[0] if len(keys) == 1 else AndKey(tuple(keys))

    def next(self, what: str) -> Any:
        if self.pos >= len(self.tokens):
            raise SearchSyntaxError(f"missing {what}")
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def atom(self, what: str) -> str:
        token = self.next(what)
        if not isinstance(token, str):
            raise SearchSyntaxError(f"expected {what}")
        return token

    def string(self, what: str) -> str:
        """An ``astring`` argument, decoded in the command's charset."""
        token = self.next(what)
        if isinstance(token, str):
            return token
        if isinstance(token, (bytes, bytearray)):
            try:
                text = bytes(token).decode("utf-8")
            except UnicodeDecodeError:
                raise SearchSyntaxError(f"{what} is not valid {self.charset}") from None
            if self.charset == "US-ASCII" and not text.isascii():
                raise SearchSyntaxError(f"{what} is not valid US-ASCII")
            return text
        raise SearchSyntaxError(f"expected {what}, not a list")

    def number(self, what: str, maximum: int = MAX_NUMBER) -> int:
        text = self.atom(what)
        if not text.isdigit() or not text.isascii() or int(text) > maximum:
            raise SearchSyntaxError(f"{what} must be a number up to {maximum}, not {text!r}")
        return int(text)

    def date(self, what: str) -> date:
        token = self.next(what)
        text = token.decode("ascii", "replace") if isinstance(token, (bytes, bytearray)) else token
        match = _DATE.fullmatch(text) if isinstance(text, str) else None
        month = _MONTHS.get(match.group(2).upper()) if match else None
        if match is None or month is None:
            raise SearchSyntaxError(f"{what} must be a date like 1-Feb-1994, not {text!r}")
        try:
            return date(int(match.group(3)), month, int(match.group(1)))
        except ValueError:
            raise SearchSyntaxError(f"{text!r} is not a valid date") from None

    def key(self, depth: int) -> SearchKey:
        if depth > MAX_DEPTH:
            raise SearchSyntaxError(f"search keys nested deeper than {MAX_DEPTH}")
        self.count += 1
        if self.count > MAX_KEYS:
            raise SearchSyntaxError(f"more than {MAX_KEYS} search keys")
        token = self.next("search key")
        if isinstance(token, list):
            if not token:
                raise SearchSyntaxError("empty parenthesised search key list")
            inner = _KeyParser(token, self.charset)
            inner.count = self.count
            keys = []
            while inner.pos < len(inner.tokens):
                keys.append(inner.key(depth + 1))
            self.count = inner.count
            return keys[0] if len(keys) == 1 else AndKey(tuple(keys))
        if not isinstance(token, str):
            raise SearchSyntaxError("expected a search key, not a string")
        name = token.upper()
        if name == "ALL":
            return All()
        if name in _FLAG_KEYS:
            flag, present = _FLAG_KEYS[name]
            return FlagKey(flag, present)
        if name in ("KEYWORD", "UNKEYWORD"):
            keyword = self.atom("keyword")
            if not _FLAG_KEYWORD.fullmatch(keyword):
                raise SearchSyntaxError(f"{keyword!r} is not a valid keyword")
            return FlagKey(normalise_flag(keyword), name == "KEYWORD")
        if name == "RECENT":
            return RecentKey()
        if name == "NEW":
            return AndKey((RecentKey(), FlagKey("\\Seen", False)))
        if name == "OLD":
            return NotKey(RecentKey())
        if name in _HEADER_KEYS:
            return HeaderKey(_HEADER_KEYS[name], self.string(f"{name} text"))
        if name == "HEADER":
            field_name = self.string("header field name")
            if not field_name or not all(0x21 <= ord(c) <= 0x7E and c != ":" for c in field_name):
                raise SearchSyntaxError(f"{field_name!r} is not a header field name")
            return HeaderKey(field_name.lower(), self.string("header text"))
        if name in ("BODY", "TEXT"):
            return TextKey(name.lower(), self.string(f"{name} text"))
        if name in _DATE_KEYS:
            relation, sent = _DATE_KEYS[name]
            return DateKey(relation, self.date(f"{name} date"), sent)
        if name in ("LARGER", "SMALLER"):
            return SizeKey(self.number(f"{name} size"), name == "LARGER")
        if name in ("OLDER", "YOUNGER"):
            return AgeKey(self.number(f"{name} interval"), name == "OLDER")
        if name == "UID":
            return SetKey(parse_sequence_set(self.atom("UID set")), uid=True)
        if name == "NOT":
            return NotKey(self.key(depth + 1))
        if name == "OR":
            left = self.key(depth + 1)
            return OrKey(left, self.key(depth + 1))
        if name == "MODSEQ":
            return self.modseq()
        if _SEQ_SET.fullmatch(token):
            return SetKey(parse_sequence_set(token))
        raise SearchSyntaxError(f"unknown search key {token}")

    def modseq(self) -> SearchKey:
        """``MODSEQ [entry-name entry-type-req] mod-sequence-valzer`` (RFC 7162 §3.1.5).

        Per-flag mod-sequences are not kept, so the entry is checked for syntax and the
        message's mod-sequence is used, as the RFC allows a server to do.
        """
        if self.pos + 1 < len(self.tokens) and isinstance(self.tokens[self.pos], bytes):
            entry = self.tokens[self.pos]
            kind = self.tokens[self.pos + 1]
            if not entry.startswith(b"/flags/") or not isinstance(kind, str) or \
                    kind.lower() not in ("priv", "shared", "all"):
                raise SearchSyntaxError("MODSEQ entry must be \"/flags/<flag>\" priv|shared|all")
            self.pos += 2
        return ModSeqKey(self.number("mod-sequence", MAX_MODSEQ))


def parse_search(tokens: Sequence[Any], charset: str | None = "UTF-8") -> SearchKey:
    """Parse search keys (``search-key *(SP search-key)``, ANDed) in ``charset``."""
    return _KeyParser(tokens, _check_charset(charset)).parse_program()


RETURN_OPTIONS = ("MIN", "MAX", "ALL", "COUNT", "SAVE")


@dataclass(frozen=True)
class SearchCommand:
    """A parsed SEARCH: ``returns`` is None for a plain SEARCH, else the RETURN options
    (``("ALL",)`` for an empty ``RETURN ()``, RFC 4731 §3.1)."""

    key: SearchKey
    charset: str = "UTF-8"
    returns: tuple[str, ...] | None = None


def _take_charset(tokens: list[Any], pos: int) -> tuple[str, int]:
    if pos < len(tokens) and isinstance(tokens[pos], str) and tokens[pos].upper() == "CHARSET":
        if pos + 1 >= len(tokens) or isinstance(tokens[pos + 1], list):
            raise SearchSyntaxError("CHARSET needs a charset name")
        value = tokens[pos + 1]
        name = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        return _check_charset(name), pos + 2
    return "UTF-8", pos


def parse_search_command(tokens: Sequence[Any]) -> SearchCommand:
    """The arguments of SEARCH: ``[RETURN (opts)] [CHARSET name] keys`` (RFC 4731, RFC 9051)."""
    tokens = list(tokens)
    pos = 0
    returns: tuple[str, ...] | None = None
    if tokens and isinstance(tokens[0], str) and tokens[0].upper() == "RETURN":
        if len(tokens) < 2 or not isinstance(tokens[1], list):
            raise SearchSyntaxError("RETURN needs a parenthesised list of options")
        options = []
        for option in tokens[1]:
            if not isinstance(option, str) or option.upper() not in RETURN_OPTIONS:
                raise SearchSyntaxError(f"unknown RETURN option {option!r}")
            if option.upper() not in options:
                options.append(option.upper())
        returns = tuple(options) or ("ALL",)
        pos = 2
    charset, pos = _take_charset(tokens, pos)
    return SearchCommand(parse_search(tokens[pos:], charset), charset, returns)


SORT_KEYS = ("ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO")


@dataclass(frozen=True)
class SortCommand:
    criteria: tuple[tuple[str, bool], ...]  # (key, reverse)
    key: SearchKey
    charset: str = "UTF-8"


def parse_sort_criteria(criteria: Any) -> tuple[tuple[str, bool], ...]:
    """``"(" sort-criterion *(SP sort-criterion) ")"`` with ``[REVERSE SP] sort-key``
    (RFC 5256 §4; DISPLAYFROM/DISPLAYTO from RFC 5957)."""
    if not isinstance(criteria, list) or not criteria:
        raise SearchSyntaxError("SORT needs a parenthesised list of sort criteria")
    out: list[tuple[str, bool]] = []
    reverse = False
    for item in criteria:
        if not isinstance(item, str):
            raise SearchSyntaxError("sort criteria are atoms")
        name = item.upper()
        if name == "REVERSE":
            if reverse:
                raise SearchSyntaxError("REVERSE REVERSE is not a sort criterion")
            reverse = True
            continue
        if name not in SORT_KEYS:
            raise SearchSyntaxError(f"unknown sort criterion {item}")
        out.append((name, reverse))
        reverse = False
    if reverse:
        raise SearchSyntaxError("REVERSE must be followed by a sort key")
    return tuple(out)


def parse_sort_command(tokens: Sequence[Any]) -> SortCommand:
    """``SORT (criteria) charset search-key...`` (RFC 5256 §4; the charset is required)."""
    tokens = list(tokens)
    if len(tokens) < 3:
        raise SearchSyntaxError("SORT needs sort criteria, a charset and search keys")
    criteria = parse_sort_criteria(tokens[0])
    charset_token = tokens[1]
    if isinstance(charset_token, list):
        raise SearchSyntaxError("SORT needs a charset")
    charset = _check_charset(charset_token.decode("ascii", "replace")
                             if isinstance(charset_token, bytes) else charset_token)
    return SortCommand(criteria, parse_search(tokens[2:], charset), charset)


THREAD_ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")


@dataclass(frozen=True)
class ThreadCommand:
    algorithm: str
    key: SearchKey
    charset: str = "UTF-8"


def parse_thread_command(tokens: Sequence[Any]) -> ThreadCommand:
    """``THREAD algorithm charset search-key...`` (RFC 5256 §4)."""
    tokens = list(tokens)
    if len(tokens) < 3 or not isinstance(tokens[0], str):
        raise SearchSyntaxError("THREAD needs an algorithm, a charset and search keys")
    algorithm = tokens[0].upper()
    if algorithm not in THREAD_ALGORITHMS:
        raise SearchSyntaxError(f"unknown threading algorithm {tokens[0]}")
    charset_token = tokens[1]
    if isinstance(charset_token, list):
        raise SearchSyntaxError("THREAD needs a charset")
    charset = _check_charset(charset_token.decode("ascii", "replace")
                             if isinstance(charset_token, bytes) else charset_token)
    return ThreadCommand(algorithm, parse_search(tokens[2:], charset), charset)


# -------------------------------------------------------------------------------------
# What a search runs over
# -------------------------------------------------------------------------------------


class TextSource(Protocol):
    """Full-text matching for BODY and TEXT (``mailserve.core.search.MailSearch``)."""

    async def matching(self, field: str, needle: str, message_ids: Sequence[int]) -> set[int]:
        """Of ``message_ids``, those whose ``field`` contains ``needle`` (IMAP substring rules)."""


class SearchMessage(NamedTuple):
    """One message of the selected mailbox as the session sees it.

    A named tuple rather than a dataclass: a SEARCH builds one per message of the
    mailbox, and a tuple is the cheapest immutable record to build.
    """

    seq: int
    uid: int
    message: Message
    recent: bool = False


@dataclass
class SearchContext:
    """The selected mailbox a SEARCH, SORT or THREAD runs over.

    ``messages`` are in sequence order (= UID order).  ``parsed`` fetches the
    ``ParsedMessage`` cached at ingest by blob id (``MailCore.get_parsed``).  ``text``
    answers BODY/TEXT.  ``saved`` is the SEARCHRES result (UIDs, RFC 5182).  Internal
    dates are turned into days in ``tz`` for BEFORE/ON/SINCE.  ``run_blocking(fn)``
    runs ``fn()`` in a worker thread and returns an awaitable of its result; when given,
    searches over more than ``INLINE_LIMIT`` messages use it so the reactor is not held.
    """

    messages: Sequence[SearchMessage]
    parsed: Callable[[str], ParsedMessage]
    text: TextSource | None = None
    saved: frozenset[int] = frozenset()
    tz: tzinfo = UTC
    now: Callable[[], float] | None = None
    run_blocking: Callable[[Callable[[], Any]], Awaitable[Any]] | None = None
    #: ``parsed_many(blob_ids)``: many parses in one read (``MailCore.get_parsed_many``).
    parsed_many: Callable[[Sequence[str]], Sequence[ParsedMessage | None]] | None = None
    #: ``derived(kind, blob_id, compute)``: a per-blob memo (``MailCore.derived``), and
    #: ``derived_peek(kind, blob_id)``: its value if already computed, else None.
    derived: Callable[[Any, str, Callable[[ParsedMessage], Any]], Any] | None = None
    derived_peek: Callable[[Any, str], Any] | None = None
    _parsed_cache: dict[int, ParsedMessage] = field(default_factory=dict, repr=False)

    def parsed_at(self, index: int) -> ParsedMessage:
        """The ``ParsedMessage`` of ``messages[index]``, loaded once per search."""
        found = self._parsed_cache.get(index)
        if found is None:
            found = self._parsed_cache[index] = self.parsed(self.messages[index].message.blob_id)
        return found

    def preload(self, indices: Iterable[int]) -> None:
        """Load the parses of many messages in one read before a loop needs them one by one."""
        if self.parsed_many is None:
            return
        wanted = [i for i in indices if i not in self._parsed_cache]
        if len(wanted) < 2:
            return
        loaded = self.parsed_many([self.messages[i].message.blob_id for i in wanted])
        for i, parsed in zip(wanted, loaded, strict=True):
            if parsed is not None:
                self._parsed_cache[i] = parsed

    def folded_fields_at(self, index: int) -> dict[str, tuple[str, ...]]:
        """The header fields of ``messages[index]``: lowercase name -> the decoded values
        (``header_fields``) in comparison form (``fold``).  Computed once per message
        content when the core offers its blob memo, so a SEARCH SUBJECT over a mailbox
        that was searched before is a dict lookup and a substring test per message."""
        if self.derived is None:
            return _folded_fields(self.parsed_at(index))
        blob_id = self.messages[index].message.blob_id
        parsed = self._parsed_cache.get(index)
        if parsed is not None:
            return self.derived(_FOLDED_FIELDS, blob_id, lambda _: _folded_fields(parsed))
        return self.derived(_FOLDED_FIELDS, blob_id, _folded_fields)

    def uncached_fields(self, indices: Iterable[int]) -> list[int]:
        """Of ``indices``, those whose folded fields are not in the core's memo yet."""
        if self.derived_peek is None:
            return list(indices)
        peek, messages = self.derived_peek, self.messages
        return [i for i in indices if peek(_FOLDED_FIELDS, messages[i].message.blob_id) is None]

    async def blocking(self, fn: Callable[[], Any]) -> Any:
        if self.run_blocking is not None and len(self.messages) > INLINE_LIMIT:
            return await self.run_blocking(fn)
        return fn()


def fold(text: str) -> str:
    """Case-insensitive comparison form: NFKC, Unicode case folding, NFKC again.

    The "i;unicode-casemap" idea (RFC 5051) that the full-text index also uses, so a
    substring found here is found there and vice versa.
    """
    if text.isascii():
        return text.lower()
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


_FOLDED_LINE = re.compile(r"\r?\n(?=[ \t])")


_FOLDED_FIELDS = "imap-search-folded-fields"


def _folded_fields(parsed: ParsedMessage) -> dict[str, tuple[str, ...]]:
    fields: dict[str, list[str]] = {}
    for name, value in header_fields(parsed.header):
        fields.setdefault(name, []).append(fold(value))
    return {name: tuple(values) for name, values in fields.items()}


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


def _keywords_folded(message: Message) -> frozenset[str]:
    return frozenset(k.lower() for k in message.keywords)


# -------------------------------------------------------------------------------------
# Evaluation
# -------------------------------------------------------------------------------------


def _text_keys(key: SearchKey) -> list[TextKey]:
    found: list[TextKey] = []
    stack = [key]
    while stack:
        node = stack.pop()
        if isinstance(node, TextKey):
            if node not in found:
                found.append(node)
        elif isinstance(node, NotKey):
            stack.append(node.key)
        elif isinstance(node, OrKey):
            stack.extend((node.left, node.right))
        elif isinstance(node, AndKey):
            stack.extend(node.keys)
    return found


class _SetEvaluator:
    """Evaluates a key tree to the set of indices (into ``context.messages``) it matches.

    Every node yields a whole set at once, so a key is looked at once per search rather
    than once per message, and AND narrows what the following keys are checked against.
    """

    def __init__(self, context: SearchContext, text_sets: dict[TextKey, set[int]]) -> None:
        self.context = context
        self.messages = context.messages
        self.text_sets = text_sets
        self.headers: dict[int, dict[str, tuple[str, ...]]] = {}

    def run(self, key: SearchKey, within: set[int] | None = None) -> set[int]:
        if within is None:
            within = set(range(len(self.messages)))
        return self.node(key, within)

    def node(self, key: SearchKey, within: set[int]) -> set[int]:
        msgs = self.messages
        if not within:
            return set()
        if isinstance(key, All):
            return set(within)
        if isinstance(key, AndKey):
            result = within
            for sub in sorted(key.keys, key=_cost):
                result = self.node(sub, result)
                if not result:
                    break
            return set(result)
        if isinstance(key, OrKey):
            left = self.node(key.left, within)
            return left | self.node(key.right, within - left)
        if isinstance(key, NotKey):
            return within - self.node(key.key, within)
        if isinstance(key, FlagKey):
            if key.flag.startswith("\\"):
                return {i for i in within if (key.flag in msgs[i].message.keywords) == key.present}
            flag = key.flag.lower()
            return {i for i in within if (flag in _keywords_folded(msgs[i].message)) == key.present}
        if isinstance(key, RecentKey):
            return {i for i in within if msgs[i].recent}
        if isinstance(key, SetKey):
            return self.numbers(key, within)
        if isinstance(key, SizeKey):
            if key.larger:
                return {i for i in within if msgs[i].message.size > key.size}
            return {i for i in within if msgs[i].message.size < key.size}
        if isinstance(key, ModSeqKey):
            return {i for i in within if msgs[i].message.modseq >= key.modseq}
        if isinstance(key, AgeKey):
            now = (self.context.now or _now)()
            if key.older:
                return {i for i in within if now - msgs[i].message.internal_date >= key.seconds}
            return {i for i in within if now - msgs[i].message.internal_date < key.seconds}
        if isinstance(key, DateKey):
            return self.dates(key, within)
        if isinstance(key, HeaderKey):
            return self.header(key, within)
        if isinstance(key, TextKey):
            return within & self.text_sets.get(key, set())
        raise TypeError(f"not a search key: {key!r}")

    def numbers(self, key: SetKey, within: set[int]) -> set[int]:
        msgs = self.messages
        if key.numbers.saved:
            saved = self.context.saved
            return {i for i in within if msgs[i].uid in saved}
        # "*" is the largest number in use (RFC 9051 §9 seq-number); ``messages`` may
        # leave out messages the session knows are gone, so numbers are compared as
        # numbers rather than used as positions.
        if key.uid:
            largest = msgs[-1].uid if msgs else 0
        else:
            largest = msgs[-1].seq if msgs else 0
        ranges = key.numbers.resolve(largest)
        starts = [lo for lo, _ in ranges]

        def member(n: int) -> bool:
            at = bisect.bisect_right(starts, n) - 1
            return at >= 0 and n <= ranges[at][1]

        if key.uid:
            return {i for i in within if member(msgs[i].uid)}
        return {i for i in within if member(msgs[i].seq)}

    def dates(self, key: DateKey, within: set[int]) -> set[int]:
        tz = self.context.tz
        out = set()
        if key.sent:
            self.context.preload(within)
        for i in within:
            message = self.messages[i].message
            day = sent_day(self.context.parsed_at(i), message, tz) if key.sent \
                else internal_day(message, tz)
            if _date_matches(day, key):
                out.add(i)
        return out

    def header(self, key: HeaderKey, within: set[int]) -> set[int]:
        needle = fold(key.text)
        name = key.name
        out = set()
        self.context.preload(self.context.uncached_fields(i for i in within if i not in self.headers))
        for i in within:
            fields = self.headers.get(i)
            if fields is None:
                fields = self.headers[i] = self.context.folded_fields_at(i)
            values = fields.get(name)
            if values is not None and (not needle or any(needle in value for value in values)):
                out.add(i)
        return out


def _date_matches(day: date, key: DateKey) -> bool:
    if key.relation == "before":
        return day < key.day
    if key.relation == "on":
        return day == key.day
    return day >= key.day


def _now() -> float:
    import time

    return time.time()


def _cost(key: SearchKey) -> int:
    """Cheap keys first inside an AND, so costly ones see fewer messages."""
    if isinstance(key, (FlagKey, SetKey, SizeKey, ModSeqKey, RecentKey, All, AgeKey)):
        return 0
    if isinstance(key, DateKey):
        return 1 if key.sent else 0
    if isinstance(key, HeaderKey):
        return 2
    if isinstance(key, TextKey):
        return 4
    return 3


async def _matching_indices(key: SearchKey, context: SearchContext) -> set[int]:
    """Indices into ``context.messages`` that ``key`` matches.

    BODY/TEXT keys are answered first through ``context.text`` (which works off the
    reactor); when the top of the tree is an AND, its other keys are evaluated first so
    only the messages they leave are searched for text.
    """
    messages = context.messages
    text_keys = _text_keys(key)
    text_sets: dict[TextKey, set[int]] = {}
    if text_keys:
        if context.text is None:
            raise SearchSyntaxError("BODY and TEXT searches are not available")
        candidates = set(range(len(messages)))
        if isinstance(key, AndKey):
            others = tuple(k for k in key.keys if not _text_keys(k))
            if others:
                narrowed = _SetEvaluator(context, {})
                candidates = await context.blocking(lambda: narrowed.run(AndKey(others)))
        by_id: dict[int, list[int]] = {}
        for i in candidates:
            by_id.setdefault(messages[i].message.id, []).append(i)
        for text_key in text_keys:
            matched = await context.text.matching(text_key.field, text_key.text, sorted(by_id))
            text_sets[text_key] = {i for mid in matched for i in by_id.get(mid, ())}
    evaluator = _SetEvaluator(context, text_sets)
    return await context.blocking(lambda: evaluator.run(key))


async def evaluate(key: SearchKey, context: SearchContext, uid: bool = False) -> list[int]:
    """Sequence numbers (or UIDs) of the messages matching ``key``, ascending (RFC 9051 §6.4.4)."""
    indices = await _matching_indices(key, context)
    messages = context.messages
    return [messages[i].uid if uid else messages[i].seq for i in sorted(indices)]


def uses_modseq(key: SearchKey) -> bool:
    """Whether the key holds MODSEQ, so the response carries ``(MODSEQ n)`` (RFC 7162 §3.1.5)."""
    stack = [key]
    while stack:
        node = stack.pop()
        if isinstance(node, ModSeqKey):
            return True
        if isinstance(node, NotKey):
            stack.append(node.key)
        elif isinstance(node, OrKey):
            stack.extend((node.left, node.right))
        elif isinstance(node, AndKey):
            stack.extend(node.keys)
    return False


def result_modseq(numbers: Iterable[int], context: SearchContext, uid: bool = False) -> int:
    """Highest mod-sequence among the matched messages (RFC 7162 §3.1.5), 0 if none."""
    wanted = set(numbers)
    return max((m.message.modseq for m in context.messages
                if (m.uid if uid else m.seq) in wanted), default=0)


# -------------------------------------------------------------------------------------
# Responses (RFC 9051 §7.3.5 SEARCH, RFC 4731 ESEARCH, RFC 5182 SEARCHRES)
# -------------------------------------------------------------------------------------


def format_search(numbers: Sequence[int], modseq: int | None = None) -> bytes:
    """``* SEARCH 2 3 5`` with ``(MODSEQ n)`` when the search used MODSEQ and matched."""
    line = b"* SEARCH"
    if numbers:
        line += b" " + b" ".join(b"%d" % n for n in numbers)
        if modseq:
            line += b" (MODSEQ %d)" % modseq
    return line


def _quoted_tag(tag: str) -> bytes:
    return b'"' + tag.encode("ascii", "replace").replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def format_esearch(
    numbers: Sequence[int],
    returns: Sequence[str],
    tag: str | None = None,
    uid: bool = False,
    modseq: int | None = None,
) -> bytes | None:
    """The ``* ESEARCH`` line for RETURN options (RFC 4731 §3.1), or None.

    MIN/MAX/ALL are left out when nothing matched; COUNT is always given.  When SAVE is
    the only option there is no ESEARCH response at all (RFC 5182 §2.4).
    """
    wanted = [r.upper() for r in returns] or ["ALL"]
    if wanted == ["SAVE"]:
        return None
    line = b"* ESEARCH"
    if tag is not None:
        line += b" (TAG " + _quoted_tag(tag) + b")"
    if uid:
        line += b" UID"
    ordered = sorted(numbers)
    if "MIN" in wanted and ordered:
        line += b" MIN %d" % ordered[0]
    if "MAX" in wanted and ordered:
        line += b" MAX %d" % ordered[-1]
    if "ALL" in wanted and ordered:
        line += b" ALL " + sequence_set_text(ordered).encode("ascii")
    if "COUNT" in wanted:
        line += b" COUNT %d" % len(ordered)
    if modseq and ordered:
        line += b" MODSEQ %d" % modseq
    return line


def saved_result(uids: Sequence[int], returns: Sequence[str] | None) -> list[int] | None:
    """The UIDs RETURN (SAVE ...) stores for ``$`` (RFC 5182 §2.4), or None without SAVE.

    With MIN and/or MAX but neither ALL nor COUNT, only those messages are saved.
    """
    if not returns or "SAVE" not in returns:
        return None
    ordered = sorted(uids)
    if "ALL" in returns or "COUNT" in returns or not ({"MIN", "MAX"} & set(returns)):
        return ordered
    out = []
    if ordered and "MIN" in returns:
        out.append(ordered[0])
    if ordered and "MAX" in returns and ordered[-1] not in out:
        out.append(ordered[-1])
    return out


# -------------------------------------------------------------------------------------
# SORT (RFC 5256 §3, RFC 5957 DISPLAYFROM / DISPLAYTO)
# -------------------------------------------------------------------------------------


def _first_address(addresses: Sequence[Any]) -> Any:
    return addresses[0] if addresses else None


def _addr_mailbox(addresses: Sequence[Any]) -> str:
    """RFC 5256 §3 FROM/TO/CC: the addr-mailbox of the first address, or empty."""
    first = _first_address(addresses)
    return fold(first.mailbox or "") if first is not None else ""


def _display(addresses: Sequence[Any]) -> str:
    """RFC 5957 §3: the decoded display name of the first address, else its addr-spec;
    for a group, the group name."""
    first = _first_address(addresses)
    if first is None:
        return ""
    if first.is_group_start:
        return fold(decode_header_text(first.mailbox or ""))
    if first.name:
        return fold(decode_header_text(first.name))
    return fold(first.email or "")


def _sort_value(name: str, context: SearchContext, index: int) -> Any:
    message = context.messages[index].message
    if name == "ARRIVAL":
        return message.internal_date
    if name == "SIZE":
        return message.size
    parsed = context.parsed_at(index)
    if name == "DATE":
        return sent_timestamp(parsed, message)
    if name == "SUBJECT":
        return fold(parsed.base_subject)
    env = parsed.envelope
    if name == "FROM":
        return _addr_mailbox(env.from_)
    if name == "TO":
        return _addr_mailbox(env.to)
    if name == "CC":
        return _addr_mailbox(env.cc)
    if name == "DISPLAYFROM":
        return _display(env.from_)
    if name == "DISPLAYTO":
        return _display(env.to)
    raise ValueError(f"unknown sort key {name}")


def sort_indices(criteria: Sequence[tuple[str, bool]], context: SearchContext,
                 indices: Iterable[int]) -> list[int]:
    """Order ``indices`` by the criteria; ties keep sequence order (RFC 5256 §3).

    One stable sort per criterion, least significant first; REVERSE reverses only its
    own criterion (Python's ``reverse=True`` keeps equal items in order).
    """
    order = sorted(indices)
    for name, reverse in reversed(criteria):
        values = {i: _sort_value(name, context, i) for i in order}
        order.sort(key=values.__getitem__, reverse=reverse)
    return order


async def sort(criteria: Sequence[tuple[str, bool]], key: SearchKey, context: SearchContext,
               uid: bool = False) -> list[int]:
    """SORT: the matching messages' numbers in the requested order (RFC 5256 §3)."""
    indices = await _matching_indices(key, context)
    order = await context.blocking(lambda: sort_indices(criteria, context, indices))
    messages = context.messages
    return [messages[i].uid if uid else messages[i].seq for i in order]


def format_sort(numbers: Sequence[int], modseq: int | None = None) -> bytes:
    """``* SORT 5 3 4`` (RFC 5256 §4), with ``(MODSEQ n)`` under CONDSTORE (RFC 7162 §3.1.5)."""
    line = b"* SORT"
    if numbers:
        line += b" " + b" ".join(b"%d" % n for n in numbers)
        if modseq:
            line += b" (MODSEQ %d)" % modseq
    return line


# -------------------------------------------------------------------------------------
# THREAD (RFC 5256 §3: ORDEREDSUBJECT and REFERENCES)
# -------------------------------------------------------------------------------------

#: References kept per message (the first and the last ones): a hostile header with
#: thousands of ids must not make threading quadratic.
MAX_REFERENCES = 200

_REPLY_LEADER = re.compile(r"^(?:\s*(?:\[[^\[\]]*\]\s*)*(?:re|fwd?)\s*(?:\[[^\[\]]*\]\s*)?:)", re.IGNORECASE)
_FWD_TRAILER = re.compile(r"\(fwd\)\s*$", re.IGNORECASE)


def is_reply_or_forward(subject: str | None) -> bool:
    """RFC 5256 §2.1: base-subject extraction removed a ``Re:``/``Fwd:`` leader, a
    ``(fwd)`` trailer, or a ``[fwd: ...]`` wrapper."""
    if not subject:
        return False
    text = decode_header_text(subject).strip()
    return bool(_REPLY_LEADER.match(text) or _FWD_TRAILER.search(text)
                or text[:5].lower() == "[fwd:")


@dataclass
class ThreadNode:
    """A node of a thread tree: ``number`` is None for a dummy (a missing parent)."""

    number: int | None
    children: list[ThreadNode] = field(default_factory=list)


class _Container:
    __slots__ = ("children", "index", "parent")

    def __init__(self, index: int | None = None) -> None:
        self.index = index
        self.parent: _Container | None = None
        self.children: list[_Container] = []

    def is_ancestor_of(self, other: _Container) -> bool:
        node: _Container | None = other
        while node is not None:
            if node is self:
                return True
            node = node.parent
        return False

    def unlink(self) -> None:
        if self.parent is not None:
            self.parent.children.remove(self)
            self.parent = None

    def link_child(self, child: _Container) -> bool:
        """Make ``child`` a child of this one unless that would form a loop."""
        if child is self or child.is_ancestor_of(self):
            return False
        child.unlink()
        child.parent = self
        self.children.append(child)
        return True


class _Threader:
    def __init__(self, context: SearchContext, indices: Iterable[int]) -> None:
        self.context = context
        self.indices = sorted(indices)

    def date_of(self, index: int) -> tuple[int, int]:
        """Sort key: sent date (RFC 5256 §2.2), then sequence order."""
        message = self.context.messages[index].message
        return sent_timestamp(self.context.parsed_at(index), message), index

    def container_date(self, container: _Container) -> tuple[int, int]:
        # a dummy sorts by its first child (RFC 5256 §3 REFERENCES steps 5 and 7)
        node = container
        while node.index is None and node.children:
            node = node.children[0]
        return self.date_of(node.index) if node.index is not None else (0, 0)

    def ordered_subject(self) -> list[_Container]:
        """ORDEREDSUBJECT: group by base subject; the first message of each group (by
        sent date) is the parent of all the others; groups ordered by their first message."""
        groups: dict[str, list[int]] = {}
        for i in self.indices:
            groups.setdefault(fold(self.context.parsed_at(i).base_subject), []).append(i)
        roots = []
        for members in groups.values():
            members.sort(key=self.date_of)
            root = _Container(members[0])
            for i in members[1:]:
                child = _Container(i)
                child.parent = root
                root.children.append(child)
            roots.append(root)
        roots.sort(key=self.container_date)
        return roots

    def references(self) -> list[_Container]:
        """The REFERENCES algorithm of RFC 5256 §3, steps 1 to 7."""
        table: dict[str, _Container] = {}
        order: list[_Container] = []
        # (1) link messages by their references
        for i in self.indices:
            parsed = self.context.parsed_at(i)
            message_id = parsed.message_id
            container = table.get(message_id) if message_id else None
            if container is None or container.index is not None:
                # no id, or a duplicate: the message gets a unique id of its own
                container = _Container(i)
                if message_id and message_id not in table:
                    table[message_id] = container
                order.append(container)
            else:
                container.index = i  # fills the dummy an earlier reference created
            refs = list(parsed.references) or list(parsed.in_reply_to[:1])
            if len(refs) > MAX_REFERENCES:
                refs = refs[: MAX_REFERENCES // 2] + refs[-MAX_REFERENCES // 2:]
            previous: _Container | None = None
            for ref in refs:
                ref_container = table.get(ref)
                if ref_container is None:
                    ref_container = table[ref] = _Container()
                    order.append(ref_container)
                # (1A) link in order, never changing an existing parent, never a loop
                if previous is not None and ref_container.parent is None:
                    previous.link_child(ref_container)
                previous = ref_container
            # (1B) the last reference is this message's parent (replacing any other)
            if previous is not None and previous is not container:
                if not container.is_ancestor_of(previous):
                    previous.link_child(container)
            elif previous is None:
                container.unlink()
        # (2) the root set; (3) the id table is no longer needed
        roots = [c for c in order if c.parent is None]
        # (4) prune dummies
        roots = self.prune(roots)
        # (5) sort the root set by sent date (a dummy by its first child)
        for root in roots:
            if root.index is None:
                root.children.sort(key=self.container_date)
        roots.sort(key=self.container_date)
        # (6) gather threads with the same base subject
        roots = self.merge_subjects(roots)
        # (7) sort every set of siblings, deepest first, then the root set
        stack = list(roots)
        visit: list[_Container] = []
        while stack:
            node = stack.pop()
            visit.append(node)
            stack.extend(node.children)
        for node in reversed(visit):
            node.children.sort(key=self.container_date)
        roots.sort(key=self.container_date)
        return roots

    def prune(self, roots: list[_Container]) -> list[_Container]:
        """Step 4: drop childless dummies; replace a dummy by its children, except at the
        root, where only a dummy with a single child is replaced.

        Children are pruned before their parents (a post-order walk without recursion,
        so a thread thousands of messages deep is fine).
        """
        order: list[_Container] = []
        stack = list(roots)
        while stack:
            node = stack.pop()
            order.append(node)
            stack.extend(node.children)
        for node in reversed(order):
            kept: list[_Container] = []
            for child in node.children:
                if child.index is None:
                    for grandchild in child.children:
                        grandchild.parent = node
                    kept.extend(child.children)
                    child.children = []
                else:
                    kept.append(child)
            node.children = kept
        out: list[_Container] = []
        for root in roots:
            if root.index is None:
                if not root.children:
                    continue
                if len(root.children) == 1:
                    child = root.children[0]
                    child.parent = None
                    out.append(child)
                    continue
            out.append(root)
        return out

    def subject_of(self, container: _Container) -> tuple[str, bool]:
        node = container if container.index is not None else container.children[0]
        parsed = self.context.parsed_at(node.index)
        return fold(parsed.base_subject), is_reply_or_forward(parsed.envelope.subject)

    def merge_subjects(self, roots: list[_Container]) -> list[_Container]:
        """Step 6 of REFERENCES (RFC 5256 §3)."""
        table: dict[str, _Container] = {}
        for root in roots:  # (6A)
            subject, reply = self.subject_of(root)
            if not subject:
                continue
            current = table.get(subject)
            if current is None or current.index is not None and (
                root.index is None or (self.subject_of(current)[1] and not reply)
            ):
                table[subject] = root
        result: list[_Container | None] = list(roots)
        position = {id(c): at for at, c in enumerate(roots)}
        for root in roots:  # (6B)
            if result[position[id(root)]] is not root:
                continue  # already merged into another thread
            subject, reply = self.subject_of(root)
            target = table.get(subject) if subject else None
            if target is None or target is root:
                continue
            if target.index is None and root.index is None:
                for child in root.children:
                    child.parent = target
                target.children.extend(root.children)
                root.children = []
                result[position[id(root)]] = None
            elif target.index is None or (reply and not self.subject_of(target)[1]):
                result[position[id(root)]] = None
                root.parent = target
                target.children.append(root)
            else:
                dummy = _Container()
                at = position[id(target)]
                result[at] = dummy
                position[id(dummy)] = at
                result[position[id(root)]] = None
                for child in (target, root):
                    child.parent = dummy
                    dummy.children.append(child)
                table[subject] = dummy
        return [c for c in result if c is not None]

    def to_nodes(self, roots: list[_Container], uid: bool) -> list[ThreadNode]:
        messages = self.context.messages

        def number(c: _Container) -> int | None:
            if c.index is None:
                return None
            return messages[c.index].uid if uid else messages[c.index].seq

        out = []
        stack: list[tuple[_Container, ThreadNode]] = []
        for root in roots:
            node = ThreadNode(number(root))
            out.append(node)
            stack.append((root, node))
        while stack:
            container, node = stack.pop()
            for child in container.children:
                child_node = ThreadNode(number(child))
                node.children.append(child_node)
                stack.append((child, child_node))
        return out


async def thread(algorithm: str, key: SearchKey, context: SearchContext,
                 uid: bool = False) -> list[ThreadNode]:
    """THREAD: the matching messages as trees (RFC 5256 §3)."""
    indices = await _matching_indices(key, context)
    threader = _Threader(context, indices)
    name = algorithm.upper()
    if name == "ORDEREDSUBJECT":
        build = threader.ordered_subject
    elif name == "REFERENCES":
        build = threader.references
    else:
        raise SearchSyntaxError(f"unknown threading algorithm {algorithm}")
    return await context.blocking(lambda: threader.to_nodes(build(), uid))


def format_threads(nodes: Sequence[ThreadNode]) -> bytes:
    """The ``thread-list`` payload of ``* THREAD`` (RFC 5256 §4).

    A chain of single children is written flat (``(1 2 3)``); several children are each
    parenthesised (``(3 6 (4 23)(44 7 96))``); a dummy contributes no number
    (``((3)(5))``).  Built without recursion, so a deep thread cannot exhaust the stack.
    """
    out: list[str] = []
    # work items: a node to open, or a literal string to emit
    stack: list[Any] = []
    for node in reversed(nodes):
        stack.extend((")", node, "("))
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        node = item
        pieces = []
        while True:
            if node.number is not None:
                pieces.append(str(node.number))
            if len(node.children) == 1 and node.number is not None:
                node = node.children[0]
                continue
            break
        text = " ".join(pieces)
        if node.children:
            if text:
                text += " "
            out.append(text)
            for child in reversed(node.children):
                stack.extend((")", child, "("))
        else:
            out.append(text)
    return "".join(out).encode("ascii")
