"""Parsing of SMTP command arguments (RFC 5321 §4.1.2), kept apart from what the commands mean.

Everything here is pure: strings in, values or :class:`SyntaxProblem` out, so the rules can
be tested on their own and the session only decides what a valid command does.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

__all__ = [
    "SyntaxProblem",
    "parse_address",
    "parse_domain",
    "parse_parameters",
    "parse_path",
    "xtext_decode",
    "xtext_encode",
]

#: RFC 5321 §4.5.3.1.1 and .2: local part at most 64 octets, domain at most 255.
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
#: RFC 5321 §4.5.3.1.3: a path is at most 256 octets including the angle brackets.
MAX_PATH = 256

_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]"
_DOT_STRING = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_DOT_STRING_UTF8 = re.compile(r"(?:[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]|[^\x00-\x7f])+(?:\.(?:[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]|[^\x00-\x7f])+)*")
_QUOTED_STRING = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e]|[^\x00-\x7f])*"')
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
_U_LABEL = re.compile(r"(?:[A-Za-z0-9]|[^\x00-\x7f])(?:(?:[A-Za-z0-9-]|[^\x00-\x7f])*(?:[A-Za-z0-9]|[^\x00-\x7f]))?")
_ESMTP_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_ESMTP_VALUE = re.compile(r"[\x21-\x3c\x3e-\x7e]+")


class SyntaxProblem(ValueError):
    """An argument that does not parse; ``status`` is the enhanced code to answer with."""

    def __init__(self, message: str, status: str = "5.5.4", code: int = 501) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def parse_domain(text: str, utf8: bool = False) -> str:
    """A domain or address literal (RFC 5321 §4.1.3); returned as given (case preserved)."""
    if not text or len(text) > MAX_DOMAIN:
        raise SyntaxProblem("invalid domain name", "5.5.4")
    if text.startswith("[") and text.endswith("]"):
        literal = text[1:-1]
        try:
            if literal.lower().startswith("ipv6:"):
                ipaddress.IPv6Address(literal[5:])
            else:
                ipaddress.IPv4Address(literal)
        except ValueError:
            raise SyntaxProblem("invalid address literal", "5.5.4") from None
        return text
    label = _U_LABEL if utf8 else _LABEL
    for part in text.rstrip(".").split("."):
        if not part or len(part.encode()) > 63 or not label.fullmatch(part):
            raise SyntaxProblem("invalid domain name", "5.5.4")
    return text


def parse_address(text: str, utf8: bool = False) -> str:
    """``local@domain`` per RFC 5321 §4.1.2 Mailbox (RFC 6531 §3.3 when ``utf8``)."""
    local, at, domain = text.rpartition("@")
    if not at or not local:
        raise SyntaxProblem("address must be local-part@domain", "5.1.3")
    if local.startswith('"'):
        if not _QUOTED_STRING.fullmatch(local) or (not utf8 and not local.isascii()):
            raise SyntaxProblem("invalid quoted local part", "5.1.3")
    elif not (_DOT_STRING_UTF8 if utf8 else _DOT_STRING).fullmatch(local):
        raise SyntaxProblem("invalid local part", "5.1.3")
    if len(local.encode()) > MAX_LOCAL_PART:
        raise SyntaxProblem("local part longer than 64 octets", "5.1.3")
    try:
        parse_domain(domain, utf8)
    except SyntaxProblem:
        raise SyntaxProblem("invalid domain in address", "5.1.3") from None
    return text


@dataclass(frozen=True)
class ParsedPath:
    address: str  # "" for the null path
    rest: str  # the parameter text after the path


def parse_path(argument: str, keyword: str, allow_null: bool, utf8: bool) -> ParsedPath:
    """``FROM:<path> params`` / ``TO:<path> params`` (RFC 5321 §4.1.1.2, §4.1.1.3).

    A space after the colon is tolerated (as Postfix and Exim do) and an obsolete source route
    (``<@a,@b:user@c>``) is accepted and dropped (RFC 5321 §4.1.2, Appendix C).  A malformed
    mailbox is 5.1.7 for the sender and 5.1.3 for a recipient (RFC 3463 §3.2).
    """
    try:
        return _parse_path(argument, keyword, allow_null, utf8)
    except SyntaxProblem as problem:
        if problem.status == "5.1.3" and keyword == "FROM":
            problem.status = "5.1.7"
        raise


def _parse_path(argument: str, keyword: str, allow_null: bool, utf8: bool) -> ParsedPath:
    head, colon, tail = argument.partition(":")
    if not colon or head.strip().upper() != keyword:
        raise SyntaxProblem(f"syntax: {keyword}:<address>", "5.5.4")
    tail = tail.lstrip(" ")
    if not tail.startswith("<"):
        raise SyntaxProblem("address must be in angle brackets", "5.5.4")
    end = _closing_bracket(tail)
    if end < 0:
        raise SyntaxProblem("missing closing angle bracket", "5.5.4")
    inner, rest = tail[1:end], tail[end + 1:]
    if rest and not rest.startswith(" "):
        raise SyntaxProblem("garbage after address", "5.5.4")
    if len(inner) + 2 > MAX_PATH:
        raise SyntaxProblem("path longer than 256 octets", "5.1.3")
    if inner.startswith("@"):
        _route, sep, inner = inner.partition(":")
        if not sep:
            raise SyntaxProblem("invalid source route", "5.1.3")
    if not inner:
        if not allow_null:
            raise SyntaxProblem("null address not allowed here", "5.1.3")
        return ParsedPath("", rest.strip())
    if not utf8 and not inner.isascii():
        raise SyntaxProblem("non-ASCII address requires SMTPUTF8", "5.6.7", 553)
    return ParsedPath(parse_address(inner, utf8=True), rest.strip())


def _closing_bracket(text: str) -> int:
    in_quote = escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and in_quote:
            escaped = True
        elif char == '"':
            in_quote = not in_quote
        elif char == ">" and not in_quote:
            return index
    return -1


def parse_parameters(text: str) -> dict[str, str | None]:
    """ESMTP parameters ``KEY[=VALUE]`` (RFC 5321 §4.1.2 esmtp-param); keys upper-cased.

    A key given twice is a syntax error: the meaning would be ambiguous.
    """
    params: dict[str, str | None] = {}
    for item in text.split():
        key, eq, value = item.partition("=")
        if not _ESMTP_KEYWORD.fullmatch(key) or (eq and not _ESMTP_VALUE.fullmatch(value)):
            raise SyntaxProblem(f"invalid parameter {item[:40]!r}", "5.5.4")
        upper = key.upper()
        if upper in params:
            raise SyntaxProblem(f"parameter {upper} given twice", "5.5.4")
        params[upper] = value if eq else None
    return params


def xtext_decode(text: str) -> str:
    """RFC 3461 §4: ``+XX`` hex escapes in ENVID and ORCPT values."""
    out = bytearray()
    index = 0
    while index < len(text):
        char = text[index]
        if char == "+":
            pair = text[index + 1:index + 3]
            if len(pair) != 2 or not re.fullmatch(r"[0-9A-F]{2}", pair):
                raise SyntaxProblem("invalid xtext escape", "5.5.4")
            out.append(int(pair, 16))
            index += 3
            continue
        if not ("!" <= char <= "~") or char == "=":
            raise SyntaxProblem("invalid xtext character", "5.5.4")
        out += char.encode()
        index += 1
    return out.decode("utf-8", "replace")


def xtext_encode(text: str) -> str:
    """The inverse of :func:`xtext_decode`: escape ``+``, ``=`` and anything outside ``!``..``~``."""
    out = []
    for byte in text.encode("utf-8"):
        if 0x21 <= byte <= 0x7E and byte not in (0x2B, 0x3D):
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)
