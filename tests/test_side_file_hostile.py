"""test_side_file_hostile.py - the side file PATH-lock deleted, replaced or damaged under live
handles, and transaction ids at the end of their range.

A handle that has the database open keeps using the side file it mapped. When that file is
unlinked (or another file is renamed over it) a new opener used to find no side file in use,
build a fresh one and believe itself alone: two writers at once, each on its own write lock,
and the commit of one silently overwritten by the other (an acknowledged durable commit
lost, check() clean). A new opener now refuses (LockedError naming the side file) while any
handle that joined another side file of the same database is open; once they are closed the
database opens as before.

A side file is input like any other: its txid_hw (the highest txid any writer committed)
damaged to 2^63 - 1 or more made the next commits take txids the format refuses, and the
reopen found no valid meta page: the whole database was lost. A meta page whose txid leaves
no room (a crafted file) did the same. A write transaction that would need such a txid is now
refused (CorruptionError naming the side file, or the meta) and the file stays as it was.

Layer: tests only; public Python API of btree_store (a child interpreter for the other
process).
"""
import os
import struct

import pytest

import btree_store
from btree_store import LockedError

from _util import run_child

CHILD = r'''
import sys, btree_store
try:
    db = btree_store.DB(sys.argv[1])
except btree_store.LockedError as e:
    print("locked:", e)
    sys.exit(0)
with db.begin(write=True, timeout=0) as txn:  # a second writer beside the parent's
    for i in range(300):
        txn.put(b"B%05d" % i, b"y" * 100)
db.close()
print("wrote")
'''


def _fill(db, tag, n=300):
    with db.begin(write=True) as txn:
        for i in range(n):
            txn.put(b"%s%05d" % (tag, i), b"x" * 100)


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_new_opener_refuses_while_handles_use_a_removed_side_file(tmp_path, how):
    path = str(tmp_path / "s.bs")
    lock = path + "-lock"
    a = btree_store.DB(path)
    try:
        _fill(a, b"k")
        if how == "deleted":
            os.unlink(lock)
        else:
            junk = str(tmp_path / "junk")
            with open(junk, "wb") as f:
                f.write(b"\0" * 16384)
            os.replace(junk, lock)
        # the live handle goes on writing: a write transaction is open while others try
        txn = a.begin(write=True)
        for i in range(300):
            txn.put(b"A%05d" % i, b"a" * 100)
        # another process: refused, not a second writer
        p = run_child(CHILD, path, check=True)
        assert p.stdout.startswith("locked:") and "-lock" in p.stdout, p.stdout
        # another handle in this process: refused too
        with pytest.raises(LockedError, match="-lock"):
            btree_store.DB(path)
        txn.commit()
        with a.begin() as r:
            assert sum(1 for k in r.keys() if k.startswith(b"A")) == 300
        a.check()
    finally:
        a.close()
    # alone now: a new side file, the acknowledged commit is there
    with btree_store.DB(path) as db:
        db.check()
        with db.begin() as r:
            keys = list(r.keys())
        assert sum(1 for k in keys if k.startswith(b"A")) == 300
        assert not any(k.startswith(b"B") for k in keys)
        p = run_child(CHILD, path, check=True)  # another process may join it now
        assert p.stdout.startswith("wrote"), p.stdout
        with db.begin() as r:
            assert sum(1 for k in r.keys() if k.startswith(b"B")) == 300


