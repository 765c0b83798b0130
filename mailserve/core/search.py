"""Exact full-text search: index candidates, verified with IMAP substring semantics.

API
---
``MailSearch(core, index, indexer)``
``await MailSearch.matching(account, field, needle, message_ids) -> set[int]``
    Of ``message_ids``, those whose ``field`` ("body", "text", or a header field from
    ``SEARCH_FIELDS``) contains ``needle`` as a case-insensitive substring (RFC 9051
    §6.4.4), decoded (transfer encodings, charsets, encoded words).  Candidates come from
    the full-text index, messages the indexer has not reached yet are scanned, and every
    candidate is verified on its decoded text in a worker thread.
``MailSearch.for_account(account)``
    A text source for one account, as ``mailserve.imap.search.SearchContext`` wants.

One word: the index answers alone
---------------------------------
A needle that is one word (``substring_word``: letters, digits and marks, the commonest
SEARCH BODY) can only occur inside one word of a text, so the messages whose terms
contain it are exactly the messages containing it: ``search_containing`` walks the
index's term dictionary (not the messages) and its answer needs no verification.  Only
messages the indexer has not reached yet, and the few with a word longer than the index
keeps (the adapters mark them), are scanned.

Why the index query is trimmed
------------------------------
The index matches whole words; IMAP matches substrings (``SEARCH BODY ell`` finds
"hello").  A word of the needle that has a separator on both sides *inside the needle* is
a whole word of every text containing the needle, so the index can look it up; the first
and last word may be the tail or head of a longer word in the text and are left out
(runs of Han, kana and Hangul are indexed as characters and pairs, so they can always be
looked up).  A needle with no whole word that is not one word either (``"lo wo"``)
therefore has no index candidates and its messages are scanned; that keeps every answer
exact.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

import regex
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from mailserve.core.mime import decode_header_text, extract_text
from mailserve.interfaces import SEARCH_FIELDS, ISearchIndex
from mailserve.storage.search_terms import substring_word

__all__ = ["AccountTextSource", "MailSearch", "fold", "index_query"]

#: Fields ``matching`` understands: the index's fields plus ``"text"`` (headers and body).
TEXT_FIELDS = frozenset(SEARCH_FIELDS) | {"text"}
#: Longest needle sent to the index (the adapters refuse longer queries); longer
#: needles are answered by scanning.
MAX_INDEX_QUERY = 8192

# Letters, digits and marks of space-separated scripts: a run of them at either end of a
# needle may be part of a longer word of the text.  Han, kana and Hangul are excluded:
# the index knows every character and pair of those runs.
_UNSPACED = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}\u30fc\u3005"
_EDGE_HEAD = regex.compile(rf"^[[\p{{L}}\p{{N}}\p{{M}}]--[{_UNSPACED}]]+", regex.V1)
_EDGE_TAIL = regex.compile(rf"[[\p{{L}}\p{{N}}\p{{M}}]--[{_UNSPACED}]]+$", regex.V1)
_WORD_CHAR = regex.compile(r"[\p{L}\p{N}]")

_ADDRESS_FIELDS = ("from", "to", "cc", "bcc")
#: Index fields whose terms are exactly the words of what ``_verify`` compares.  TEXT is
#: the header block and the body (RFC 9051 §6.4.4); the address and subject fields are
#: renderings of header fields and could hold words the header text does not.
_SUBSTRING_FIELDS = {"text": ("headers", "body"), "body": ("body",), "headers": ("headers",)}


def fold(text: str) -> str:
    """NFKC, case-folded, NFKC again: the comparison form of the index (RFC 5051's
    "i;unicode-casemap" idea), so index candidates and verification agree."""
    if text.isascii():
        return text.lower()
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def index_query(needle: str) -> str | None:
    """The part of ``needle`` the index can be asked for, or None to scan.

    See the module docstring: edge words of spaced scripts are dropped.
    """
    folded = fold(needle)
    if len(folded) > MAX_INDEX_QUERY:
        return None
    inner = _EDGE_TAIL.sub("", _EDGE_HEAD.sub("", folded))
    if not _WORD_CHAR.search(inner):
        return None
    return inner


def _header_text(header: bytes, name: str | None) -> str:
    """Decoded header text: one field's values (``name``) or the whole block."""
    text = header.decode("utf-8", "replace")
    if name is None:
        return decode_header_text(text)
    values = []
    unfolded = regex.sub(r"\r?\n(?=[ \t])", "", text)
    for line in unfolded.splitlines():
        if not line.strip():
            break
        field, colon, value = line.partition(":")
        if colon and field.strip().lower() == name:
            values.append(decode_header_text(value.strip()))
    return "\n".join(values)


