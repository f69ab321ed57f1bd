"""test_stateful.py - hypothesis state machines against dict models.

CoreMachine: put/get/delete/commit/abort/reopen plus an open read snapshot, on the
default bucket, small pages so that trees split, merge and use overflow runs.
BucketMachine: several buckets (create/drop), counts, iterators on random ranges in
both directions checked against sorted() of the model, seek, commit/abort/reopen.
Both run db.check() after every reopen and in teardown. Every commit also checks the whole
state (every page reachable once or free once, the writer's free set equal to the persisted
one): the databases these machines open take check_commits from the process default, which
the autouse fixture turns on (in every build, debug or release).

Layer: tests only; public Python API of btree_store.
"""
import shutil
import tempfile

import hypothesis.strategies as st
import pytest
from hypothesis import note
from hypothesis.stateful import (RuleBasedStateMachine, invariant, precondition, rule)

import btree_store
from btree_store import _core


@pytest.fixture(autouse=True)
def _check_every_commit():
    # DB(check_commits=None), what the machines open, takes this default
    old = _core._check_commits_default(True)
    try:
        yield
    finally:
        _core._check_commits_default(old)


KEY_POOL = [b"", b"a", b"ab", b"abc", b"b", b"ba", b"k" * 100, b"\x00", b"\xff" * 3,
            b"m" * 300, b"zz"]
keys = st.one_of(st.sampled_from(KEY_POOL), st.binary(max_size=12),
                 st.integers(0, 400).map(lambda i: b"n%04d" % i))
# value: a byte pattern of a chosen length (cheap to generate, crosses the overflow threshold
# of 1024-byte pages at ~480 bytes)
values = st.tuples(st.integers(0, 255),
                   st.sampled_from([0, 1, 7, 30, 100, 470, 490, 600, 1100, 3000, 9000])).map(
    lambda t: bytes([t[0]]) * t[1] + bytes([t[1] % 256]))


class CoreMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="bs_core_")
        self.path = self.dir + "/core.bs"
        self.db = btree_store.DB(self.path, page_size=1024)
        self.committed = {}
        self.txn = None
        self.pending = None
        self.reader = None
        self.snapshot = None

    # -- write transaction --
    @precondition(lambda self: self.txn is None)
    @rule()
    def begin_write(self):
        self.txn = self.db.begin(write=True)
        self.pending = dict(self.committed)

    @precondition(lambda self: self.txn is not None)
    @rule(k=keys, v=values, overwrite=st.booleans())
    def put(self, k, v, overwrite):
        r = self.txn.put(k, v, overwrite=overwrite)
        if overwrite or k not in self.pending:
            assert r is True
            self.pending[k] = v
        else:
            assert r is False

    @precondition(lambda self: self.txn is not None)
    @rule(start=st.integers(0, 400), n=st.integers(1, 200), vlen=st.sampled_from([5, 60, 200]))
    def put_many(self, start, n, vlen):
        for i in range(start, start + n):
            k = b"n%04d" % i
            v = bytes([i % 256]) * vlen
            self.txn[k] = v
            self.pending[k] = v

    @precondition(lambda self: self.txn is not None)
    @rule(k=keys)
    def delete(self, k):
        assert self.txn.delete(k) is (k in self.pending)
        self.pending.pop(k, None)

    @precondition(lambda self: self.txn is not None)
    @rule(start=st.integers(0, 400), n=st.integers(1, 300))
    def delete_many(self, start, n):
        for i in range(start, start + n):
            k = b"n%04d" % i
            assert self.txn.delete(k) is (k in self.pending)
            self.pending.pop(k, None)

    @precondition(lambda self: self.txn is not None)
    @rule(k=keys)
    def get_in_txn(self, k):
        assert self.txn.get(k) == self.pending.get(k)
        assert (k in self.txn) == (k in self.pending)

    @precondition(lambda self: self.txn is not None)
    @rule()
    def commit(self):
        self.txn.commit()
        self.committed = self.pending
        self.txn = self.pending = None

    @precondition(lambda self: self.txn is not None)
    @rule()
    def abort(self):
        self.txn.abort()
        self.txn = self.pending = None

    # -- read snapshot --
    @precondition(lambda self: self.reader is None)
    @rule()
    def open_reader(self):
        self.reader = self.db.begin()
        self.snapshot = dict(self.committed)

    @precondition(lambda self: self.reader is not None)
    @rule(k=keys)
    def reader_get(self, k):
        assert self.reader.get(k) == self.snapshot.get(k)

    @precondition(lambda self: self.reader is not None)
    @rule()
    def reader_scan(self):
        got = [(bytes(k), bytes(v)) for k, v in self.reader.iter()]
        assert got == sorted(self.snapshot.items())
        assert len(self.reader) == len(self.snapshot)

    @precondition(lambda self: self.reader is not None)
    @rule()
    def close_reader(self):
        self.reader.abort()
        self.reader = self.snapshot = None

    @rule(k=keys)
    def get_committed(self, k):
        with self.db.begin() as txn:
            assert txn.get(k) == self.committed.get(k)

    @rule()
    def reopen(self):
        if self.txn is not None:
            self.txn.abort()
            self.txn = self.pending = None
        if self.reader is not None:
            self.reader.abort()
            self.reader = self.snapshot = None
        self.db.close()
        self.db = btree_store.DB(self.path)
        self.db.check()
        with self.db.begin() as txn:
            assert [(bytes(k), bytes(v)) for k, v in txn.iter()] == sorted(self.committed.items())

    @invariant()
    def lengths(self):
        if self.txn is not None:
            assert len(self.txn) == len(self.pending)
        st_ = self.db.stat()
        assert st_["entries"] == len(self.committed)

    def teardown(self):
        try:
            if self.txn is not None:
                self.txn.abort()
            if self.reader is not None:
                self.reader.abort()
            self.db.check()
            with self.db.begin() as txn:
                assert dict((bytes(k), bytes(v)) for k, v in txn.iter()) == self.committed
        finally:
            self.db.close()
            shutil.rmtree(self.dir, ignore_errors=True)


