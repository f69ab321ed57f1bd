"""test_api.py - the core Python API (put/get/delete, mapping protocol, transactions,
context managers, snapshots, exceptions, closed/readonly handles, stat, persistence).

Layer: tests only; public Python API of btree_store.
"""
import os

import pytest

import btree_store
from btree_store import ClosedError, Error, ReadonlyError

from _util import dump
from _util import ON_FILE_AND_MEMORY


# ---------------------------------------------------------------- exceptions
def test_exception_hierarchy():
    E = btree_store
    for name in ("CorruptionError", "ReadonlyError", "ClosedError", "LockedError",
                 "PanicError", "DiskError", "DiskFullError", "BucketNotFoundError"):
        cls = getattr(E, name)
        assert issubclass(cls, E.Error), name
    assert issubclass(E.Error, Exception)
    assert issubclass(E.DiskError, OSError)
    assert issubclass(E.DiskFullError, E.DiskError)
    assert issubclass(E.BucketNotFoundError, KeyError)
    assert not issubclass(E.Error, OSError)


# ---------------------------------------------------------------- basics
@ON_FILE_AND_MEMORY
def test_put_get_delete(db):
    with db.begin(write=True) as txn:
        assert txn.put(b"k", b"v") is True
        assert txn.get(b"k") == b"v"
        assert isinstance(txn.get(b"k"), bytes)
        assert txn.get(b"missing") is None
        assert txn.get(b"missing", b"dflt") == b"dflt"
        assert txn.get(b"missing", default=7) == 7
        assert txn.delete(b"k") is True
        assert txn.delete(b"k") is False
        assert txn.get(b"k") is None
        txn.put(b"a", b"1")
    with db.begin() as txn:
        assert txn.get(b"a") == b"1"
        assert txn.get(b"k") is None


def test_overwrite_false_keeps_old(db):
    with db.begin(write=True) as txn:
        assert txn.put(b"k", b"old") is True
        assert txn.put(b"k", b"new", overwrite=False) is False
        assert txn.get(b"k") == b"old"
        assert txn.put(b"k2", b"x", overwrite=False) is True
        assert txn.put(b"k", b"newer") is True
        assert txn.get(b"k") == b"newer"
    with db.begin() as txn:
        assert txn.get(b"k") == b"newer"
        assert txn.get(b"k2") == b"x"


@ON_FILE_AND_MEMORY
def test_mapping_protocol(db):
    with db.begin(write=True) as txn:
        txn[b"k"] = b"v"
        assert txn[b"k"] == b"v"
        assert b"k" in txn
        assert b"nope" not in txn
        assert len(txn) == 1
        with pytest.raises(KeyError):
            txn[b"nope"]
        with pytest.raises(KeyError):
            del txn[b"nope"]
        del txn[b"k"]
        assert b"k" not in txn
        assert len(txn) == 0
        for i in range(10):
            txn[b"%d" % i] = b"x" * i
        assert len(txn) == 10
        txn[b"3"] = b"overwritten"
        assert len(txn) == 10
    with db.begin() as txn:
        assert len(txn) == 10
        assert txn[b"3"] == b"overwritten"
        with pytest.raises(KeyError):
            txn[b"nope"]


def test_context_manager_commits_on_exit(db, reopen):
    with db.begin(write=True) as txn:
        txn.put(b"a", b"1")
    db = reopen(db)
    with db.begin() as txn:
        assert txn.get(b"a") == b"1"


def test_context_manager_aborts_on_exception(db, reopen):
    with db.begin(write=True) as txn:
        txn.put(b"keep", b"1")

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with db.begin(write=True) as txn:
            txn.put(b"a", b"1")
            txn.delete(b"keep")
            raise Boom()
    with db.begin() as txn:
        assert txn.get(b"a") is None
        assert txn.get(b"keep") == b"1"
    db = reopen(db)
    with db.begin() as txn:
        assert txn.get(b"a") is None
        assert txn.get(b"keep") == b"1"


