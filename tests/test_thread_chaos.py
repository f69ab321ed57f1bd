"""test_thread_chaos.py - threads sharing one DB (and some Txn / Iterator objects) call
random methods, begin write transactions with timeouts, and close / reopen the DB
mid-flight; the test fails if a thread is stuck (join timeout) or raises anything
undocumented, and the file must pass check() afterwards.

Default 3 s per seed; BTREE_STORE_LONG=1 runs 20 s.

Layer: tests only; public Python API of btree_store (plus the private _bind/_savepoint).
"""
import faulthandler
import gc
import itertools
import random
import threading
import time

import pytest

import btree_store
from btree_store import Error

from _chaos import Boom, _Unraisables
from _util import LONG


class _Shared:
    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.db = btree_store.DB(path)
        self.dbs = [self.db]
        self.txns = []
        self.iters = []
        self.stop = threading.Event()
        self.errors = []

    def add(self, seq, obj, limit=8):
        with self.lock:
            seq.append(obj)
            if len(seq) > limit:
                seq.pop(0)

    def pick(self, seq, rnd):
        with self.lock:
            return rnd.choice(seq) if seq else None


def _thread_step(sh, rnd):
    db = sh.db
    op = rnd.randrange(22)
    key = rnd.choice([b"a", b"b", b"c", b"k%d" % rnd.randrange(50)])
    val = rnd.choice([b"v", b"x" * rnd.randrange(3000), b"big" * 4000])
    bucket = rnd.choice([None, None, "t1", "t2"])
    if op == 0:
        sh.add(sh.txns, db.begin(bucket=rnd.choice([None, "t1"])))
    elif op == 1:
        timeout = rnd.choice([0, 0.01, 0.05, 0.2, 1e300, None])
        txn = db.begin(write=True, timeout=timeout)
        if rnd.random() < 0.3:
            sh.add(sh.txns, txn)     # others may use it, end it, or never do
        else:
            try:
                for _ in range(rnd.randrange(1, 20)):
                    txn.put(b"k%d" % rnd.randrange(50), val, bucket=bucket)
                    if rnd.random() < 0.2:
                        txn.create_bucket(rnd.choice(["t1", "t2"]))
                    if rnd.random() < 0.05:
                        txn.drop_bucket(rnd.choice(["t1", "t2"]))
                if rnd.random() < 0.2:
                    sh.add(sh.iters, txn.iter(reverse=rnd.random() < 0.5))
                (txn.commit if rnd.random() < 0.8 else txn.abort)()
            finally:
                if rnd.random() < 0.5:
                    txn.abort()
    elif op in (2, 3, 4):
        txn = sh.pick(sh.txns, rnd)
        if txn is None:
            return
        m = rnd.randrange(10)
        if m == 0:
            txn.get(key, bucket=bucket)
        elif m == 1:
            txn.put(key, val, bucket=bucket)
        elif m == 2:
            sh.add(sh.iters, txn.iter(prefix=rnd.choice([None, b"k", b"k1"])))
        elif m == 3:
            txn.commit()
        elif m == 4:
            txn.abort()
        elif m == 5:
            len(txn)
        elif m == 6:
            txn.delete(key)
        elif m == 7:
            txn._bind(rnd.choice(["t1", "t2"]), create=txn.write).put(key, val)
        elif m == 8:
            txn.buckets()
        else:
            txn.replace(key, val)
    elif op in (5, 6, 7, 8):
        it = sh.pick(sh.iters, rnd)
        if it is None:
            return
        m = rnd.randrange(5)
        if m <= 1:
            for kv in itertools.islice(it, rnd.randrange(1, 30)):
                if isinstance(kv, tuple):
                    bytes(kv[0]), bytes(kv[1])
                else:
                    bytes(kv)
        elif m == 2:
            it.seek(key)
        elif m == 3:
            it.key, it.value
        else:
            list(it)
    elif op == 9:
        with db.begin() as txn:
            for k, v in itertools.islice(txn.iter(), 100):
                bytes(k), bytes(v)
    elif op == 10:
        db.check()
    elif op == 11:
        db.stat(), db.buckets()
    elif op == 12:
        def fn(t):
            t.put(key, val)
            if rnd.random() < 0.1:
                raise Boom("exec")
            return t.get(key)
        db.exec(rnd.choice(["t1", "t2"]), fn)
    elif op == 13:
        db.view(rnd.choice(["t1", "t2"]), lambda t: t.count())
    elif op == 14:
        def fm(multi):
            multi.execute("t1", lambda t: t.put(key, val))
            try:
                multi.execute("t2", lambda t: (t.put(key, val), 1 / 0))
            except ZeroDivisionError:
                pass
        db.exec_multi(fm)
    elif op == 15:
        if rnd.random() < 0.15:
            db.close()
    elif op == 16:
        if db.closed:
            if rnd.random() < 0.5:
                db.__init__(sh.path)  # reopen the same object: old Txns must stay finished
                return
            with sh.lock:
                if sh.db is db:
                    try:
                        sh.db = btree_store.DB(sh.path)
                        sh.dbs.append(sh.db)
                    except btree_store.LockedError:
                        pass
    elif op == 17:
        if rnd.random() < 0.2:
            gc.collect()
    elif op == 18:
        with sh.lock:
            if sh.txns and rnd.random() < 0.5:
                sh.txns.pop(rnd.randrange(len(sh.txns)))
            if sh.iters and rnd.random() < 0.5:
                sh.iters.pop(rnd.randrange(len(sh.iters)))
    elif op == 19:
        with db.begin(write=True, timeout=rnd.choice([0.01, 0.1])) as txn:
            for i in range(rnd.randrange(100)):
                txn.put(b"k%d" % rnd.randrange(50), val)
            txn._savepoint()
            txn.put(b"sp", b"1")
            (txn._rollback if rnd.random() < 0.5 else txn._release)()
    elif op == 20:
        txn = sh.pick(sh.txns, rnd)
        if txn is not None:
            with txn:
                txn.get(key)
    else:
        it = sh.pick(sh.iters, rnd)
        if it is not None:
            it.seek(key)
            next(it, None)


