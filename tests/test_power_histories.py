"""test_power_histories.py - power loss at every point of a history of several sessions on one
simulated machine (btree_store.testing.FaultyMachine, csrc/io_fault.c).

A history: session 1 creates the file and makes durable commits (two buckets, overflow
values); session 2 reopens with sync=False, commits and "crashes" without closing (its
writes stay in the machine's OS cache, unsynced); session 3 reopens and mixes durable and
sync=False commits, overflow values, a big transaction that spills pages to the file before
commit, deletes (so freed pages are reused), a dropped and a re-created bucket, and
db.sync(). The power is cut before the k-th write-or-sync call of session 3 (that call and
every later one fail as on a dead machine), for every k, then power_loss drops, tears or
reorders the unsynced writes. After each: reopen, check() is clean, and the state equals
exactly one acknowledged commit at or after the last acknowledged durable one (a durable
commit, db.sync(), or a successful writable open, which makes what it finds durable), or
the commit that was in flight.

Default: two histories (the file created with sync=True, and with sync=False), every k, the three modes spread over k (each k runs one mode, and
every tenth k all three). BTREE_STORE_LONG=1: six histories, every k x every mode x two
seeds.

Layer: tests only; public API of btree_store and btree_store.testing (plus the private
FaultIO of the machine for the call-counting fault).
"""
import random

import btree_store
from btree_store.testing import FaultyMachine

from _util import LONG

MODES = ("drop", "tear", "reorder")
BUCKETS = (None, "a", "b")


def snapshot(db):
    out = {}
    with db.begin() as txn:
        names = set(txn.buckets())
        for b in BUCKETS:
            if b is None or b in names:
                out[b] = {bytes(k): bytes(v) for k, v in txn.items(bucket=b)}
    return out


def frozen(st):
    return tuple(sorted((b if b is not None else "", tuple(sorted(d.items())))
                        for b, d in st.items()))


class Model:
    """The acknowledged commits, in order, and the newest durable one."""

    def __init__(self):
        self.states = [{None: {}}]
        self.durable = 0  # index into states
        self.inflight = None

    def current(self):
        return {b: dict(d) for b, d in self.states[-1].items()}

    def acked(self, st, durable):
        self.states.append(st)
        self.inflight = None
        if durable:
            self.durable = len(self.states) - 1

    def all_durable(self):
        self.durable = len(self.states) - 1

    def allowed(self):
        ok = [frozen(s) for s in self.states[self.durable:]]
        if self.inflight is not None:
            ok.append(frozen(self.inflight))
        return ok


class Session:
    """An open DB and its default sync mode."""

    def __init__(self, m, model, sync):
        self.db = m.reopen(sync=sync, cache_size=1 << 16)
        self.sync = sync
        self.model = model
        model.all_durable()  # a writable open makes what it finds durable

    def commit(self, ops, sync=None):
        """Run ops (a list of (op, bucket, key, value)) in one write transaction."""
        model = self.model
        st = model.current()
        txn = self.db.begin(write=True, sync=sync)
        try:
            for op, b, k, v in ops:
                if op == "put":
                    txn.put(k, v, bucket=b)
                    st[b][k] = v
                elif op == "del":
                    txn.delete(k, bucket=b)
                    st[b].pop(k, None)
                elif op == "create":
                    txn.create_bucket(b)
                    st.setdefault(b, {})
                elif op == "drop":
                    txn.drop_bucket(b)
                    st.pop(b, None)
        except BaseException:
            try:
                txn.abort()
            except btree_store.Error:
                pass
            raise
        model.inflight = st  # the commit may reach the disk from here on
        txn.commit()
        model.acked(st, self.sync if sync is None else sync)


def value(rnd, big=False):
    n = rnd.choice([5000, 9000, 20000]) if big else rnd.choice([1, 8, 40, 200, 900])
    return bytes([rnd.randrange(256)]) * n


def random_ops(rnd, st, n, big_every=0):
    ops = []
    live = [b for b in BUCKETS if b in st]
    for i in range(n):
        b = rnd.choice(live)
        keys = sorted(st.get(b, {}))
        if keys and rnd.random() < 0.3:
            ops.append(("del", b, rnd.choice(keys), None))
        else:
            big = bool(big_every) and i % big_every == 0
            ops.append(("put", b, b"k%04d" % rnd.randrange(600), value(rnd, big)))
    return ops