def test_explicit_commit_and_abort(db):
    txn = db.begin(write=True)
    txn.put(b"a", b"1")
    txn.commit()
    txn = db.begin(write=True)
    txn.put(b"b", b"2")
    txn.abort()
    txn = db.begin()
    assert txn.get(b"a") == b"1"
    assert txn.get(b"b") is None
    txn.abort()
    # commit inside a with block: the exit must not fail
    with db.begin(write=True) as txn:
        txn.put(b"c", b"3")
        txn.commit()
    with db.begin() as txn:
        assert txn.get(b"c") == b"3"


@ON_FILE_AND_MEMORY
def test_read_snapshot_isolation(db):
    with db.begin(write=True) as txn:
        txn.put(b"a", b"1")
    r = db.begin()
    with db.begin(write=True) as txn:
        txn.put(b"a", b"2")
        txn.put(b"b", b"new")
        # uncommitted changes are invisible to the reader
        assert r.get(b"a") == b"1"
    # committed changes too: the reader keeps its snapshot
    assert r.get(b"a") == b"1"
    assert r.get(b"b") is None
    assert len(r) == 1
    r.abort()
    with db.begin() as r2:
        assert r2.get(b"a") == b"2"
        assert r2.get(b"b") == b"new"


def test_write_txn_sees_own_writes_reader_does_not(db):
    w = db.begin(write=True)
    w.put(b"x", b"1")
    with db.begin() as r:
        assert r.get(b"x") is None
    assert w.get(b"x") == b"1"
    w.abort()


def test_read_txn_rejects_writes(db):
    with db.begin() as txn:
        with pytest.raises(ReadonlyError):
            txn.put(b"a", b"b")
        with pytest.raises(ReadonlyError):
            txn[b"a"] = b"b"
        with pytest.raises(ReadonlyError):
            txn.delete(b"a")


@ON_FILE_AND_MEMORY
def test_many_keys_and_order_independent(db):
    import random
    rnd = random.Random(1)
    keys = [rnd.randbytes(rnd.randint(0, 40)) for _ in range(3000)]
    model = {}
    with db.begin(write=True) as txn:
        for k in keys:
            v = rnd.randbytes(rnd.randint(0, 300))
            txn.put(k, v)
            model[k] = v
    with db.begin(write=True) as txn:
        for k in list(model)[::3]:
            assert txn.delete(k)
            del model[k]
    with db.begin() as txn:
        assert len(txn) == len(model)
        for k, v in model.items():
            assert txn.get(k) == v
    assert dump(db)[None] == dict(sorted(model.items()))


# ---------------------------------------------------------------- persistence
def test_persistence_across_reopen(db, reopen):
    with db.begin(write=True) as txn:
        for i in range(500):
            txn.put(b"key%05d" % i, b"value%d" % i)
    for _ in range(3):
        db = reopen(db)
        with db.begin() as txn:
            assert len(txn) == 500
            assert txn.get(b"key00042") == b"value42"
    with db.begin(write=True) as txn:
        txn.delete(b"key00042")
    db = reopen(db)
    with db.begin() as txn:
        assert len(txn) == 499
        assert txn.get(b"key00042") is None


def test_db_context_manager_closes(db_path):
    with btree_store.DB(db_path) as db:
        with db.begin(write=True) as txn:
            txn.put(b"a", b"1")
    with pytest.raises(ClosedError):
        db.begin()
    with btree_store.DB(db_path) as db:
        with db.begin() as txn:
            assert txn.get(b"a") == b"1"
        db.check()


def test_create_false_missing_file(tmp_path):
    path = str(tmp_path / "missing.bs")
    with pytest.raises((Error, OSError)):
        btree_store.DB(path, create=False)
    assert not os.path.exists(path)


def test_sync_false_still_persists_on_close(db_path, open_db, reopen):
    db = open_db(db_path, sync=False)
    with db.begin(write=True) as txn:
        txn.put(b"a", b"1")
    db = reopen(db)
    with db.begin() as txn:
        assert txn.get(b"a") == b"1"


