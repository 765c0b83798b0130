"""The command framer and tokenizer: exact cases and hypothesis properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailserve.imap.parser import (
    Atom,
    CommandFramer,
    LineTooLong,
    Literal,
    LiteralRefused,
    LiteralRequest,
    ParseError,
    SequenceSet,
    decode_mailbox_name,
    encode_mailbox_name,
    quote,
    tokenize,
)


def frame(data: bytes, max_line: int = 1000, literal: int = 100) -> list:
    framer = CommandFramer(max_line, lambda name: literal)
    framer.feed(data)
    out = []
    while True:
        event = framer.next()
        if event is None:
            return out
        if isinstance(event, LiteralRequest):
            framer.accept_literal()
            continue
        out.append(tokenize(event))


def test_fetch_section_is_one_atom():
    assert frame(b"a FETCH 1:* (BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.20> FLAGS)\r\n") == [
        ["a", "FETCH", "1:*", ["BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.20>", "FLAGS"]]]


def test_literals_sync_and_plus():
    tokens = frame(b"a LOGIN {5}\r\nalice {3+}\r\npwd\r\n")[0]
    assert tokens == ["a", "LOGIN", b"alice", b"pwd"]
    assert isinstance(tokens[2], Literal)


def test_literal_limits_before_bytes():
    framer = CommandFramer(1000, lambda name: 10)
    framer.feed(b"a APPEND INBOX {11}\r\n")
    request = framer.next()
    assert isinstance(request, LiteralRequest) and not request.allowed
    framer.refuse_literal()
    framer.feed(b"b NOOP\r\n")
    assert tokenize(framer.next()) == ["b", "NOOP"]
    framer.feed(b"c APPEND INBOX {11+}\r\n")
    with pytest.raises(LiteralRefused):
        framer.next()


def test_line_too_long_is_skipped():
    framer = CommandFramer(100, lambda name: 10)
    framer.feed(b"a NOOP " + b"x" * 500)
    with pytest.raises(LineTooLong):
        while framer.next() is None:
            framer.feed(b"x" * 10 + b"\r\n")
    framer.feed(b"b NOOP\r\n")
    assert tokenize(framer.next()) == ["b", "NOOP"]


@pytest.mark.parametrize("line", [b'a X "unterminated\r\n', b"a X (a b\r\n", b"a X a)\r\n", b'a X "b\\q"\r\n',
                                  b"a X  two\r\n", b"a X {5-}\r\n"])
def test_malformed(line):
    with pytest.raises(ParseError):
        frame(line)


def test_sequence_sets():
    assert SequenceSet.parse(Atom("1:3,5,*")).resolve(9) == [(1, 3), (5, 5), (9, 9)]
    assert SequenceSet.parse(Atom("7:*")).resolve(4) == [(4, 7)]
    for bad in ("0", "1:", "a", "1,,2", "01"):
        with pytest.raises(ParseError):
            SequenceSet.parse(Atom(bad))


def test_modified_utf7():
    assert encode_mailbox_name("Entwürfe & Co") == "Entw&APw-rfe &- Co"
    assert decode_mailbox_name("Entw&APw-rfe &- Co") == "Entwürfe & Co"
    for bad in ("&Jjo", "&AGE-", "caf\u00e9", "&Jjo!-"):
        with pytest.raises(ParseError):
            decode_mailbox_name(bad)


# -- properties -------------------------------------------------------------------------------
atoms = st.text(alphabet=st.sampled_from("abcXYZ019.:*\\$-_"), min_size=1, max_size=12).map(Atom)
strings = st.binary(max_size=40).filter(lambda b: b"\0" not in b)
tokens = st.recursive(st.one_of(atoms, strings), lambda inner: st.lists(inner, max_size=4), max_leaves=20)


def render(token, use_literal: bool) -> bytes:
    if isinstance(token, list):
        return b"(" + b" ".join(render(t, use_literal) for t in token) + b")"
    if isinstance(token, Atom):
        return token.encode()
    if use_literal or b"\r" in token or b"\n" in token:
        return b"{%d+}\r\n" % len(token) + token
    return quote(token)


@settings(max_examples=300, deadline=None)
@given(st.lists(tokens, max_size=6), st.booleans(), st.integers(1, 7))
def test_rendered_commands_round_trip_in_any_chunking(args, use_literal, chunk):
    wire = b"tag CMD" + b"".join(b" " + render(t, use_literal) for t in args) + b"\r\n"
    framer = CommandFramer(10_000, lambda name: 10_000)
    parsed = None
    for i in range(0, len(wire), chunk):
        framer.feed(wire[i:i + chunk])
        while (event := framer.next()) is not None:
            if isinstance(event, LiteralRequest):
                framer.accept_literal()
                continue
            assert parsed is None
            parsed = tokenize(event)
    assert parsed == ["tag", "CMD", *args]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(data):
    framer = CommandFramer(200, lambda name: 50)
    framer.feed(data)
    for _ in range(100):
        try:
            event = framer.next()
        except (LineTooLong, LiteralRefused):
            continue
        if event is None:
            break
        if isinstance(event, LiteralRequest):
            framer.refuse_literal()
            continue
        try:
            tokenize(event)
        except ParseError:
            pass


@given(st.text(max_size=30).filter(lambda s: "\0" not in s))
def test_mailbox_name_utf7_round_trip(name):
    assert decode_mailbox_name(encode_mailbox_name(name)) == name
