"""Bounded in-memory caches of decoded metadata, safe because what they cache cannot go stale.

Two things are decoded over and over by the protocols: the structure parsed at ingest
(every FETCH ENVELOPE, every SEARCH SUBJECT reads it) and the message records (every
FETCH FLAGS, every SEARCH builds its view from them).  Decoding a ``ParsedMessage`` from
msgpack costs ~15 µs and formatting an IMAP ENVELOPE as much again, which made a
50-message ``FETCH (FLAGS ENVELOPE)`` cost milliseconds; Dovecot avoids the same work with
its ``dovecot.index.cache`` file.

Neither cache needs invalidation:

* ``BlobDerivedCache`` is keyed by blob id.  Blobs are content-addressed (their id is the
  SHA-256 of the bytes), so anything computed from a blob -- its parse, an ENVELOPE
  rendering of that parse -- is the same for as long as the id exists.
* ``RecordCache`` is keyed by the stored bytes of a record themselves: the caller still
  reads the record in its read transaction (so it always sees the committed state, also
  after a write by another process) and only skips decoding when the bytes are identical
  to bytes already decoded.

Both are bounded by entry count, so a 100k-message mailbox cannot grow them without
limit; both are used from the reactor and from worker threads without a lock (see
``_LRU``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")
_MISSING = object()


class _LRU:
    """A bounded map that keeps recently used entries: two generations of plain dicts.

    New entries go into the young generation; a hit in the old generation is promoted.
    When the young generation holds ``capacity / 2`` entries it becomes the old one and
    the previous old one is dropped, so at most ``capacity`` entries are kept and an entry
    used within the last ``capacity / 2`` insertions survives (a cheap approximation of
    LRU).  Every step is a single dict operation or reference swap, atomic under the GIL,
    so readers on the reactor and on worker threads need no lock: a race can only cost
    an extra miss, never return a wrong value.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError("cache capacity must not be negative")
        self.capacity = capacity
        self._generation = max(1, capacity // 2)
        self._young: dict[Hashable, Any] = {}
        self._old: dict[Hashable, Any] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def lookup(self, key: Hashable) -> Any:
        """The cached value or ``_MISSING``."""
        value = self._young.get(key, _MISSING)
        if value is _MISSING:
            value = self._old.get(key, _MISSING)
            if value is _MISSING:
                self.misses += 1
                return value
            self.store(key, value)
        self.hits += 1
        return value

    def store(self, key: Hashable, value: Any) -> None:
        if not self.capacity:
            return
        young = self._young
        if len(young) >= self._generation:
            self._old = young
            self._young = young = {}
        young[key] = value

    def clear(self) -> None:
        self._young = {}
        self._old = {}


class BlobDerivedCache(_LRU):
    """Values derived from immutable blobs, keyed by ``(kind, blob_id)``.

    ``kind`` names the derivation (``"parsed"``, ``("imap-envelope", utf8)``, ...), so
    several protocols can keep their renderings of the same blob side by side.
    """

    def get(self, kind: Hashable, blob_id: str) -> Any:
        """The cached value, or None."""
        value = self.lookup((kind, blob_id))
        return None if value is _MISSING else value

    def put(self, kind: Hashable, blob_id: str, value: Any) -> None:
        self.store((kind, blob_id), value)

    def derive(self, kind: Hashable, blob_id: str, compute: Callable[[], T]) -> T:
        """The cached value, computing (and caching) it on a miss."""
        value = self.lookup((kind, blob_id))
        if value is _MISSING:
            value = compute()
            self.store((kind, blob_id), value)
        return value


class RecordCache(_LRU):
    """Decoded records keyed by ``(record id, stored bytes)``: a hit is exact by construction."""

    def decode(self, record_id: Hashable, data: bytes, decoder: Callable[[Any, bytes], T]) -> T:
        key = (record_id, data)
        value = self.lookup(key)
        if value is _MISSING:
            value = decoder(record_id, data)
            self.store(key, value)
        return value
