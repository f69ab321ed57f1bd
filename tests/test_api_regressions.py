"""test_api_regressions.py - targeted regressions found by the API chaos tests: buffers
that are not contiguous, huge timeouts that must still notice close(), values over 4 GiB,
re-__init__ racing close(), finalizers that close the DB or inspect half-built objects
inside calls, DB subclasses with __del__, and a savepoint rollback over a bucket dropped and
recreated inside it.

Layer: tests only; public Python API of btree_store (plus the private _savepoint/_rollback).
"""
import gc
import threading
import time

import pytest

import btree_store
from btree_store import Error, _testing

from _chaos import _Bomb, _huge_value


def test_noncontiguous_buffers_are_accepted(db):
    with db.begin(write=True) as txn:
        assert txn.put(memoryview(b"kxkx1x")[::2], memoryview(b"vxvxvx")[::2])
        assert txn.get(b"kk1") == b"vvv"
        assert txn.get(memoryview(b"k_k_1_")[::2]) == b"vvv"
        it = txn.iter(memoryview(b"k_k_")[::2])
        assert it.seek(memoryview(b"k_k_1_")[::2])
        assert bytes(next(it)[0]) == b"kk1"


def test_huge_timeout_still_notices_close(db):
    """A writer waiting with timeout=1e300 (or 10**20) must still notice close()."""
    holder = db.begin(write=True)
    results = []

    def waiter(t):
        try:
            results.append(db.begin(write=True, timeout=t))
        except Error as e:
            results.append(e)

    threads = [threading.Thread(target=waiter, args=(t,), daemon=True)
               for t in (1e300, 10**20, 2**63)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    assert all(t.is_alive() for t in threads)
    db.close()
    for t in threads:
        t.join(10)
        assert not t.is_alive(), "writer waiting with a huge timeout did not notice close()"
    assert len(results) == 3 and all(isinstance(r, btree_store.ClosedError) for r in results)
    assert holder.closed


def test_value_over_4gib_is_value_error(db):
    big = _huge_value()
    if len(big) <= 2**32:
        pytest.skip("no 4 GiB mapping")
    with db.begin(write=True) as txn:
        with pytest.raises(ValueError):
            txn.put(b"k", big)
        with pytest.raises(ValueError):
            txn[b"k"] = big
        with pytest.raises(ValueError):
            txn.replace(b"k", big)


def test_reinit_while_another_thread_closes(tmp_path):
    """__init__ on a DB whose close() is still running on another thread must not swap the
    handle (or its FaultIO) under the closing thread."""
    path = str(tmp_path / "r.bs")
    for _ in range(20):
        db = btree_store.DB(path, _io=_testing.FaultIO())  # db holds the only reference
        with db.begin(write=True) as txn:
            for i in range(50):
                txn.put(b"%d" % i, b"x" * 100)
        errors = []

        def closer():
            try:
                db.close()
            except Error as e:
                errors.append(e)

        th = threading.Thread(target=closer)
        th.start()
        while th.is_alive():  # spin: some attempt lands while close() is inside the engine
            try:
                db.__init__(path, _io=_testing.FaultIO())
                break
            except Error:
                pass
        th.join(10)
        assert not th.is_alive()
        gc.collect()
        db.close()
        assert not errors
    db = btree_store.DB(path)
    db.check()
    db.close()


def test_finalizer_closes_db_during_begin(tmp_path):
    """A garbage cycle whose __del__ closes the DB, collected while begin() builds the Txn:
    the engine handle must not be closed under a live transaction."""
    path = str(tmp_path / "f.bs")
    db = btree_store.DB(path)
    old = gc.get_threshold()
    try:
        for i in range(300):
            gc.set_threshold(1 + i % 7, 1, 1)
            _Bomb(db, lambda o: o.close())
            try:
                t = db.begin(write=bool(i % 2))
                t.put(b"k", b"v") if t.write else t.get(b"k")
                t.commit()
            except Error:
                pass
            if db.closed:
                db.close()
                db = btree_store.DB(path)
    finally:
        gc.set_threshold(*old)
        gc.collect()
    db.close()
    db = btree_store.DB(path)
    db.check()
    db.close()


def test_finalizer_sees_no_half_built_tuple(db):
    """The (key, value) tuple an iterator reuses is visible to any finalizer that an
    allocation inside next() runs (gc.get_objects()): it must never hold NULL items."""
    with db.begin(write=True) as txn:
        for i in range(60):
            txn.put(b"k%05d" % i, b"v" * (i % 50))

    class Peek:
        def __init__(self):
            self.cycle = self

        def __del__(self):
            for o in gc.get_objects():
                if type(o) is tuple and len(o) == 2:
                    [type(x) for x in o]

    old = gc.get_threshold()
    gc.set_threshold(1, 1, 1)
    try:
        with db.begin() as txn:
            n = 0
            for k, v in txn.iter():
                Peek()
                n += 1
    finally:
        gc.set_threshold(*old)
    assert n == 60


def test_subclass_with_del_still_closes(tmp_path):
    """A DB subclass with __del__ replaces the finalizer that closes the handle: dropping it
    must still close the file (else the lock stays held until the process exits)."""
    path = str(tmp_path / "sub.bs")
    deleted = []

    class MyDB(btree_store.DB):
        def __del__(self):
            deleted.append(True)

    db = MyDB(path)
    txn = db.begin(write=True)
    txn.put(b"a", b"b")
    del db, txn
    gc.collect()
    assert deleted
    db = btree_store.DB(path)
    with db.begin(write=True, timeout=0):  # LockedError if the write transaction leaked
        pass
    db.check()
    with db.begin() as txn:
        assert txn.get(b"a") is None  # the dropped write transaction was aborted
    db.close()


def test_rollback_restores_bucket_dropped_and_recreated_inside_savepoint(db):
    """Found by a model-based stress of write transactions: a bucket that existed before a
    savepoint, first opened inside it, dropped and created again, was gone after the
    rollback (BucketNotFoundError) although the restored catalog holds it."""
    with db.begin(write=True) as txn:
        txn.create_bucket("b1")
        txn.put(b"k", b"v", bucket="b1")
    with db.begin(write=True) as txn:
        txn._savepoint()
        assert txn.drop_bucket("b1")
        txn.create_bucket("b1")
        txn.put(b"new", b"x", bucket="b1")
        txn._rollback()
        assert txn.buckets() == ["b1"]
        assert txn.get(b"k", bucket="b1") == b"v"
        assert txn.get(b"new", bucket="b1") is None
        assert txn.count(bucket="b1") == 1
        txn.put(b"k2", b"v2", bucket="b1")
    with db.begin() as txn:
        assert [bytes(k) for k in txn.iter(bucket="b1", values=False)] == [b"k", b"k2"]
    # and a bucket created inside the savepoint is gone after the rollback
    with db.begin(write=True) as txn:
        txn._savepoint()
        txn.create_bucket("tmp")
        txn._rollback()
        assert txn.buckets() == ["b1"]
        with pytest.raises(btree_store.BucketNotFoundError):
            txn.get(b"k", bucket="tmp")
