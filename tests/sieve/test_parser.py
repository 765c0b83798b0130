"""Parser: exact error positions and print/parse round trips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailserve.sieve.errors import SieveSyntaxError
from mailserve.sieve.nodes import Command, Number, StringList, Tag
from mailserve.sieve.nodes import Test as SieveTestNode
from mailserve.sieve.parser import parse
from mailserve.sieve.printer import format_commands


def error_of(text: str) -> SieveSyntaxError:
    with pytest.raises(SieveSyntaxError) as raised:
        parse(text)
    return raised.value


@pytest.mark.parametrize(
    ("text", "line", "column", "fragment"),
    [
        ('keep', 1, 5, "expected ';'"),
        ('if true {\n  keep;\n', 3, 1, "'}'"),
        ('fileinto "a;\n', 1, 10, "unterminated string"),
        ('keep;\n/* open\ncomment', 2, 1, "unterminated bracket comment"),
        ('require ["a", ];', 1, 15, "a string in the string list"),
        ('if anyof (true, ) { keep; }', 1, 17, "expected a test"),
        ('if true { keep; } else', 1, 23, "expected ';' or '{'"),
        ('keep;\n  }', 2, 3, "expected a command"),
        ('size :over 10X;', 1, 14, "invalid character in number"),
        ('redirect 99999999999999999999;', 1, 10, "too large"),
        ('vacation text: junk\nbody\n.\n;', 1, 16, "end of line after 'text:'"),
        ('reject text:\nno end\n', 1, 8, "unterminated multi-line string"),
        ('keep : flags;', 1, 6, "tag name"),
        ('keep @;', 1, 6, "unexpected character"),
    ],
)
def test_syntax_error_positions(text: str, line: int, column: int, fragment: str) -> None:
    error = error_of(text)
    assert (error.line, error.column) == (line, column), error
    assert fragment in error.message


def test_nesting_limit() -> None:
    deep = "if true {" * 40 + "}" * 40
    error = error_of(deep)
    assert "nesting" in error.message
    assert error.line == 1
    tests = "if " + "not " * 50 + "true {}"
    assert "nesting" in error_of(tests).message


def test_strings_escapes_multiline_and_numbers() -> None:
    commands = parse(
        'vacation :days 2K "a\\"b\\\\c\\d";\n'
        "reject text: # comment\r\n..leading dot\r\nline two\r\n.\r\n;\n"
        "/* comment */ keep;"
    )
    vacation, reject, keep = commands
    assert vacation.arguments[1] == Number(2048)
    assert vacation.arguments[2] == StringList(('a"b\\cd',))
    assert reject.arguments[0] == StringList((".leading dot\r\nline two\r\n",))
    assert keep.name == "keep"


def test_tree_shape() -> None:
    (command,) = parse('if anyof (header :contains ["To","Cc"] "x", not exists "y") { discard; }')
    assert command.name == "if"
    assert command.test_list is False
    anyof = command.tests[0]
    assert anyof.test_list is True
    header, negation = anyof.tests
    assert header.arguments[0] == Tag("contains")
    assert header.arguments[1] == StringList(("To", "Cc"), bracketed=True)
    assert negation.tests[0].name == "exists"
    assert command.block == (Command("discard"),)
    assert (header.line, header.column) == (1, 11)


# -- property: printing a tree and parsing it back gives the same tree ----------------

identifiers = st.from_regex(r"\A[a-z_][a-z0-9_]{0,8}\Z").filter(lambda name: name != "text")
strings = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
string_lists = st.one_of(
    strings.map(lambda value: StringList((value,), False)),
    st.lists(strings, min_size=1, max_size=3).map(lambda values: StringList(tuple(values), True)),
)
arguments = st.one_of(
    identifiers.map(Tag), st.integers(0, 2**40).map(Number), string_lists
)
tests = st.recursive(
    st.builds(SieveTestNode, identifiers, st.lists(arguments, max_size=3).map(tuple)),
    lambda children: st.one_of(
        st.builds(
            lambda name, args, test: SieveTestNode(name, args, (test,), False),
            identifiers,
            st.lists(arguments, max_size=2).map(tuple),
            children,
        ),
        st.builds(
            lambda name, items: SieveTestNode(name, (), tuple(items), True),
            identifiers,
            st.lists(children, min_size=1, max_size=3),
        ),
    ),
    max_leaves=6,
)


def _command(name: str, args: tuple, test: SieveTestNode | None, test_list: bool, block: tuple | None) -> Command:
    if test is None:
        return Command(name, args, (), False, block)
    return Command(name, args, (test,), test_list, block)


commands = st.recursive(
    st.builds(_command, identifiers, st.lists(arguments, max_size=3).map(tuple), st.none(), st.just(False), st.none()),
    lambda children: st.builds(
        _command,
        identifiers,
        st.lists(arguments, max_size=2).map(tuple),
        st.one_of(st.none(), tests),
        st.booleans(),
        st.lists(children, max_size=3).map(tuple),
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(commands, max_size=4).map(tuple))
def test_print_then_parse_round_trip(tree: tuple[Command, ...]) -> None:
    text = format_commands(tree)
    assert parse(text) == tree


# -- property: any input either compiles or fails with a position inside the text -------------

_FRAGMENTS = [
    "require", "if", "elsif", "else", "keep", "discard", "stop", "fileinto", "redirect", "header",
    "address", "envelope", "anyof", "allof", "not", "true", "false", "size", "exists", "set",
    ":is", ":contains", ":matches", ":over", ":comparator", ":flags", ":copy", '"fileinto"',
    '"variables"', '"a"', '"${1}"', '"${hex:41}"', '"\\"', '"', "text:", "text:\r\n.\r\n", "\r\n.\r\n",
    "{", "}", "[", "]", "(", ")", ",", ";", " ", "\n", "\r\n", "\t", "#c\n", "/*", "*/", "1", "10K",
    "99999999999999999999", "@", "é", "\x00",
]
sieve_like = st.lists(st.sampled_from(_FRAGMENTS), max_size=40).map("".join)


def _assert_positioned(text: str, error: SieveSyntaxError) -> None:
    lines = text.split("\n")
    assert 1 <= error.line <= len(lines), (text, error)
    assert 1 <= error.column <= len(lines[error.line - 1]) + 2, (text, error)
    assert str(error).startswith(f"line {error.line}, column {error.column}: ")


@settings(max_examples=400, deadline=None)
@given(st.one_of(sieve_like, st.text(max_size=60)))
def test_any_input_compiles_or_fails_with_its_position(text: str) -> None:
    from mailserve.sieve import compile_script

    try:
        compile_script(text)
    except SieveSyntaxError as error:
        _assert_positioned(text, error)
