"""SORT (RFC 5256 §3, RFC 5957 DISPLAYFROM / DISPLAYTO)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from mailserve.core.mime import decode_header_text
from mailserve.imap.search.context import SearchContext
from mailserve.imap.search.evaluation import _matching_indices
from mailserve.imap.search.keys import SearchKey
from mailserve.imap.search.values import fold, sent_timestamp


def _first_address(addresses: Sequence[Any]) -> Any:
    return addresses[0] if addresses else None


def _addr_mailbox(addresses: Sequence[Any]) -> str:
    """RFC 5256 §3 FROM/TO/CC: the addr-mailbox of the first address, or empty."""
    first = _first_address(addresses)
    return fold(first.mailbox or "") if first is not None else ""


def _display(addresses: Sequence[Any]) -> str:
    """RFC 5957 §3: the decoded display name of the first address, else its addr-spec;
    for a group, the group name."""
    first = _first_address(addresses)
    if first is None:
        return ""
    if first.is_group_start:
        return fold(decode_header_text(first.mailbox or ""))
    if first.name:
        return fold(decode_header_text(first.name))
    return fold(first.email or "")


def _sort_value(name: str, context: SearchContext, index: int) -> Any:
    message = context.messages[index].message
    if name == "ARRIVAL":
        return message.internal_date
    if name == "SIZE":
        return message.size
    parsed = context.parsed_at(index)
    if name == "DATE":
        return sent_timestamp(parsed, message)
    if name == "SUBJECT":
        return fold(parsed.base_subject)
    env = parsed.envelope
    if name == "FROM":
        return _addr_mailbox(env.from_)
    if name == "TO":
        return _addr_mailbox(env.to)
    if name == "CC":
        return _addr_mailbox(env.cc)
    if name == "DISPLAYFROM":
        return _display(env.from_)
    if name == "DISPLAYTO":
        return _display(env.to)
    raise ValueError(f"unknown sort key {name}")


def sort_indices(criteria: Sequence[tuple[str, bool]], context: SearchContext,
                 indices: Iterable[int]) -> list[int]:
    """Order ``indices`` by the criteria; ties keep sequence order (RFC 5256 §3).

    One stable sort per criterion, least significant first; REVERSE reverses only its
    own criterion (Python's ``reverse=True`` keeps equal items in order).
    """
    order = sorted(indices)
    for name, reverse in reversed(criteria):
        values = {i: _sort_value(name, context, i) for i in order}
        order.sort(key=values.__getitem__, reverse=reverse)
    return order


async def sort(criteria: Sequence[tuple[str, bool]], key: SearchKey, context: SearchContext,
               uid: bool = False) -> list[int]:
    """SORT: the matching messages' numbers in the requested order (RFC 5256 §3)."""
    indices = await _matching_indices(key, context)
    order = await context.blocking(lambda: sort_indices(criteria, context, indices))
    messages = context.messages
    return [messages[i].uid if uid else messages[i].seq for i in order]


def format_sort(numbers: Sequence[int], modseq: int | None = None) -> bytes:
    """``* SORT 5 3 4`` (RFC 5256 §4), with ``(MODSEQ n)`` under CONDSTORE (RFC 7162 §3.1.5)."""
    line = b"* SORT"
    if numbers:
        line += b" " + b" ".join(b"%d" % n for n in numbers)
        if modseq:
            line += b" (MODSEQ %d)" % modseq
    return line
