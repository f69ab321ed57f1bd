"""test_faults.py - crash safety proven by simulation with btree_store._testing.FaultIO.

- SQLite-style loops: for n = 1, 2, ...: run a fixed workload (first creation of the file,
  growth, overflow values, bucket creation and drop, a transaction freeing many pages) with the
  n-th I/O call of a kind failing; close; reopen with the real I/O; the checker passes and the
  content equals the last acknowledged commit (or the one in flight when the fault hit inside
  commit); stop when the workload completes without the fault firing.
- Torn writes at 512-byte boundaries, the same way.
- Power loss: fio.powerloss(seed), random commits, fio.power_loss("tear"|"reorder") between commits or in the
  middle of one (after a failed write or sync), reopen, compare with the model.
- Sticky failures (PanicError after a failed sync in commit), disk full (DiskFullError, the
  DB stays usable, nothing committed is lost; the disk that stays full until it is healed
  runs on the pytest plugin's btree_faulty_db).

Layer: tests only; public Python API of btree_store and btree_store._testing.
"""
import errno
import os
import random
import shutil

import pytest

import btree_store
from btree_store import DiskError, DiskFullError, PanicError, _testing

from _util import LONG, dump

PAGE = 4096


# ------------------------------------------------------------------------ the fixed workload
def fixed_commits():
    """Commits of the fixed workload: lists of ops ("put", bucket, k, v) / ("del", bucket, k) /
    ("create", name) / ("drop", name)."""
    rnd = random.Random(77)
    C = []
    # 1: a few small records in the default bucket and a new bucket
    c = [("create", "a")]
    c += [("put", None, b"s%03d" % i, b"small%d" % i) for i in range(30)]
    c += [("put", "a", b"a%03d" % i, b"A%d" % i) for i in range(10)]
    C.append(c)
    # 2: growth of the file (many new pages)
    C.append([("put", None, b"g%05d" % i, rnd.randbytes(120)) for i in range(500)])
    # 3: overflow values of several sizes
    C.append([("put", "a", b"ov1", rnd.randbytes(3 * PAGE)),
              ("put", "a", b"ov2", rnd.randbytes(40000)),
              ("put", None, b"ov3", rnd.randbytes(PAGE - 100))])
    # 4: a second bucket with data and an overflow value
    c = [("create", "b")]
    c += [("put", "b", b"b%04d" % i, rnd.randbytes(60)) for i in range(300)]
    c += [("put", "b", b"bov", rnd.randbytes(20000))]
    C.append(c)
    # close and open again: the next commits read their pages from the file (small cache)
    C.append("reopen")
    # 5: drop that bucket (frees all its pages, overflow included)
    C.append([("drop", "b"), ("put", "a", b"after-drop", b"1")])
    # 6: a transaction that frees many pages
    C.append([("del", None, b"g%05d" % i) for i in range(0, 500) if i % 10] +
             [("del", "a", b"ov2")])
    # 7: reuse of the freed pages, overwrite an overflow value
    C.append([("put", None, b"r%04d" % i, rnd.randbytes(200)) for i in range(150)] +
             [("put", "a", b"ov1", rnd.randbytes(5 * PAGE))])
    return C


def apply_ops(state, ops):
    s = {b: dict(m) for b, m in state.items()}
    if ops == "reopen":
        return s
    for op in ops:
        if op[0] == "put":
            s[op[1]][op[2]] = op[3]
        elif op[0] == "del":
            s[op[1]].pop(op[2], None)
        elif op[0] == "create":
            s.setdefault(op[1], {})
        elif op[0] == "drop":
            s.pop(op[1], None)
    return s


def run_ops(txn, ops):
    for op in ops:
        if op[0] == "put":
            txn.put(op[2], op[3], bucket=op[1])
        elif op[0] == "del":
            txn.delete(op[2], bucket=op[1])
        elif op[0] == "create":
            txn.create_bucket(op[1])
        elif op[0] == "drop":
            txn.drop_bucket(op[1])


FIXED = fixed_commits()
STATES = [{None: {}}]
for _ops in FIXED:
    STATES.append(apply_ops(STATES[-1], _ops))