class MailSearch:
    """Exact BODY/TEXT/header substring search for one server (see the module docstring).

    ``index`` is the ``ISearchIndex`` (or None: everything is scanned); ``indexer`` the
    ``SearchIndexer`` whose ``pending(account)`` names messages not indexed yet.
    """

    log = Logger()

    def __init__(self, core: Any, index: ISearchIndex | None, indexer: Any = None,
                 threadpool: Any = None) -> None:
        self.core = core
        self.index = index
        self.indexer = indexer
        self._threadpool = threadpool

    def _in_thread(self, fn, *args) -> Deferred:
        reactor = self.core._reactor
        pool = self._threadpool or reactor.getThreadPool()
        return deferToThreadPool(reactor, pool, fn, *args)

    def for_account(self, account: int) -> AccountTextSource:
        """A ``TextSource`` bound to ``account`` (``mailserve.imap.search.SearchContext.text``)."""
        return AccountTextSource(self, account)

    async def matching(self, account: int, field: str, needle: str,
                       message_ids: Iterable[int]) -> set[int]:
        """Of ``message_ids``, those whose ``field`` contains ``needle`` (RFC 9051 §6.4.4:
        case-insensitive substring; an empty needle matches every message)."""
        if field not in TEXT_FIELDS:
            raise ValueError(f"cannot search field {field!r}")
        wanted = set(message_ids)
        folded = fold(needle)
        if not wanted or not folded:
            return wanted
        # What the indexer has not reached, taken *before* the index is asked: a message
        # indexed in between is then in the index's answer, and none slips between both.
        pending = self.indexer.pending(account) if self.indexer is not None else set()
        word = substring_word(needle) if field in _SUBSTRING_FIELDS else None
        if word is not None:
            try:
                found, uncertain = await self._in_thread(self.index.search_containing, account, _SUBSTRING_FIELDS[field], word)
            except ValueError as exc:
                self.log.debug("index refused {word!r}: {exc}", word=word, exc=exc)
            else:
                matched = wanted & set(found)
                unsure = wanted & (set(uncertain) | pending)
                unsure -= matched
                if unsure:
                    matched |= await self._in_thread(self._verify, account, field, folded, sorted(unsure))
                return matched
        candidates = wanted
        query = index_query(needle)
        if query is not None and self.index is not None:
            try:
                found = await self._in_thread(self.index.search, account, field, query)
            except ValueError as exc:  # the index refused the query: scan instead
                self.log.debug("index refused {query!r}: {exc}", query=query, exc=exc)
            else:
                candidates = wanted & (set(found) | pending)
        if not candidates:
            return set()
        return await self._in_thread(self._verify, account, field, folded, sorted(candidates))

    def _verify(self, account: int, field: str, folded: str, candidates: Sequence[int]) -> set[int]:
        """Check each candidate's decoded text (worker thread: reads blobs)."""
        matched = set()
        for message in self.core.get_messages(account, candidates):
            if message is None:
                continue
            try:
                parsed = self.core.get_parsed(message.blob_id)
                if field in ("body", "text"):
                    raw = self.core.blobs.get(message.blob_id)
                    text = extract_text(raw, parsed)
                    if field == "text":
                        text = _header_text(parsed.header, None) + "\n" + text
                elif field == "headers":
                    text = _header_text(parsed.header, None)
                else:
                    text = _header_text(parsed.header, field)
            except KeyError:  # blob or parse record gone (expunged meanwhile)
                continue
            if folded in fold(text):
                matched.add(message.id)
        return matched


class AccountTextSource:
    """``MailSearch`` for one account: the IMAP search context's text source."""

    def __init__(self, search: MailSearch, account: int) -> None:
        self.search = search
        self.account = account

    async def matching(self, field: str, needle: str, message_ids: Sequence[int]) -> set[int]:
        return await self.search.matching(self.account, field, needle, message_ids)
