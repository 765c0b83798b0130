"""Sequence sets (RFC 9051 §9 ``sequence-set``, RFC 5182 ``$``): parsing, membership, compression."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from mailserve.imap.parser import merge_ranges
from mailserve.imap.search.errors import SearchSyntaxError
from mailserve.imap.search.limits import MAX_NUMBER, MAX_RANGES


@dataclass(frozen=True)
class SequenceSet:
    """Ranges of numbers where ``None`` stands for ``*`` ("the largest number in use").

    ``saved`` marks the SEARCHRES reference ``$`` (RFC 5182 §2.1).  Membership is a
    binary search over merged ranges: ``1:4294967295`` is never expanded.
    """

    ranges: tuple[tuple[int | None, int | None], ...] = ()
    saved: bool = False

    def resolve(self, largest: int) -> list[tuple[int, int]]:
        """Merged, sorted ``(low, high)`` ranges with ``*`` replaced by ``largest``.

        RFC 9051 §9: ``n:m`` equals ``m:n``; ``*`` in an empty mailbox matches nothing.
        """
        out = []
        for low, high in self.ranges:
            lo = largest if low is None else low
            hi = largest if high is None else high
            if lo > hi:
                lo, hi = hi, lo
            if hi < 1:
                continue
            out.append((max(lo, 1), hi))
        return merge_ranges(out)


def parse_sequence_set(text: str, allow_saved: bool = True) -> SequenceSet:
    """Parse ``1:3,5,7:*`` or ``$``; raise ``SearchSyntaxError`` when malformed."""
    if text == "$":
        if not allow_saved:
            raise SearchSyntaxError("$ is not allowed here")
        return SequenceSet(saved=True)
    if not text:
        raise SearchSyntaxError("empty sequence set")
    ranges: list[tuple[int | None, int | None]] = []
    for item in text.split(","):
        low_text, colon, high_text = item.partition(":")
        low = _seq_number(low_text)
        high = _seq_number(high_text) if colon else low
        ranges.append((low, high))
        if len(ranges) > MAX_RANGES:
            raise SearchSyntaxError(f"sequence set has more than {MAX_RANGES} ranges")
    return SequenceSet(tuple(ranges))


_DIGITS = re.compile(r"[1-9][0-9]*")


def _seq_number(text: str) -> int | None:
    if text == "*":
        return None
    if not _DIGITS.fullmatch(text) or int(text) > MAX_NUMBER:
        raise SearchSyntaxError(f"{text!r} is not a valid sequence number")
    return int(text)


def sequence_set_text(numbers: Iterable[int]) -> str:
    """Compress ascending numbers into ranges: ``1:3,5,7:9`` (RFC 4731 §3.1 ``ALL``)."""
    pieces: list[str] = []
    start = prev = None
    for n in sorted(set(numbers)):
        if prev is not None and n == prev + 1:
            prev = n
            continue
        if start is not None:
            pieces.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = n
    if start is not None:
        pieces.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(pieces)