class Outcome:
    def __init__(self):
        self.acked = -1          # index into the states of the last acknowledged commit
        self.inflight = None     # index of the commit whose commit() raised
        self.error = None        # first exception raised by the workload
        self.close_error = None
        self.final = None        # content read back through the faulty I/O at the end


def run_workload(path, fio, commits, first_state=0, final_read=True, **kw):
    """Open (creating) with fio and run the commits ("reopen": close and open again); then read
    everything back through fio. Stop at the first exception."""
    out = Outcome()
    db = None
    kw.setdefault("cache_size", 16 * PAGE)
    try:
        db = btree_store.DB(path, _io=fio, **kw)
        out.acked = first_state
        for i, ops in enumerate(commits, first_state + 1):
            if ops == "reopen":
                d, db = db, None
                d.close()
                db = btree_store.DB(path, _io=fio, **kw)
                out.acked = i
                continue
            txn = db.begin(write=True)
            try:
                run_ops(txn, ops)
            except BaseException:
                try:
                    txn.abort()
                except btree_store.Error:
                    pass
                raise
            out.inflight = i
            txn.commit()
            out.acked, out.inflight = i, None
        if final_read:
            out.final = dump(db)
            db.check()
    except btree_store.Error as e:
        out.error = e
    finally:
        if db is not None:
            try:
                db.close()
            except btree_store.Error as e:
                out.close_error = e
    return out


def verify_after(path, out, states, allow_unopenable=False, what=""):
    """Reopen with the real I/O; check; compare with the acknowledged (or in-flight) state."""
    if out.acked < 0 and not os.path.exists(path):
        return "no-file"
    try:
        db = btree_store.DB(path)
    except btree_store.LockedError:
        raise AssertionError("%s: the failed DB still holds the file lock after close()" % what)
    except btree_store.CorruptionError:
        if out.acked < 0 and allow_unopenable:
            return "unopenable-uncreated"
        raise
    try:
        db.check()
        got = dump(db)
    finally:
        db.close()
    ok = [out.acked] if out.acked >= 0 else [0]
    if out.inflight is not None:
        ok.append(out.inflight)
    for i in ok:
        if got == states[i]:
            return i
    raise AssertionError("%s: content matches none of the states %s (acked=%d inflight=%s); "
                         "got buckets %s" % (what, ok, out.acked, out.inflight,
                                             {b: len(m) for b, m in got.items()}))


def _fresh(path):
    if os.path.exists(path):
        os.unlink(path)


def fault_loop(tmp_path, setup, what, allow_unopenable=False, expect_errno=errno.EIO,
               max_n=5000):
    """Run the fixed workload with a fault at I/O call n for n = 1, 2, ... until it completes
    without the fault firing. Returns the number of iterations that fired."""
    path = str(tmp_path / "loop.bs")
    fired = 0
    for n in range(1, max_n):
        _fresh(path)
        fio = _testing.FaultIO()
        setup(fio, n)
        out = run_workload(path, fio, FIXED)
        label = "%s n=%d" % (what, n)
        if not fio.fired:
            assert out.error is None, "%s: error without an injected fault: %r" % (label, out.error)
            assert out.acked == len(FIXED)
            assert out.final == STATES[-1]
            verify_after(path, out, STATES, what=label)
            return fired
        fired += 1
        err = out.error or out.close_error
        assert err is not None, "%s: an injected fault fired but no call reported it" % label
        if out.error is not None:
            assert isinstance(out.error, DiskError), "%s: %r is not a DiskError" % (label, out.error)
            assert out.error.errno == expect_errno, (label, out.error, out.error.errno)
            if expect_errno == errno.ENOSPC:
                assert isinstance(out.error, DiskFullError), (label, out.error)
        verify_after(path, out, STATES, allow_unopenable=allow_unopenable, what=label)
    raise AssertionError("%s: workload never completed" % what)


@pytest.mark.parametrize("kind", ["read", "write", "sync", "truncate", "write|sync", "any"])
def test_fail_nth_loop(tmp_path, kind):
    n = fault_loop(tmp_path, lambda fio, n: fio.fail_nth(kind, n), "fail_nth(%s)" % kind)
    if kind in ("write", "sync", "any", "write|sync"):
        # the workload has 7 commits plus the creation: at least that many points were hit
        assert n >= 8, n
    if kind == "read":
        assert n >= 5, "the workload does not read enough pages from the file: %d" % n


