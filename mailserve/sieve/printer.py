"""Turns a syntax tree back into Sieve text.

Used by the property tests (print then parse gives the same tree) and by
tools that rewrite scripts.  Strings are always written as quoted strings,
which can hold any value a ``text:`` string can.
"""

from __future__ import annotations

from mailserve.sieve.nodes import Argument, Command, Number, StringList, Tag, Test


def quote(value: str) -> str:
    """A quoted-string for ``value`` (RFC 5228 §2.4.2: escape ``"`` and ``\\``)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _argument(argument: Argument) -> str:
    if isinstance(argument, Tag):
        return ":" + argument.name
    if isinstance(argument, Number):
        return str(argument.value)
    if isinstance(argument, StringList):
        if argument.bracketed or len(argument.values) != 1:
            return "[" + ", ".join(quote(value) for value in argument.values) + "]"
        return quote(argument.values[0])
    raise TypeError(f"not a Sieve argument: {argument!r}")


def _arguments_and_tests(arguments: tuple[Argument, ...], tests: tuple[Test, ...], test_list: bool) -> str:
    parts = [_argument(argument) for argument in arguments]
    if test_list or len(tests) > 1:
        parts.append("(" + ", ".join(format_test(test) for test in tests) + ")")
    elif tests:
        parts.append(format_test(tests[0]))
    return " ".join(parts)


def format_test(test: Test) -> str:
    """The text of one test."""
    rest = _arguments_and_tests(test.arguments, test.tests, test.test_list)
    return f"{test.name} {rest}".rstrip()


def format_commands(commands: tuple[Command, ...], indent: int = 0) -> str:
    """The text of a command sequence, one command per line."""
    pad = "    " * indent
    lines: list[str] = []
    for command in commands:
        head = f"{command.name} {_arguments_and_tests(command.arguments, command.tests, command.test_list)}".rstrip()
        if command.block is None:
            lines.append(f"{pad}{head};\n")
        else:
            lines.append(f"{pad}{head} {{\n")
            lines.append(format_commands(command.block, indent + 1))
            lines.append(f"{pad}}}\n")
    return "".join(lines)
