"""test_testing_api.py - the public fault-simulation API, btree_store.testing.FaultyMachine:
every call, wrong arguments, calls after close, a full disk the app sees as OSError while the
DB stays consistent, a crash keeps unsynced commits, a power loss loses only the commits
after the last durable one, the directory of a file created with sync=False.

Layer: tests only; public Python API of btree_store and btree_store.testing.
"""
import errno
import os
import threading

import pytest

import btree_store
from btree_store.testing import FaultyMachine


def state(db):
    with db.begin() as txn:
        return {bytes(k): bytes(v) for k, v in txn.iter()}


def put(db, items, sync=None):
    with db.begin(write=True, sync=sync) as txn:
        for k, v in items.items():
            txn.put(k, v)


def test_exported_and_documented():
    import btree_store.testing as t
    assert t.__all__ == ["FaultyMachine"]
    for name in ("fail_after", "heal", "crash", "power_loss", "reopen", "close", "open"):
        assert name in t.__doc__ and getattr(FaultyMachine, name).__doc__


def test_open_commit_close_reopen(tmp_path):
    path = tmp_path / "a.bs"
    with FaultyMachine(path) as m:
        assert m.path == str(path) and not m.closed and "a.bs" in repr(m)
        db = m.open()
        put(db, {b"a": b"1"})
        assert m.unsynced() == 0  # a durable commit on a file created with sync=True
        db.close()
        db = m.reopen(readonly=True)
        assert state(db) == {b"a": b"1"}
    assert m.closed and db.closed and "closed" in repr(m)
    with btree_store.DB(str(path)) as db:  # a normal file afterwards
        assert state(db) == {b"a": b"1"}


def test_crash_keeps_unsynced_commits(tmp_path):
    with FaultyMachine(tmp_path / "c.bs") as m:
        db = m.open()
        put(db, {b"a": b"durable"})
        put(db, {b"c": b"x" * 20000}, sync=False)  # an overflow value
        put(db, {b"b": b"unsynced"}, sync=False)
        assert m.unsynced() > 0
        txn = db.begin()
        wtxn = db.begin(write=True)
        m.crash()
        # a dead handle says why it is closed (not just "database is closed")
        for call in (db.begin, db.stat, lambda: txn.get(b"a"), lambda: wtxn.put(b"x", b"y"),
                     wtxn.commit):
            with pytest.raises(btree_store.ClosedError, match="FaultyMachine crashed"):
                call()
        db = m.reopen()
        assert state(db) == {b"a": b"durable", b"b": b"unsynced", b"c": b"x" * 20000}
        db.check()


def test_crash_while_another_thread_commits(tmp_path):
    with FaultyMachine(tmp_path / "t.bs") as m:
        db = m.open(sync=False)
        acked = []
        started = threading.Event()
        errors = []

        def writer():
            i = 0
            try:
                while True:
                    put(db, {b"k%05d" % i: b"v" * (i % 50)})
                    acked.append(i)
                    if i == 20:
                        started.set()
                    i += 1
            except btree_store.Error as e:
                errors.append(e)
            finally:
                started.set()

        t = threading.Thread(target=writer)
        t.start()
        assert started.wait(120)
        m.crash()
        t.join(120)
        assert not t.is_alive() and errors
        db = m.reopen()
        db.check()
        got = state(db)
        n = len(acked)
        # everything acknowledged survives a process crash; at most the commit in flight more
        assert got in ({b"k%05d" % i: b"v" * (i % 50) for i in range(n)},
                       {b"k%05d" % i: b"v" * (i % 50) for i in range(n + 1)})