def test_fail_nth_sticky_loop(tmp_path):
    fault_loop(tmp_path, lambda fio, n: fio.fail_nth("any", n, sticky=True),
               "fail_nth(any, sticky)")


def test_enospc_loop(tmp_path):
    fault_loop(tmp_path, lambda fio, n: fio.fail_nth("write", n, errno=errno.ENOSPC),
               "fail_nth(write, ENOSPC)", expect_errno=errno.ENOSPC)


@pytest.mark.parametrize("keep", [0, 512, 2048, 3584, PAGE + 512])
def test_torn_write_loop(tmp_path, keep):
    fault_loop(tmp_path, lambda fio, n: fio.tear_nth(n, keep), "tear_nth(keep=%d)" % keep,
               allow_unopenable=True)


# ------------------------------------------------------------------------ power loss
class RandomWorkload:
    """Random commits over the default bucket and two named buckets, with a model."""

    def __init__(self, rnd):
        self.rnd = rnd

    def commit_ops(self, state):
        rnd = self.rnd
        ops = []
        for name in ("x", "y"):
            if name not in state and rnd.random() < 0.5:
                ops.append(("create", name))
                state = apply_ops(state, ops[-1:])
        r = rnd.random()
        if r < 0.1 and len(state) > 1:
            name = rnd.choice([b for b in state if b is not None])
            ops.append(("drop", name))
            return ops
        buckets = list(state)
        if r < 0.25:  # free many pages
            b = rnd.choice(buckets)
            for k in list(state[b])[: max(1, len(state[b]) * 2 // 3)]:
                ops.append(("del", b, k))
            return ops
        for _ in range(rnd.choice([1, 5, 40, 200])):
            b = rnd.choice(buckets)
            k = b"%d" % rnd.randint(0, 400)
            if rnd.random() < 0.75:
                size = rnd.choice([0, 8, 100, 700, 3000, 12000])
                ops.append(("put", b, k, rnd.randbytes(size)))
            else:
                ops.append(("del", b, k))
        return ops


def _base_file(tmp_path_factory, name, ncommits, seed):
    d = tmp_path_factory.mktemp("base")
    path = str(d / name)
    rnd = random.Random(seed)
    wl = RandomWorkload(rnd)
    states = [{None: {}}]
    with btree_store.DB(path) as db:
        for _ in range(ncommits):
            ops = wl.commit_ops(states[-1])
            with db.begin(write=True) as txn:
                run_ops(txn, ops)
            states.append(apply_ops(states[-1], ops))
        assert dump(db) == states[-1]
    return path, states[-1]


@pytest.fixture(scope="module")
def base_db(tmp_path_factory):
    return _base_file(tmp_path_factory, "base.bs", 12, 5)


def powerloss_trial(tmp_path, trial_seed, base):
    rnd = random.Random(trial_seed)
    path = str(tmp_path / "pl.bs")
    _fresh(path)
    from_base = base is not None and rnd.random() < 0.85
    if from_base:
        shutil.copyfile(base[0], path)
        states = [base[1]]
    else:
        states = [{None: {}}]  # includes the first creation of the file
    wl = RandomWorkload(rnd)
    commits = []
    for _ in range(rnd.randint(1, 4)):
        ops = wl.commit_ops(states[-1])
        commits.append(ops)
        states.append(apply_ops(states[-1], ops))
    fio = _testing.FaultIO()
    fio.powerloss(trial_seed)
    # crash point: after k commits (between commits), or inside commit k+1 after its m-th
    # write/sync failed
    k = rnd.randint(0, len(commits))
    mid = k < len(commits) and rnd.random() < 0.6
    out = Outcome()
    db = None
    try:
        db = btree_store.DB(path, _io=fio)
        out.acked = 0
        for i, ops in enumerate(commits[:k + (1 if mid else 0)], 1):
            txn = db.begin(write=True)
            try:
                run_ops(txn, ops)
                if mid and i == k + 1:
                    fio.fail_nth("write|sync", rnd.randint(1, 12))
                out.inflight = i
                txn.commit()
            except BaseException:
                try:
                    txn.abort()
                except btree_store.Error:
                    pass
                raise
            out.acked, out.inflight = i, None
    except btree_store.Error as e:
        out.error = e
    if mid and out.error is None:
        out.inflight = None  # the fault was never reached: everything was acknowledged
    fio.power_loss(("tear", "reorder")[trial_seed % 2], trial_seed)
    if db is not None:
        try:
            db.close()
        except btree_store.Error:
            pass
    return verify_after(path, out, states, allow_unopenable=not from_base,
                        what="powerloss seed=%d k=%d mid=%s" % (trial_seed, k, mid))


POWERLOSS_TRIALS = 5000 if LONG else 800  # 4 blocks: 3,200 trials by default


@pytest.mark.parametrize("block", range(4))
def test_powerloss(tmp_path, base_db, block):
    results = {}
    for t in range(POWERLOSS_TRIALS):
        seed = 1_000_000 * (block + 1) + t
        r = powerloss_trial(tmp_path, seed, base_db)
        results[r] = results.get(r, 0) + 1
    assert sum(results.values()) == POWERLOSS_TRIALS


def test_powerloss_during_creation(tmp_path):
    outcomes = set()
    for seed in range(1000 if LONG else 100):
        path = str(tmp_path / ("c%d.bs" % seed))
        fio = _testing.FaultIO()
        fio.powerloss(seed)
        out = Outcome()
        rnd = random.Random(seed)
        stop_after = rnd.randint(0, 2)
        db = None
        try:
            if rnd.random() < 0.5:
                fio.fail_nth("write|sync", rnd.randint(1, 6))
            db = btree_store.DB(path, _io=fio)
            out.acked = 0
            for i in range(1, stop_after + 1):
                with db.begin(write=True) as txn:
                    out.inflight = i
                    txn.put(b"k", b"%d" % i)
                out.acked, out.inflight = i, None
        except btree_store.Error as e:
            out.error = e
        fio.power_loss(("tear", "reorder")[seed % 2], seed)
        if db is not None:
            try:
                db.close()
            except btree_store.Error:
                pass
        states = [{None: {}}] + [{None: {b"k": b"%d" % i}} for i in range(1, 3)]
        outcomes.add(verify_after(path, out, states, allow_unopenable=True,
                                  what="creation seed=%d" % seed))
    assert 0 in outcomes


# ------------------------------------------------------------------------ sticky / disk full
def _filled(path, fio, db=None):
    db = db or btree_store.DB(path, _io=fio)
    with db.begin(write=True) as txn:
        txn.create_bucket("b")
        for i in range(200):
            txn.put(b"%04d" % i, b"v%d" % i)
            txn.put(b"%04d" % i, b"b%d" % i, bucket="b")
    return db


def test_sync_failure_in_commit_is_sticky(db_path):
    fio = _testing.FaultIO()
    db = _filled(db_path, fio)
    acked = dump(db)
    fio.fail_nth("sync", 1)
    txn = db.begin(write=True)
    for i in range(200):
        txn.put(b"%04d" % i, b"new")
    inflight = {b: dict(m) for b, m in acked.items()}
    inflight[None].update({b"%04d" % i: b"new" for i in range(200)})
    with pytest.raises(DiskError) as ei:
        txn.commit()
    assert ei.value.errno == errno.EIO
    assert fio.fired
    with pytest.raises(btree_store.ClosedError):
        txn.get(b"0001")  # the failed transaction is dead
    for _ in range(2):
        with pytest.raises(PanicError):
            db.begin(write=True)
    with pytest.raises(PanicError):
        db.exec("b", lambda t: t.put(b"x", b"y"))
    # reads of the last good snapshot keep working (never the failed commit's data, which
    # was not made durable)
    with db.begin() as r:
        assert r.get(b"0001") == b"v1", "a reader sees the data of a commit whose sync failed"
    assert dump(db) == acked
    db.close()
    with btree_store.DB(db_path) as db2:  # after reopening all is good
        db2.check()
        # the pages reached the OS before the sync failed: either state may be on disk
        assert dump(db2) in (acked, inflight)
        with db2.begin(write=True) as txn:
            txn.put(b"after", b"reopen")
        db2.check()


def test_write_failure_in_commit(db_path):
    fio = _testing.FaultIO()
    db = _filled(db_path, fio)
    acked = dump(db)
    fio.fail_nth("write", 1)
    txn = db.begin(write=True)
    for i in range(300):
        txn.put(b"w%04d" % i, b"x" * 100)
    with pytest.raises(DiskError):
        txn.commit()
    # the transaction is dead; new write transactions are refused (PanicError) or, if the
    # engine proves the failed write touched nothing durable, work normally
    try:
        with db.begin(write=True) as t2:
            t2.put(b"later", b"1")
        acked = dump(db)
    except PanicError:
        pass
    assert dump(db) == acked
    db.close()
    with btree_store.DB(db_path) as db2:
        db2.check()
        assert dump(db2) == acked


def test_disk_full_then_usable(db_path):
    fio = _testing.FaultIO()
    db = _filled(db_path, fio)
    acked = dump(db)
    fio.fail_nth("write", 1, errno=errno.ENOSPC)
    with pytest.raises(DiskFullError) as ei:
        with db.begin(write=True) as txn:
            for i in range(2000):
                txn.put(b"big%05d" % i, b"x" * 300)
    assert ei.value.errno == errno.ENOSPC
    assert isinstance(ei.value, OSError)
    assert dump(db) == acked, "a failed commit changed the visible state"
    # space is available again: the DB is usable, nothing earlier lost
    with db.begin(write=True) as txn:
        txn.put(b"after", b"full")
        txn.put(b"0001", b"changed", bucket="b")
    db.check()
    expect = dump(db)
    assert expect[None][b"after"] == b"full"
    assert expect[None][b"0002"] == b"v2"
    db.close()
    with btree_store.DB(db_path) as db2:
        db2.check()
        assert dump(db2) == expect


def test_disk_full_sticky_then_recovers(btree_faulty_db):
    """On the pytest plugin's btree_faulty_db: the disk stays full (every write fails with
    ENOSPC) until it is healed; each commit fails and changes nothing, then the same handle
    works again, and the teardown reopens and checks the file."""
    f = btree_faulty_db
    db = _filled(f.path, None, db=f.db)
    acked = dump(db)
    f.fail_after(0, kind="write", error="ENOSPC")
    for attempt in range(3):
        with pytest.raises(DiskFullError):
            with db.begin(write=True) as txn:
                for i in range(500):
                    txn.put(b"f%d-%d" % (attempt, i), b"y" * 500)
    with db.begin() as r:
        assert r.get(b"0005") == b"v5"
    assert dump(db) == acked
    f.heal()
    with db.begin(write=True) as txn:  # room again: the same handle carries on
        txn.put(b"after", b"heal")
    db = f.reopen()
    acked[None][b"after"] = b"heal"
    assert dump(db) == acked


def test_read_error_is_disk_error_and_not_sticky(db_path):
    with btree_store.DB(db_path, cache_size=64 * 1024) as db:
        with db.begin(write=True) as txn:
            for i in range(3000):
                txn.put(b"%05d" % i, b"r" * 200)
    fio = _testing.FaultIO()
    db = btree_store.DB(db_path, _io=fio, cache_size=64 * 1024)
    try:
        fio.fail_nth("read", 3)
        with pytest.raises(DiskError):
            with db.begin() as txn:
                for k, v in txn.iter():
                    pass
        assert fio.fired
        with db.begin() as txn:  # the next read works: reads fail only while the disk does
            assert len(list(txn.iter())) == 3000
        with db.begin(write=True) as txn:
            txn.put(b"w", b"1")
        db.check()
    finally:
        db.close()


def test_fault_counters(db_path):
    fio = _testing.FaultIO()
    db = btree_store.DB(db_path, _io=fio)
    try:
        w0, s0 = fio.count("write"), fio.count("sync")
        with db.begin(write=True) as txn:
            txn.put(b"a", b"1")
        assert fio.count("write") > w0
        assert fio.count("sync") > s0  # sync=True: a commit syncs
        assert fio.count("any") >= fio.count("write") + fio.count("sync")
        assert not fio.fired
    finally:
        db.close()
    fio2 = _testing.FaultIO()
    db = btree_store.DB(db_path, _io=fio2, sync=False)
    try:
        s0 = fio2.count("sync")
        with db.begin(write=True) as txn:
            txn.put(b"b", b"1")
        assert fio2.count("sync") == s0  # sync=False: no fsync at commit
    finally:
        db.close()
