"""The one contract suite for ``IBlobStore``: every adapter is added to ``IMPLEMENTATIONS``."""

from __future__ import annotations

import hashlib
import os

import pytest
from zope.interface.verify import verifyObject

from mailserve.interfaces import IBlobStore
from mailserve.storage.filesystem_blobs import FilesystemBlobStore

IMPLEMENTATIONS = {"filesystem": lambda path: FilesystemBlobStore(str(path))}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def store(request, tmp_path):
    return IMPLEMENTATIONS[request.param](tmp_path / "blobs")


def test_provides_interface(store):
    assert verifyObject(IBlobStore, store)


def test_put_is_content_addressed_and_idempotent(store):
    data = b"Subject: hi\r\n\r\nbody\r\n"
    blob_id = store.put(data)
    assert blob_id == hashlib.sha256(data).hexdigest()
    assert store.put(data) == blob_id
    assert list(store.ids()) == [blob_id]
    assert store.get(blob_id) == data
    assert store.size(blob_id) == len(data)
    assert store.exists(blob_id)


def test_ranges(store):
    data = bytes(range(256)) * 40
    blob_id = store.put(data)
    assert store.read(blob_id, 0, 10) == data[:10]
    assert store.read(blob_id, 1000, 500) == data[1000:1500]
    assert store.read(blob_id, len(data) - 3, 100) == data[-3:]
    assert store.read(blob_id, len(data) + 5, 10) == b""


def test_missing_and_delete(store):
    missing = "0" * 64
    with pytest.raises(KeyError):
        store.get(missing)
    with pytest.raises(KeyError):
        store.size(missing)
    assert not store.exists(missing)
    assert not store.exists("../../etc/passwd")
    blob_id = store.put(b"x")
    assert store.delete(blob_id) is True
    assert store.delete(blob_id) is False
    assert not store.exists(blob_id)
    assert list(store.ids()) == []


def test_empty_blob(store):
    blob_id = store.put(b"")
    assert store.get(blob_id) == b""
    assert store.size(blob_id) == 0


def test_put_file_takes_ownership(store, tmp_path):
    fd, path = store.temp_file()
    payload = b"spooled message\r\n" * 1000
    os.write(fd, payload)
    os.close(fd)
    blob_id = store.put_file(path, hashlib.sha256(payload).hexdigest())
    assert store.get(blob_id) == payload
    assert not os.path.exists(path)


def test_reopen_clears_unfinished_temp_files(tmp_path):
    for factory in IMPLEMENTATIONS.values():
        store = factory(tmp_path / "b")
        fd, path = store.temp_file()
        os.write(fd, b"partial")
        os.close(fd)
        kept = store.put(b"kept")
        store = factory(tmp_path / "b")
        assert not os.path.exists(path)
        assert store.get(kept) == b"kept"