def _thread_main(sh, seed, deadline):
    rnd = random.Random(seed)
    try:
        while time.monotonic() < deadline and not sh.stop.is_set():
            try:
                _thread_step(sh, rnd)
            except (Error, TypeError, ValueError, KeyError, Boom):
                pass
    except BaseException as e:  # noqa: BLE001 - reported by the test
        import traceback
        sh.errors.append("".join(traceback.format_exception(e)))


@pytest.mark.parametrize("seed", [1, 2])
def test_thread_chaos(tmp_path, seed):
    path = str(tmp_path / "threads.bs")
    sh = _Shared(path)
    duration = 20.0 if LONG else 3.0
    deadline = time.monotonic() + duration
    threads = [threading.Thread(target=_thread_main, args=(sh, seed * 100 + i, deadline),
                                daemon=True) for i in range(5)]
    with _Unraisables() as unr:
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, deadline + 2.0 - time.monotonic()))
        # Threads still running may wait (timeout=None) for a write transaction that sits in
        # the shared pool with nobody left to end it: closing the DB must release them.
        sh.stop.set()
        closer = threading.Thread(target=lambda: [db.close() for db in list(sh.dbs)],
                                  daemon=True)
        closer.start()
        closer.join(60)
        stuck = [t for t in threads + [closer] if (t.join(60) or t.is_alive())]
        if stuck:
            faulthandler.dump_traceback(all_threads=True)
            pytest.fail("%d thread(s) stuck (deadlock or hang)" % len(stuck))
        with sh.lock:
            sh.txns.clear()
            sh.iters.clear()
        for db in sh.dbs:
            db.close()
        gc.collect()
    assert not sh.errors, "\n".join(sh.errors)
    assert not unr.bad, unr.bad
    db = btree_store.DB(path)
    try:
        db.check()
    finally:
        db.close()
