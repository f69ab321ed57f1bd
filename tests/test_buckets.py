"""test_buckets.py - named buckets (create/drop/list, names, missing buckets),
multi-bucket atomic commits, abort of create+fill+drop, page reuse after drop, O(1) counts,
pop/replace, and the closure API db.exec / db.view / db.exec_multi.

Layer: tests only; public Python API of btree_store (+ tests/_format.py on closed files).
"""
import random
import time

import pytest

import btree_store
from btree_store import BucketNotFoundError, Error

from _format import layout_of
from _util import dump
from _util import ON_FILE_AND_MEMORY


def test_create_list_drop(db, reopen):
    assert db.buckets() == []
    with db.begin(write=True) as txn:
        txn.create_bucket("zeta")
        txn.create_bucket("alpha")
        txn.create_bucket("mid")
        assert txn.buckets() == ["alpha", "mid", "zeta"]
        assert db.buckets() == []  # not committed yet
    assert db.buckets() == ["alpha", "mid", "zeta"]
    db = reopen(db)
    assert db.buckets() == ["alpha", "mid", "zeta"]
    with db.begin(write=True) as txn:
        assert txn.drop_bucket("mid") is True
        assert txn.drop_bucket("mid") is False
        assert txn.drop_bucket("never") is False
        assert txn.buckets() == ["alpha", "zeta"]
    db = reopen(db)
    assert db.buckets() == ["alpha", "zeta"]
    with db.begin() as txn:
        assert txn.buckets() == ["alpha", "zeta"]


def test_create_exist_ok(db):
    with db.begin(write=True) as txn:
        txn.create_bucket("b")
        txn.put(b"k", b"v", bucket="b")
        txn.create_bucket("b", exist_ok=True)  # default exist_ok=True too
        txn.create_bucket("b")
        assert txn.get(b"k", bucket="b") == b"v"  # creating again does not empty it
        with pytest.raises((Error, ValueError, KeyError)):
            txn.create_bucket("b", exist_ok=False)
        txn.put(b"k2", b"v2", bucket="b")  # still usable
    with db.begin() as txn:
        assert txn.count(bucket="b") == 2


def test_bucket_not_found(db):
    assert issubclass(BucketNotFoundError, KeyError)
    with db.begin(write=True) as txn:
        for call in (lambda: txn.get(b"k", bucket="nope"),
                     lambda: txn.put(b"k", b"v", bucket="nope"),
                     lambda: txn.delete(b"k", bucket="nope"),
                     lambda: txn.count(bucket="nope"),
                     lambda: txn.pop(b"k", None, bucket="nope"),
                     lambda: txn.replace(b"k", b"v", bucket="nope"),
                     lambda: list(txn.iter(bucket="nope"))):
            with pytest.raises(BucketNotFoundError):
                call()
        txn.put(b"ok", b"1")  # the transaction is still fine
    assert db.buckets() == []
    with db.begin() as txn:
        with pytest.raises(BucketNotFoundError):
            txn.get(b"k", bucket="nope")
        with pytest.raises(KeyError):
            txn.get(b"k", bucket="nope")
        assert txn.get(b"ok") == b"1"
    with pytest.raises(BucketNotFoundError):
        db.view("nope", lambda t: t.get(b"k"))


def test_dropped_bucket_in_same_txn(db):
    with db.begin(write=True) as txn:
        txn.create_bucket("b")
        txn.put(b"k", b"v", bucket="b")
    with db.begin(write=True) as txn:
        assert txn.get(b"k", bucket="b") == b"v"
        txn.drop_bucket("b")
        with pytest.raises(BucketNotFoundError):
            txn.get(b"k", bucket="b")
        txn.create_bucket("b")
        assert txn.get(b"k", bucket="b") is None
        assert txn.count(bucket="b") == 0
        txn.put(b"new", b"1", bucket="b")
    with db.begin() as txn:
        assert [bytes(k) for k, _ in txn.iter(bucket="b")] == [b"new"]


@pytest.mark.parametrize("name", ["a", "x" * 255, "é" * 127, "日本語", "with space", "a/b", "\x01"])
def test_valid_names(db, reopen, name):
    with db.begin(write=True) as txn:
        txn.create_bucket(name)
        txn.put(b"k", name.encode(), bucket=name)
    db = reopen(db)
    assert db.buckets() == [name]
    with db.begin() as txn:
        assert txn.get(b"k", bucket=name) == name.encode()


