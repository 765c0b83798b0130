"""Storage adapters, chosen by name in ``[storage]``.

One ``load`` per kind of store, in the manner of Radicale's ``load_plugin``: a new backend
is one module implementing its interface plus one entry in the table below.
"""

from __future__ import annotations

from typing import Any

METADATA_STORES = {"lmdb": "mailserve.storage.lmdb_store:LMDBMetadataStore"}
BLOB_STORES = {"filesystem": "mailserve.storage.filesystem_blobs:FilesystemBlobStore"}
SEARCH_INDEXES = {
    "tantivy": "mailserve.storage.tantivy_index:TantivySearchIndex",
    "whoosh": "mailserve.storage.whoosh_index:WhooshSearchIndex",
}


def _load(table: dict[str, str], name: str):
    import importlib

    module_name, _, attr = table[name].partition(":")
    return getattr(importlib.import_module(module_name), attr)


def open_metadata_store(config: Any, reactor: Any = None):
    cls = _load(METADATA_STORES, config.storage.metadata)
    lmdb = config.storage.lmdb
    return cls(lmdb.path, map_size=lmdb.map_size, max_readers=lmdb.max_readers, reactor=reactor)


def open_blob_store(config: Any):
    fs = config.storage.filesystem
    return _load(BLOB_STORES, config.storage.blob)(fs.path, fsync=fs.fsync)


def open_search_index(config: Any):
    return _load(SEARCH_INDEXES, config.storage.search)(config.storage.index.path)
