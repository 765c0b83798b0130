"""Recursive-descent parser for the Sieve grammar (RFC 5228 §8.2).

The parser only checks grammar.  Whether a command exists, takes these
arguments, or was declared with ``require`` is checked by
``mailserve.sieve.validator``, so both kinds of error carry line and column.
"""

from __future__ import annotations

from mailserve.sieve.errors import SieveSyntaxError
from mailserve.sieve.lexer import Token, TokenKind, tokenize
from mailserve.sieve.nodes import Argument, Command, Number, StringList, Tag, Test

#: Default bound on block/test nesting: deep enough for any real script, low
#: enough that a hostile one cannot exhaust the Python stack.
DEFAULT_MAX_NESTING = 32


class Parser:
    """Parses one script.  ``max_nesting`` bounds blocks and nested tests."""

    def __init__(self, text: str, max_nesting: int = DEFAULT_MAX_NESTING) -> None:
        self.tokens = tokenize(text)
        self.index = 0
        self.max_nesting = max_nesting

    # -- token helpers -------------------------------------------------
    def _peek(self) -> Token:
        return self.tokens[self.index]

    def _take(self) -> Token:
        token = self.tokens[self.index]
        if token.kind is not TokenKind.EOF:
            self.index += 1
        return token

    def _expect(self, kind: TokenKind, what: str) -> Token:
        token = self._peek()
        if token.kind is not kind:
            raise SieveSyntaxError(f"expected {what} but found {_describe(token)}", token.line, token.column)
        return self._take()

    def _check_depth(self, depth: int, token: Token) -> None:
        if depth > self.max_nesting:
            raise SieveSyntaxError(
                f"nesting deeper than {self.max_nesting} levels", token.line, token.column
            )

    # -- grammar -----------------------------------------------------------
    def parse(self) -> tuple[Command, ...]:
        """start = commands"""
        commands = self._commands(depth=0)
        token = self._peek()
        if token.kind is not TokenKind.EOF:
            raise SieveSyntaxError(f"expected a command but found {_describe(token)}", token.line, token.column)
        return commands

    def _commands(self, depth: int) -> tuple[Command, ...]:
        commands: list[Command] = []
        while self._peek().kind is TokenKind.IDENTIFIER:
            commands.append(self._command(depth))
        return tuple(commands)

    def _command(self, depth: int) -> Command:
        """command = identifier arguments (";" / block)"""
        name_token = self._take()
        arguments, tests, test_list = self._arguments(depth)
        token = self._peek()
        block: tuple[Command, ...] | None = None
        if token.kind is TokenKind.SEMICOLON:
            self._take()
        elif token.kind is TokenKind.LBRACE:
            self._check_depth(depth + 1, token)
            self._take()
            block = self._commands(depth + 1)
            self._expect(TokenKind.RBRACE, "'}' or a command")
        else:
            raise SieveSyntaxError(
                f"expected ';' or '{{' after command '{name_token.value}' but found {_describe(token)}",
                token.line,
                token.column,
            )
        return Command(
            str(name_token.value), arguments, tests, test_list, block, name_token.line, name_token.column
        )

    def _arguments(self, depth: int) -> tuple[tuple[Argument, ...], tuple[Test, ...], bool]:
        """arguments = *argument [ test / test-list ]"""
        arguments: list[Argument] = []
        while True:
            token = self._peek()
            if token.kind is TokenKind.TAG:
                self._take()
                arguments.append(Tag(str(token.value), token.line, token.column))
            elif token.kind is TokenKind.NUMBER:
                self._take()
                arguments.append(Number(int(token.value), token.line, token.column))
            elif token.kind in (TokenKind.STRING, TokenKind.LBRACKET):
                arguments.append(self._string_list())
            else:
                break
        token = self._peek()
        if token.kind is TokenKind.IDENTIFIER:
            return tuple(arguments), (self._test(depth + 1),), False
        if token.kind is TokenKind.LPAREN:
            return tuple(arguments), self._test_list(depth + 1), True
        return tuple(arguments), (), False

    def _string_list(self) -> StringList:
        """string-list = "[" string *("," string) "]" / string"""
        token = self._take()
        if token.kind is TokenKind.STRING:
            return StringList((str(token.value),), False, token.line, token.column)
        values: list[str] = []
        while True:
            item = self._expect(TokenKind.STRING, "a string in the string list")
            values.append(str(item.value))
            separator = self._peek()
            if separator.kind is TokenKind.COMMA:
                self._take()
                continue
            self._expect(TokenKind.RBRACKET, "',' or ']' in the string list")
            return StringList(tuple(values), True, token.line, token.column)

    def _test(self, depth: int) -> Test:
        """test = identifier arguments"""
        token = self._peek()
        self._check_depth(depth, token)
        name_token = self._expect(TokenKind.IDENTIFIER, "a test")
        arguments, tests, test_list = self._arguments(depth)
        return Test(str(name_token.value), arguments, tests, test_list, name_token.line, name_token.column)

    def _test_list(self, depth: int) -> tuple[Test, ...]:
        """test-list = "(" test *("," test) ")" """
        self._take()
        tests = [self._test(depth)]
        while self._peek().kind is TokenKind.COMMA:
            self._take()
            tests.append(self._test(depth))
        self._expect(TokenKind.RPAREN, "',' or ')' in the test list")
        return tuple(tests)


def _describe(token: Token) -> str:
    if token.kind is TokenKind.EOF:
        return "end of script"
    if token.kind is TokenKind.STRING:
        return "a string"
    if token.kind is TokenKind.NUMBER:
        return f"number {token.value}"
    if token.kind is TokenKind.TAG:
        return f"tag ':{token.value}'"
    if token.kind is TokenKind.IDENTIFIER:
        return f"identifier '{token.value}'"
    return f"'{token.value}'"


def parse(text: str, max_nesting: int = DEFAULT_MAX_NESTING) -> tuple[Command, ...]:
    """Parse ``text`` into a tuple of top-level commands (no semantic checks)."""
    return Parser(text, max_nesting).parse()
