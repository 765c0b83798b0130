"""The embedded blob store: content-addressed files on the local filesystem.

A blob lives at ``ROOT/ab/cd/abcd...`` (its hex SHA-256).  Writing goes to ``ROOT/tmp``,
is fsynced, renamed into place and the directory fsynced, so a blob either exists whole or
not at all after a crash; an interrupted write leaves only a temp file, which ``start``
clears.  Identical content is stored once.

Directory fsyncs are group-committed (``DirectorySync``): each costs a journal commit,
and a blob needs one to three of them (its directory, and the parents of directories it
had to create), so concurrent deliveries share rounds of them instead of queueing one
journal commit after another.  A ``put`` still returns only once every directory entry
it made is on disk.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator

from zope.interface import implementer

from mailserve.interfaces import IBlobStore


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirectorySync:
    """Group commit of directory fsyncs for the threads writing blobs.

    A caller adds its directories to the pending set and waits for the first round that
    starts after that; when no round is running, the caller itself runs one, syncing
    everything pending (its own directories and those of every thread that arrived in
    the meantime).  Each caller returns only after a round that covered its directories
    finished; if that round failed, every caller of it gets the error.
    """

    def __init__(self, fsync_dir: Callable[[str], None] = _fsync_dir) -> None:
        self._fsync_dir = fsync_dir
        self._condition = threading.Condition()
        self._pending: set[str] = set()
        self._started = 0
        self._finished = 0
        self._running = False
        self._failures: dict[int, OSError] = {}
        #: Rounds run and directories synced (for tests and benchmarks).
        self.rounds = 0
        self.synced = 0

    def sync(self, directories: Iterable[str]) -> None:
        with self._condition:
            self._pending.update(directories)
            mine = self._started + 1  # the first round that starts from now on covers us
            while self._finished < mine:
                if not self._running:
                    batch, self._pending = self._pending, set()
                    self._started += 1
                    self._running = True
                    break
                self._condition.wait()
            else:
                failure = self._failures.get(mine)
                if failure is not None:
                    raise OSError(failure.errno, f"directory sync failed: {failure}") from failure
                return
        error: OSError | None = None
        try:
            for directory in sorted(batch):
                self._fsync_dir(directory)
        except OSError as exc:
            error = exc
        with self._condition:
            self._running = False
            self._finished = mine
            self.rounds += 1
            self.synced += len(batch)
            if error is not None:
                self._failures[mine] = error
            for old in [r for r in self._failures if r < mine - 1000]:
                del self._failures[old]
            self._condition.notify_all()
        if error is not None:
            raise error


def _valid_id(blob_id: str) -> bool:
    return len(blob_id) == 64 and all(c in "0123456789abcdef" for c in blob_id)


@implementer(IBlobStore)
class FilesystemBlobStore:
    def __init__(self, root: str, fsync: bool = True) -> None:
        self.root = os.path.abspath(root)
        self.fsync = fsync
        self.directory_sync = DirectorySync()
        self.tmp = os.path.join(self.root, "tmp")
        os.makedirs(self.tmp, exist_ok=True)
        for name in os.listdir(self.tmp):
            # Left by a write that never finished: never acknowledged, safe to drop.
            try:
                os.unlink(os.path.join(self.tmp, name))
            except FileNotFoundError:
                pass

    def path(self, blob_id: str) -> str:
        if not _valid_id(blob_id):
            raise KeyError(blob_id)
        return os.path.join(self.root, blob_id[:2], blob_id[2:4], blob_id)

    def temp_file(self) -> tuple[int, str]:
        """An open temp file in this store's filesystem (for spoolers that hash as they write)."""
        return tempfile.mkstemp(dir=self.tmp, prefix="spool-")

    def put(self, data: bytes) -> str:
        blob_id = hashlib.sha256(data).hexdigest()
        if self.exists(blob_id):
            return blob_id
        fd, tmp_path = self.temp_file()
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if self.fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp_path)
            raise
        os.close(fd)
        return self._install(tmp_path, blob_id)

    def put_file(self, path: str, blob_id: str) -> str:
        if not _valid_id(blob_id):
            raise ValueError(f"not a blob id: {blob_id!r}")
        if self.exists(blob_id):
            os.unlink(path)
            return blob_id
        if self.fsync:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return self._install(path, blob_id)

    def _install(self, tmp_path: str, blob_id: str) -> str:
        final = self.path(blob_id)
        directory = os.path.dirname(final)
        to_sync = [directory]
        if not os.path.isdir(directory):
            os.makedirs(directory, exist_ok=True)
            # The new directories' own entries must be durable too.
            to_sync += [os.path.dirname(directory), os.path.dirname(os.path.dirname(directory))]
        os.replace(tmp_path, final)
        if self.fsync:
            self.directory_sync.sync(to_sync)
        return blob_id

    def get(self, blob_id: str) -> bytes:
        try:
            with open(self.path(blob_id), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise KeyError(blob_id) from None

    def read(self, blob_id: str, offset: int, length: int) -> bytes:
        try:
            with open(self.path(blob_id), "rb") as f:
                f.seek(offset)
                return f.read(length)
        except FileNotFoundError:
            raise KeyError(blob_id) from None

    def size(self, blob_id: str) -> int:
        try:
            return os.stat(self.path(blob_id)).st_size
        except FileNotFoundError:
            raise KeyError(blob_id) from None

    def exists(self, blob_id: str) -> bool:
        try:
            return os.path.exists(self.path(blob_id))
        except KeyError:
            return False

    def delete(self, blob_id: str) -> bool:
        try:
            os.unlink(self.path(blob_id))
        except (FileNotFoundError, KeyError):
            return False
        return True

    def ids(self) -> Iterator[str]:
        for first in sorted(os.listdir(self.root)):
            if len(first) != 2:
                continue
            level1 = os.path.join(self.root, first)
            for second in sorted(os.listdir(level1)):
                level2 = os.path.join(level1, second)
                for name in sorted(os.listdir(level2)):
                    if _valid_id(name):
                        yield name
