"""RFC 5322 §3.2 lexical tokens shared by structured fields: comments, CFWS, quoted strings.

Both the MIME fields (Content-Type and friends) and address lists are built from these
tokens, so they are read the same way -- linearly, tolerant of unterminated input -- in both.
"""

from __future__ import annotations


def _comment_end(text: str, pos: int) -> int:
    """The index after the RFC 5322 comment opening at ``pos`` (comments nest, §3.2.2)."""
    depth = 0
    length = len(text)
    while pos < length:
        char = text[pos]
        if char == "\\":
            pos += 2
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return pos + 1
        pos += 1
    return length


def _strip_comments(text: str) -> str:
    """``text`` without its comments, in one linear pass (quoted strings kept as they are)."""
    if "(" not in text:
        return text
    out: list[str] = []
    pos = 0
    length = len(text)
    while pos < length:
        opening = text.find("(", pos)
        quote = text.find('"', pos)
        if 0 <= quote < opening or (opening < 0 and quote >= 0):
            _, after = _read_quoted(text, quote)
            out.append(text[pos:after])
            pos = after
            continue
        if opening < 0:
            out.append(text[pos:])
            break
        out.append(text[pos:opening])
        pos = _comment_end(text, opening)
    return "".join(out)


def _skip_cfws(text: str, pos: int) -> int:
    """Skip whitespace and comments (RFC 5322 §3.2.2 CFWS)."""
    length = len(text)
    while pos < length:
        char = text[pos]
        if char in " \t\r\n":
            pos += 1
        elif char == "(":
            pos = _comment_end(text, pos)
        else:
            break
    return pos


def _read_quoted(text: str, pos: int) -> tuple[str, int]:
    """Read a quoted-string starting at the opening quote; unterminated runs to the end."""
    out = []
    pos += 1
    length = len(text)
    while pos < length:
        char = text[pos]
        if char == "\\" and pos + 1 < length:
            out.append(text[pos + 1])
            pos += 2
            continue
        if char == '"':
            return "".join(out), pos + 1
        out.append(char)
        pos += 1
    return "".join(out), pos
