"""Evaluation: a ``SearchKey`` tree applied to a ``SearchContext``, set by set (RFC 9051 §6.4.4)."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from datetime import date

from mailserve.core.model import Message
from mailserve.imap.search.context import SearchContext
from mailserve.imap.search.errors import SearchSyntaxError
from mailserve.imap.search.keys import (
    AgeKey,
    All,
    AndKey,
    DateKey,
    FlagKey,
    HeaderKey,
    ModSeqKey,
    NotKey,
    OrKey,
    RecentKey,
    SearchKey,
    SetKey,
    SizeKey,
    TextKey,
)
from mailserve.imap.search.values import fold, internal_day, sent_day


def _keywords_folded(message: Message) -> frozenset[str]:
    return frozenset(k.lower() for k in message.keywords)


def _text_keys(key: SearchKey) -> list[TextKey]:
    found: list[TextKey] = []
    stack = [key]
    while stack:
        node = stack.pop()
        if isinstance(node, TextKey):
            if node not in found:
                found.append(node)
        elif isinstance(node, NotKey):
            stack.append(node.key)
        elif isinstance(node, OrKey):
            stack.extend((node.left, node.right))
        elif isinstance(node, AndKey):
            stack.extend(node.keys)
    return found


class _SetEvaluator:
    """Evaluates a key tree to the set of indices (into ``context.messages``) it matches.

    Every node yields a whole set at once, so a key is looked at once per search rather
    than once per message, and AND narrows what the following keys are checked against.
    """

    def __init__(self, context: SearchContext, text_sets: dict[TextKey, set[int]]) -> None:
        self.context = context
        self.messages = context.messages
        self.text_sets = text_sets
        self.headers: dict[int, dict[str, tuple[str, ...]]] = {}

    def run(self, key: SearchKey, within: set[int] | None = None) -> set[int]:
        if within is None:
            within = set(range(len(self.messages)))
        return self.node(key, within)

    def node(self, key: SearchKey, within: set[int]) -> set[int]:
        msgs = self.messages
        if not within:
            return set()
        if isinstance(key, All):
            return set(within)
        if isinstance(key, AndKey):
            result = within
            for sub in sorted(key.keys, key=_cost):
                result = self.node(sub, result)
                if not result:
                    break
            return set(result)
        if isinstance(key, OrKey):
            left = self.node(key.left, within)
            return left | self.node(key.right, within - left)
        if isinstance(key, NotKey):
            return within - self.node(key.key, within)
        if isinstance(key, FlagKey):
            if key.flag.startswith("\\"):
                return {i for i in within if (key.flag in msgs[i].message.keywords) == key.present}
            flag = key.flag.lower()
            return {i for i in within if (flag in _keywords_folded(msgs[i].message)) == key.present}
        if isinstance(key, RecentKey):
            return {i for i in within if msgs[i].recent}
        if isinstance(key, SetKey):
            return self.numbers(key, within)
        if isinstance(key, SizeKey):
            if key.larger:
                return {i for i in within if msgs[i].message.size > key.size}
            return {i for i in within if msgs[i].message.size < key.size}
        if isinstance(key, ModSeqKey):
            return {i for i in within if msgs[i].message.modseq >= key.modseq}
        if isinstance(key, AgeKey):
            now = (self.context.now or _now)()
            if key.older:
                return {i for i in within if now - msgs[i].message.internal_date >= key.seconds}
            return {i for i in within if now - msgs[i].message.internal_date < key.seconds}
        if isinstance(key, DateKey):
            return self.dates(key, within)
        if isinstance(key, HeaderKey):
            return self.header(key, within)
        if isinstance(key, TextKey):
            return within & self.text_sets.get(key, set())
        raise TypeError(f"not a search key: {key!r}")

    def numbers(self, key: SetKey, within: set[int]) -> set[int]:
        msgs = self.messages
        if key.numbers.saved:
            saved = self.context.saved
            return {i for i in within if msgs[i].uid in saved}
        # "*" is the largest number in use (RFC 9051 §9 seq-number); ``messages`` may
        # leave out messages the session knows are gone, so numbers are compared as
        # numbers rather than used as positions.
        if key.uid:
            largest = msgs[-1].uid if msgs else 0
        else:
            largest = msgs[-1].seq if msgs else 0
        ranges = key.numbers.resolve(largest)
        starts = [lo for lo, _ in ranges]

        def member(n: int) -> bool:
            at = bisect.bisect_right(starts, n) - 1
            return at >= 0 and n <= ranges[at][1]

        if key.uid:
            return {i for i in within if member(msgs[i].uid)}
        return {i for i in within if member(msgs[i].seq)}

    def dates(self, key: DateKey, within: set[int]) -> set[int]:
        tz = self.context.tz
        out = set()
        if key.sent:
            self.context.preload(within)
        for i in within:
            message = self.messages[i].message
            day = sent_day(self.context.parsed_at(i), message, tz) if key.sent \
                else internal_day(message, tz)
            if _date_matches(day, key):
                out.add(i)
        return out

    def header(self, key: HeaderKey, within: set[int]) -> set[int]:
        needle = fold(key.text)
        name = key.name
        out = set()
        self.context.preload(self.context.uncached_fields(i for i in within if i not in self.headers))
        for i in within:
            fields = self.headers.get(i)
            if fields is None:
                fields = self.headers[i] = self.context.folded_fields_at(i)
            values = fields.get(name)
            if values is not None and (not needle or any(needle in value for value in values)):
                out.add(i)
        return out


def _date_matches(day: date, key: DateKey) -> bool:
    if key.relation == "before":
        return day < key.day
    if key.relation == "on":
        return day == key.day
    return day >= key.day


def _now() -> float:
    import time

    return time.time()


def _cost(key: SearchKey) -> int:
    """Cheap keys first inside an AND, so costly ones see fewer messages."""
    if isinstance(key, (FlagKey, SetKey, SizeKey, ModSeqKey, RecentKey, All, AgeKey)):
        return 0
    if isinstance(key, DateKey):
        return 1 if key.sent else 0
    if isinstance(key, HeaderKey):
        return 2
    if isinstance(key, TextKey):
        return 4
    return 3


async def _matching_indices(key: SearchKey, context: SearchContext) -> set[int]:
    """Indices into ``context.messages`` that ``key`` matches.

    BODY/TEXT keys are answered first through ``context.text`` (which works off the
    reactor); when the top of the tree is an AND, its other keys are evaluated first so
    only the messages they leave are searched for text.
    """
    messages = context.messages
    text_keys = _text_keys(key)
    text_sets: dict[TextKey, set[int]] = {}
    if text_keys:
        if context.text is None:
            raise SearchSyntaxError("BODY and TEXT searches are not available")
        candidates = set(range(len(messages)))
        if isinstance(key, AndKey):
            others = tuple(k for k in key.keys if not _text_keys(k))
            if others:
                narrowed = _SetEvaluator(context, {})
                candidates = await context.blocking(lambda: narrowed.run(AndKey(others)))
        by_id: dict[int, list[int]] = {}
        for i in candidates:
            by_id.setdefault(messages[i].message.id, []).append(i)
        for text_key in text_keys:
            matched = await context.text.matching(text_key.field, text_key.text, sorted(by_id))
            text_sets[text_key] = {i for mid in matched for i in by_id.get(mid, ())}
    evaluator = _SetEvaluator(context, text_sets)
    return await context.blocking(lambda: evaluator.run(key))


async def evaluate(key: SearchKey, context: SearchContext, uid: bool = False) -> list[int]:
    """Sequence numbers (or UIDs) of the messages matching ``key``, ascending (RFC 9051 §6.4.4)."""
    indices = await _matching_indices(key, context)
    messages = context.messages
    return [messages[i].uid if uid else messages[i].seq for i in sorted(indices)]


def uses_modseq(key: SearchKey) -> bool:
    """Whether the key holds MODSEQ, so the response carries ``(MODSEQ n)`` (RFC 7162 §3.1.5)."""
    stack = [key]
    while stack:
        node = stack.pop()
        if isinstance(node, ModSeqKey):
            return True
        if isinstance(node, NotKey):
            stack.append(node.key)
        elif isinstance(node, OrKey):
            stack.extend((node.left, node.right))
        elif isinstance(node, AndKey):
            stack.extend(node.keys)
    return False


def result_modseq(numbers: Iterable[int], context: SearchContext, uid: bool = False) -> int:
    """Highest mod-sequence among the matched messages (RFC 7162 §3.1.5), 0 if none."""
    wanted = set(numbers)
    return max((m.message.modseq for m in context.messages
                if (m.uid if uid else m.seq) in wanted), default=0)
