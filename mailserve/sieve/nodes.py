"""The Sieve syntax tree (RFC 5228 §8.2).

Nodes are immutable.  Positions (``line``, ``column``) are excluded from
equality so that a script printed by ``mailserve.sieve.printer`` and parsed
again compares equal to the original tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Tag:
    """A tagged argument such as ``:contains`` (name stored without the colon)."""

    name: str
    line: int = field(default=0, compare=False)
    column: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Number:
    """A number argument, already multiplied by its K/M/G quantifier."""

    value: int
    line: int = field(default=0, compare=False)
    column: int = field(default=0, compare=False)


@dataclass(frozen=True)
class StringList:
    """A string or a bracketed string list.

    ``bracketed`` tells ``"a"`` from ``["a"]``: RFC 5228 §2.4.2.1 lets a single
    string stand for a list, but not a list for a single string.
    """

    values: tuple[str, ...]
    bracketed: bool = False
    line: int = field(default=0, compare=False)
    column: int = field(default=0, compare=False)


Argument = Tag | Number | StringList


@dataclass(frozen=True)
class Test:
    """A test: identifier, arguments and nested tests (for anyof/allof/not)."""

    name: str
    arguments: tuple[Argument, ...] = ()
    tests: tuple[Test, ...] = ()
    #: ``True`` when the nested tests were written as a parenthesised test-list.
    test_list: bool = False
    line: int = field(default=0, compare=False)
    column: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Command:
    """A command: identifier, arguments, optional test(s), and a block or ``;``."""

    name: str
    arguments: tuple[Argument, ...] = ()
    tests: tuple[Test, ...] = ()
    test_list: bool = False
    #: ``None`` when the command ends with ``;``; a tuple of commands for a block.
    block: tuple[Command, ...] | None = None
    line: int = field(default=0, compare=False)
    column: int = field(default=0, compare=False)