# ---------------------------------------------------------------- readonly DB
def test_readonly_db(db_path, open_db):
    db = open_db(db_path)
    with db.begin(write=True) as txn:
        txn.put(b"a", b"1")
    db.close()
    ro = open_db(db_path, readonly=True)
    with pytest.raises(ReadonlyError):
        ro.begin(write=True)
    with ro.begin() as txn:
        assert txn.get(b"a") == b"1"
        with pytest.raises(ReadonlyError):
            txn.put(b"b", b"2")
        with pytest.raises(ReadonlyError):
            txn.delete(b"a")
        with pytest.raises(ReadonlyError):
            txn.create_bucket("x")
    with pytest.raises(ReadonlyError):
        ro.exec("x", lambda t: None)
    ro.check()
    st = ro.stat()
    assert st["entries"] == 1


def test_readonly_missing_file(tmp_path):
    path = str(tmp_path / "nope.bs")
    with pytest.raises((Error, OSError)):
        btree_store.DB(path, readonly=True)
    assert not os.path.exists(path)


# ---------------------------------------------------------------- closed handles
def _txn_calls(txn):
    return {
        "get": lambda: txn.get(b"a"),
        "put": lambda: txn.put(b"a", b"b"),
        "delete": lambda: txn.delete(b"a"),
        "getitem": lambda: txn[b"a"],
        "setitem": lambda: txn.__setitem__(b"a", b"b"),
        "delitem": lambda: txn.__delitem__(b"a"),
        "contains": lambda: b"a" in txn,
        "len": lambda: len(txn),
        "count": lambda: txn.count(),
        "pop": lambda: txn.pop(b"a", None),
        "replace": lambda: txn.replace(b"a", b"b"),
        "iter": lambda: next(iter(txn.iter())),
        "buckets": lambda: txn.buckets(),
        "create_bucket": lambda: txn.create_bucket("b"),
        "drop_bucket": lambda: txn.drop_bucket("b"),
        "commit": lambda: txn.commit(),
    }


@pytest.mark.parametrize("how", ["commit", "abort", "with", "with_exc"])
@pytest.mark.parametrize("write", [True, False])
def test_finished_txn_raises_closed(db, how, write):
    with db.begin(write=True) as t:
        t.put(b"a", b"1")
    txn = db.begin(write=write)
    if how == "commit":
        txn.commit()
    elif how == "abort":
        txn.abort()
    elif how == "with":
        with txn:
            pass
    else:
        with pytest.raises(ZeroDivisionError):
            with txn:
                1 / 0
    for name, call in _txn_calls(txn).items():
        with pytest.raises(ClosedError):
            call()
            pytest.fail("%s on a finished txn did not raise" % name)
    # abort of a finished txn: a no-op or ClosedError, never anything else
    try:
        txn.abort()
    except ClosedError:
        pass
    # and the DB still works
    with db.begin() as t:
        assert t.get(b"a") == b"1"


def test_closed_db_raises_closed(db_path):
    db = btree_store.DB(db_path)
    with db.begin(write=True) as t:
        t.put(b"a", b"1")
    txn = db.begin()
    wtxn_db = btree_store.DB(db_path + "2")
    wtxn = wtxn_db.begin(write=True)
    wtxn.put(b"x", b"y")
    it = txn.iter()
    db.close()
    wtxn_db.close()
    calls = {
        "begin": lambda: db.begin(),
        "begin_write": lambda: db.begin(write=True),
        "check": lambda: db.check(),
        "stat": lambda: db.stat(),
        "buckets": lambda: db.buckets(),
        "exec": lambda: db.exec("b", lambda t: None),
        "view": lambda: db.view("b", lambda t: None),
        "exec_multi": lambda: db.exec_multi(lambda m: None),
        "iter_next": lambda: next(it),
        "iter_seek": lambda: it.seek(b"a"),
    }
    calls.update({"txn_" + k: v for k, v in _txn_calls(txn).items()})
    calls.update({"wtxn_" + k: v for k, v in _txn_calls(wtxn).items()})
    for name, call in calls.items():
        with pytest.raises(ClosedError):
            call()
            pytest.fail("%s on a closed DB did not raise" % name)
    db.close()  # closing twice is harmless
    # nothing of the aborted write transaction reached the file
    with btree_store.DB(db_path + "2") as d2:
        with d2.begin() as t:
            assert t.get(b"x") is None
        d2.check()
    with btree_store.DB(db_path) as d:
        d.check()
        with d.begin() as t:
            assert t.get(b"a") == b"1"


