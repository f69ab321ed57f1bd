"""test_batch.py - the batch calls put_many / get_many / delete_many: results, overwrite and
append (sorted input), wrong types, huge and hostile inputs, an input that raises midway
(what came before stays in the transaction), read-only and finished transactions.

Layer: tests only; public Python API of btree_store.
"""
import pytest

import btree_store
from btree_store import ClosedError, ReadonlyError, BucketNotFoundError


def pairs(n, start=0):
    return [(b"%08d" % i, b"v%d" % i) for i in range(start, start + n)]


def test_put_get_delete_many(db):
    with db.begin(write=True) as txn:
        assert txn.put_many(pairs(1000)) == 1000
        assert txn.count() == 1000
        got = txn.get_many([b"%08d" % i for i in (5, 999, 1000, 0)])
        assert got == [b"v5", b"v999", None, b"v0"]
        assert all(type(v) is bytes for v in got if v is not None)
        assert txn.delete_many(b"%08d" % i for i in range(0, 2000, 2)) == 500
        assert txn.count() == 500
        assert txn.put_many({b"a": b"1", b"b": bytearray(b"2")}) == 2
        assert txn.get_many(iter([b"a", memoryview(b"b"), b"c"])) == [b"1", b"2", None]
        assert txn.put_many([]) == 0 and txn.get_many([]) == [] and txn.delete_many([]) == 0
    with db.begin() as txn:
        assert txn[b"00000001"] == b"v1" and b"00000002" not in txn
        assert txn.get_many([b"a"]) == [b"1"]


def test_overwrite_false_counts_new_only(db):
    with db.begin(write=True) as txn:
        txn.put_many(pairs(10))
        assert txn.put_many([(b"%08d" % 3, b"new"), (b"zz", b"z")], overwrite=False) == 1
        assert txn[b"%08d" % 3] == b"v3"
        assert txn.put_many([(b"%08d" % 3, b"new")]) == 1
        assert txn[b"%08d" % 3] == b"new"


def test_buckets(db):
    with db.begin(write=True) as txn:
        txn.create_bucket("b")
        assert txn.put_many(pairs(300), bucket="b") == 300
        assert txn.count() == 0 and txn.count(bucket="b") == 300
        assert txn.get_many([b"%08d" % 299], bucket="b") == [b"v299"]
        assert txn.delete_many([b"%08d" % 299], bucket="b") == 1
        for call, arg in ((txn.put_many, pairs(1)), (txn.get_many, [b"x"]),
                          (txn.delete_many, [b"x"])):
            with pytest.raises(BucketNotFoundError):
                call(arg, bucket="nope")
        bound = txn._bind("b")
        assert bound.get_many([b"%08d" % 1]) == [b"v1"]


def test_append_sorted_and_errors(db):
    with db.begin(write=True) as txn:
        assert txn.put_many(pairs(2000), append=True) == 2000
        assert txn.put_many(pairs(10, 2000), append=True) == 10
        # a key not after the bucket's last key
        with pytest.raises(ValueError, match="append"):
            txn.put_many([(b"%08d" % 5, b"x")], append=True)
        # out of order inside the input (also across the internal chunk boundary)
        bad = pairs(600, 5000)
        bad[400] = (b"%08d" % 4000, b"x")
        with pytest.raises(ValueError, match="item 400"):
            txn.put_many(bad, append=True)
        # the pairs before the bad one were written
        assert txn.get(b"%08d" % 5399) == b"v5399" and txn.get(b"%08d" % 5400) is None
        with pytest.raises(ValueError):
            txn.put_many([(b"k", b"1"), (b"k", b"2")], append=True)  # equal is not greater
    with db.begin() as txn:
        assert list(txn.keys()) == sorted(txn.keys())
    db.check()


def test_wrong_types(db):
    with db.begin(write=True) as txn:
        for bad in (None, 5, object()):
            with pytest.raises(TypeError):
                txn.put_many(bad)
            with pytest.raises(TypeError):
                txn.get_many(bad)
            with pytest.raises(TypeError):
                txn.delete_many(bad)
        for item in ((b"a",), (b"a", b"b", b"c"), b"ab", 7, None):
            with pytest.raises(TypeError, match="item 1"):
                txn.put_many([(b"ok", b"1"), item])
        with pytest.raises(TypeError):
            txn.put_many([("str", b"v")])
        with pytest.raises(TypeError):
            txn.put_many([(b"k", "str")])
        with pytest.raises(TypeError):
            txn.get_many(["str"])
        with pytest.raises(TypeError):
            txn.get_many(b"abc")  # iterates ints
        with pytest.raises(TypeError):
            txn.put_many(pairs(1), bucket=b"b")
        with pytest.raises(TypeError):
            txn.put_many(pairs(1), bogus=True)
        with pytest.raises(TypeError):
            txn.put_many()
        # lists of two are pairs too
        assert txn.put_many([[b"l", b"1"]]) == 1


def test_absurd_sizes(db):
    class Huge:
        def __iter__(self):
            return iter([(b"a", b"1")])

        def __len__(self):
            return 2**62

        def __length_hint__(self):
            return 2**62

    with db.begin(write=True) as txn:
        assert txn.put_many(Huge()) == 1
        with pytest.raises(ValueError):
            txn.put_many([(b"k" * (db.max_key_size + 1), b"v")])
        with pytest.raises(ValueError):
            txn.get_many([b"k" * (db.max_key_size + 1)])
        with pytest.raises(ValueError):
            txn.delete_many([b"ok", b"k" * (db.max_key_size + 1)])
        big = b"x" * 300000  # overflow values through the batch path
        assert txn.put_many([(b"big%d" % i, big) for i in range(3)]) == 3
        assert txn.get_many([b"big0", b"big2"]) == [big, big]


def test_generator_raising_midway(db):
    def gen():
        yield from pairs(700)
        raise RuntimeError("boom")

    with db.begin(write=True) as txn:
        with pytest.raises(RuntimeError, match="boom"):
            txn.put_many(gen())
        assert txn.count() == 700  # what came before stays in the transaction

        def keys():
            yield b"%08d" % 1
            yield b"%08d" % 2
            raise KeyError("stop")

        with pytest.raises(KeyError):
            txn.delete_many(keys())
        assert txn.count() == 698
        with pytest.raises(KeyError):
            txn.get_many(keys())
        txn.abort()
    with db.begin() as txn:
        assert txn.count() == 0


def test_input_that_uses_the_transaction(db):
    with db.begin(write=True) as txn:
        txn.put(b"seed", b"s")

        def gen():
            for i in range(300):
                # the input may read the transaction itself: it runs outside the engine call
                yield b"k%d" % i, txn.get(b"seed")

        assert txn.put_many(gen()) == 300
        assert txn.get(b"k299") == b"s"


def test_readonly_and_finished(db):
    with db.begin() as txn:
        with pytest.raises(ReadonlyError):
            txn.put_many(pairs(1))
        with pytest.raises(ReadonlyError):
            txn.delete_many([b"x"])
        assert txn.get_many([b"x"]) == [None]
    consumed = []

    def gen():
        consumed.append(1)
        yield b"a", b"b"

    with pytest.raises(ClosedError):
        txn.get_many([b"x"])
    w = db.begin(write=True)
    w.commit()
    with pytest.raises(ClosedError):
        w.put_many(gen())
    assert consumed == []  # refused before reading the input
