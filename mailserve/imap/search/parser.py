"""The search key grammar (RFC 9051 §6.4.4 ``search-key``): tokens in, a ``SearchKey`` tree out.

Token format (shared with the command parser, ``mailserve/imap/parser.py``): atoms are
``str``, quoted strings and literals are ``bytes``, parenthesised lists are ``list``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date
from typing import Any

from mailserve.core.model import normalise_flag
from mailserve.imap.search.errors import SUPPORTED_CHARSETS, BadCharset, SearchSyntaxError
from mailserve.imap.search.keys import (
    AgeKey,
    All,
    AndKey,
    DateKey,
    FlagKey,
    HeaderKey,
    ModSeqKey,
    NotKey,
    OrKey,
    RecentKey,
    SearchKey,
    SetKey,
    SizeKey,
    TextKey,
)
from mailserve.imap.search.limits import MAX_DEPTH, MAX_KEYS, MAX_MODSEQ, MAX_NUMBER
from mailserve.imap.search.sequence_set import parse_sequence_set

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
