"""Multi-line response encoding (RFC 1939 §3): CRLF line ends and byte-stuffing, chunk by chunk."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from mailserve.pop3.transfer import MultilineEncoder, count_lines, cut_after_lines


def encode(chunks: list[bytes]) -> bytes:
    encoder = MultilineEncoder()
    return b"".join(encoder.feed(c) for c in chunks) + encoder.finish()


def decode(wire: bytes) -> list[bytes]:
    """What a client sees: the lines before the terminator, un-stuffed."""
    assert wire.endswith(b"\r\n.\r\n") or wire == b".\r\n"
    body = wire[: -len(b".\r\n")]
    lines = body.split(b"\r\n")[:-1] if body else []
    for line in lines:
        assert line != b"."  # only the terminator may be a lone dot
    return [line[1:] if line.startswith(b".") else line for line in lines]


def lines_of(message: bytes) -> list[bytes]:
    """The message's lines with any of CRLF, bare LF or a trailing bare CR as line end."""
    normalised = re.sub(rb"(?<!\r)\n", b"\r\n", message)
    if normalised.endswith(b"\r") and not normalised.endswith(b"\r\n"):
        normalised += b"\n"
    if normalised and not normalised.endswith(b"\r\n"):
        normalised += b"\r\n"
    return normalised.split(b"\r\n")[:-1] if normalised else []


def test_dot_lines_are_stuffed_and_the_response_terminated():
    assert encode([b".a\r\nb\r\n..\r\n.\r\n"]) == b"..a\r\nb\r\n...\r\n..\r\n.\r\n"


def test_bare_lf_becomes_crlf_and_a_missing_final_line_end_is_added():
    assert encode([b"a\nb\n.c"]) == b"a\r\nb\r\n..c\r\n.\r\n"


def test_crlf_split_between_chunks_is_not_doubled():
    assert encode([b"a\r", b"\n.b\r", b"\n"]) == b"a\r\n..b\r\n.\r\n"


def test_dot_at_start_of_a_chunk_after_a_line_end():
    assert encode([b"a\r\n", b".b\r\n"]) == b"a\r\n..b\r\n.\r\n"
    assert encode([b"a\n", b".b"]) == b"a\r\n..b\r\n.\r\n"


def test_empty_message_is_just_the_terminator():
    assert encode([]) == b".\r\n"
    assert encode([b""]) == b".\r\n"


#: Messages made of the bytes that matter here, so line ends and dots meet often.
MESSAGES = st.lists(st.sampled_from([b".", b"\r", b"\n", b"\r\n", b"x", b".."]), max_size=40).map(b"".join)


@given(MESSAGES | st.binary(max_size=200), st.integers(1, 7))
def test_any_chunking_of_any_message_round_trips(message, step):
    rechunked = [message[i:i + step] for i in range(0, len(message), step)]
    assert decode(encode(rechunked)) == lines_of(message)
    assert encode(rechunked) == encode([message])


def test_cut_after_lines():
    assert cut_after_lines(b"a\nb\r\nc", 0) == b""
    assert cut_after_lines(b"a\nb\r\nc", 2) == b"a\nb\r\n"
    assert cut_after_lines(b"a\nb\r\nc", 5) == b"a\nb\r\nc"
    assert count_lines(b"a\nb\r\nc") == 2
