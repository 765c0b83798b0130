"""How much one search program may ask for: hostile input must not exhaust the process."""

from __future__ import annotations

#: Most search keys in one command, and deepest nesting of NOT/OR/lists: a hostile
#: ``NOT NOT NOT ...`` must neither exhaust the stack nor take long to evaluate.
MAX_KEYS = 10_000
MAX_DEPTH = 64
#: Most ranges in one sequence set.
MAX_RANGES = 100_000
#: Largest UID / sequence number (RFC 9051 §9 ``nz-number``) and mod-sequence (RFC 7162 §7).
MAX_NUMBER = 2**32 - 1
MAX_MODSEQ = 2**63 - 1
#: Messages evaluated on the calling (reactor) thread; larger searches run in a worker.
INLINE_LIMIT = 500
