"""Comparators (RFC 4790, RFC 5228 §2.7.3) and match types (RFC 5228 §2.7.1,
RFC 5231 relational, draft-ietf-sieve-regex-01).

Every matcher is bounded: glob matching (``:matches``) is the O(n*m)
two-pointer algorithm, not a backtracking regular expression, and ``:regex``
runs on the ``regex`` module with a wall-clock timeout plus a pattern length
limit, so a hostile script cannot pin the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import regex

from mailserve.sieve.errors import SieveLimitExceeded, SieveRuntimeError

COMPARATORS = ("i;octet", "i;ascii-casemap", "i;ascii-numeric")
RELATIONAL_OPERATORS = ("gt", "ge", "lt", "le", "eq", "ne")

#: draft-ietf-sieve-regex-01 §5 warns that regexes can be expensive; we cap
#: the pattern length and the time spent on one match.
MAX_REGEX_LENGTH = 1024
REGEX_TIMEOUT_SECONDS = 0.05

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_casefold(value: str) -> str:
    """i;ascii-casemap folds only A-Z (RFC 4790 §9.2), never other letters."""
    return value.translate(_ASCII_LOWER)


def numeric_value(value: str) -> int | None:
    """i;ascii-numeric (RFC 4790 §9.1): the value of the leading digits, or
    ``None`` (positive infinity) when the string does not start with a digit."""
    end = 0
    while end < len(value) and "0" <= value[end] <= "9":
        end += 1
    return int(value[:end]) if end else None


def _numeric_order(left: str, right: str) -> int:
    a, b = numeric_value(left), numeric_value(right)
    if a is None and b is None:
        return 0
    if a is None:
        return 1
    if b is None:
        return -1
    return (a > b) - (a < b)


def compare_order(comparator: str, left: str, right: str) -> int:
    """-1/0/1 ordering under ``comparator`` (needed by :value, RFC 5231 §4)."""
    if comparator == "i;ascii-numeric":
        return _numeric_order(left, right)
    if comparator == "i;ascii-casemap":
        left, right = ascii_casefold(left), ascii_casefold(right)
    a, b = left.encode("utf-8"), right.encode("utf-8")
    return (a > b) - (a < b)


def _relation_holds(operator: str, order: int) -> bool:
    return {
        "gt": order > 0,
        "ge": order >= 0,
        "lt": order < 0,
        "le": order <= 0,
        "eq": order == 0,
        "ne": order != 0,
    }[operator]


@dataclass(frozen=True)
class MatchSpec:
    """How a test compares values with keys: match type, comparator and, for
    :count/:value, the relational operator."""

    match_type: str = "is"
    comparator: str = "i;ascii-casemap"
    relation: str = ""


def _fold(comparator: str, value: str) -> str:
    return ascii_casefold(value) if comparator == "i;ascii-casemap" else value


def glob_match(pattern: str, text: str, comparator: str) -> list[str] | None:
    """RFC 5228 §2.7.1 ``:matches``: ``*`` is any sequence, ``?`` one character,
    ``\\`` escapes.  Returns the match variables (RFC 5229 §3.2: ``${0}`` is the
    whole value, then one per wildcard, earlier wildcards matching as little as
    possible) or ``None``.

    Two-pointer matching that backtracks only to the most recent ``*``: at most
    len(pattern) * len(text) steps, whatever the input.
    """
    if comparator == "i;ascii-numeric":
        raise SieveRuntimeError("comparator i;ascii-numeric does not support :matches")
    tokens: list[str | None] = []  # None = '*', '\0?' marker for '?', else literal char
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            index += 1
            tokens.append(_fold(comparator, pattern[index]))
        elif char == "*":
            tokens.append(None)
        elif char == "?":
            tokens.append("\0?")
        else:
            tokens.append(_fold(comparator, char))
        index += 1
    folded = _fold(comparator, text)
    spans: dict[int, tuple[int, int]] = {}
    p = t = 0
    star_p = -1
    star_t = 0
    while t < len(folded):
        token = tokens[p] if p < len(tokens) else ""
        if token is None:
            star_p, star_t = p, t
            spans[p] = (t, t)
            p += 1
        elif token == "\0?" or token == folded[t]:
            if token == "\0?":
                spans[p] = (t, t + 1)
            p += 1
            t += 1
        elif star_p >= 0:
            star_t += 1
            spans[star_p] = (spans[star_p][0], star_t)
            p, t = star_p + 1, star_t
        else:
            return None
    while p < len(tokens) and tokens[p] is None:
        spans[p] = (t, t)
        p += 1
    if p != len(tokens):
        return None
    captures = [text]
    for position, token in enumerate(tokens):
        if token is None or token == "\0?":
            start, end = spans[position]
            captures.append(text[start:end])
    return captures


_POSIX_CLASSES = {
    "[:alpha:]": r"a-zA-Z",
    "[:digit:]": r"0-9",
    "[:alnum:]": r"a-zA-Z0-9",
    "[:upper:]": r"A-Z",
    "[:lower:]": r"a-z",
    "[:space:]": r" \t\r\n\v\f",
    "[:blank:]": r" \t",
    "[:punct:]": r"!-/:-@\[-`{-~",
    "[:xdigit:]": r"0-9A-Fa-f",
    "[:cntrl:]": r"\x00-\x1f\x7f",
    "[:print:]": r"\x20-\x7e",
    "[:graph:]": r"\x21-\x7e",
}


def compile_regex(pattern: str, comparator: str) -> regex.Pattern[str]:
    """Compile a POSIX extended regular expression (draft-ietf-sieve-regex-01
    §3) with the ``regex`` module; POSIX bracket classes are translated.
    Case-insensitive under i;ascii-casemap (draft §3: the comparator decides)."""
    if comparator == "i;ascii-numeric":
        raise SieveRuntimeError("comparator i;ascii-numeric does not support :regex")
    if len(pattern) > MAX_REGEX_LENGTH:
        raise SieveRuntimeError(f"regular expression longer than {MAX_REGEX_LENGTH} characters")
    translated = pattern
    for posix, python in _POSIX_CLASSES.items():
        translated = translated.replace(posix, python)
    flags = regex.DOTALL | regex.VERSION0
    if comparator == "i;ascii-casemap":
        flags |= regex.IGNORECASE | regex.ASCII
    try:
        return regex.compile(translated, flags)
    except (regex.error, ValueError, OverflowError) as error:
        raise SieveRuntimeError(f"invalid regular expression {pattern!r}: {error}") from None


def regex_match(compiled: regex.Pattern[str], text: str) -> list[str] | None:
    """Search ``text``; the groups become match variables (draft §4)."""
    try:
        found = compiled.search(text, timeout=REGEX_TIMEOUT_SECONDS)
    except TimeoutError:
        raise SieveLimitExceeded("regular expression took too long") from None
    if found is None:
        return None
    return [found.group(0)] + [group or "" for group in found.groups()]


class Matcher:
    """Evaluates one match specification against values and keys.

    ``step`` is called once per value/key comparison so the interpreter can
    charge it to the execution budget (``SieveLimits.max_steps``).
    """

    def __init__(self, spec: MatchSpec, step: callable) -> None:  # type: ignore[valid-type]
        self.spec = spec
        self.step = step
        self._regex_cache: dict[str, regex.Pattern[str]] = {}

    def match(self, values: list[str], keys: list[str]) -> tuple[bool, list[str] | None]:
        """Whether any value matches any key (RFC 5228 §2.7.1), and the match
        variables of the first match for :matches/:regex."""
        spec = self.spec
        if spec.match_type == "count":
            # RFC 5231 §4.2: compare the number of values with each key.
            count = str(len(values))
            for key in keys:
                self.step()
                if _relation_holds(spec.relation, compare_order(spec.comparator, count, key)):
                    return True, None
            return False, None
        for value in values:
            for key in keys:
                self.step()
                result = self._match_one(value, key)
                if result is not None:
                    return True, result
        return False, None

    def _match_one(self, value: str, key: str) -> list[str] | None:
        spec = self.spec
        comparator = spec.comparator
        kind = spec.match_type
        if kind == "is":
            if comparator == "i;ascii-numeric":
                return [] if _numeric_order(value, key) == 0 else None
            return [] if _fold(comparator, value) == _fold(comparator, key) else None
        if kind == "contains":
            if comparator == "i;ascii-numeric":
                raise SieveRuntimeError("comparator i;ascii-numeric does not support :contains")
            return [] if _fold(comparator, key) in _fold(comparator, value) else None
        if kind == "matches":
            return glob_match(key, value, comparator)
        if kind == "regex":
            compiled = self._regex_cache.get(key)
            if compiled is None:
                compiled = compile_regex(key, comparator)
                self._regex_cache[key] = compiled
            return regex_match(compiled, value)
        if kind == "value":
            # RFC 5231 §4.1: true if the value relates to the key as asked.
            return [] if _relation_holds(spec.relation, compare_order(comparator, value, key)) else None
        raise SieveRuntimeError(f"unknown match type :{kind}")