def sessions_1_2(m, model, rnd, create_sync):
    # session 1: creates the file (create_sync=False: its directory entry is not durable
    # until the engine syncs the directory before the first durable commit), two buckets,
    # overflow values, durable commits
    s = Session(m, model, create_sync)
    s.commit([("create", "a", None, None), ("create", "b", None, None)])
    for _ in range(3):
        s.commit(random_ops(rnd, model.current(), 30, big_every=10), sync=True)
    s.db.close()
    # session 2: sync=False commits, then the process dies without closing
    # (small values only: a commit with an overflow value or too many pages to list is
    # made durable by the engine, and these must stay in the OS cache)
    s = Session(m, model, False)
    for _ in range(3):
        s.commit(random_ops(rnd, model.current(), 25))
    m.crash()


def session_3(m, model, rnd):
    """The session the power cut hits. Returns normally only if no call failed."""
    s = Session(m, model, rnd.random() < 0.5)
    s.commit(random_ops(rnd, model.current(), 20), sync=False)
    s.commit(random_ops(rnd, model.current(), 10, big_every=4), sync=True)
    # a big transaction: spills dirty pages to the file before its commit (cache 64 KiB)
    s.commit([("put", "a", b"s%05d" % i, value(rnd)) for i in range(700)], sync=False)
    # delete most of it: its pages are freed, and the next commits reuse them
    st = model.current()
    s.commit([("del", "a", k, None) for k in sorted(st["a"]) if k[:1] == b"s"][:600],
             sync=False)
    s.commit(random_ops(rnd, model.current(), 30, big_every=6), sync=False)
    s.db.sync()
    model.all_durable()
    s.commit([("drop", "b", None, None)], sync=False)
    s.commit([("create", "b", None, None)] + random_ops(rnd, model.current(), 20), sync=True)
    s.commit(random_ops(rnd, model.current(), 40, big_every=8), sync=False)
    s.commit(random_ops(rnd, model.current(), 15), sync=False)
    s.db.close()


def run_history(tmp_path, hseed, k, mode, seed):
    """k = 0: no fault (count the calls); else power cut before call k of session 3."""
    path = tmp_path / ("h%d_%d_%s_%d.bs" % (hseed, k, mode, seed))
    rnd = random.Random(hseed)
    model = Model()
    with FaultyMachine(path) as m:
        fio = m._fio
        sessions_1_2(m, model, rnd, create_sync=hseed % 2 == 0)
        before = fio.count("write|sync")
        if k:
            fio.fail_nth("write|sync", k, sticky=True)
        try:
            session_3(m, model, rnd)
            completed = True
        except btree_store.Error:
            completed = False
        calls = fio.count("write|sync") - before
        m.power_loss(mode, seed=seed)
        m.heal()
        db = m.reopen(cache_size=1 << 16)
        db.check()
        got = frozen(snapshot(db))
        allowed = model.allowed()
        assert got in allowed, (
            "history %d, power cut before call %d of session 3, %s seed %d: the state is not "
            "an acknowledged commit at or after the last durable one (%d allowed)"
            % (hseed, k, mode, seed, len(allowed)))
        # the file is still writable
        with db.begin(write=True) as txn:
            txn.put(b"after", b"power loss")
        db.check()
    path.unlink()
    return calls, completed, allowed.index(got)


def test_power_loss_at_every_point(tmp_path):
    histories = range(6) if LONG else range(2)
    total = 0
    for hseed in histories:
        ncalls, completed, _ = run_history(tmp_path, hseed, 0, "drop", 0)
        assert completed and ncalls > 20
        outcomes = set()
        for k in range(1, ncalls + 2):  # ncalls + 1: the fault never fires
            if LONG:
                plan = [(mode, seed) for mode in MODES for seed in (k, k + 10**6)]
            elif k % 10 == 0:
                plan = [(mode, k) for mode in MODES]
            else:
                plan = [(MODES[k % 3], k)]
            for mode, seed in plan:
                _, completed, idx = run_history(tmp_path, hseed, k, mode, seed)
                assert completed == (k > ncalls)
                outcomes.add(idx)
                total += 1
        # the cuts landed at different places: several distinct surviving states
        assert len(outcomes) > 3
    assert total > 20