def test_two_openers_at_once_without_a_side_file_both_open(tmp_path):
    """No side file and several processes opening at the same moment: none is refused (the
    check looks only at handles that joined a side file, not at openers on their way)."""
    path = str(tmp_path / "race.bs")
    with btree_store.DB(path) as db:
        _fill(db, b"k", 10)
    code = r'''
import sys, btree_store
for i in range(200):
    with btree_store.DB(sys.argv[1]) as db:
        with db.begin() as txn:
            assert txn.get(b"k00001") is not None
print("ok")
'''
    import subprocess
    import sys
    from _util import child_env
    procs = [subprocess.Popen([sys.executable, "-c", code, path], env=child_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0 and out.strip() == "ok", err


TXID_HW = 88  # lockfile.h lf_header.txid_hw
LATEST_TXID = 40


@pytest.mark.parametrize("field,value", [(TXID_HW, 2**63 - 1), (TXID_HW, 2**64 - 1),
                                         (TXID_HW, 2**63 - 2), (LATEST_TXID, 2**64 - 1)])
def test_damaged_txid_in_the_side_file_never_makes_the_database_unopenable(tmp_path, field,
                                                                           value):
    path = str(tmp_path / "t.bs")
    db = btree_store.DB(path)
    try:
        _fill(db, b"k", 10)
        with open(path + "-lock", "r+b") as f:
            f.seek(field)
            f.write(struct.pack("<Q", value))
        with db.begin() as r:  # reads go on
            assert r.get(b"k00001") == b"x" * 100
        acked = 0
        for i in range(3):
            try:
                with db.begin(write=True) as txn:
                    txn.put(b"w%d" % i, b"v")
                acked += 1
            except btree_store.CorruptionError as e:
                assert "-lock" in str(e), e
    finally:
        db.close()
    with btree_store.DB(path) as db:  # the last handle removed the side file: rebuilt
        db.check()
        with db.begin() as r:
            assert r.get(b"k00001") == b"x" * 100
            assert [r.get(b"w%d" % i) for i in range(acked)] == [b"v"] * acked
        with db.begin(write=True) as txn:
            txn.put(b"after", b"1")


def test_meta_txid_at_the_end_of_the_range(tmp_path):
    """A (crafted) meta whose txid leaves one commit: that commit works, the next write
    transaction is refused, and both acknowledged states stay readable."""
    from _format import reseal_meta, u64, page_size_of
    path = str(tmp_path / "m.bs")
    with btree_store.DB(path) as db:
        _fill(db, b"k", 10)
    with open(path, "rb") as f:
        buf = bytearray(f.read())
    P = page_size_of(buf)
    slot = max((0, 1), key=lambda s: u64(buf, s * P + 16))
    struct.pack_into("<Q", buf, slot * P + 16, 2**63 - 3)  # the newest meta's txid
    reseal_meta(buf, slot, P)
    with open(path, "wb") as f:
        f.write(buf)
    with btree_store.DB(path) as db:
        with db.begin(write=True) as txn:  # txid 2^63 - 2: the last one the format holds
            txn.put(b"last", b"1")
        with pytest.raises(btree_store.CorruptionError, match="transaction id"):
            db.begin(write=True)
        with db.begin() as r:
            assert r.get(b"last") == b"1"
    with btree_store.DB(path) as db:
        db.check()
        with db.begin() as r:
            assert r.get(b"last") == b"1" and r.get(b"k00001") == b"x" * 100


def test_reopen_while_a_forked_child_keeps_the_inherited_handle(tmp_path):
    """A forked child that never closes the handle it inherited (it may not use it) must not
    keep the parent from closing and opening the database again: the parent's close gives
    the join lock up for the open file description it shares with the child."""
    import time
    from _util import fork_join, fork_start
    path = str(tmp_path / "f.bs")
    db = btree_store.DB(path)
    _fill(db, b"k", 10)

    def child():
        time.sleep(3)  # holds the inherited descriptors meanwhile
        return "done"

    pid, r = fork_start(child)
    try:
        db.close()  # the last handle: the side file goes
        with btree_store.DB(path) as d2:  # a new side file, the join lock free again
            with d2.begin(write=True) as txn:
                txn.put(b"again", b"1")
            d2.check()
    finally:
        status, out = fork_join(pid, r)
    assert status == 0 and out == "done", out


@pytest.mark.parametrize("mode", ["tear", "reorder"])
@pytest.mark.parametrize("lie", ["slot", "txid"])
def test_damaged_durability_horizon_in_the_side_file_survives_a_power_loss(tmp_path, mode,
                                                                           lie):
    """The side file's durability horizon damaged so that it cannot be true: the slot of the
    newest (unsynced) commit with an older txid, or a txid newer than any commit. The next
    sync=False commit used to write its meta over the slot of the real durable commit (and
    reuse pages not durably free), and a power loss left no valid meta page or a mix. The
    writer now takes such a horizon as unknown and syncs first. (A consistent lie, the
    newest commit named durable, cannot be told from a db.sync() of another process.)"""
    from btree_store.testing import FaultyMachine
    bad = []
    for seed in range(12):
        path = tmp_path / ("d%d.bs" % seed)
        with FaultyMachine(path) as m:
            db = m.open(sync=True, page_size=1024)
            states = []
            with db.begin(write=True) as txn:
                for i in range(300):
                    txn.put(b"k%04d" % i, b"D" * 50)
            with db.begin(write=True, sync=False) as txn:
                for i in range(0, 300, 2):
                    txn.delete(b"k%04d" % i)
            with db.begin() as r:
                states.append(dict(r.items()))
            with open(str(path) + "-lock", "r+b") as f:
                f.seek(LATEST_TXID)
                latest_txid, latest_slot = struct.unpack("<QQ", f.read(16))
                f.seek(56)  # durable_txid, durable_slot
                if lie == "slot":  # the unsynced commit's slot, an older txid
                    f.write(struct.pack("<QQ", latest_txid - 1, latest_slot))
                else:  # a txid no commit has, the other slot
                    f.write(struct.pack("<QQ", latest_txid + 1000, 1 - latest_slot))
            with db.begin(write=True, sync=False) as txn:
                for i in range(300):
                    txn.put(b"n%04d" % i, b"N" * 50)
            with db.begin() as r:
                states.append(dict(r.items()))
            m.power_loss(mode, seed=seed)
            try:
                db = m.reopen()
                db.check()
                with db.begin() as r:
                    got = dict(r.items())
                if got not in states:
                    bad.append((seed, "an older state"))
            except btree_store.Error as e:
                bad.append((seed, repr(e)[:80]))
    assert not bad, bad