@pytest.mark.parametrize("mode", ["drop", "tear", "reorder"])
def test_power_loss_loses_only_commits_after_the_last_durable_one(tmp_path, mode):
    outcomes = set()
    for seed in range(12):
        path = tmp_path / ("p%d.bs" % seed)
        with FaultyMachine(path) as m:
            db = m.open()
            states = [{}]
            for i in range(3):
                put(db, {b"d%d" % i: b"v" * 3000})
                states.append(state(db))
            durable = len(states) - 1
            for i in range(4):
                put(db, {b"u%d" % i: b"w" * (i * 100 + 1), b"d0": b"%d" % i}, sync=False)
                states.append(state(db))
            m.power_loss(mode, seed=seed)
            assert m.last_seed == seed
            db = m.reopen()
            db.check()
            got = state(db)
            assert got in states[durable:], (mode, seed)
            outcomes.add(states.index(got))
    if mode == "drop":
        assert outcomes == {durable}  # every unsynced write was lost
    else:
        assert min(outcomes) >= durable


def test_reopen_makes_the_crashed_commits_durable(tmp_path):
    with FaultyMachine(tmp_path / "r.bs") as m:
        db = m.open(sync=False)
        put(db, {b"a": b"1"}, sync=True)
        put(db, {b"b": b"2"})
        m.crash()
        db = m.reopen()  # opening establishes the durability horizon (one fsync)
        m.power_loss("drop")
        assert isinstance(m.last_seed, int)
        db = m.reopen()
        assert state(db) == {b"a": b"1", b"b": b"2"}


def test_file_created_with_sync_false_vanishes_until_synced(tmp_path):
    path = tmp_path / "n.bs"
    with FaultyMachine(path) as m:
        db = m.open(sync=False)
        put(db, {b"a": b"1"})
        m.power_loss("drop")
        assert not path.exists()  # its directory entry was never made durable
    for how in ("db.sync", "commit"):
        path = tmp_path / ("n_%s.bs" % how)
        with FaultyMachine(path) as m:
            db = m.open(sync=False)
            put(db, {b"a": b"1"})
            if how == "db.sync":
                db.sync()
            else:
                put(db, {b"b": b"2"}, sync=True)
            assert m.unsynced() == 0  # the engine synced the directory too
            m.power_loss("tear", seed=3)
            db = m.reopen()
            assert state(db)[b"a"] == b"1"
            db.check()


def test_reopened_file_of_a_crashed_creation_gets_its_directory_synced(tmp_path):
    path = tmp_path / "d.bs"
    with FaultyMachine(path) as m:
        db = m.open(sync=False)
        put(db, {b"a": b"1"})
        m.crash()
        db = m.reopen()  # sync=True: the first durable commit syncs the directory
        put(db, {b"b": b"2"})
        m.power_loss("reorder", seed=1)
        db = m.reopen()
        assert state(db) == {b"a": b"1", b"b": b"2"}


def test_reopen_alone_makes_a_crashed_creation_durable(tmp_path):
    """Opening calls what it found durable (stat()['durable_txid']): the directory entry of a
    file a crashed process created with sync=False must then be durable too."""
    path = tmp_path / "o.bs"
    with FaultyMachine(path) as m:
        db = m.open(sync=False)
        put(db, {b"a": b"1"})
        m.crash()
        db = m.reopen()
        st = db.stat()
        assert st["durable_txid"] == st["txid"]
        m.power_loss("drop")
        assert path.exists()
        db = m.reopen()
        assert state(db) == {b"a": b"1"}
        db.check()


def test_full_disk(tmp_path):
    """The app sees DiskFullError (an OSError with errno ENOSPC); nothing acknowledged is lost,
    the DB stays consistent and usable once space is back."""
    seen_full = 0
    for n in range(0, 40, 3):
        with FaultyMachine(tmp_path / ("f%d.bs" % n)) as m:
            db = m.open(cache_size=1 << 16)
            model = {}
            put(db, {b"base": b"b"})
            model[b"base"] = b"b"
            m.fail_after(n, kind="write", error="ENOSPC")
            full = None
            for i in range(30):
                items = {b"k%03d_%d" % (i, j): b"x" * (j * 700) for j in range(8)}
                try:
                    put(db, items)
                except OSError as e:
                    full = e
                    break
                model.update(items)
            if full is None:
                continue
            seen_full += 1
            assert isinstance(full, btree_store.DiskFullError)
            assert isinstance(full, btree_store.Error) and full.errno == errno.ENOSPC
            assert state(db) == model  # the failed commit changed nothing
            m.heal()
            db.check()
            put(db, {b"after": b"heal"})
            model[b"after"] = b"heal"
            db = m.reopen()
            assert state(db) == model
            db.check()
    assert seen_full >= 5


