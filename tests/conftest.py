"""Shared fixtures: real stores in temporary directories, never mocks."""

from __future__ import annotations

import pytest

from mailserve.storage.filesystem_blobs import FilesystemBlobStore
from mailserve.storage.lmdb_store import LMDBMetadataStore


@pytest.fixture
def metadata(tmp_path):
    store = LMDBMetadataStore(str(tmp_path / "metadata"), map_size=64 << 20)
    store.start()
    yield store
    store.close()


@pytest.fixture
def blobs(tmp_path):
    return FilesystemBlobStore(str(tmp_path / "blobs"))
