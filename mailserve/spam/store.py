"""The spam filter's state in the metadata store: Bayes counts, greylisting, reputation.

All keys come from the spam section of :mod:`mailserve.core.keys`.  Writes go through
``IMetadataStore.write`` (a Deferred that fires after the durable commit) or, for the
command line, ``write_sync``; both run the same transaction function, so the CLI and the
server learn identically.  Reads of many tokens are plain LMDB gets: cheap, but a message
has hundreds of tokens, so the filter calls :meth:`SpamStore.token_counts` from a worker
thread (LMDB read transactions are per-thread and never block the writer).

Value formats (big-endian, fixed size):

* token: ``>II`` spam count, ham count;
* learned message: one byte, ``s`` or ``h``;
* greylist record: ``>ddI`` first seen, passed at (0 = not yet), messages passed;
* reputation record: ``>dId`` average score, messages seen, last update.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred

from mailserve.core import keys
from mailserve.interfaces import IMetadataStore, IWriteTransaction

__all__ = ["BayesTotals", "GreylistRecord", "LearnOutcome", "ReputationRecord", "SpamStore"]

_TOKEN = struct.Struct(">II")
_GREYLIST = struct.Struct(">ddI")
_REPUTATION = struct.Struct(">dId")
_SPAM_MARK = b"s"
_HAM_MARK = b"h"
_MAX_COUNT = 2**32 - 1


@dataclass(frozen=True)
class BayesTotals:
    """How many messages a Bayes database learned as spam and as ham."""

    spam: int
    ham: int


@dataclass(frozen=True)
class LearnOutcome:
    """What one learn request did: ``learned``, ``relearned`` (class flipped) or ``already``."""

    status: str
    tokens: int


@dataclass(frozen=True)
class GreylistRecord:
    first_seen: float
    passed_at: float
    passes: int


@dataclass(frozen=True)
class ReputationRecord:
    average: float
    messages: int
    updated: float


def _unpack_token(value: bytes | None) -> tuple[int, int]:
    if value is None or len(value) != _TOKEN.size:
        return (0, 0)
    return _TOKEN.unpack(value)


class SpamStore:
    """Typed access to the spam filter's keys (see the module docstring)."""

    def __init__(self, metadata: IMetadataStore) -> None:
        self.metadata = metadata

    # -- Bayes ------------------------------------------------------------------------
    def totals(self, account: int | None) -> BayesTotals:
        """Messages learned by the global database (``None``) or one account's."""

        def read(txn: Any) -> BayesTotals:
            return BayesTotals(
                txn.counter(keys.spam_learned_total(account, True)),
                txn.counter(keys.spam_learned_total(account, False)),
            )

        return self.metadata.read(read)

    def token_counts(self, account: int | None, hashes: Sequence[bytes]) -> list[tuple[int, int]]:
        """``(spam, ham)`` counts of each token, in order (blocking: call from a thread)."""

        def read(txn: Any) -> list[tuple[int, int]]:
            return [_unpack_token(txn.get(keys.spam_token(account, h))) for h in hashes]

        return self.metadata.read(read)

    def learned_as(self, account: int | None, digest: bytes) -> bool | None:
        """``True``/``False`` if the message was learned as spam/ham, ``None`` if never."""
        value = self.metadata.read(lambda txn: txn.get(keys.spam_learned_message(account, digest)))
        return None if value is None else value == _SPAM_MARK

    def learn(
        self, account: int | None, digest: bytes, hashes: Sequence[bytes], is_spam: bool, *, sync: bool = False
    ) -> Deferred | LearnOutcome:
        """Count ``hashes`` as one message of class ``is_spam`` in one transaction.

        Learning is idempotent per message (``digest``): learning it again as the same
        class changes nothing, and learning it as the other class first takes back the
        earlier lesson, as SpamAssassin's ``sa-learn`` does when a user corrects a verdict
        (moving a message into Junk and back out must leave the database as it was).
        """
        fn = self._learn_txn(account, digest, list(dict.fromkeys(hashes)), is_spam)
        return self.metadata.write_sync(fn) if sync else self.metadata.write(fn)

    def forget(self, account: int | None, digest: bytes, hashes: Sequence[bytes], *, sync: bool = False) -> Any:
        """Take back whatever was learned from the message ``digest`` (a no-op if nothing)."""
        unique = list(dict.fromkeys(hashes))

        def fn(txn: IWriteTransaction) -> bool:
            previous = txn.get(keys.spam_learned_message(account, digest))
            if previous is None:
                return False
            self._count(txn, account, unique, previous == _SPAM_MARK, -1)
            txn.delete(keys.spam_learned_message(account, digest))
            return True

        return self.metadata.write_sync(fn) if sync else self.metadata.write(fn)

    def _learn_txn(
        self, account: int | None, digest: bytes, hashes: list[bytes], is_spam: bool
    ) -> Callable[[IWriteTransaction], LearnOutcome]:
        mark = _SPAM_MARK if is_spam else _HAM_MARK

        def fn(txn: IWriteTransaction) -> LearnOutcome:
            learned_key = keys.spam_learned_message(account, digest)
            previous = txn.get(learned_key)
            if previous == mark:
                return LearnOutcome("already", len(hashes))
            status = "learned"
            if previous is not None:
                self._count(txn, account, hashes, previous == _SPAM_MARK, -1)
                status = "relearned"
            self._count(txn, account, hashes, is_spam, +1)
            txn.put(learned_key, mark)
            return LearnOutcome(status, len(hashes))

        return fn

    @staticmethod
    def _count(txn: IWriteTransaction, account: int | None, hashes: Iterable[bytes], is_spam: bool, delta: int) -> None:
        total_key = keys.spam_learned_total(account, is_spam)
        if delta > 0 or txn.counter(total_key) > 0:
            txn.incr(total_key, delta)
        for token in hashes:
            key = keys.spam_token(account, token)
            spam, ham = _unpack_token(txn.get(key))
            if is_spam:
                spam = min(max(spam + delta, 0), _MAX_COUNT)
            else:
                ham = min(max(ham + delta, 0), _MAX_COUNT)
            if spam == 0 and ham == 0:
                txn.delete(key)
            else:
                txn.put(key, _TOKEN.pack(spam, ham))

    # -- greylisting --------------------------------------------------------------------
    def greylist_records(self, triplets: Sequence[bytes]) -> list[GreylistRecord | None]:
        def read(txn: Any) -> list[GreylistRecord | None]:
            records: list[GreylistRecord | None] = []
            for triplet in triplets:
                value = txn.get(keys.spam_greylist(triplet))
                records.append(GreylistRecord(*_GREYLIST.unpack(value)) if value and len(value) == _GREYLIST.size else None)
            return records

        return self.metadata.read(read)

    @staticmethod
    def put_greylist(txn: IWriteTransaction, triplet: bytes, record: GreylistRecord) -> None:
        txn.put(keys.spam_greylist(triplet), _GREYLIST.pack(record.first_seen, record.passed_at, record.passes))

    # -- reputation -----------------------------------------------------------------------
    def reputations(self, identities: Sequence[tuple[str, str]]) -> list[ReputationRecord | None]:
        def read(txn: Any) -> list[ReputationRecord | None]:
            records: list[ReputationRecord | None] = []
            for kind, value in identities:
                raw = txn.get(keys.spam_reputation(kind, value))
                records.append(ReputationRecord(*_REPUTATION.unpack(raw)) if raw and len(raw) == _REPUTATION.size else None)
            return records

        return self.metadata.read(read)

    @staticmethod
    def update_reputation(
        txn: IWriteTransaction, kind: str, value: str, score: float, alpha: float, now: float, cap: int = 1000
    ) -> ReputationRecord:
        """Fold ``score`` into the exponentially weighted average of one sender identity."""
        key = keys.spam_reputation(kind, value)
        raw = txn.get(key)
        if raw and len(raw) == _REPUTATION.size:
            average, messages, _updated = _REPUTATION.unpack(raw)
            average = (1 - alpha) * average + alpha * score
            messages = min(messages + 1, cap)
        else:
            average, messages = score, 1
        record = ReputationRecord(average, messages, now)
        txn.put(key, _REPUTATION.pack(record.average, record.messages, record.updated))
        return record

    # -- housekeeping -----------------------------------------------------------------------
    def prune(self, now: float, greylist_retry_window: float, greylist_pass_lifetime: float,
              reputation_lifetime: float, batch: int = 5000) -> Deferred:
        """Delete expired greylisting and reputation records; fires with how many went.

        Bounded to ``batch`` deletions per call so one transaction stays short; call again
        while it returns ``batch``.
        """

        def fn(txn: IWriteTransaction) -> int:
            doomed: list[bytes] = []
            for key, value in txn.scan(keys.SPAM_GREYLIST_PREFIX):
                if len(value) != _GREYLIST.size:
                    doomed.append(key)
                else:
                    first, passed, _passes = _GREYLIST.unpack(value)
                    if (passed and passed + greylist_pass_lifetime < now) or (
                        not passed and first + greylist_retry_window < now
                    ):
                        doomed.append(key)
                if len(doomed) >= batch:
                    break
            for key, value in txn.scan(keys.SPAM_REPUTATION_PREFIX):
                if len(doomed) >= batch:
                    break
                if len(value) != _REPUTATION.size or _REPUTATION.unpack(value)[2] + reputation_lifetime < now:
                    doomed.append(key)
            for key in doomed:
                txn.delete(key)
            return len(doomed)

        return self.metadata.write(fn)