def test_fail_after_sync_and_read(tmp_path):
    with FaultyMachine(tmp_path / "s.bs") as m:
        db = m.open()
        put(db, {b"a": b"1"})
        m.fail_after(0, kind="sync", error="EIO")
        with pytest.raises(btree_store.Error) as ei:
            put(db, {b"b": b"2"})
        assert isinstance(ei.value, OSError) and ei.value.errno == errno.EIO
        m.heal()
        db = m.reopen()
        assert state(db) in ({b"a": b"1"}, {b"a": b"1", b"b": b"2"})
        db.check()
        put(db, {b"k%04d" % i: b"v" * 200 for i in range(3000)})
        db = m.reopen(cache_size=1 << 16)
        m.fail_after(2, kind="read", error="EIO")
        with pytest.raises(btree_store.Error) as ei:
            state(db)
        assert isinstance(ei.value, OSError) and ei.value.errno == errno.EIO
        m.heal()
        assert len(state(db)) == 3000 + 1 + (b"b" in state(db))
        db.check()


def test_several_dbs_on_one_machine(tmp_path):
    path = tmp_path / "m.bs"
    with FaultyMachine(path) as m:
        db = m.open()
        put(db, {b"a": b"1"})
        db.close()
        r1, r2 = m.open(readonly=True), m.open(readonly=True)
        assert state(r1) == state(r2) == {b"a": b"1"}
        m.crash()
        for r in (r1, r2):
            with pytest.raises(btree_store.Error):
                r.begin()
        db = m.reopen()
        assert state(db) == {b"a": b"1"}


def test_wrong_arguments(tmp_path):
    with pytest.raises(TypeError):
        FaultyMachine(123)
    with pytest.raises(TypeError):
        FaultyMachine()
    for bad in (":memory:", ""):
        with pytest.raises(ValueError):
            FaultyMachine(bad)
    with FaultyMachine(str(tmp_path / "w.bs")) as m:
        for args, kw, exc in [
            ((-1,), {}, ValueError), (("3",), {}, TypeError), ((True,), {}, TypeError),
            ((1.5,), {}, TypeError), ((1,), {"kind": "bogus"}, ValueError),
            ((1,), {"kind": "truncate"}, ValueError), ((1,), {"kind": 1}, TypeError),
            ((1,), {"error": "EPERM"}, ValueError), ((1,), {"error": errno.EIO}, TypeError),
            ((1,), {"bogus": 1}, TypeError), ((), {}, TypeError),
        ]:
            with pytest.raises(exc):
                m.fail_after(*args, **kw)
        for kw, exc in [({"mode": "lose"}, ValueError), ({"mode": None}, TypeError),
                        ({"seed": "a"}, TypeError), ({"seed": -1}, ValueError),
                        ({"seed": 2**64}, ValueError), ({"seed": 1.0}, TypeError)]:
            with pytest.raises(exc):
                m.power_loss(**kw)
        with pytest.raises(TypeError):
            m.open(_io=None)
        with pytest.raises(TypeError):
            m.open(bogus=1)
        with pytest.raises(TypeError):
            m.reopen(cache_size="big")
        # the machine still works after all that
        db = m.open()
        put(db, {b"a": b"1"})
        assert state(m.reopen()) == {b"a": b"1"}


def test_calls_after_close(tmp_path):
    m = FaultyMachine(tmp_path / "x.bs")
    db = m.open()
    m.close()
    m.close()  # twice is fine
    assert db.closed
    for call in (m.open, m.reopen, m.heal, m.crash, m.power_loss, m.unsynced,
                 lambda: m.fail_after(1), m.__enter__):
        with pytest.raises(ValueError, match="closed"):
            call()
    assert os.path.exists(tmp_path / "x.bs")