@pytest.mark.parametrize("name", ["", "x" * 256, "é" * 128])
def test_invalid_names(db, name):
    with db.begin(write=True) as txn:
        with pytest.raises(ValueError):
            txn.create_bucket(name)
        txn.put(b"k", b"v")
    assert db.buckets() == []


@pytest.mark.parametrize("name", [1, 2.0, object()])
def test_name_types(db, name):
    with db.begin(write=True) as txn:
        with pytest.raises(TypeError):
            txn.create_bucket(name)
        with pytest.raises(TypeError):
            txn.get(b"k", bucket=name)


def test_bucket_names_sorted_bytewise(db):
    names = ["b", "a", "B", "aa", "é", "z", "0"]
    with db.begin(write=True) as txn:
        for n in names:
            txn.create_bucket(n)
    assert db.buckets() == sorted(names, key=lambda s: s.encode())


@ON_FILE_AND_MEMORY
def test_buckets_are_separate_keyspaces(db):
    with db.begin(write=True) as txn:
        txn.create_bucket("x")
        txn.create_bucket("y")
        txn.put(b"k", b"default")
        txn.put(b"k", b"x", bucket="x")
        txn.put(b"k", b"y", bucket="y")
        txn.put(b"only-x", b"1", bucket="x")
    with db.begin() as txn:
        assert txn.get(b"k") == b"default"
        assert txn.get(b"k", bucket="x") == b"x"
        assert txn.get(b"k", bucket="y") == b"y"
        assert txn.get(b"only-x") is None
        assert txn.get(b"only-x", bucket="y") is None
        assert len(txn) == 1
        assert txn.count(bucket="x") == 2
    with db.begin(bucket="x") as txn:  # the transaction's bucket
        assert txn.get(b"k") == b"x"
        assert len(txn) == 2
        assert txn.count() == 2
        assert txn.get(b"k", bucket="y") == b"y"
        assert [bytes(k) for k, _ in txn.iter()] == [b"k", b"only-x"]
    with db.begin(write=True, bucket="y") as txn:
        txn.put(b"new", b"1")
        del txn[b"k"]
    with db.begin() as txn:
        assert txn.get(b"new", bucket="y") == b"1"
        assert txn.get(b"k", bucket="y") is None
        assert txn.get(b"new") is None


def test_multi_bucket_atomic_commit(db, reopen):
    with db.begin(write=True) as txn:
        for b in ("a", "b", "c"):
            txn.create_bucket(b)
            for i in range(300):
                txn.put(b"%d" % i, ("%s%d" % (b, i)).encode(), bucket=b)
    try:
        with db.begin(write=True) as txn:
            for b in ("a", "b", "c"):
                for i in range(300):
                    txn.put(b"%d" % i, b"changed", bucket=b)
            txn.drop_bucket("b")
            raise RuntimeError("abort")
    except RuntimeError:
        pass
    db = reopen(db)
    with db.begin() as txn:
        assert txn.buckets() == ["a", "b", "c"]
        for b in ("a", "b", "c"):
            assert txn.count(bucket=b) == 300
            assert txn.get(b"7", bucket=b) == ("%s7" % b).encode()


def test_create_fill_drop_abort_leaves_file_as_before(db, db_path):
    with db.begin(write=True) as txn:
        txn.create_bucket("keep")
        for i in range(500):
            txn.put(b"%d" % i, b"v" * 50, bucket="keep")
    before_stat = db.stat()
    before = dump(db)
    with open(db_path, "rb") as f:
        meta_before = f.read(2 * 4096)
    txn = db.begin(write=True)
    for n in ("t1", "t2"):
        txn.create_bucket(n)
        for i in range(3000):
            txn.put(b"%06d" % i, b"x" * 200, bucket=n)
        txn.put(b"big", b"B" * 100000, bucket=n)
    txn.drop_bucket("t1")
    txn.drop_bucket("keep")
    txn.abort()
    db.check()
    after_stat = db.stat()
    for k in ("page_count", "free_pages", "txid", "entries", "depth"):
        assert after_stat[k] == before_stat[k], k
    assert dump(db) == before
    with open(db_path, "rb") as f:
        assert f.read(2 * 4096) == meta_before, "meta pages changed by an aborted transaction"
    db.close()
    lay = layout_of(db_path)
    assert lay.problems == []
    assert set(lay.contents) == {None, "keep"}


