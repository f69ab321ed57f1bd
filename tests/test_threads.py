"""test_threads.py - threads: MVCC snapshots stay identical while a writer commits,
a long-lived reader pins pages (stat reports it) but never corrupts, writers serialize exactly,
writer-lock timeout, no self-deadlock, dropped write transactions release the lock, objects
used from several threads at once, and closing a DB while other threads use it.

Layer: tests only; public Python API of btree_store.
"""
import gc
import hashlib
import random
import threading
import time

import pytest

import btree_store
from btree_store import ClosedError, Error, LockedError

from _util import LONG, digest, dump


def _run_threads(targets, timeout=120):
    errors = []

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - reported below
                import traceback
                errors.append("".join(traceback.format_exception(e)))
        return run

    threads = [threading.Thread(target=wrap(t), daemon=True) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "thread hung"
    assert not errors, "\n".join(errors)


def test_reader_snapshots_stay_identical(db):
    """N readers each verify that their snapshot's full-scan checksum never changes and that
    the snapshot is consistent (the writer keeps `n` == number of other keys), while one writer
    commits hundreds of times."""
    commits = 600 if LONG else 200
    with db.begin(write=True) as txn:
        for i in range(200):
            txn.put(b"k%05d" % i, b"%d" % i * 20)
        txn.put(b"n", b"200")
    done = threading.Event()
    seen = []

    def writer():
        rnd = random.Random(1)
        try:
            for c in range(commits):
                with db.begin(write=True) as txn:
                    n = int(txn.get(b"n"))
                    for _ in range(rnd.randint(1, 20)):
                        k = b"k%05d" % rnd.randint(0, 600)
                        if rnd.random() < 0.5:
                            if txn.get(k) is None:
                                n += 1
                            txn.put(k, b"%d" % c * rnd.choice([1, 50, 600]))
                        elif txn.delete(k):
                            n -= 1
                    txn.put(b"n", b"%d" % n)
        finally:
            done.set()

    def reader():
        snaps = 0
        while not done.is_set():
            with db.begin() as txn:
                h1 = _scan_digest(txn)
                n = int(txn.get(b"n"))
                assert len(txn) == n + 1
                time.sleep(0.001)
                assert _scan_digest(txn) == h1
                assert _scan_digest(txn, reverse=True) == h1
            snaps += 1
        seen.append(snaps)

    _run_threads([writer] + [reader] * 4)
    assert len(seen) == 4 and min(seen) >= 1
    db.check()


def _scan_digest(txn, reverse=False):
    items = [(bytes(k), bytes(v)) for k, v in txn.iter(reverse=reverse)]
    if reverse:
        items.reverse()
    h = hashlib.sha256()
    for k, v in items:
        h.update(b"%d:%s=%d:%s;" % (len(k), k, len(v), v))
    return h.hexdigest()


def test_long_reader_while_writer_commits(db):
    with db.begin(write=True) as txn:
        for i in range(2000):
            txn.put(b"%06d" % i, b"orig%d" % i)
    snap_txid = db.stat()["txid"]
    snap_digest = digest(db)
    reader = db.begin()
    it = reader.iter()
    first = [bytes(next(it)[0]) for _ in range(10)]
    size0 = db.stat()["page_count"]

    def writer():
        rnd = random.Random(2)
        for c in range(1000):
            with db.begin(write=True) as txn:
                for _ in range(3):
                    txn.put(b"%06d" % rnd.randint(0, 1999), b"new%d" % c)

    _run_threads([writer])
    st = db.stat()
    assert st["oldest_reader"] == snap_txid
    assert st["readers"] >= 1
    assert st["pinned_pages"] > 0
    assert st["page_count"] > size0  # the file grows while the reader pins old pages
    db.check()
    # the reader still sees its whole snapshot
    rest = [(bytes(k), bytes(v)) for k, v in it]
    assert first + [k for k, _ in rest] == [b"%06d" % i for i in range(2000)]
    assert all(v.startswith(b"orig") for _, v in rest)
    h = hashlib.sha256()
    for k, v in reader.iter():
        h.update(len(k).to_bytes(4, "little") + bytes(k) + len(v).to_bytes(4, "little") + bytes(v))
    assert h.hexdigest() == snap_digest
    reader.abort()
    # once the reader is gone, pages are reused again: no more growth
    with db.begin(write=True) as txn:
        txn.put(b"x", b"y")
    st2 = db.stat()
    assert st2["oldest_reader"] in (0, None) or st2["oldest_reader"] > snap_txid
    assert st2["pinned_pages"] == 0
    grown = st2["page_count"]
    for c in range(200):
        with db.begin(write=True) as txn:
            txn.put(b"%06d" % (c % 2000), b"again%d" % c)
    assert db.stat()["page_count"] <= grown + 8
    db.check()


def test_interleaved_writers_exact_sum(db):
    threads, per = 4, (100 if LONG else 40)

    def worker(tid):
        def run():
            for i in range(per):
                with db.begin(write=True) as txn:
                    v = int(txn.get(b"ctr") or b"0")
                    txn.put(b"ctr", b"%d" % (v + 1))
                    mine = int(txn.get(b"t%d" % tid) or b"0")
                    txn.put(b"t%d" % tid, b"%d" % (mine + 1))
        return run

    _run_threads([worker(t) for t in range(threads)])
    with db.begin() as txn:
        assert int(txn.get(b"ctr")) == threads * per
        for t in range(threads):
            assert int(txn.get(b"t%d" % t)) == per


def test_writer_timeout_raises_locked(db):
    holding = threading.Event()
    release = threading.Event()

    def holder():
        with db.begin(write=True) as txn:
            txn.put(b"held", b"1")
            holding.set()
            release.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert holding.wait(30)
        t0 = time.monotonic()
        with pytest.raises(LockedError):
            db.begin(write=True, timeout=0.1)
        el = time.monotonic() - t0
        assert 0.05 <= el < 5, el
        t0 = time.monotonic()
        with pytest.raises(LockedError):
            db.begin(write=True, timeout=0)
        assert time.monotonic() - t0 < 1
        # readers are not blocked by the writer
        with db.begin() as r:
            assert r.get(b"held") is None
    finally:
        release.set()
        t.join(30)
    # after the holder committed, a waiting writer gets in
    with db.begin(write=True, timeout=5) as txn:
        assert txn.get(b"held") == b"1"


def test_waiting_writer_proceeds_when_lock_released(db):
    got = []
    holding = threading.Event()

    def holder():
        with db.begin(write=True) as txn:
            txn.put(b"a", b"1")
            holding.set()
            time.sleep(0.3)

    def waiter():
        assert holding.wait(30)
        t0 = time.monotonic()
        with db.begin(write=True) as txn:  # no timeout: waits
            got.append((time.monotonic() - t0, txn.get(b"a")))

    _run_threads([holder, waiter])
    waited, seen = got[0]
    assert seen == b"1"
    assert waited >= 0.1


def test_second_write_txn_same_thread_fails_at_once(db):
    txn = db.begin(write=True)
    txn.put(b"a", b"1")
    for kw in ({}, {"timeout": 10}, {"timeout": None}):
        t0 = time.monotonic()
        with pytest.raises(Error):
            db.begin(write=True, **kw)
        assert time.monotonic() - t0 < 1.0
    with pytest.raises(Error):
        db.exec("b", lambda t: None)
    # the first one is unharmed
    txn.put(b"b", b"2")
    txn.commit()
    with db.begin() as r:
        assert r.get(b"a") == b"1" and r.get(b"b") == b"2"


def test_dropped_write_txn_releases_lock(db):
    txn = db.begin(write=True)
    txn.put(b"lost", b"1")
    del txn
    gc.collect()
    result = []

    def other():
        with db.begin(write=True, timeout=5) as t:
            t.put(b"other", b"1")
        result.append(True)

    _run_threads([other])
    assert result == [True]
    with db.begin() as r:
        assert r.get(b"lost") is None
        assert r.get(b"other") == b"1"


def test_generator_exception_aborts_write_txn(db):
    def gen():
        with db.begin(write=True) as txn:
            txn.put(b"gen", b"1")
            yield 1
            yield 2

    g = gen()
    next(g)
    del g  # GeneratorExit inside the with block: abort
    gc.collect()
    with db.begin(write=True, timeout=5) as txn:
        assert txn.get(b"gen") is None


def test_write_txn_abandoned_by_dead_thread(db):
    box = []

    def leaker():
        t = db.begin(write=True)
        t.put(b"x", b"1")
        box.append(t)

    th = threading.Thread(target=leaker)
    th.start()
    th.join()
    box.clear()
    gc.collect()
    with db.begin(write=True, timeout=5) as txn:
        assert txn.get(b"x") is None


@pytest.mark.parametrize("write", [False, True])
def test_txn_shared_between_threads(db, write):
    """A Txn used from two threads at once either works or raises Error, never corrupts."""
    with db.begin(write=True) as txn:
        for i in range(500):
            txn.put(b"%04d" % i, b"v%d" % i)
    shared = db.begin(write=write)
    stop = time.monotonic() + 1.0
    counts = []

    def user(seed):
        def run():
            rnd = random.Random(seed)
            ok = err = 0
            while time.monotonic() < stop:
                try:
                    k = b"%04d" % rnd.randint(0, 499)
                    r = rnd.random()
                    if r < 0.4:
                        v = shared.get(k)
                        assert v is None or v.startswith(b"v")
                    elif r < 0.6:
                        n = 0
                        for kk, vv in shared.iter(k):
                            bytes(kk), bytes(vv)
                            n += 1
                            if n > 50:
                                break
                    elif write and r < 0.9:
                        shared.put(k, b"v-new")
                    elif write:
                        shared.delete(k)
                    ok += 1
                except Error:
                    err += 1
            counts.append((ok, err))
        return run

    _run_threads([user(s) for s in range(3)])
    assert sum(ok for ok, _ in counts) > 0
    if write:
        shared.commit()
    else:
        shared.abort()
    db.check()


@pytest.mark.parametrize("round_", range(6))
def test_close_during_use(db_path, round_):
    db = btree_store.DB(db_path)
    with db.begin(write=True) as txn:
        for i in range(3000):
            txn.put(b"%05d" % i, b"v" * 50)
        txn.put(b"n", b"3000")
    started = threading.Barrier(5)
    ended = []

    def reader():
        started.wait()
        try:
            while True:
                with db.begin() as txn:
                    n = int(txn.get(b"n"))
                    cnt = sum(1 for _ in txn.iter(values=False))
                    assert cnt == n + 1
        except ClosedError:
            ended.append("closed")

    def writer():
        started.wait()
        rnd = random.Random(round_)
        try:
            while True:
                with db.begin(write=True) as txn:
                    n = int(txn.get(b"n"))
                    for _ in range(20):
                        k = b"%05d" % rnd.randint(0, 5000)
                        if txn.get(k) is None:
                            n += 1
                        txn.put(k, b"w" * rnd.choice([5, 500, 5000]))
                    txn.put(b"n", b"%d" % n)
        except ClosedError:
            ended.append("closed")

    def closer():
        started.wait()
        time.sleep(random.Random(round_).uniform(0.01, 0.3))
        db.close()
        ended.append("closer")

    _run_threads([reader, reader, writer, writer, closer])
    assert sorted(ended) == ["closed"] * 4 + ["closer"]
    with btree_store.DB(db_path) as db2:
        db2.check()
        with db2.begin() as txn:
            assert sum(1 for _ in txn.iter(values=False)) == int(txn.get(b"n")) + 1


def test_iterator_shared_between_threads(db):
    with db.begin(write=True) as txn:
        for i in range(3000):
            txn.put(b"%05d" % i, b"v%d" % i)
    txn = db.begin()
    it = txn.iter()
    got = []

    def consume():
        while True:
            try:
                k, v = next(it)
                got.append(bytes(k))
            except StopIteration:
                return
            except Error:
                continue

    _run_threads([consume, consume])
    # each step either worked (and advanced once) or raised Error (and did not advance)
    assert sorted(got) == [b"%05d" % i for i in range(3000)]
    txn.abort()


def test_dump_consistent_under_writer(db):
    # a snapshot taken by dump() while another thread writes is one commit, never a mix
    with db.begin(write=True) as txn:
        txn.create_bucket("a")
        txn.create_bucket("b")
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            with db.begin(write=True) as txn:
                txn.put(b"x", b"%d" % i, bucket="a")
                txn.put(b"x", b"%d" % i, bucket="b")
            i += 1

    def checker():
        try:
            for _ in range(200):
                d = dump(db)
                assert d["a"] == d["b"]
        finally:
            stop.set()

    _run_threads([writer, checker])
