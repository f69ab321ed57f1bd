"""test_read_ahead.py - a miss reads the uncached neighbours of its page with the same system
call and caches them unverified; the first lookup of one verifies it. So after a reopen, a
scan misses far fewer times than it reads pages, every value reads back; neighbours that are
free pages full of garbage, or images a later commit replaced, are never an error nor
returned; and a reader reading beside a writer that spills the same pages again and again
leaves nothing stale behind (within one process the writer's dirty pages leave the cache no
room to read ahead then; the txid horizon of pager.c covers writers in other processes).
Read-ahead stops when the neighbours it reads go unused (sparse gets in a large tree) and
starts again when they are used (a scan).

Layer: tests only; the public API plus raw file images (tests/_format.py).
"""
import os

import pytest

import btree_store
from _format import Layout


@pytest.fixture(autouse=True)
def _copies(monkeypatch):
    """Read-ahead belongs to reading pages into copies (a mapping has the OS read ahead)."""
    monkeypatch.setenv("BTREE_STORE_MAP", "0")

P = 1024


def _fill(path, n, value=b"v", **kw):
    with btree_store.DB(path, page_size=P, **kw) as db:
        with db.begin(write=True) as txn:
            for i in range(n):
                txn.put(b"%08d" % i, value + b"%08d" % i)


def test_scan_after_reopen_misses_less_than_it_reads(tmp_path):
    path = str(tmp_path / "ra.bs")
    _fill(path, 20000)
    with btree_store.DB(path) as db:
        pages = db.stat()["page_count"]
        with db.begin() as txn:
            assert sum(1 for _ in txn.iter()) == 20000
            assert txn.get(b"%08d" % 12345) == b"v%08d" % 12345
        st = db.stat()
        assert st["cache_pages"] > pages // 2
        # groups of 8 pages: one miss reads up to 8 (the rest are hits on frames read ahead)
        assert st["cache_misses"] < pages // 3, (st["cache_misses"], pages)
        db.check()


def test_sparse_gets_stop_reading_ahead_and_a_scan_starts_again(tmp_path):
    # ~1100 gets, each in a leaf of its own 10 leaves apart: nothing read ahead is ever used,
    # so after a first sample the misses read their page alone (without the adaptation
    # every miss caches its whole group: ~8 pages per miss)
    path = str(tmp_path / "sparse.bs")
    n = 400000
    _fill(path, n)
    with btree_store.DB(path) as db:
        pages = db.stat()["page_count"]
        step = n * 10 // pages
        with db.begin() as txn:
            for i in range(0, n, step):
                assert txn.get(b"%08d" % i) == b"v%08d" % i
        st = db.stat()
        assert st["cache_misses"] > 1000, (st, pages, step)
        assert st["cache_pages"] < 2 * st["cache_misses"], st
        # a scan uses every neighbour: read-ahead comes back, far fewer misses than pages
        before = st["cache_misses"]
        with db.begin() as txn:
            assert sum(1 for _ in txn.iter()) == n
        st = db.stat()
        assert st["cache_misses"] - before < pages // 2, (st, pages)
        db.check()


def test_garbage_in_free_neighbours_is_never_an_error(tmp_path):
    path = str(tmp_path / "free.bs")
    _fill(path, 6000)
    with btree_store.DB(path) as db:
        with db.begin(write=True) as txn:
            for i in range(0, 6000, 2):
                txn.delete(b"%08d" % i)
        with db.begin(write=True) as txn:  # a second commit: the first one's frees settle
            txn.put(b"x", b"y")
    with open(path, "rb") as f:
        lay = Layout(f.read())
    free = [p for p in range(2, lay.page_count) if lay.kinds.get(p, "free") == "free"]
    assert len(free) > 10
    with open(path, "r+b") as f:  # free pages may hold anything
        for p in free:
            f.seek(p * P)
            f.write(os.urandom(P))
    with btree_store.DB(path) as db:
        with db.begin() as txn:
            for i in range(6000):
                want = None if i % 2 == 0 else b"v%08d" % i
                assert txn.get(b"%08d" % i) == want
        # reuse the free pages: what was read ahead of them is dropped, new images read back
        with db.begin(write=True) as txn:
            for i in range(0, 6000, 2):
                txn.put(b"%08d" % i, b"n%08d" % i)
        with db.begin() as txn:
            for i in range(6000):
                assert txn.get(b"%08d" % i) == (b"n" if i % 2 == 0 else b"v") + b"%08d" % i
        db.check()
    with btree_store.DB(path) as db:
        with db.begin() as txn:
            assert sum(1 for _ in txn.iter()) == 6001
        db.check()


def test_neighbour_spilled_by_a_writer_is_not_taken(tmp_path):
    # A small cache: the writer spills its dirty pages (written with its txid) again and
    # again before its commit, with other bytes each time; they are reused free pages next
    # to pages an older reader reads in the middle of the transaction. The reader after the
    # commit must see the final values.
    path = str(tmp_path / "spill.bs")
    n = 30000
    pad = b"." * 50
    _fill(path, n, value=pad)
    with btree_store.DB(path, cache_size=1 << 20) as db:
        with db.begin(write=True) as txn:
            for i in range(0, n, 3):
                txn.delete(b"%08d" % i)
        with db.begin(write=True) as txn:
            txn.put(b"x", b"y")
        reader = db.begin()
        w = db.begin(write=True)
        for rnd in range(4):  # the same keys each round: spilled pages reloaded and changed
            for i in range(0, n, 3):
                w.put(b"%08d" % i, pad + b"w%d-%08d" % (rnd, i))
                if i % 300 == 0:
                    j = (i + 1 + 7919 * rnd) % n // 3 * 3 + 1
                    assert reader.get(b"%08d" % j) == pad + b"%08d" % j
        w.commit()
        reader.abort()
        with db.begin() as txn:
            for i in range(n):
                want = pad + (b"w3-%08d" % i if i % 3 == 0 else b"%08d" % i)
                assert txn.get(b"%08d" % i) == want, i
        db.check()
