"""test_mapping.py - a transaction as a mapping: keys()/values()/items() and iter(txn) yield
bytes, Txn is a collections.abc.Mapping and a write transaction a MutableMapping; the view
iterator's buffers are reused only while nobody else holds the views (tracemalloc shows
both halves: a kept view is fresh and never changes, a loop that drops its views allocates
nothing per step).

Layer: tests only; public Python API of btree_store.
"""
import collections.abc
import tracemalloc

import pytest

import btree_store

ITEMS = {b"k%03d" % i: b"value-%d" % i * (i % 7) for i in range(200)}


@pytest.fixture
def full(db):
    with db.begin(write=True) as txn:
        for k, v in ITEMS.items():
            txn.put(k, v)
    return db


def test_keys_values_items_are_bytes(full):
    with full.begin() as txn:
        keys = list(txn)
        assert keys == sorted(ITEMS) and all(type(k) is bytes for k in keys)
        assert list(txn.keys()) == keys
        assert list(txn.values()) == [ITEMS[k] for k in keys]
        items = list(txn.items())
        assert items == sorted(ITEMS.items())
        assert all(type(k) is bytes and type(v) is bytes for k, v in items)
        assert dict(txn) == ITEMS  # dict() of a mapping: keys() and []
        assert list(txn.keys(b"k010", b"k013")) == [b"k010", b"k011", b"k012"]
        assert list(txn.items(prefix=b"k19", reverse=True))[0] == (b"k199", ITEMS[b"k199"])
        assert list(txn.values(b"k198")) == [ITEMS[b"k198"], ITEMS[b"k199"]]
        with pytest.raises(TypeError):
            txn.keys(bogus=1)


def test_bucket_keys(full):
    with full.begin(write=True) as txn:
        txn.create_bucket("b")
        txn.put(b"x", b"1", bucket="b")
        assert list(txn.items(bucket="b")) == [(b"x", b"1")]
        assert list(txn._bind("b")) == [b"x"]


def test_registered_as_mappings(full):
    with full.begin() as r:
        assert isinstance(r, collections.abc.Mapping)
        assert not isinstance(r, collections.abc.MutableMapping)
        assert isinstance(r, btree_store.Txn) and not isinstance(r, btree_store.WriteTxn)
    with full.begin(write=True) as w:
        assert isinstance(w, collections.abc.MutableMapping)
        assert isinstance(w, btree_store.Txn) and isinstance(w, btree_store.WriteTxn)
        w[b"new"] = b"v"
        assert w.get(b"new") == b"v" and b"new" in w
        del w[b"new"]
        assert b"new" not in w
        assert isinstance(w._bind("bb", create=True), collections.abc.MutableMapping)


def test_kept_views_never_change(full):
    with full.begin() as txn:
        kept = []
        for k, v in txn.iter():
            kept.append((k, v))
        assert [(bytes(k), bytes(v)) for k, v in kept] == sorted(ITEMS.items())
        d = dict(txn.iter())
        assert {bytes(k): bytes(v) for k, v in d.items()} == ITEMS
        # single-view modes and tuples kept whole
        ks = list(txn.iter(values=False))
        vs = list(txn.iter(keys=False))
        pairs = list(txn.iter(reverse=True))
        assert [bytes(k) for k in ks] == sorted(ITEMS)
        assert [bytes(v) for v in vs] == [ITEMS[k] for k in sorted(ITEMS)]
        assert [(bytes(k), bytes(v)) for k, v in pairs] == sorted(ITEMS.items(), reverse=True)
        # a kept view of a derived object (its .obj, a memoryview of it) pins its buffer too
        it = txn.iter()
        k0, _ = next(it)
        sub = memoryview(k0)[1:]
        del k0
        for _ in range(5):
            next(it)
        assert bytes(sub) == b"000"


def test_view_released_by_holder(full):
    with full.begin() as txn:
        got = []
        for k, v in txn.iter():
            got.append(bytes(k))
            k.release()
            v.release()
        assert got == sorted(ITEMS)


@pytest.mark.parametrize("mode", ["pairs", "keys", "values", "tuple_var"])
def test_dropping_loop_allocates_nothing(db, mode):
    n = 3000
    with db.begin(write=True) as txn:
        for i in range(n):
            txn.put(b"%016d" % i, b"%0100d" % i)
    with db.begin() as txn:
        it = txn.iter(keys=mode != "values", values=mode != "keys")
        # two warm-up steps, the first one's item held during the second as a loop variable
        # would be, make both entries of each ring (before tracing starts)
        first = next(it)
        second = next(it)
        del first, second
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            fresh = 0
            count = 0
            if mode == "pairs":
                for k, v in it:
                    fresh += tracemalloc.get_object_traceback(k) is not None
                    fresh += tracemalloc.get_object_traceback(v) is not None
                    count += 1
            elif mode == "tuple_var":
                for kv in it:
                    fresh += tracemalloc.get_object_traceback(kv) is not None
                    fresh += tracemalloc.get_object_traceback(kv[0]) is not None
                    count += 1
            else:
                for x in it:
                    fresh += tracemalloc.get_object_traceback(x) is not None
                    fresh += tracemalloc.get_object_traceback(x.obj) is not None
                    count += 1
            grown = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
    assert count == n - 2
    assert fresh == 0, "a view, buffer or tuple was allocated during the scan"
    assert grown < 16 * 1024, grown


def test_escaped_views_get_fresh_buffers(db):
    with db.begin(write=True) as txn:
        for i in range(100):
            txn.put(b"%016d" % i, b"%0100d" % i)
    with db.begin() as txn:
        it = txn.iter()
        next(it)
        next(it)
        tracemalloc.start()
        try:
            kept = []
            fresh = 0
            for k, v in it:
                kept.append(k)
                fresh += tracemalloc.get_object_traceback(k) is not None
        finally:
            tracemalloc.stop()
        # every kept key but the first two (the warm-up entries, made before tracing) is fresh
        assert fresh >= len(kept) - 2
        assert [bytes(k) for k in kept] == [b"%016d" % i for i in range(2, 100)]


def test_variable_lengths_reuse_and_stay_correct(db):
    vals = {b"%04d" % i: b"x" * ((i * 37) % 900) for i in range(300)}
    with db.begin(write=True) as txn:
        for k, v in vals.items():
            txn.put(k, v)
    with db.begin() as txn:
        got = {bytes(k): bytes(v) for k, v in txn.iter()}
        assert got == vals
        it = txn.iter()
        first = next(it)
        second = next(it)
        del first, second
        tracemalloc.start()
        try:
            fresh = 0
            for k, v in it:
                assert len(v) == len(vals[bytes(k)])
                fresh += tracemalloc.get_object_traceback(v) is not None
        finally:
            tracemalloc.stop()
        assert fresh == 0
