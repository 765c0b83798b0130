"""The one contract suite for ``IMetadataStore``: every adapter is added to ``IMPLEMENTATIONS``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import pytest_twisted
from zope.interface.verify import verifyObject

from mailserve.interfaces import IMetadataStore, IReadTransaction, IWriteTransaction
from mailserve.storage.lmdb_store import LMDBMetadataStore


def make_lmdb(path):
    return LMDBMetadataStore(str(path), map_size=64 << 20)


IMPLEMENTATIONS = {"lmdb": make_lmdb}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def store(request, tmp_path):
    s = IMPLEMENTATIONS[request.param](tmp_path / "store")
    s.start()
    yield s
    s.close()


def test_provides_interface(store):
    assert verifyObject(IMetadataStore, store)
    store.read(lambda txn: verifyObject(IReadTransaction, txn))
    store.write_sync(lambda txn: verifyObject(IWriteTransaction, txn))


def test_put_get_delete(store):
    store.write_sync(lambda txn: txn.put(b"k1", b"v1"))
    assert store.read(lambda txn: txn.get(b"k1")) == b"v1"
    assert store.read(lambda txn: txn.get(b"missing")) is None
    assert store.write_sync(lambda txn: txn.delete(b"k1")) is True
    assert store.write_sync(lambda txn: txn.delete(b"k1")) is False
    assert store.read(lambda txn: txn.get(b"k1")) is None


def test_scan_orders_bytewise_and_bounds(store):
    def fill(txn):
        for key in (b"a\x00", b"a\x01", b"a\xff", b"b", b"a", b"ab", b"a\xff\xff"):
            txn.put(key, key)

    store.write_sync(fill)
    prefix = store.read(lambda txn: [k for k, _ in txn.scan(b"a")])
    assert prefix == [b"a", b"a\x00", b"a\x01", b"ab", b"a\xff", b"a\xff\xff"]
    bounded = store.read(lambda txn: [k for k, _ in txn.scan(b"a\x00", b"a\xff")])
    assert bounded == [b"a\x00", b"a\x01", b"ab"]
    rev = store.read(lambda txn: [k for k, _ in txn.scan(b"a", reverse=True)])
    assert rev == list(reversed(prefix))
    rev_bounded = store.read(lambda txn: [k for k, _ in txn.scan(b"a\x00", b"a\xff", reverse=True)])
    assert rev_bounded == [b"ab", b"a\x01", b"a\x00"]
    assert store.read(lambda txn: list(txn.scan(b"zz"))) == []
    assert store.read(lambda txn: list(txn.scan(b"\xff\xff"))) == []


def test_counters(store):
    assert store.read(lambda txn: txn.counter(b"c")) == 0
    assert store.write_sync(lambda txn: txn.incr(b"c")) == 1
    assert store.write_sync(lambda txn: txn.incr(b"c", 10)) == 11
    assert store.write_sync(lambda txn: txn.incr(b"c", -12)) == -1
    assert store.read(lambda txn: txn.counter(b"c")) == -1


def test_failed_transaction_changes_nothing(store):
    def fn(txn):
        txn.put(b"x", b"1")
        txn.incr(b"n")
        raise ValueError("boom")

    with pytest.raises(ValueError):
        store.write_sync(fn)
    assert store.read(lambda txn: txn.get(b"x")) is None
    assert store.read(lambda txn: txn.counter(b"n")) == 0


def test_read_is_a_snapshot(store):
    store.write_sync(lambda txn: txn.put(b"k", b"old"))

    def fn(txn):
        before = txn.get(b"k")
        # A write from another thread committed during this read must not be seen.
        import threading

        t = threading.Thread(target=lambda: store.write_sync(lambda w: w.put(b"k", b"new")))
        t.start()
        t.join()
        return before, txn.get(b"k")

    assert store.read(fn) == (b"old", b"old")
    assert store.read(lambda txn: txn.get(b"k")) == b"new"


@pytest_twisted.inlineCallbacks
def test_async_writes_commit_in_order_and_isolate_failures(store):
    ds = []
    for i in range(50):
        ds.append(store.write(lambda txn, i=i: txn.incr(b"seq") and txn.put(b"k%03d" % i, b"%d" % i)))

    def bad(txn):
        txn.put(b"poison", b"1")
        raise KeyError("rejected")

    failing = store.write(bad)
    ds.append(store.write(lambda txn: txn.incr(b"seq")))
    from twisted.internet.defer import gatherResults

    yield gatherResults(ds)
    with pytest.raises(KeyError):
        yield failing
    assert store.read(lambda txn: txn.counter(b"seq")) == 51
    assert store.read(lambda txn: txn.get(b"poison")) is None
    assert store.read(lambda txn: len(list(txn.scan(b"k")))) == 50


@pytest_twisted.inlineCallbacks
def test_write_returns_value(store):
    value = yield store.write(lambda txn: txn.incr(b"n", 5))
    assert value == 5


def test_reopen_keeps_data(tmp_path):
    for name, factory in IMPLEMENTATIONS.items():
        s = factory(tmp_path / name)
        s.write_sync(lambda txn: txn.put(b"durable", b"yes"))
        s.close()
        s = factory(tmp_path / name)
        assert s.read(lambda txn: txn.get(b"durable")) == b"yes"
        s.close()


def test_second_process_sees_writes(tmp_path):
    """The CLI writes while the server runs: both processes must see each other's commits."""
    path = tmp_path / "shared"
    s = make_lmdb(path)
    s.write_sync(lambda txn: txn.put(b"from-parent", b"1"))
    code = textwrap.dedent(
        f"""
        from mailserve.storage.lmdb_store import LMDBMetadataStore
        s = LMDBMetadataStore({str(path)!r}, map_size=64 << 20)
        assert s.read(lambda t: t.get(b"from-parent")) == b"1"
        s.write_sync(lambda t: t.put(b"from-child", b"2"))
        s.close()
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ))
    assert s.read(lambda txn: txn.get(b"from-child")) == b"2"
    s.close()