@ON_FILE_AND_MEMORY
def test_drop_frees_pages(db):
    rnd = random.Random(2)
    sizes = []
    for cycle in range(8):
        with db.begin(write=True) as txn:
            txn.create_bucket("data")
            for i in range(1500):
                txn.put(b"%06d" % i, rnd.randbytes(150), bucket="data")
            for i in range(5):
                txn.put(b"big%d" % i, rnd.randbytes(30000), bucket="data")
        sizes.append(db.stat()["page_count"])
        with db.begin(write=True) as txn:
            assert txn.drop_bucket("data")
        st = db.stat()
        assert st["free_pages"] >= 0.8 * (sizes[-1] - 10)
    assert sizes[-1] <= sizes[0] + 8, "dropping a bucket does not free its pages: %s" % sizes
    db.check()


def test_drop_create_cycles_vs_fresh_load(tmp_path):
    """Bucket drop/create cycles end with a clean checker and a file not larger than a fresh
    load of the same final data plus a small slack."""
    rnd = random.Random(7)
    path = str(tmp_path / "cycles.bs")
    data = {n: {rnd.randbytes(10): rnd.randbytes(rnd.choice([20, 200, 5000])) for _ in range(400)}
            for n in ("a", "b", "c")}
    with btree_store.DB(path) as db:
        for name in sorted(data):
            with db.begin(write=True) as txn:
                txn.create_bucket(name)
                for k, v in data[name].items():
                    txn.put(k, v, bucket=name)
        for cycle in range(12):
            with db.begin(write=True) as txn:
                name = rnd.choice(sorted(data))
                txn.drop_bucket(name)
            with db.begin(write=True) as txn:
                txn.create_bucket(name)
                for k, v in data[name].items():
                    txn.put(k, v, bucket=name)
            with db.begin(write=True) as txn:  # create, fill and drop a scratch bucket
                txn.create_bucket("tmp")
                for i in range(300):
                    txn.put(b"%d" % i, b"t" * 300, bucket="tmp")
            with db.begin(write=True) as txn:
                txn.drop_bucket("tmp")
        db.check()
        final = dump(db)
        cycled = db.stat()["page_count"]
    fresh_path = str(tmp_path / "fresh.bs")
    with btree_store.DB(fresh_path) as fresh:
        for n in sorted(data):
            with fresh.begin(write=True) as txn:
                txn.create_bucket(n)
                for k, v in final[n].items():
                    txn.put(k, v, bucket=n)
        fresh_pages = fresh.stat()["page_count"]
        assert dump(fresh) == final
    assert cycled <= fresh_pages * 1.3 + 16, (cycled, fresh_pages)
    assert layout_of(path).problems == []


# ---------------------------------------------------------------- counts, pop, replace
def test_counts(db, reopen):
    with db.begin(write=True) as txn:
        txn.create_bucket("b")
        for i in range(1000):
            txn.put(b"%d" % i, b"v")
            txn.put(b"%d" % i, b"w", bucket="b")
        for i in range(1000):
            txn.put(b"%d" % i, b"again")  # overwrites do not count
        assert len(txn) == 1000
        assert txn.count() == 1000
        assert txn.count(bucket="b") == 1000
        for i in range(0, 1000, 3):
            txn.delete(b"%d" % i, bucket="b")
        txn.delete(b"nonexistent")
        assert txn.count(bucket="b") == 666
        assert txn.count(bucket=None) == 1000
    db = reopen(db)
    with db.begin() as txn:
        assert len(txn) == 1000
        assert txn.count(bucket="b") == 666
    assert db.stat()["entries"] == 1000 + 666  # every bucket
    assert db.stat()["bucket_entries"] == {None: 1000, "b": 666}


def test_count_is_constant_time(db):
    with db.begin(write=True) as txn:
        txn.create_bucket("big")
        for i in range(100000):
            txn.put(i.to_bytes(4, "big"), b"", bucket="big")
        txn.put(b"x", b"")
    with db.begin() as txn:
        t = time.perf_counter()
        for _ in range(2000):
            assert txn.count(bucket="big") == 100000
            assert len(txn) == 1
        elapsed = time.perf_counter() - t
    # 2000 counts of a 100k-entry bucket: a scan would take seconds, O(1) takes milliseconds
    assert elapsed < 1.0, elapsed


