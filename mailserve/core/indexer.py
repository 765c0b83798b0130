"""The one writer of the full-text index, fed from the change log.

Index writes (Whoosh especially) take milliseconds to seconds, so the indexer never runs
them on the reactor: it collects the messages that change sets added or destroyed and,
once a batch is full or a short delay passed, indexes them in a worker thread and commits.
Its progress per account is a checkpoint modseq in the metadata store; on start it replays
the change log from each checkpoint, so nothing is missed across restarts or crashes.

Search stays exact while the indexer is behind: ``pending(account)`` names the messages
not yet indexed, and ``MailSearch`` scans those directly.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from mailserve.core import keys
from mailserve.core.mime import extract_text
from mailserve.core.model import ChangeKind, ChangeSet
from mailserve.interfaces import ISearchIndex

INDEXED_MODSEQ = b"indexed"
#: What the index holds for a message (fields, word analysis, the long-word marker).  Bump it
#: when that changes: a server that finds an index of another format re-indexes every message
#: from the change log (documents are replaced by key, so the old ones need no clearing).
INDEX_FORMAT = 2


def _addresses(envelope_list) -> str:
    parts = []
    for address in envelope_list or ():
        if address.mailbox and address.host:
            parts.append(f"{address.name or ''} {address.mailbox}@{address.host}".strip())
    return " ".join(parts)


def search_document(account: int, message_id: int, raw: bytes, parsed: Any) -> dict:
    """The fields indexed for one message (``SEARCH_FIELDS`` in ``mailserve.interfaces``)."""
    from mailserve.core.mime import decode_header_text

    env = parsed.envelope
    return {
        "account": account,
        "message": message_id,
        "from": decode_header_text(_addresses(env.from_)),
        "to": decode_header_text(_addresses(env.to)),
        "cc": decode_header_text(_addresses(env.cc)),
        "bcc": decode_header_text(_addresses(env.bcc)),
        "subject": decode_header_text(env.subject or ""),
        "body": extract_text(raw, parsed),
        "headers": decode_header_text(parsed.header.decode("utf-8", "replace")),
    }


class SearchIndexer(Service):
    log = Logger()

    def __init__(
        self,
        core: Any,
        index: ISearchIndex,
        batch_size: int = 500,
        delay: float = 0.2,
        threadpool: Any = None,
    ) -> None:
        self.core = core
        self.index = index
        self.batch_size = batch_size
        self.delay = delay
        self._threadpool = threadpool
        self._reactor = core._reactor
        # account -> {message id: modseq it was added at}; removed ids in a separate set
        self._pending: dict[int, dict[int, int]] = {}
        self._removed: dict[int, set[int]] = {}
        self._upto: dict[int, int] = {}
        self._unsubscribe = None
        self._scheduled = None
        self._running_batch: Deferred | None = None
        self.setName("indexer")

    # -- what is not indexed yet ----------------------------------------------------------
    def pending(self, account: int) -> set[int]:
        return set(self._pending.get(account, ()))

    def _checkpoint(self, account: int) -> int:
        return self.core.metadata.read(lambda txn: txn.counter(keys.counter(account, INDEXED_MODSEQ)))

    # -- lifecycle --------------------------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        self._unsubscribe = self.core.subscribe(None, self._changed)
        self._check_format()
        for account in self._accounts():
            checkpoint = self._checkpoint(account)
            for changes in self.core.changes_since(account, checkpoint):
                self._changed(changes)

    def _check_format(self) -> None:
        """Start every account over when the index was written in another format."""
        accounts = self._accounts()

        def fn(txn) -> int | None:
            stored = txn.get(keys.SEARCH_INDEX_FORMAT)
            stored = int(stored) if stored is not None else None
            if stored == INDEX_FORMAT:
                return stored
            indexed = [a for a in accounts if txn.counter(keys.counter(a, INDEXED_MODSEQ))]
            for account in indexed:
                txn.delete(keys.counter(account, INDEXED_MODSEQ))
            txn.put(keys.SEARCH_INDEX_FORMAT, str(INDEX_FORMAT).encode("ascii"))
            return stored if indexed else INDEX_FORMAT

        # Once, at start, before any delivery: a synchronous write keeps the replay below simple.
        stored = self.core.metadata.write_sync(fn)
        if stored != INDEX_FORMAT:
            self.log.warn("search index format {stored} is not {current}: re-indexing every message",
                          stored=stored, current=INDEX_FORMAT)

    def _accounts(self) -> list[int]:
        def fn(txn) -> list[int]:
            return [keys.U32.unpack_from(k, 2)[0] for k, _ in txn.scan(keys.ACCOUNTS_PREFIX)]

        return self.core.metadata.read(fn)

    def stopService(self):
        super().stopService()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._scheduled is not None and self._scheduled.active():
            self._scheduled.cancel()
        self._scheduled = None
        return self._running_batch or succeed(None)

    def _changed(self, changes: ChangeSet) -> None:
        account = changes.account
        for entry in changes.entries:
            if entry.kind == ChangeKind.MESSAGE_ADDED:
                self._pending.setdefault(account, {})[entry.message] = changes.modseq
            elif (entry.kind == ChangeKind.MESSAGE_DESTROYED
                  and self._pending.get(account, {}).pop(entry.message, None) is None):
                self._removed.setdefault(account, set()).add(entry.message)
        self._upto[account] = max(self._upto.get(account, 0), changes.modseq)
        self._schedule()

    def _schedule(self) -> None:
        if not self.running or self._running_batch is not None:
            return
        if self._scheduled is None or not self._scheduled.active():
            total = sum(len(p) for p in self._pending.values())
            delay = 0 if total >= self.batch_size else self.delay
            self._scheduled = self._reactor.callLater(delay, self._run)

    # -- batches ------------------------------------------------------------------------------
    def flush(self) -> Deferred:
        """Index everything pending now (tests, and shutdown of a quiet server)."""
        if self._running_batch is not None:
            return self._running_batch.addCallback(lambda _: self.flush())
        if not any(self._pending.values()) and not any(self._removed.values()) and not self._upto:
            return succeed(None)
        return self._run()

    def _run(self) -> Deferred:
        self._scheduled = None
        batch: list[tuple[int, int]] = []
        for account, messages in self._pending.items():
            for msgid in list(messages)[: self.batch_size - len(batch)]:
                batch.append((account, msgid))
            if len(batch) >= self.batch_size:
                break
        removed = {a: set(ids) for a, ids in self._removed.items() if ids}
        self._removed = {}
        # Checkpoints may advance to a modseq only once nothing older is pending.
        chosen = set(batch)
        checkpoints = {}
        for account, upto in self._upto.items():
            rest = [m for i, m in self._pending.get(account, {}).items() if (account, i) not in chosen]
            checkpoints[account] = min(rest) - 1 if rest else upto

        pool = self._threadpool or self._reactor.getThreadPool()
        d = deferToThreadPool(self._reactor, pool, self._index_batch, batch, removed)

        def save(txn) -> None:
            for account, cp in checkpoints.items():
                key = keys.counter(account, INDEXED_MODSEQ)
                current = txn.counter(key)
                if cp > current:
                    txn.incr(key, cp - current)

        def done(_):
            for account, msgid in batch:
                self._pending.get(account, {}).pop(msgid, None)
            for account, cp in checkpoints.items():
                if not self._pending.get(account) and self._upto.get(account) == cp:
                    self._upto.pop(account, None)
            return self.core.metadata.write(save)

        def failed(failure):
            self.log.failure("indexing batch failed; will retry", failure)
            for account, ids in removed.items():
                self._removed.setdefault(account, set()).update(ids)

        def finished(_):
            self._running_batch = None
            if any(self._pending.values()) or any(self._removed.values()):
                self._schedule()

        d.addCallbacks(done, failed).addBoth(finished)
        self._running_batch = d
        return d

    def _index_batch(self, batch, removed) -> None:
        documents = []
        for account, msgid in batch:
            message = self.core.get_message(account, msgid)
            if message is None:
                continue
            try:
                raw = self.core.blobs.get(message.blob_id)
                parsed = self.core.get_parsed(message.blob_id)
            except KeyError:
                continue
            documents.append(search_document(account, msgid, raw, parsed))
        if documents:
            self.index.add(documents)
        for account, ids in removed.items():
            self.index.remove(account, sorted(ids))
        self.index.commit()
