"""The arguments of SEARCH (RFC 4731 RETURN, CHARSET), SORT and THREAD (RFC 5256 §4)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mailserve.imap.search.errors import SearchSyntaxError
from mailserve.imap.search.keys import SearchKey
from mailserve.imap.search.parser import _check_charset, parse_search

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
