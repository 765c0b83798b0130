"""The decoded-metadata caches: bounded, exact, and shared by reactor and worker threads."""

from __future__ import annotations

import threading

import pytest

from mailserve.core.cache import BlobDerivedCache, RecordCache


def test_blob_cache_computes_once_per_kind_and_blob():
    cache = BlobDerivedCache(100)
    calls = []

    def compute(value):
        calls.append(value)
        return value

    assert cache.derive("envelope", "a" * 64, lambda: compute(1)) == 1
    assert cache.derive("envelope", "a" * 64, lambda: compute(2)) == 1
    assert cache.derive(("envelope", True), "a" * 64, lambda: compute(3)) == 3
    assert cache.get("envelope", "b" * 64) is None
    assert calls == [1, 3]
    assert cache.hits == 1


def test_capacity_bounds_entries_and_keeps_recently_used():
    cache = BlobDerivedCache(10)
    cache.put("k", "hot", 0)
    for n in range(1000):
        cache.put("k", f"blob{n}", n)
        assert cache.get("k", "hot") == 0  # used all the time: never evicted
        assert len(cache) <= 10
    assert cache.get("k", "blob0") is None  # long unused: gone


def test_zero_capacity_caches_nothing_and_negative_is_refused():
    cache = BlobDerivedCache(0)
    cache.put("k", "x", 1)
    assert cache.get("k", "x") is None
    with pytest.raises(ValueError):
        BlobDerivedCache(-1)


def test_record_cache_hits_only_for_identical_bytes():
    cache = RecordCache(100)
    decoded = []

    def decoder(record_id, data):
        decoded.append((record_id, data))
        return (record_id, data.decode())

    assert cache.decode(1, b"flags=seen", decoder) == (1, "flags=seen")
    assert cache.decode(1, b"flags=seen", decoder) == (1, "flags=seen")
    # The record changed in the store: new bytes, decoded afresh, never the stale value.
    assert cache.decode(1, b"flags=", decoder) == (1, "flags=")
    assert cache.decode(2, b"flags=seen", decoder) == (2, "flags=seen")
    assert decoded == [(1, b"flags=seen"), (1, b"flags="), (2, b"flags=seen")]


def test_concurrent_use_never_returns_a_wrong_value():
    cache = BlobDerivedCache(64)
    errors = []

    def hammer(offset):
        for n in range(5000):
            key = f"blob{(n + offset) % 200}"
            value = cache.derive("k", key, lambda key=key: key.upper())
            if value != key.upper():
                errors.append((key, value))

    threads = [threading.Thread(target=hammer, args=(i * 37,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(cache) <= 64
