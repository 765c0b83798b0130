"""IMAP SEARCH, SORT and THREAD: parsing, evaluation and result formatting.

Token format (shared with the command parser, ``mailserve/imap/parser.py``): a command's
arguments are a list in which atoms are ``str``, quoted strings and literals are
``bytes``, and parenthesised lists are Python ``list`` objects of the same kinds.

API (used by the IMAP session)
------------------------------
``parse_search_command(tokens, utf8=False) -> SearchCommand``
    The arguments after ``SEARCH`` (or ``UID SEARCH``): optional ``RETURN (...)``
    (RFC 4731), optional ``CHARSET x``, then the keys.  ``SearchCommand.returns``,
    ``.charset``, ``.key``.  Raises ``SearchSyntaxError`` (answer BAD with its message)
    or ``BadCharset`` (answer ``NO [BADCHARSET (UTF-8 US-ASCII)]``).
``parse_search(tokens, charset="UTF-8") -> SearchKey``
    Just the search keys (for SORT and THREAD, after their own arguments).
``parse_sort_command(tokens) -> SortCommand`` / ``parse_thread_command(tokens) -> ThreadCommand``
    ``SORT (criteria) charset keys`` (RFC 5256 §3) and ``THREAD algorithm charset keys``.
``SearchContext(messages, ...)``
    What evaluation runs over: ``messages`` is the selected mailbox in sequence order as
    ``SearchMessage(seq, uid, message, recent)`` where ``message`` is the core's
    ``Message`` record; ``parsed(blob_id) -> ParsedMessage`` (the core's ``get_parsed``);
    ``text`` an object with ``async matching(field, needle, message_ids) -> set[int]``
    (``MailSearch.for_account(account)``); ``saved`` the SEARCHRES ``$`` UIDs.
``await evaluate(key, context, uid=False) -> list[int]``
    Matching sequence numbers (or UIDs when ``uid``), ascending.
``format_search(numbers, ...) / format_esearch(numbers, returns, tag, uid, ...)``
    ``* SEARCH`` / ``* ESEARCH`` response lines (RFC 4731 MIN MAX COUNT ALL, with
    sequence-set compression).  ``SAVE``: the session stores the matched UIDs itself.
``await sort(criteria, key, context, uid=False) -> list[int]``
    RFC 5256 SORT (ARRIVAL CC DATE FROM REVERSE SIZE SUBJECT TO, DISPLAYFROM/DISPLAYTO of RFC 5957).
``await thread(algorithm, key, context, uid=False) -> list[ThreadNode]`` and
``format_threads(nodes) -> bytes``
    ORDEREDSUBJECT and REFERENCES (RFC 5256 §3), then the ``* THREAD`` payload.
``uses_modseq(key)``, ``result_modseq(numbers, context, uid)``, ``format_sort(numbers, modseq)``
    CONDSTORE decorations (RFC 7162 §3.1.5).

Semantics worth knowing
-----------------------
* Header keys (FROM, SUBJECT, HEADER ...) match the unfolded, RFC 2047-decoded field
  values of the header cached at ingest (its first 64 KiB), case-insensitively under
  Unicode case folding; every occurrence of a repeated field counts.
* BEFORE/ON/SINCE use the internal date's day in ``SearchContext.tz`` (UTC by default);
  SENT* use the day written in the Date: header, or the internal date when there is
  none (the RFC 5256 §2.2 fallback, so SEARCH and SORT agree).
* KEYWORD compares keywords case-insensitively, as Dovecot does.
* Evaluation is set-based: each key is applied to the whole candidate set once, AND
  narrows the set for the keys after it, and BODY/TEXT see only the messages the other
  ANDed keys left.

Where things are
----------------
- ``limits`` -- ``MAX_KEYS``, ``MAX_DEPTH``, ``MAX_RANGES``, ``MAX_NUMBER``, ``MAX_MODSEQ``, ``INLINE_LIMIT``.
- ``errors`` -- ``SearchSyntaxError``, ``BadCharset`` and ``SUPPORTED_CHARSETS``.
- ``sequence_set`` -- ``SequenceSet``, ``parse_sequence_set``, ``sequence_set_text``.
- ``keys`` -- the ``SearchKey`` tree; ``parser`` -- the search key grammar, ``parse_search``.
- ``commands`` -- the SEARCH, SORT and THREAD arguments (``parse_*_command``).
- ``values`` -- folded text, header fields and days as the comparisons see them.
- ``context`` -- ``SearchContext`` and ``SearchMessage``; ``evaluation`` -- ``evaluate`` and the
  CONDSTORE helpers; ``responses`` -- ``* SEARCH`` / ``* ESEARCH`` and SEARCHRES.
- ``sorting`` -- SORT and ``* SORT``; ``threads`` -- THREAD and ``* THREAD``.

Import from ``mailserve.imap.search`` itself; the modules are its inside.
"""

