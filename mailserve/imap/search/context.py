"""What a search runs over: the selected mailbox's messages and where their content comes from."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from typing import Any, NamedTuple, Protocol

from mailserve.core.mime import ParsedMessage
from mailserve.core.model import Message
from mailserve.imap.search.limits import INLINE_LIMIT
from mailserve.imap.search.values import fold, header_fields


class TextSource(Protocol):
    """Full-text matching for BODY and TEXT (``mailserve.core.search.MailSearch``)."""

    async def matching(self, field: str, needle: str, message_ids: Sequence[int]) -> set[int]:
        """Of ``message_ids``, those whose ``field`` contains ``needle`` (IMAP substring rules)."""


class SearchMessage(NamedTuple):
    """One message of the selected mailbox as the session sees it.

    A named tuple rather than a dataclass: a SEARCH builds one per message of the
    mailbox, and a tuple is the cheapest immutable record to build.
    """

    seq: int
    uid: int
    message: Message
    recent: bool = False


@dataclass
class SearchContext:
    """The selected mailbox a SEARCH, SORT or THREAD runs over.

    ``messages`` are in sequence order (= UID order).  ``parsed`` fetches the
    ``ParsedMessage`` cached at ingest by blob id (``MailCore.get_parsed``).  ``text``
    answers BODY/TEXT.  ``saved`` is the SEARCHRES result (UIDs, RFC 5182).  Internal
    dates are turned into days in ``tz`` for BEFORE/ON/SINCE.  ``run_blocking(fn)``
    runs ``fn()`` in a worker thread and returns an awaitable of its result; when given,
    searches over more than ``INLINE_LIMIT`` messages use it so the reactor is not held.
    """

    messages: Sequence[SearchMessage]
    parsed: Callable[[str], ParsedMessage]
    text: TextSource | None = None
    saved: frozenset[int] = frozenset()
    tz: tzinfo = UTC
    now: Callable[[], float] | None = None
    run_blocking: Callable[[Callable[[], Any]], Awaitable[Any]] | None = None
    #: ``parsed_many(blob_ids)``: many parses in one read (``MailCore.get_parsed_many``).
    parsed_many: Callable[[Sequence[str]], Sequence[ParsedMessage | None]] | None = None
    #: ``derived(kind, blob_id, compute)``: a per-blob memo (``MailCore.derived``), and
    #: ``derived_peek(kind, blob_id)``: its value if already computed, else None.
    derived: Callable[[Any, str, Callable[[ParsedMessage], Any]], Any] | None = None
    derived_peek: Callable[[Any, str], Any] | None = None
    _parsed_cache: dict[int, ParsedMessage] = field(default_factory=dict, repr=False)

    def parsed_at(self, index: int) -> ParsedMessage:
        """The ``ParsedMessage`` of ``messages[index]``, loaded once per search."""
        found = self._parsed_cache.get(index)
        if found is None:
            found = self._parsed_cache[index] = self.parsed(self.messages[index].message.blob_id)
        return found

    def preload(self, indices: Iterable[int]) -> None:
        """Load the parses of many messages in one read before a loop needs them one by one."""
        if self.parsed_many is None:
            return
        wanted = [i for i in indices if i not in self._parsed_cache]
        if len(wanted) < 2:
            return
        loaded = self.parsed_many([self.messages[i].message.blob_id for i in wanted])
        for i, parsed in zip(wanted, loaded, strict=True):
            if parsed is not None:
                self._parsed_cache[i] = parsed

    def folded_fields_at(self, index: int) -> dict[str, tuple[str, ...]]:
        """The header fields of ``messages[index]``: lowercase name -> the decoded values
        (``header_fields``) in comparison form (``fold``).  Computed once per message
        content when the core offers its blob memo, so a SEARCH SUBJECT over a mailbox
        that was searched before is a dict lookup and a substring test per message."""
        if self.derived is None:
            return _folded_fields(self.parsed_at(index))
        blob_id = self.messages[index].message.blob_id
        parsed = self._parsed_cache.get(index)
        if parsed is not None:
            return self.derived(_FOLDED_FIELDS, blob_id, lambda _: _folded_fields(parsed))
        return self.derived(_FOLDED_FIELDS, blob_id, _folded_fields)

    def uncached_fields(self, indices: Iterable[int]) -> list[int]:
        """Of ``indices``, those whose folded fields are not in the core's memo yet."""
        if self.derived_peek is None:
            return list(indices)
        peek, messages = self.derived_peek, self.messages
        return [i for i in indices if peek(_FOLDED_FIELDS, messages[i].message.blob_id) is None]

    async def blocking(self, fn: Callable[[], Any]) -> Any:
        if self.run_blocking is not None and len(self.messages) > INLINE_LIMIT:
            return await self.run_blocking(fn)
        return fn()


_FOLDED_FIELDS = "imap-search-folded-fields"


def _folded_fields(parsed: ParsedMessage) -> dict[str, tuple[str, ...]]:
    fields: dict[str, list[str]] = {}
    for name, value in header_fields(parsed.header):
        fields.setdefault(name, []).append(fold(value))
    return {name: tuple(values) for name, values in fields.items()}