TestCoreMachine = CoreMachine.TestCase


# ---------------------------------------------------------------------------------------
BUCKETS = [None, "a", "b", "ünï"]
bkeys = st.one_of(st.sampled_from([b"", b"a", b"b", b"ab", b"abc", b"b\x00", b"c"]),
                  st.integers(0, 300).map(lambda i: b"k%03d" % i),
                  st.binary(max_size=6))
bounds = st.one_of(st.none(), bkeys)
prefixes = st.one_of(st.none(), st.sampled_from([b"", b"a", b"k", b"k1", b"k00", b"zz"]))


def model_range(model, start, stop, reverse, prefix):
    ks = sorted(k for k in model
                if (start is None or k >= start) and (stop is None or k < stop)
                and (prefix is None or k.startswith(prefix)))
    items = [(k, model[k]) for k in ks]
    return items[::-1] if reverse else items


class BucketMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="bs_bucket_")
        self.path = self.dir + "/b.bs"
        self.db = btree_store.DB(self.path, page_size=1024)
        self.committed = {None: {}}
        self.txn = None
        self.pending = None

    def _cur(self):
        return self.pending if self.txn is not None else self.committed

    def _txn(self):
        return self.txn if self.txn is not None else self.db.begin()

    def _done(self, txn):
        if txn is not self.txn:
            txn.abort()

    @precondition(lambda self: self.txn is None)
    @rule()
    def begin(self):
        self.txn = self.db.begin(write=True)
        self.pending = {b: dict(m) for b, m in self.committed.items()}

    @precondition(lambda self: self.txn is not None)
    @rule()
    def commit(self):
        self.txn.commit()
        self.committed, self.txn, self.pending = self.pending, None, None

    @precondition(lambda self: self.txn is not None)
    @rule()
    def abort(self):
        self.txn.abort()
        self.txn = self.pending = None

    @precondition(lambda self: self.txn is not None)
    @rule(name=st.sampled_from(BUCKETS[1:]))
    def create(self, name):
        self.txn.create_bucket(name, exist_ok=True)
        self.pending.setdefault(name, {})

    @precondition(lambda self: self.txn is not None)
    @rule(name=st.sampled_from(BUCKETS[1:]))
    def drop(self, name):
        assert self.txn.drop_bucket(name) is (name in self.pending)
        self.pending.pop(name, None)

    @precondition(lambda self: self.txn is not None)
    @rule(b=st.sampled_from(BUCKETS), k=bkeys, v=values)
    def put(self, b, k, v):
        if b not in self.pending:
            try:
                self.txn.put(k, v, bucket=b)
            except btree_store.BucketNotFoundError:
                return
            raise AssertionError("put into missing bucket %r did not raise" % b)
        assert self.txn.put(k, v, bucket=b) is True
        self.pending[b][k] = v

    @precondition(lambda self: self.txn is not None)
    @rule(b=st.sampled_from(BUCKETS), start=st.integers(0, 300), n=st.integers(1, 150))
    def put_many(self, b, start, n):
        if b not in self.pending:
            return
        for i in range(start, start + n):
            k = b"k%03d" % i
            v = bytes([i % 256]) * (i % 90)
            self.txn.put(k, v, bucket=b)
            self.pending[b][k] = v

    @precondition(lambda self: self.txn is not None)
    @rule(b=st.sampled_from(BUCKETS), k=bkeys)
    def delete(self, b, k):
        if b not in self.pending:
            return
        assert self.txn.delete(k, bucket=b) is (k in self.pending[b])
        self.pending[b].pop(k, None)

    @precondition(lambda self: self.txn is not None)
    @rule(b=st.sampled_from(BUCKETS), start=st.integers(0, 300), n=st.integers(1, 200))
    def delete_many(self, b, start, n):
        if b not in self.pending:
            return
        for i in range(start, start + n):
            k = b"k%03d" % i
            assert self.txn.delete(k, bucket=b) is (k in self.pending[b])
            self.pending[b].pop(k, None)

    @precondition(lambda self: self.txn is not None)
    @rule(b=st.sampled_from(BUCKETS), k=bkeys, v=values)
    def pop_replace(self, b, k, v):
        if b not in self.pending:
            return
        m = self.pending[b]
        assert self.txn.replace(k, v, bucket=b) == m.get(k)
        m[k] = v
        assert self.txn.pop(k, b"dflt", bucket=b) == v
        del m[k]
        assert self.txn.pop(k, b"dflt", bucket=b) == b"dflt"

    @rule(b=st.sampled_from(BUCKETS), start=bounds, stop=bounds, reverse=st.booleans(),
          prefix=prefixes)
    def iterate(self, b, start, stop, reverse, prefix):
        model = self._cur()
        txn = self._txn()
        try:
            if b not in model:
                try:
                    list(txn.iter(bucket=b))
                except btree_store.BucketNotFoundError:
                    return
                raise AssertionError("iter over missing bucket %r did not raise" % b)
            note("iter(%r, %r, reverse=%r, prefix=%r, bucket=%r)" % (start, stop, reverse, prefix, b))
            got = [(bytes(k), bytes(v)) for k, v in
                   txn.iter(start, stop, reverse=reverse, bucket=b, prefix=prefix)]
            assert got == model_range(model[b], start, stop, reverse, prefix)
        finally:
            self._done(txn)

    @rule(b=st.sampled_from(BUCKETS), start=bounds, stop=bounds, reverse=st.booleans(),
          to=bkeys, take=st.integers(0, 3))
    def seek(self, b, start, stop, reverse, to, take):
        model = self._cur()
        if b not in model:
            return
        txn = self._txn()
        try:
            it = txn.iter(start, stop, reverse=reverse, bucket=b)
            rng = model_range(model[b], start, stop, reverse, None)
            got = [(bytes(k), bytes(v)) for k, v in (next(it) for _ in range(min(take, len(rng))))]
            assert got == rng[:len(got)]
            if (start is not None and to < start) or (stop is not None and to >= stop):
                return  # seeking outside the range: not specified
            it.seek(to)
            want = [kv for kv in rng if (kv[0] <= to if reverse else kv[0] >= to)]
            got = [(bytes(k), bytes(v)) for k, v in it]
            assert got == want
        finally:
            self._done(txn)

    @rule(b=st.sampled_from(BUCKETS))
    def count(self, b):
        model = self._cur()
        txn = self._txn()
        try:
            if b not in model:
                try:
                    txn.count(bucket=b)
                except btree_store.BucketNotFoundError:
                    return
                raise AssertionError("count of missing bucket did not raise")
            assert txn.count(bucket=b) == len(model[b])
            if b is None:
                assert len(txn) == len(model[None])
        finally:
            self._done(txn)

    @rule()
    def list_buckets(self):
        model = self._cur()
        txn = self._txn()
        try:
            assert txn.buckets() == sorted(n for n in model if n is not None)
        finally:
            self._done(txn)
        assert self.db.buckets() == sorted(n for n in self.committed if n is not None)

    @rule()
    def reopen(self):
        if self.txn is not None:
            self.txn.abort()
            self.txn = self.pending = None
        self.db.close()
        self.db = btree_store.DB(self.path)
        self.db.check()

    def teardown(self):
        try:
            if self.txn is not None:
                self.txn.abort()
            self.db.check()
            with self.db.begin() as txn:
                assert txn.buckets() == sorted(n for n in self.committed if n is not None)
                for b, m in self.committed.items():
                    assert [(bytes(k), bytes(v)) for k, v in txn.iter(bucket=b)] == sorted(m.items())
        finally:
            self.db.close()
            shutil.rmtree(self.dir, ignore_errors=True)


TestBucketMachine = BucketMachine.TestCase
