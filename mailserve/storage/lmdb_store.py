"""The embedded metadata store: LMDB, with one dedicated writer thread and group commit.

LMDB allows one writer at a time and a synced commit costs about half a millisecond, so
every write goes to a single writer thread (not the shared thread pool, where writers would
only queue on LMDB's lock).  The writer takes every job queued at that moment and runs them in
one outer transaction, each in a nested child transaction: a job that raises is rolled back
alone, the rest commit together with one fsync (group commit).  Each job's Deferred fires on
the reactor thread only after that commit returned, so "committed" means "on disk".

Reads open a short read-only transaction in the calling thread (usually the reactor): LMDB
readers never block and never wait for the writer.  The environment is opened with
``lock=True``, so the admin CLI may write to the same files while the server runs.
"""

from __future__ import annotations

import os
import queue
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import lmdb
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mailserve.interfaces import IMetadataStore, IReadTransaction, IWriteTransaction

T = TypeVar("T")
_COUNTER = struct.Struct(">q")
_STOP = object()


def _prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix`` (None: no bound)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


@implementer(IReadTransaction)
class LMDBReadTransaction:
    def __init__(self, txn: lmdb.Transaction) -> None:
        self._txn = txn

    def get(self, key: bytes) -> bytes | None:
        value = self._txn.get(key)
        return bytes(value) if value is not None else None

    def scan(
        self, start: bytes, end: bytes | None = None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        if end is None:
            end = _prefix_end(start)
        cursor = self._txn.cursor()
        if not reverse:
            if not cursor.set_range(start):
                return
            for key, value in cursor:
                if end is not None and key >= end:
                    return
                yield bytes(key), bytes(value)
        else:
            if end is None:
                positioned = cursor.last()
            else:
                positioned = cursor.set_range(end)
                if positioned:
                    positioned = cursor.prev()
                else:
                    positioned = cursor.last()
            if not positioned:
                return
            for key, value in cursor.iterprev():
                if key < start:
                    return
                if end is not None and key >= end:
                    continue
                yield bytes(key), bytes(value)

    def counter(self, key: bytes) -> int:
        value = self._txn.get(key)
        return _COUNTER.unpack(value)[0] if value is not None else 0


@implementer(IWriteTransaction)
class LMDBWriteTransaction(LMDBReadTransaction):
    def put(self, key: bytes, value: bytes) -> None:
        self._txn.put(key, value)

    def delete(self, key: bytes) -> bool:
        return self._txn.delete(key)

    def incr(self, key: bytes, delta: int = 1) -> int:
        value = self.counter(key) + delta
        self._txn.put(key, _COUNTER.pack(value))
        return value


class _Job:
    __slots__ = ("deferred", "failure", "fn", "result")

    def __init__(self, fn: Callable[[IWriteTransaction], Any], deferred: Deferred) -> None:
        self.fn = fn
        self.deferred = deferred
        self.result: Any = None
        self.failure: Failure | None = None


@implementer(IMetadataStore)
class LMDBMetadataStore:
    """``IMetadataStore`` on one LMDB environment (a directory holding data.mdb and lock.mdb)."""

    log = Logger()

    #: Jobs taken into one group commit at most; bounds the latency a big batch adds.
    max_batch = 256

    def __init__(
        self, path: str, map_size: int = 4 << 30, max_readers: int = 126, reactor: Any = None
    ) -> None:
        os.makedirs(path, exist_ok=True)
        self.path = path
        self._env = lmdb.open(
            path,
            map_size=map_size,
            subdir=True,
            lock=True,
            sync=True,
            metasync=True,
            max_dbs=0,
            max_readers=max_readers,
            readahead=False,
        )
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self._reactor = reactor
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        #: Group commits made by the writer thread, and the write jobs they carried: with
        #: concurrent writers ``jobs_committed / commits`` is how many share one fsync.
        self.commits = 0
        self.jobs_committed = 0

    # -- reads -----------------------------------------------------------------
    def read(self, fn: Callable[[IReadTransaction], T]) -> T:
        with self._env.begin(write=False, buffers=False) as txn:
            return fn(LMDBReadTransaction(txn))

    # -- writes ----------------------------------------------------------------
    def write_sync(self, fn: Callable[[IWriteTransaction], T]) -> T:
        with self._env.begin(write=True) as txn:
            return fn(LMDBWriteTransaction(txn))

    def write(self, fn: Callable[[IWriteTransaction], T]) -> Deferred:
        if self._closed:
            raise RuntimeError("metadata store is closed")
        if self._thread is None:
            self.start()
        d: Deferred = Deferred()
        self._queue.put(_Job(fn, d))
        return d

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._writer_loop, name="mailserve-lmdb-writer", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Let the writer finish what is queued, then close the environment."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
        self._env.close()

    def stat(self) -> dict[str, int]:
        info = self._env.info()
        stat = self._env.stat()
        return {
            "map_size": info["map_size"],
            "used_bytes": (info["last_pgno"] + 1) * stat["psize"],
            "entries": stat["entries"],
        }

    def _writer_loop(self) -> None:
        stopping = False
        while not stopping:
            job = self._queue.get()
            if job is _STOP:
                break
            batch = [job]
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stopping = True
                    break
                batch.append(more)
            self._run_batch(batch)

    def _run_batch(self, batch: list[_Job]) -> None:
        try:
            with self._env.begin(write=True) as outer:
                for job in batch:
                    child = self._env.begin(write=True, parent=outer)
                    try:
                        job.result = job.fn(LMDBWriteTransaction(child))
                    except BaseException:  # noqa: BLE001 - handed to the job's Deferred
                        child.abort()
                        job.failure = Failure()
                    else:
                        child.commit()
            self.commits += 1
            self.jobs_committed += len(batch)
        except BaseException:  # noqa: BLE001 - every job of the batch is told
            # The commit itself failed (disk full, map full): nothing in the batch is durable.
            failure = Failure()
            self.log.failure("metadata commit failed", failure)
            for job in batch:
                job.failure = failure
        self._reactor.callFromThread(self._deliver, batch)

    @staticmethod
    def _deliver(batch: list[_Job]) -> None:
        for job in batch:
            if job.failure is not None:
                job.deferred.errback(job.failure)
            else:
                job.deferred.callback(job.result)