def test_exit_of_db_context_with_open_txn(db_path):
    with btree_store.DB(db_path) as db:
        txn = db.begin(write=True)
        txn.put(b"a", b"1")
    with pytest.raises(ClosedError):
        txn.get(b"a")
    with btree_store.DB(db_path) as db:
        with db.begin() as t:
            assert t.get(b"a") is None  # never committed
        db.check()


# ---------------------------------------------------------------- stat
def test_stat(db, db_path):
    st = db.stat()
    for key in ("page_size", "page_count", "free_pages", "depth", "entries", "txid", "file_size"):
        assert key in st, key
        assert isinstance(st[key], int), key
    assert st["page_size"] == 4096
    assert st["entries"] == 0
    assert st["page_count"] >= 2
    assert st["file_size"] == os.path.getsize(db_path)
    tx0 = st["txid"]
    with db.begin(write=True) as txn:
        for i in range(2000):
            txn.put(b"%06d" % i, b"v" * 50)
    st = db.stat()
    assert st["txid"] == tx0 + 1
    assert st["entries"] == 2000
    assert st["depth"] >= 2
    assert st["page_count"] * st["page_size"] <= st["file_size"]
    assert st["file_size"] == os.path.getsize(db_path)
    assert 0 <= st["free_pages"] < st["page_count"]
    # 2000 entries of ~60 bytes need at least 30 pages
    assert st["page_count"] >= 30
    with db.begin(write=True) as txn:
        for i in range(1000):
            txn.delete(b"%06d" % i)
    st2 = db.stat()
    assert st2["txid"] == tx0 + 2
    assert st2["entries"] == 1000
    assert st2["free_pages"] > 0
    with db.begin(write=True) as txn:
        for i in range(1000, 2000):
            txn.delete(b"%06d" % i)
    st3 = db.stat()
    assert st3["entries"] == 0
    assert st3["depth"] <= 1  # the tree shrinks back to (at most) a single leaf
    # aborted transactions do not move txid
    txn = db.begin(write=True)
    txn.put(b"x", b"y")
    txn.abort()
    assert db.stat()["txid"] == tx0 + 3


def test_stat_txid_persists(db, reopen):
    for i in range(5):
        with db.begin(write=True) as txn:
            txn.put(b"k", b"%d" % i)
    t = db.stat()["txid"]
    db = reopen(db)
    assert db.stat()["txid"] == t
    with db.begin(write=True) as txn:
        txn.put(b"k", b"x")
    assert db.stat()["txid"] == t + 1


def test_check_returns_none(db):
    assert db.check() is None
    with db.begin(write=True) as txn:
        for i in range(1000):
            txn.put(b"%d" % i, b"x" * (i % 300))
    assert db.check() is None


@ON_FILE_AND_MEMORY
def test_delete_all_shrinks_tree_and_reuses(db):
    for rnd in range(3):
        with db.begin(write=True) as txn:
            for i in range(3000):
                txn.put(b"%08d" % i, b"v" * 100)
        with db.begin(write=True) as txn:
            for i in range(3000):
                assert txn.delete(b"%08d" % i)
        st = db.stat()
        assert st["entries"] == 0
        assert st["depth"] <= 1
        db.check()
