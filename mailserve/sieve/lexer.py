"""Tokenizer for the Sieve grammar of RFC 5228 §8.1.

Every token remembers the line and column (both 1-based, columns counted in
characters) where it starts, so syntax errors point at the exact spot.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mailserve.sieve.errors import SieveSyntaxError

#: RFC 5228 §8.1 leaves the upper bound of numbers to implementations; we accept
#: what fits an unsigned 63-bit integer (Pigeonhole uses the same range).
MAX_NUMBER = 2**63 - 1

_QUANTIFIERS = {"k": 2**10, "m": 2**20, "g": 2**30}


class TokenKind(enum.Enum):
    IDENTIFIER = "identifier"
    TAG = "tag"
    NUMBER = "number"
    STRING = "string"
    LBRACKET = "["
    RBRACKET = "]"
    LPAREN = "("
    RPAREN = ")"
    LBRACE = "{"
    RBRACE = "}"
    COMMA = ","
    SEMICOLON = ";"
    EOF = "end of script"


@dataclass(frozen=True)
class Token:
    kind: TokenKind
    value: str | int
    line: int
    column: int
    #: True for ``text:`` strings (only used by the printer round-trip tests).
    multiline: bool = False


_PUNCTUATION = {
    "[": TokenKind.LBRACKET,
    "]": TokenKind.RBRACKET,
    "(": TokenKind.LPAREN,
    ")": TokenKind.RPAREN,
    "{": TokenKind.LBRACE,
    "}": TokenKind.RBRACE,
    ",": TokenKind.COMMA,
    ";": TokenKind.SEMICOLON,
}


def _is_identifier_start(char: str) -> bool:
    return char == "_" or ("a" <= char <= "z") or ("A" <= char <= "Z")


def _is_identifier_char(char: str) -> bool:
    return _is_identifier_start(char) or ("0" <= char <= "9")


class Lexer:
    """Turns script text into tokens; raises ``SieveSyntaxError`` on bad input."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.position = 0
        self.line = 1
        self.column = 1

    def _error(self, message: str, line: int | None = None, column: int | None = None) -> SieveSyntaxError:
        return SieveSyntaxError(message, line or self.line, column or self.column)

    def _advance(self, count: int = 1) -> None:
        for _ in range(count):
            if self.text[self.position] == "\n":
                self.line += 1
                self.column = 1
            else:
                self.column += 1
            self.position += 1

    def _skip_whitespace_and_comments(self) -> None:
        text = self.text
        while self.position < len(text):
            char = text[self.position]
            if char in " \t\r\n":
                self._advance()
            elif char == "#":
                # hash-comment = "#" *octet-not-crlf CRLF (RFC 5228 §2.3)
                while self.position < len(text) and text[self.position] != "\n":
                    self._advance()
            elif text.startswith("/*", self.position):
                # bracket-comment; comments do not nest (RFC 5228 §2.3)
                line, column = self.line, self.column
                end = text.find("*/", self.position + 2)
                if end < 0:
                    raise self._error("unterminated bracket comment", line, column)
                self._advance(end + 2 - self.position)
            else:
                return

    def tokens(self) -> list[Token]:
        """Every token of the script, ending with an ``EOF`` token."""
        result: list[Token] = []
        while True:
            self._skip_whitespace_and_comments()
            if self.position >= len(self.text):
                result.append(Token(TokenKind.EOF, "", self.line, self.column))
                return result
            result.append(self._next_token())

    def _next_token(self) -> Token:
        text = self.text
        char = text[self.position]
        line, column = self.line, self.column
        if char in _PUNCTUATION:
            self._advance()
            return Token(_PUNCTUATION[char], char, line, column)
        if char == '"':
            return Token(TokenKind.STRING, self._quoted_string(), line, column)
        if char == ":":
            self._advance()
            if self.position >= len(text) or not _is_identifier_start(text[self.position]):
                raise self._error("expected a tag name after ':'", line, column)
            return Token(TokenKind.TAG, self._identifier().lower(), line, column)
        if "0" <= char <= "9":
            return Token(TokenKind.NUMBER, self._number(line, column), line, column)
        if _is_identifier_start(char):
            name = self._identifier()
            if name.lower() == "text" and self.position < len(text) and text[self.position] == ":":
                self._advance()
                return Token(TokenKind.STRING, self._multiline_string(line, column), line, column, multiline=True)
            return Token(TokenKind.IDENTIFIER, name.lower(), line, column)
        raise self._error(f"unexpected character {char!r}")

    def _identifier(self) -> str:
        start = self.position
        while self.position < len(self.text) and _is_identifier_char(self.text[self.position]):
            self._advance()
        return self.text[start : self.position]

    def _number(self, line: int, column: int) -> int:
        start = self.position
        while self.position < len(self.text) and "0" <= self.text[self.position] <= "9":
            self._advance()
        value = int(self.text[start : self.position])
        if self.position < len(self.text) and self.text[self.position].lower() in _QUANTIFIERS:
            # QUANTIFIER = "K" / "M" / "G" (RFC 5228 §2.4.1)
            value *= _QUANTIFIERS[self.text[self.position].lower()]
            self._advance()
        if self.position < len(self.text) and _is_identifier_char(self.text[self.position]):
            raise self._error("invalid character in number")
        if value > MAX_NUMBER:
            raise self._error("number is too large", line, column)
        return value

    def _quoted_string(self) -> str:
        """quoted-string (RFC 5228 §2.4.2): ``\\"`` and ``\\\\`` are escapes; a
        backslash before any other character is dropped and the character kept."""
        line, column = self.line, self.column
        self._advance()  # opening quote
        text = self.text
        parts: list[str] = []
        while True:
            if self.position >= len(text):
                raise self._error("unterminated string", line, column)
            char = text[self.position]
            if char == '"':
                self._advance()
                return "".join(parts)
            if char == "\\":
                if self.position + 1 >= len(text):
                    raise self._error("unterminated string", line, column)
                self._advance()
                char = text[self.position]
            parts.append(char)
            self._advance()

    def _multiline_string(self, line: int, column: int) -> str:
        """multi-line (RFC 5228 §2.4.2, §8.1): ``text:`` then optional blanks and
        an optional hash comment up to the line end, then lines until a line
        holding a lone ``.``; a leading ``..`` is un-stuffed to ``.``."""
        text = self.text
        while self.position < len(text) and text[self.position] in " \t":
            self._advance()
        if self.position < len(text) and text[self.position] == "#":
            while self.position < len(text) and text[self.position] != "\n":
                self._advance()
        if self.position < len(text) and text[self.position] == "\r":
            self._advance()
        if self.position >= len(text) or text[self.position] != "\n":
            raise self._error("expected end of line after 'text:'")
        self._advance()
        lines: list[str] = []
        while True:
            if self.position >= len(text):
                raise self._error("unterminated multi-line string", line, column)
            end = text.find("\n", self.position)
            raw_line = text[self.position :] if end < 0 else text[self.position : end]
            content = raw_line.removesuffix("\r")
            if content == ".":
                self._advance(len(raw_line) + (0 if end < 0 else 1))
                return "".join(part + "\r\n" for part in lines)
            if end < 0:
                raise self._error("unterminated multi-line string", line, column)
            lines.append(content[1:] if content.startswith("..") else content)
            self._advance(len(raw_line) + 1)


def tokenize(text: str) -> list[Token]:
    """Tokenize ``text``; see ``Lexer``."""
    return Lexer(text).tokens()