def test_pop_and_replace(db):
    with db.begin(write=True) as txn:
        txn.create_bucket("b")
        assert txn.replace(b"k", b"1") is None
        assert txn.get(b"k") == b"1"
        assert txn.replace(b"k", b"2") == b"1"
        assert txn.get(b"k") == b"2"
        assert txn.pop(b"k", None) == b"2"
        assert txn.get(b"k") is None
        assert txn.pop(b"k", b"dflt") == b"dflt"
        assert txn.replace(b"big", b"B" * 50000, bucket="b") is None
        assert txn.replace(b"big", b"small", bucket="b") == b"B" * 50000
        assert txn.pop(b"big", None, bucket="b") == b"small"
        assert txn.count(bucket="b") == 0
        txn.put(b"k", b"3")
        with pytest.raises(KeyError):
            txn.pop(b"missing")
    with db.begin() as txn:
        assert txn.get(b"k") == b"3"
        with pytest.raises(btree_store.ReadonlyError):
            txn.pop(b"k", None)
        with pytest.raises(btree_store.ReadonlyError):
            txn.replace(b"k", b"x")


# ---------------------------------------------------------------- exec / view / exec_multi
def test_exec_and_view(db):
    def fill(txn):
        for i in range(10):
            txn.put(b"%d" % i, b"v%d" % i)
        return "result"

    assert db.exec("b", fill) == "result"
    assert db.buckets() == ["b"]
    assert db.view("b", lambda t: (len(t), t.get(b"3"))) == (10, b"v3")

    def fail(txn):
        txn.put(b"3", b"changed")
        txn.delete(b"4")
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        db.exec("b", fail)
    assert db.view("b", lambda t: (len(t), t.get(b"3"))) == (10, b"v3")

    def fail_new(txn):
        txn.put(b"x", b"y")
        raise ValueError("x")

    with pytest.raises(ValueError):
        db.exec("newbucket", fail_new)
    assert "newbucket" not in db.buckets()  # its creation was rolled back with the rest

    with pytest.raises(btree_store.ReadonlyError):
        db.view("b", lambda t: t.put(b"x", b"y"))
    assert db.view("b", lambda t: t.get(b"x")) is None
    # the txn handed to fn is finished once exec returns
    kept = []
    db.exec("b", kept.append)
    with pytest.raises(btree_store.ClosedError):
        kept[0].get(b"1")


@ON_FILE_AND_MEMORY
def test_exec_multi_rolls_back_only_failed_part(db):
    db.exec("a", lambda t: t.put(b"base", b"1"))
    db.exec("b", lambda t: t.put(b"base", b"2"))

    def fn2_ok(txn):
        txn.put(b"ok", b"yes")
        return 41

    def fn2_fail(txn):
        txn.put(b"bad", b"no")
        txn.delete(b"base")
        for i in range(2000):  # enough to split pages inside the failed part
            txn.put(b"junk%d" % i, b"j" * 100)
        raise KeyError("fn2 failed")

    def fn(multi):
        r = multi.execute("a", fn2_ok)
        assert r == 41
        with pytest.raises(KeyError):
            multi.execute("b", fn2_fail)
        with pytest.raises(KeyError):
            multi.execute("a", fn2_fail)
        multi.execute("b", lambda t: t.put(b"after", b"1"))
        return "done"

    assert db.exec_multi(fn) == "done"
    with db.begin() as txn:
        assert dict((bytes(k), bytes(v)) for k, v in txn.iter(bucket="a")) == {b"base": b"1", b"ok": b"yes"}
        assert dict((bytes(k), bytes(v)) for k, v in txn.iter(bucket="b")) == {b"base": b"2", b"after": b"1"}
    db.check()


def test_exec_multi_exception_aborts_everything(db):
    db.exec("a", lambda t: t.put(b"base", b"1"))

    def fn(multi):
        multi.execute("a", lambda t: t.put(b"x", b"1"))
        multi.execute("c", lambda t: t.put(b"y", b"1"))
        raise RuntimeError("whole")

    with pytest.raises(RuntimeError):
        db.exec_multi(fn)
    assert db.buckets() == ["a"]
    assert db.view("a", lambda t: t.get(b"x")) is None


def test_exec_multi_new_bucket_rolled_back_with_fn2(db):
    def fn(multi):
        try:
            multi.execute("fresh", lambda t: (t.put(b"k", b"v"), 1 / 0))
        except ZeroDivisionError:
            pass
        multi.execute("other", lambda t: t.put(b"k", b"v"))

    db.exec_multi(fn)
    # fn2 failed: its writes are gone; whether its (now empty) bucket survives is not pinned
    assert "other" in db.buckets()
    if "fresh" in db.buckets():
        assert db.view("fresh", len) == 0
