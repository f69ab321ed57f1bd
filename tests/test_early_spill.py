"""test_early_spill.py - a write transaction that changes far more than the cache's dirty room
(64 MiB) writes its leaves out early and reuses their frames while they stay out (a sorted
bulk load), and stops doing so as soon as spilled leaves come back (random inserts into a
tree that is all dirty), so that it does not write the same pages again and again. Either
way the commit, an abort and a reopen see exactly what the transaction did.

Layer: tests only; the public API, the file's size and /proc/self/io (Linux).
"""
import os
import random

import pytest

import btree_store

VALUE = 900         # 4 records a 4 KiB leaf: 20k leaves, 80 MB, past the 64 MiB dirty room
N = 80_000


def _val(i):
    return (b"%08d" % i) * (VALUE // 8) + b"x" * (VALUE % 8)


def _written():
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    raise AssertionError("no wchar in /proc/self/io")


def _verify(path, keys):
    with btree_store.DB(path) as db:
        db.check()
        with db.begin() as txn:
            assert sum(1 for _ in txn.iter()) == len(keys)
            for i in keys[:: max(1, len(keys) // 2000)]:
                assert txn.get(b"%016d" % i) == _val(i)


def test_sorted_bulk_load_writes_its_leaves_before_the_commit(tmp_path):
    path = str(tmp_path / "seq.bs")
    with btree_store.DB(path) as db:
        with db.begin(write=True) as txn:
            for i in range(N):
                txn.put(b"%016d" % i, _val(i))
            early = os.path.getsize(path)
        final = os.path.getsize(path)
    # most of the file reached it before the commit (held in memory: only the two meta pages)
    assert early > final // 2, (early, final)
    _verify(path, list(range(N)))


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs /proc/self/io")
def test_random_inserts_stop_spilling_early_when_leaves_come_back(tmp_path):
    path = str(tmp_path / "rand.bs")
    keys = list(range(N))
    random.Random(7).shuffle(keys)
    with btree_store.DB(path) as db:
        before = _written()
        with db.begin(write=True) as txn:
            for i in keys:
                txn.put(b"%016d" % i, _val(i))
        written = _written() - before
        size = os.path.getsize(path)
    # spilling every leaf each time the dirty room filled would write the tree several times
    assert written < size * 1.2, (written, size)
    _verify(path, sorted(keys))


def test_abort_after_spilling_early_leaves_the_file_as_it_was(tmp_path):
    path = str(tmp_path / "abort.bs")
    with btree_store.DB(path) as db:
        with db.begin(write=True) as txn:
            for i in range(0, 1000):
                txn.put(b"%016d" % i, _val(i))
        txn = db.begin(write=True)
        for i in range(1000, N):
            txn.put(b"%016d" % i, _val(i))
        assert os.path.getsize(path) > 32 << 20  # the leaves spilled
        # the spilled leaves of this transaction read back (spilled, then reloaded)
        assert txn.get(b"%016d" % 1500) == _val(1500)
        txn.put(b"%016d" % 1500, b"changed after the spill")
        txn.abort()
        with db.begin(write=True) as txn:
            txn.put(b"%016d" % 1000, _val(1000))
        db.check()
    _verify(path, list(range(1001)))


def test_savepoint_rolled_back_over_spilled_leaves(tmp_path):
    path = str(tmp_path / "sp.bs")
    with btree_store.DB(path) as db:
        with db.begin(write=True) as txn:
            for i in range(N // 2):
                txn.put(b"%016d" % i, _val(i))
            txn._savepoint()
            for i in range(N // 2, N):
                txn.put(b"%016d" % i, _val(i))
            for i in range(0, N // 2, 7):  # spilled leaves changed inside the savepoint
                txn.put(b"%016d" % i, b"inside the savepoint")
            txn._rollback()
            assert txn.get(b"%016d" % 7) == _val(7)
            assert txn.get(b"%016d" % (N - 1)) is None
    _verify(path, list(range(N // 2)))



@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs /proc/self/io")
def test_random_deletes_from_a_committed_tree_stop_spilling_early(tmp_path):
    # 48k leaves (190 MB): each delete copies a clean leaf, a new dirty page almost every
    # operation, so the early spill's probe faces few operations before the next check and
    # only a few of its leaves come back: enough to stop (pager.c EARLY_PROBE_BACK). Before,
    # the next spill wrote the 16k leaves in memory early and read each one back.
    n = 192_000
    path = str(tmp_path / "del.bs")
    keys = list(range(n))
    random.Random(5).shuffle(keys)
    with btree_store.DB(path) as db:
        with db.begin(write=True) as txn:
            for i in range(n):
                txn.put(b"%016d" % i, _val(i))
        size0 = os.path.getsize(path)
        before = _written()
        with db.begin(write=True) as txn:
            for i in keys[: n // 4]:
                txn.delete(b"%016d" % i)
        written = _written() - before
    # the commit writes each copied leaf once (about 0.6 of the tree: 117 MB of 198 MB);
    # spilling early too wrote 183 MB
    assert written < size0 * 0.75, (written, size0)
    _verify(path, sorted(keys[n // 4:]))
