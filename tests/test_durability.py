"""test_durability.py - the durability horizon: sync=False commits never risk the commits
before them, db.sync() and begin(sync=...) make commits durable, and after a simulated power
loss the state is a commit at or after the last durable one, with check() clean.

Power loss is simulated by btree_store._testing.FaultIO: from powerloss(seed) on it remembers
writes that were not synced, and power_loss(mode, seed) tears or reorders them (io_fault.c).
"""
import random

import pytest

import btree_store
from btree_store import _testing

from _util import LONG

TRIALS = 400 if LONG else 60


def _state(db):
    with db.begin() as txn:
        return {bytes(k): bytes(v) for k, v in txn.iter()}


def _history_trial(tmp_path, seed):
    """Durable commits, then sync=False commits (some made durable by db.sync() or
    begin(sync=True)), then a power cut at a random point. Returns the surviving state's
    index in the list of committed states."""
    rnd = random.Random(seed)
    path = str(tmp_path / ("h%d.bs" % seed))
    states = [{}]
    with btree_store.DB(path) as db:  # a durable starting point
        with db.begin(write=True) as txn:
            for i in range(rnd.randint(1, 300)):
                txn.put(b"k%05d" % i, b"v0")
                states[-1][b"k%05d" % i] = b"v0"
    fio = _testing.FaultIO()
    fio.powerloss(seed)
    db = btree_store.DB(path, sync=False, _io=fio, cache_size=1 << 16)
    durable = 0  # index of the newest state known durable
    ncommits = rnd.randint(1, 12)
    stop = rnd.randint(1, ncommits)
    for c in range(1, ncommits + 1):
        if c == stop:
            fio.fail_nth("write|sync", rnd.randint(1, 8))
        st = dict(states[-1])
        make_durable = rnd.random() < 0.2
        try:
            with db.begin(write=True, sync=True if make_durable else None) as txn:
                for _ in range(rnd.randint(1, 40)):
                    k = b"k%05d" % rnd.randrange(400)
                    if rnd.random() < 0.3:
                        txn.delete(k)
                        st.pop(k, None)
                    else:
                        v = b"v%d" % c * rnd.choice([1, 10, 300])
                        txn.put(k, v)
                        st[k] = v
            states.append(st)
            if make_durable:
                durable = len(states) - 1
            if rnd.random() < 0.15:
                db.sync()
                durable = len(states) - 1
        except btree_store.Error:
            break
    fio.power_loss(("tear", "reorder")[seed % 2], seed)
    try:
        db.close()
    except btree_store.Error:
        pass
    with btree_store.DB(path) as db2:
        db2.check()
        got = _state(db2)
    matches = [i for i, s in enumerate(states) if s == got]
    assert matches, "seed %d: the state after the power cut is no committed state" % seed
    assert max(matches) >= durable, (
        "seed %d: lost a durable commit (state %d survived, %d was durable)"
        % (seed, max(matches), durable))
    return max(matches)


def test_power_loss_after_unsynced_commits_keeps_durable_ones(tmp_path):
    survived = [_history_trial(tmp_path, seed) for seed in range(TRIALS)]
    assert any(s > 0 for s in survived)  # the trials did reach states past the first


def test_sync_and_per_transaction_override(tmp_path):
    path = str(tmp_path / "s.bs")
    with btree_store.DB(path, sync=False) as db:
        with db.begin(write=True) as txn:
            txn.put(b"a", b"1")
        before = db.stat()["durable_txid"]
        assert db.stat()["txid"] > before or before == db.stat()["txid"]
        db.sync()
        assert db.stat()["durable_txid"] == db.stat()["txid"]
        with db.begin(write=True) as txn:
            txn.put(b"b", b"2")
        with db.begin(write=True, sync=True) as txn:
            txn.put(b"c", b"3")
        assert db.stat()["durable_txid"] == db.stat()["txid"]
        with pytest.raises(ValueError):
            db.begin(sync=True)
    with btree_store.DB(path, readonly=True) as db:
        assert db.stat()["durable_txid"] == db.stat()["txid"]


def test_unsynced_commit_is_not_durable_until_sync(btree_faulty_db):
    f = btree_faulty_db
    db = f.db
    with db.begin(write=True) as txn:
        txn.put(b"x", b"durable")
    d0 = db.stat()["durable_txid"]
    with db.begin(write=True, sync=False) as txn:
        txn.put(b"x", b"later")
    st = db.stat()
    assert st["txid"] == d0 + 1 and st["durable_txid"] == d0
    f.power_loss(mode="drop", seed=0)  # the unsynced commit is lost with the power
    db = f.reopen()
    assert db.stat()["txid"] == d0 and _state(db) == {b"x": b"durable"}
    with db.begin(write=True, sync=False) as txn:
        txn.put(b"x", b"later")
    f.crash()  # the process dies: the OS still holds the unsynced commit
    # reopening establishes the horizon (one fsync): the unsynced commit is now durable
    db = f.reopen()
    st = db.stat()
    assert st["durable_txid"] == st["txid"] == d0 + 1
    assert _state(db) == {b"x": b"later"}
    f.power_loss(mode="drop", seed=1)  # and a power loss now keeps it
    assert _state(f.reopen()) == {b"x": b"later"}


def test_pages_freed_by_unsynced_commits_wait(tmp_path):
    """sync=False commits do not reuse pages the durable commit references: the file grows
    instead, and the pages become reusable after db.sync()."""
    path = str(tmp_path / "g.bs")
    with btree_store.DB(path, sync=False) as db:
        with db.begin(write=True, sync=True) as txn:
            for i in range(2000):
                txn.put(b"%06d" % i, b"x" * 50)
        for r in range(5):
            with db.begin(write=True) as txn:
                for i in range(0, 2000, 50):
                    txn.put(b"%06d" % i, b"y%d" % r)
        grown = db.stat()["page_count"]
        db.sync()
        for r in range(5):
            with db.begin(write=True) as txn:
                for i in range(0, 2000, 50):
                    txn.put(b"%06d" % i, b"z%d" % r)
            db.sync()
        assert db.stat()["page_count"] <= grown + 60
        db.check()


def test_unsynced_commits_grow_the_file_only_so_far(tmp_path):
    """sync=False commits of a small tree (its whole unsynced set fits the commit list, so no
    commit needs to be durable to be valid) cannot reuse the pages they free before a commit
    is durable: past 4096 such pages a commit is made durable, so the file stops growing with
    every commit (250 commits rewriting ~48 pages each: ~12,000 pages without the bound)."""
    path = str(tmp_path / "u.bs")
    fio = _testing.FaultIO()
    rnd = random.Random(3)
    keys = [b"%016d" % i for i in range(2000)]
    with btree_store.DB(path, sync=False, _io=fio) as db:
        with db.begin(write=True) as txn:
            for k in keys:
                txn.put(k, rnd.randbytes(100))
        s0 = fio.count("sync")
        for _ in range(250):
            with db.begin(write=True) as txn:
                for k in rnd.sample(keys, 50):
                    txn.put(k, rnd.randbytes(100))
        syncs = fio.count("sync") - s0
        st = db.stat()
        assert st["page_count"] < 6000, st
        assert 1 <= syncs <= 10, syncs  # still mostly unsynced commits
        db.check()
    with btree_store.DB(path) as db:
        assert len(db.begin()) == 2000
        db.check()
