"""The filesystem blob store beyond the contract: directory fsyncs are group-committed."""

from __future__ import annotations

import threading
import time

import pytest

from mailserve.storage.filesystem_blobs import DirectorySync, FilesystemBlobStore


class RecordingSync:
    """A directory sync that records each call and can hold the first one."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[str] = []
        self.first_started = threading.Event()
        self.release_first = threading.Event()
        self.fail_on = fail_on

    def __call__(self, directory: str) -> None:
        self.calls.append(directory)
        if len(self.calls) == 1:
            self.first_started.set()
            assert self.release_first.wait(10)
        if directory == self.fail_on:
            raise OSError(5, "Input/output error")


def wait_until(predicate) -> None:
    for _ in range(10_000):
        if predicate():
            return
        time.sleep(0.001)
    raise AssertionError("condition never came true")


def run_waiters(sync: DirectorySync, names: list[str]) -> tuple[list[threading.Thread], dict[str, object]]:
    outcome: dict[str, object] = {}

    def call(name: str) -> None:
        try:
            sync.sync([name])
            outcome[name] = "ok"
        except OSError as exc:
            outcome[name] = exc

    threads = [threading.Thread(target=call, args=(n,)) for n in names]
    for thread in threads:
        thread.start()
    return threads, outcome


def test_callers_arriving_during_a_round_share_the_next_one():
    recorder = RecordingSync()
    sync = DirectorySync(recorder)
    leader, outcome = run_waiters(sync, ["/a"])
    assert recorder.first_started.wait(10)
    followers, follower_outcome = run_waiters(sync, ["/b", "/c", "/d", "/b"])
    wait_until(lambda: len(sync._pending) == 3)
    recorder.release_first.set()
    for thread in leader + followers:
        thread.join(10)
    assert outcome == {"/a": "ok"}
    assert follower_outcome == {"/b": "ok", "/c": "ok", "/d": "ok"}
    assert recorder.calls == ["/a", "/b", "/c", "/d"]  # each directory once, /b..d in one round
    assert sync.rounds == 2


def test_a_failed_round_fails_every_caller_in_it_and_the_next_round_works():
    recorder = RecordingSync(fail_on="/c")
    sync = DirectorySync(recorder)
    leader, outcome = run_waiters(sync, ["/a"])
    assert recorder.first_started.wait(10)
    followers, follower_outcome = run_waiters(sync, ["/b", "/c"])
    wait_until(lambda: len(sync._pending) == 2)
    recorder.release_first.set()
    for thread in leader + followers:
        thread.join(10)
    assert outcome == {"/a": "ok"}
    assert all(isinstance(follower_outcome[n], OSError) for n in ("/b", "/c"))
    sync.sync(["/e"])  # nothing sticks: a later round succeeds
    assert recorder.calls[-1] == "/e"


def test_concurrent_puts_are_all_stored(tmp_path):
    store = FilesystemBlobStore(str(tmp_path / "blobs"))
    payloads = [b"message %d\r\n" % n * 50 for n in range(64)]
    ids: list[str] = []
    lock = threading.Lock()

    def put_some(chunk):
        for data in chunk:
            blob_id = store.put(data)
            with lock:
                ids.append(blob_id)

    threads = [threading.Thread(target=put_some, args=(payloads[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(store.get(i) for i in ids) == sorted(payloads)
    assert store.directory_sync.synced >= len(set(ids))  # every blob's directory was synced
    assert store.directory_sync.rounds <= store.directory_sync.synced


def test_no_fsync_means_no_directory_rounds(tmp_path):
    store = FilesystemBlobStore(str(tmp_path / "blobs"), fsync=False)
    store.put(b"x")
    assert store.directory_sync.rounds == 0


def test_a_directory_that_cannot_be_synced_fails_the_put(tmp_path):
    store = FilesystemBlobStore(str(tmp_path / "blobs"))
    store.directory_sync = DirectorySync(_failing)
    with pytest.raises(OSError):
        store.put(b"never acknowledged")


def _failing(directory: str) -> None:
    raise OSError(28, "No space left on device")