# Names imported ``X as X`` are outside ``__all__`` but were importable from the single
# module this package replaces (the session glue and the tests use several of them),
# so they stay importable from here.

from mailserve.imap.search.commands import RETURN_OPTIONS as RETURN_OPTIONS
from mailserve.imap.search.commands import SORT_KEYS as SORT_KEYS
from mailserve.imap.search.commands import THREAD_ALGORITHMS as THREAD_ALGORITHMS
from mailserve.imap.search.commands import (
    SearchCommand,
    SortCommand,
    ThreadCommand,
    parse_search_command,
    parse_sort_command,
    parse_thread_command,
)
from mailserve.imap.search.commands import parse_sort_criteria as parse_sort_criteria
from mailserve.imap.search.context import SearchContext, SearchMessage
from mailserve.imap.search.context import TextSource as TextSource
from mailserve.imap.search.errors import SUPPORTED_CHARSETS as SUPPORTED_CHARSETS
from mailserve.imap.search.errors import BadCharset, SearchSyntaxError
from mailserve.imap.search.evaluation import evaluate, result_modseq
from mailserve.imap.search.evaluation import uses_modseq as uses_modseq
from mailserve.imap.search.keys import AgeKey as AgeKey
from mailserve.imap.search.keys import All as All
from mailserve.imap.search.keys import AndKey as AndKey
from mailserve.imap.search.keys import DateKey as DateKey
from mailserve.imap.search.keys import FlagKey as FlagKey
from mailserve.imap.search.keys import HeaderKey as HeaderKey
from mailserve.imap.search.keys import ModSeqKey as ModSeqKey
from mailserve.imap.search.keys import NotKey as NotKey
from mailserve.imap.search.keys import OrKey as OrKey
from mailserve.imap.search.keys import RecentKey as RecentKey
from mailserve.imap.search.keys import SearchKey
from mailserve.imap.search.keys import SetKey as SetKey
from mailserve.imap.search.keys import SizeKey as SizeKey
from mailserve.imap.search.keys import TextKey as TextKey
from mailserve.imap.search.limits import INLINE_LIMIT as INLINE_LIMIT
from mailserve.imap.search.limits import MAX_DEPTH as MAX_DEPTH
from mailserve.imap.search.limits import MAX_KEYS as MAX_KEYS
from mailserve.imap.search.limits import MAX_MODSEQ as MAX_MODSEQ
from mailserve.imap.search.limits import MAX_NUMBER as MAX_NUMBER
from mailserve.imap.search.limits import MAX_RANGES as MAX_RANGES
from mailserve.imap.search.parser import parse_search
from mailserve.imap.search.responses import format_esearch, format_search, saved_result
from mailserve.imap.search.sequence_set import SequenceSet, parse_sequence_set, sequence_set_text
from mailserve.imap.search.sorting import _sort_value as _sort_value
from mailserve.imap.search.sorting import format_sort as format_sort
from mailserve.imap.search.sorting import sort
from mailserve.imap.search.sorting import sort_indices as sort_indices
from mailserve.imap.search.threads import MAX_REFERENCES as MAX_REFERENCES
from mailserve.imap.search.threads import ThreadNode, format_threads, thread
from mailserve.imap.search.threads import is_reply_or_forward as is_reply_or_forward
from mailserve.imap.search.values import fold as fold
from mailserve.imap.search.values import header_fields as header_fields
from mailserve.imap.search.values import internal_day as internal_day
from mailserve.imap.search.values import sent_day as sent_day
from mailserve.imap.search.values import sent_timestamp as sent_timestamp

__all__ = [
    "BadCharset",
    "SearchCommand",
    "SearchContext",
    "SearchKey",
    "SearchMessage",
    "SearchSyntaxError",
    "SequenceSet",
    "SortCommand",
    "ThreadCommand",
    "ThreadNode",
    "evaluate",
    "format_esearch",
    "format_search",
    "format_threads",
    "parse_search",
    "parse_search_command",
    "parse_sequence_set",
    "parse_sort_command",
    "parse_thread_command",
    "result_modseq",
    "saved_result",
    "sequence_set_text",
    "sort",
    "thread",
]
